"""A toy task with a NEW example shape, written in this file alone: question answering (question + context ->
answer) scored by exact match and token F1, two metrics registered here. It reads its own columns from a jsonl file
and runs end to end through the real runner (fresh worker processes import this module as a plug-in); its metrics
show in the table's quality cell from their own declarations, with no list of metrics anywhere else."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.measures.quality import METRICS, Metric, register_metric
from squeezebench.models.bundle import ModelBundle
from squeezebench.tasks.base import EvalResult, Task, register_task
from squeezebench.tasks.data import Dataset, DatasetOptions, Rows, load_dataset, require_columns
from squeezebench.tasks.metrics import bootstrap_ci, metric_value

PLUGIN = __name__  # what the workers import
WORDS = 12  # context length in words

EXACT = register_metric(Metric("toy_exact_match", "fraction", True, 1, "share of answers equal to the reference",
                               label="EM", decimals=4, delta="pt"))
F1 = register_metric(Metric("toy_answer_f1", "fraction", True, 1, "mean word-overlap F1 of answer and reference",
                            label="F1", decimals=4, delta="pt"))


def follows(example: dict) -> torch.Tensor:
    """1.0 at each context position whose previous word is the question's key word (``what follows KEY?``)."""
    key = re.fullmatch(r"what follows (\w+)\?", example["question"]).group(1)
    words = example["context"].split()
    return torch.tensor([1.0 if i > 0 and words[i - 1] == key else 0.0 for i in range(WORDS)])


class Pointer(torch.nn.Module):
    """Scores each context position; by construction the highest score is the word after the key word."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Linear(1, 1)
        with torch.no_grad():
            self.scale.weight.fill_(10.0)
            self.scale.bias.zero_()

    def forward(self, follows: torch.Tensor) -> torch.Tensor:
        return self.scale(follows.unsqueeze(-1)).squeeze(-1)


def toy_model(pretrained: bool = True) -> ModelBundle:
    return ModelBundle(module=Pointer().eval(), source={})


def token_f1(prediction: str, reference: str) -> float:
    common = sum((Counter(prediction.split()) & Counter(reference.split())).values())
    if not common:
        return 0.0
    precision, recall = common / len(prediction.split()), common / len(reference.split())
    return 2 * precision * recall / (precision + recall)


@register_task
class ToyQuestionAnswering(Task):
    """Answer a question from its context: the answer is the word that follows the question's key word."""

    name = "toy-qa"
    primary_metric = "toy_exact_match"
    metrics = ("toy_exact_match", "toy_answer_f1")
    input_names = ("follows",)
    input_kind = "question"
    example_fields = ("context", "answer")

    def examples_from_rows(self, rows: Rows, options: DatasetOptions) -> Dataset:
        require_columns(rows, [("question", "a question column"), ("context", "a context column"),
                               ("answer", "an answer column")])
        examples = [{field: str(row[field]) for field in ("question", "context", "answer")} for row in rows.rows]
        return Dataset(rows.spec, examples, None, {"columns": rows.columns})

    def wrap(self, bundle):
        return bundle.module

    def example_inputs(self, bundle, data, protocol):
        return {"follows": torch.stack([follows(ex) for ex in data.examples[: protocol.batch_size]])}

    def calibration_inputs(self, bundle, data, protocol, n):
        return [{"follows": follows(ex).unsqueeze(0)} for ex in data.examples[:n]]

    def evaluate(self, run, bundle, data, protocol, reference):
        scores = run({"follows": torch.stack([follows(ex) for ex in data.examples])}).float().numpy()
        answers = [ex["context"].split()[i] for ex, i in zip(data.examples, scores.argmax(1))]
        exact = np.array([a == ex["answer"] for a, ex in zip(answers, data.examples)], dtype=float)
        f1 = np.array([token_f1(a, ex["answer"]) for a, ex in zip(answers, data.examples)])
        n = len(answers)
        metrics = {"toy_exact_match": metric_value(EXACT, exact.mean(), n, bootstrap_ci(lambda i: exact[i].mean(), n)),
                   "toy_answer_f1": metric_value(F1, f1.mean(), n, bootstrap_ci(lambda i: f1[i].mean(), n))}
        return EvalResult(metrics, [], {"examples": n, "dataset_fingerprint": data.fingerprint()})


