"""One trial = one chain measured at one rung: through the real runner (:class:`RunnerEvaluator`: ordinary records,
the same isolation and comparability key, ``table`` and ``report`` show them), or through any other
:class:`Evaluator` (the seam the tests use to give known quality and latency per chain)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol as TypingProtocol

from squeezebench.errors import SqueezebenchError
from squeezebench.search.tolerance import Scores, scores_of

# objective name -> (what it reads from a record, unit); all are minimised
OBJECTIVES = ("cpu_ms", "gpu_ms", "size_mb", "ram_mb", "vram_mb")


@dataclass(frozen=True)
class Rung:
    """A fidelity: ``screen`` (a subset of the examples, short timing) or ``full`` (the user's protocol)."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # protocol fields changed from the user's protocol


@dataclass
class TrialResult:
    status: str  # "ok" or why not ("failed: ...", "skipped: ...")
    objectives: dict[str, float] = field(default_factory=dict)
    quality: Optional[Scores] = None
    record_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Evaluator(TypingProtocol):
    def evaluate(self, chain: str, rung: Rung) -> TrialResult:
        """Measure ``chain`` ("original" for the baseline) at ``rung``."""


def objectives_of(record, objectives: tuple[str, ...]) -> dict[str, float]:
    """The record's values of the searched objectives (latency on its device, size, peak memory)."""
    out: dict[str, float] = {}
    device = "cpu" if record.device == "cpu" else "gpu"
    for name in objectives:
        if name in ("cpu_ms", "gpu_ms") and name.startswith(device) and record.latency is not None:
            out[name] = float(record.latency.median)
        elif name == "size_mb" and record.size is not None:
            out[name] = float(record.size.weights_mb)
        elif name == "ram_mb" and record.memory is not None and record.memory.ram_mb is not None:
            out[name] = float(record.memory.ram_mb)
        elif name == "vram_mb" and record.memory is not None and record.memory.vram is not None:
            out[name] = float(record.memory.vram.peak_reserved_mb)
    return out


class RunnerEvaluator:
    """Each trial is ``squeezebench run --methods original CHAIN`` with the rung's protocol into the same --out and
    team: the runner resumes the original (and any trial already measured) from its ok record by the record key."""

    def __init__(self, config, objectives: tuple[str, ...]):
        self.config = config  # runner.RunConfig of the user's model, task, data, protocol, out, executor
        self.objectives = objectives

    def evaluate(self, chain: str, rung: Rung) -> TrialResult:
        from squeezebench.runner import Runner

        protocol = dataclasses.replace(self.config.protocol, **rung.overrides)
        methods = ["original"] if chain == "original" else ["original", chain]
        config = dataclasses.replace(self.config, methods=methods, protocol=protocol)
        records = [r for r in Runner(config).run() if r.method != "original" or chain == "original"]
        if not records:
            return TrialResult("failed: no record")
        record = records[0]
        if not record.ok:
            return TrialResult(f"{record.status}: {record.reason or record.error or ''}".strip(), record_keys=[record.key])
        metric = record.quality.primary_value if record.quality is not None else None
        scores = scores_of(metric)
        if scores is None:
            raise SqueezebenchError(f"task {record.task.name}'s {record.quality.primary if record.quality else 'metric'} "
                                    "stores no per-example scores: the paired interval the search judges by cannot be "
                                    "computed for it (search supports tasks scored per example: accuracy, WER)")
        values = objectives_of(record, self.objectives)
        missing = [o for o in self.objectives if o not in values]
        if missing:
            raise SqueezebenchError(f"the records hold no {', '.join(missing)} for device {record.device}: "
                                    "choose objectives the run measures (e.g. cpu_ms on --devices cpu)")
        return TrialResult("ok", values, scores, [record.key])


def out_path(out: Path) -> Path:
    return Path(out) / "search.json"
