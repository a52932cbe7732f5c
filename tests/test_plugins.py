"""A toy task and a toy measure, written in this file alone, run end to end through the real runner: each variant
built and measured in fresh worker processes (which import this module as a plug-in), recorded, and tabled."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from squeezebench.measures.base import Column, Measure, MeasureSession, register_measure
from squeezebench.models.bundle import ModelBundle
from squeezebench.results.schema import Section
from squeezebench.tasks.base import EvalResult, Task, register_task
from squeezebench.tasks.metrics import classification_metrics

PLUGIN = __name__  # "tests.test_plugins": what the workers import


def features(texts: list[str]) -> torch.Tensor:
    """One number per text (its length in hundreds of characters) and a bias."""
    return torch.tensor([[len(t) / 100.0, 1.0] for t in texts])


class LengthClassifier(torch.nn.Module):
    """Logits of "short" (< 50 characters, label 0) and "long" (label 1), by construction."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
            self.linear.bias.copy_(torch.tensor([4.75, -4.75]))  # boundary at 47.5 characters

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def toy_model(pretrained: bool = True) -> ModelBundle:
    return ModelBundle(module=LengthClassifier().eval(), source={})


@register_task
class ToyLength(Task):
    """Classify texts as short or long from their length."""

    name = "toy-length"
    primary_metric = "accuracy"
    metrics = ("accuracy", "macro_f1")
    input_names = ("features",)
    needs_labels = True

    def wrap(self, bundle):
        return bundle.module

    def example_inputs(self, bundle, data, protocol):
        return {"features": features([ex["text"] for ex in data.examples][: protocol.batch_size])}

    def calibration_inputs(self, bundle, data, protocol, n):
        return [{"features": features([ex["text"]])} for ex in data.examples[:n]]

    def evaluate(self, run, bundle, data, protocol, reference):
        logits = run({"features": features([ex["text"] for ex in data.examples])}).numpy()
        metrics = classification_metrics(data.labels, logits.argmax(1), 2)
        return EvalResult(metrics, [], {"examples": len(data.examples)}, {"predictions": logits.argmax(1)})


class CpuTime(Section):
    cpu_s: float
    unit: str = "s"


def _cpu_cell(row) -> str:
    rec = row.any
    section = rec.section("cpu_time", CpuTime) if rec is not None and rec.ok else None
    return f"{section.cpu_s:.3f}" if section is not None else "—"


@register_measure
class CpuTimeMeasure(Measure):
    """CPU seconds this process spent loading and timing the variant."""

    name = "cpu_time"
    section = CpuTime
    order = 25  # after latency, before quality
    columns = (Column("cpu_s", {"en": "CPU time (s)", "ru": "Время CPU (s)"}, "s", _cpu_cell,
                      lambda row: getattr(row.any.section("cpu_time", CpuTime) if row.any and row.any.ok else None,
                                          "cpu_s", None)),)

    def begin(self, session: MeasureSession) -> None:
        session.scratch["cpu0"] = _cpu_seconds()

    def run(self, session: MeasureSession) -> Optional[Section]:
        return CpuTime(cpu_s=_cpu_seconds() - session.scratch["cpu0"])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def length_csv(tmp_path) -> Path:
    rows = ["text,label"] + [f"{'a' * n},{1 if n >= 50 else 0}" for n in range(5, 100, 5)] * 2
    path = tmp_path / "lengths.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_toy_task_and_measure_end_to_end(tmp_path, length_csv, capsys):
    from squeezebench.cli import main
    from tests.conftest import fast_protocol
    from squeezebench.runner import RunConfig, Runner

    config = RunConfig(models=[f"python:{PLUGIN}:toy_model"], task="toy-length", methods=["original", "fp16"],
                       dataset=f"csv:{length_csv}", out=tmp_path / "out", team="t", protocol=fast_protocol(),
                       plugins=[PLUGIN])
    records = {r.method: r for r in Runner(config).run()}
    assert records["original"].ok and records["fp16"].ok, records
    original = records["original"]
    assert original.task.name == "toy-length"
    assert original.quality.primary_value.value == 1.0  # the classifier is right by construction
    assert original.section("cpu_time", CpuTime).cpu_s > 0  # the plug-in measure ran in the worker
    assert original.latency.median > 0 and original.memory.ram_mb >= 0

    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out"), "--format", "json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["original"]["cpu_s"] > 0 and rows["original"]["quality_value"] == 1.0
    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out"), "--extra-columns"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    # a plug-in's column follows the course's columns (other tests' plug-ins may stay registered after it)
    assert "| CPU time (s) |" in header and header.index("| Quality |") < header.index("| CPU time (s) |")
    assert main(["--plugin", PLUGIN, "tasks"]) == 0 and "toy-length" in capsys.readouterr().out
    assert np.isfinite(rows["fp16"]["cpu_ms"])