@pytest.fixture
def qa_jsonl(tmp_path) -> Path:
    """Ten questions; two references are two words long, so the one-word answer scores EM 0 and F1 2/3 there."""
    rng = np.random.default_rng(0)
    vocabulary = [f"w{i}" for i in range(40)]
    lines = []
    for n in range(10):
        words = list(rng.choice(vocabulary, WORDS, replace=False))
        at = 3 + n % 6
        answer = " ".join(words[at + 1: at + 3]) if n in (2, 7) else words[at + 1]
        lines.append(json.dumps({"question": f"what follows {words[at]}?", "context": " ".join(words), "answer": answer}))
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_task_reads_its_own_columns_and_they_are_fingerprinted(qa_jsonl, tmp_path):
    task = ToyQuestionAnswering()
    ds = load_dataset(f"jsonl:{qa_jsonl}", DatasetOptions(), task.examples_from_rows)
    assert sorted(ds.examples[0]) == ["answer", "context", "question"]
    task.check_dataset(ds)
    other = tmp_path / "other.jsonl"
    other.write_text(qa_jsonl.read_text().replace('"answer": "', '"answer": "x'))
    assert load_dataset(f"jsonl:{other}", DatasetOptions(), task.examples_from_rows).fingerprint() != ds.fingerprint()
    no_context = tmp_path / "bad.jsonl"
    no_context.write_text(json.dumps({"question": "what follows a?", "answer": "b"}) + "\n")
    with pytest.raises(SqueezebenchError, match="has no column 'context'"):
        load_dataset(f"jsonl:{no_context}", DatasetOptions(), task.examples_from_rows)
    with pytest.raises(SqueezebenchError, match="has no column 'text'"):
        load_dataset(f"jsonl:{qa_jsonl}")  # the shared loader alone makes text rows only: the shape is the task's
    with pytest.raises(SqueezebenchError, match="has no answer, which toy-qa needs"):
        task.check_dataset(Dataset("x", [{"question": "what follows a?", "context": "a b"}]))


def test_new_shape_task_end_to_end_with_its_metrics_in_the_quality_cell(tmp_path, qa_jsonl, capsys):
    from squeezebench.cli import main
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    config = RunConfig(models=[f"python:{PLUGIN}:toy_model"], task="toy-qa", methods=["original", "fp16"],
                       dataset=f"jsonl:{qa_jsonl}", out=tmp_path / "out", team="t", protocol=fast_protocol(),
                       plugins=[PLUGIN])
    records = {r.method: r for r in Runner(config).run()}
    assert records["original"].ok and records["fp16"].ok, records
    quality = records["original"].quality
    assert quality.primary == "toy_exact_match" and quality.primary_value.value == pytest.approx(0.8)
    assert quality.metrics["toy_answer_f1"].value == pytest.approx((8 + 2 * 2 / 3) / 10)

    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out")]) == 0
    lines = {line.split(" | ")[1]: line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert re.search(r"\| EM 0\.8000 \[[0-9.]+–[0-9.]+\]; F1 0\.9333( ⚠ [^|]*)? \|", lines["original"]), lines["original"]
    assert re.search(r"\| EM 0\.8000 \[[0-9.]+–[0-9.]+\] \(\+0\.0 pt\); F1 0\.9333", lines["fp16"]), lines["fp16"]
    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out"), "--format", "json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["original"]["quality_metric"] == "toy_exact_match" and rows["original"]["quality_value"] == 0.8
    assert "toy_answer_f1" in METRICS
