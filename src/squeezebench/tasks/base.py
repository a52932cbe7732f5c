"""Task registry: what a model is asked to do, how its quality is scored, and how to feed it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from squeezebench.registry import Registry
from squeezebench.tasks.data import Dataset

# A runnable variant: named input tensors -> one output tensor (float32, on CPU).
Executable = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Protocol:
    """Everything that fixes what was measured; recorded with every result."""

    batch_size: int = 1
    seq_len: int = 128
    eval_batch_size: int = 16
    limit: Optional[int] = None
    seed: int = 0
    threads: Optional[int] = None
    warmup_iters: int = 5
    min_iters: int = 30
    min_time_s: float = 3.0
    max_time_s: float = 60.0
    ppl_window: int = 512
    ppl_stride: int = 256
    ppl_max_tokens: int = 8192
    gen_prompt_tokens: int = 64
    gen_new_tokens: int = 32
    gen_repeats: int = 3
    gen_prompt: Optional[str] = None  # text-generation prompt template with {text}; None: chat template/default
    test_fraction: float = 0.5
    calibration_samples: int = 32


@dataclass
class EvalResult:
    metrics: dict[str, dict]
    flags: list[str] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    reference: Optional[dict[str, Any]] = None  # arrays an original variant leaves for later agreement


class Task:
    """Base class. Subclasses are registered once in TASKS."""

    name: str = ""
    version: int = 1
    auto_class: str = "AutoModel"
    primary_metric: str = ""
    metrics: tuple[str, ...] = ()  # every metric evaluate() may record, for listings (primary first)
    default_dataset: str = "bbc-news"
    input_names: tuple[str, ...] = ()
    output_kind: str = "logits"  # what wrap() returns: "logits" (last dim = classes) or "embedding"

    def auto_class_for(self, config) -> str:
        """The transformers Auto class that loads this task's model from ``config`` (raise SqueezebenchError
        for a model of the wrong kind)."""
        return self.auto_class

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "primary_metric": self.primary_metric}

    # --- model side -------------------------------------------------------------------------------
    def attach_preprocessing(self, bundle, where: str, kwargs: dict) -> None:
        """Load the tokenizer/image processing for ``bundle`` from ``where``."""

    def save_preprocessing(self, bundle, directory: Path) -> None:
        """Save what attach_preprocessing loads, into ``directory``."""

    def wrap(self, bundle) -> torch.nn.Module:
        """An nn.Module with forward(**inputs) -> one tensor: what runtimes execute and export."""
        raise NotImplementedError

    # --- data side --------------------------------------------------------------------------------
    def prepare(self, dataset: Dataset, bundle, protocol: Protocol) -> Any:
        """Check and split the dataset for this task (raises SqueezebenchError on unusable data)."""
        return dataset

    def example_inputs(self, bundle, data: Any, protocol: Protocol) -> dict[str, torch.Tensor]:
        """Fixed-shape inputs (batch_size x seq_len or image size) of real data, for latency."""
        raise NotImplementedError

    def calibration_data(self, data: Any, rest: Dataset, bundle, protocol: Protocol) -> tuple[Any, Optional[str]]:
        """What calibration_inputs draws from: ``rest`` (examples outside the evaluated subset) prepared like
        ``data`` when there are any, else ``data`` itself with a note saying so."""
        if rest.examples:
            return self.prepare(rest, bundle, protocol), None
        return data, "calibration data overlaps the evaluated examples (no examples outside --limit)"

    def calibration_inputs(self, bundle, data: Any, protocol: Protocol, n: int) -> list[dict[str, torch.Tensor]]:
        """``n`` model input dicts for calibration, taken from the training part of the data."""
        raise NotImplementedError

    def evaluate(self, run: Executable, bundle, data: Any, protocol: Protocol,
                 reference: Optional[dict[str, Any]]) -> EvalResult:
        raise NotImplementedError


TASKS: Registry[Task] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    TASKS.register(cls.name, cls())
    return cls
