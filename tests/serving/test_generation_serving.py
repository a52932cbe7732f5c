"""text-generation behind `serve`: a request is the example's text, answered with the same greedy output the
evaluation produced (the prompt built and the output cut as recorded); malformed requests are one line."""

from __future__ import annotations

import json
import shutil

import pytest

from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.pytorch import TorchExecutable
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import DatasetOptions, load_dataset
from squeezebench.tasks.text_generation import ServedPrompt
from tests.conftest import fast_protocol

TASK = TASKS.get("text-generation")
PAIRS = [("Shares in the bank rose after strong profits and a higher dividend for the year.", "Bank shares rise"),
         ("The team won the cup final after a late goal in extra time.", "Late goal wins the cup"),
         ("Oil prices fell as markets worried about demand in the coming months.", "Oil prices fall")]


class _Record:  # the part of a record serving_context reads
    def __init__(self, protocol):
        self.quality = type("Quality", (), {"protocol": protocol})()


@pytest.mark.parametrize("chat", [False, True])
def test_served_answers_are_the_evaluated_outputs(tiny_llama_dir, tmp_path, chat):
    from transformers import AutoTokenizer

    model_dir = tiny_llama_dir
    if chat:  # a tokenizer with a chat template: the evaluation wraps the prompt in it, so must the service
        model_dir = tmp_path / "chat-model"
        shutil.copytree(tiny_llama_dir, model_dir)
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.chat_template = "{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}<|answer|>"
        tok.save_pretrained(model_dir)
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"article": a, "title": t}) + "\n" for a, t in PAIRS))
    ds = load_dataset(f"jsonl:{path}", DatasetOptions(input_column="article", target_column="title"))
    bundle = load_model(source_of(str(model_dir)), TASK)
    run = TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {"name": "pytorch-eager", "device": "cpu"})
    protocol = fast_protocol(seq_len=8, gen_new_tokens=5)  # inputs longer than 8 tokens: cut, as evaluated
    data = TASK.prepare(ds, bundle, protocol)
    evaluated = TASK.evaluate(run, bundle, data, protocol, None)
    assert data["truncated_inputs"] == len(PAIRS)
    context = TASK.serving_context(_Record(evaluated.protocol))
    assert isinstance(context, ServedPrompt) and (context.how.startswith("tokenizer chat")) == chat
    bodies = [TASK.request_of(ex) for ex in ds.examples]
    assert all(TASK.check_request(b) is None for b in bodies)
    answers = TASK.serve_batch(run, bundle, bodies, protocol, context)
    assert [a["text"] for a in answers] == [str(o) for o in evaluated.reference["outputs"]]
    assert all(1 <= a["new_tokens"] <= 5 for a in answers)
    shorter = TASK.serve_batch(run, bundle, [{**bodies[0], "max_new_tokens": 2}], protocol, context)
    assert shorter[0]["new_tokens"] <= 2


def test_bad_generation_requests_are_one_line():
    for bad in ({"prompt": "x"}, {"text": ""}, {"text": "a", "max_new_tokens": 0}, {"text": "a", "max_new_tokens": "5"},
                {"text": "a", "max_new_tokens": True}, {"text": "a", "max_new_tokens": 10**6}, ["a"]):
        problem = TASK.check_request(bad)
        assert problem and "\n" not in problem, bad
    assert TASK.check_request({"text": "a", "max_new_tokens": 3}) is None


def test_a_record_without_a_recorded_prompt_format_is_served_as_a_run_would():
    assert TASK.serving_context(_Record({})) is None
    assert TASK.serving_context(type("R", (), {"quality": None})()) is None


def test_a_measured_generation_variant_is_served_and_load_tested(tiny_llama_dir, tmp_path):
    """End to end: `squeezebench run` measures a tiny causal LM, `serve` answers its evaluation examples with the
    outputs the record shows, and an Offline load test of it answers every query."""
    from squeezebench.cli import main
    from squeezebench.results import iter_records
    from squeezebench.serving.loadtest import LoadSettings, run_loadtest
    from squeezebench.serving.server import ServeOptions
    from tests.serving import fake_service as fake

    pytest.importorskip("mlperf_loadgen")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"article": a, "title": t}) + "\n" for a, t in PAIRS))
    out = tmp_path / "results"
    assert main(["run", "--model", str(tiny_llama_dir), "--task", "text-generation", "--dataset", f"jsonl:{path}",
                 "--input-column", "article", "--target-column", "title", "--prompt", "Title: {text}\\n",
                 "--methods", "original", "--devices", "cpu", "--seq-len", "8", "--gen-tokens", "4", "--min-iters", "3",
                 "--min-time", "0", "--warmup", "1", "--out", str(out), "--team", "t"]) == 0
    (rec,) = list(iter_records([out]))
    shown = rec.quality.protocol["examples_shown"]
    proc, url = fake.start_serve(out)
    try:
        answers = [json.loads(fake.post(url, json.dumps({"text": a}).encode())[1]) for a, _ in PAIRS]
    finally:
        proc.terminate()
        proc.wait()
    assert [a["text"] for a in answers][:len(shown)] == shown
    section, _, _ = run_loadtest(str(out), ServeOptions("original"), LoadSettings("offline", 1e5, duration_s=0.5,
                                                                                 min_queries=8))
    assert section.errors == 0 and section.queries >= 8, section.error
