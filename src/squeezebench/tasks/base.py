"""Task registry: what a model is asked to do, how its quality is scored, and how to feed it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.measures.quality import METRIC_ORDER
from squeezebench.registry import Registry
from squeezebench.tasks.data import Dataset, DatasetOptions, Rows, text_rows

if TYPE_CHECKING:
    from squeezebench.protocol import Protocol

# A runnable variant: named input tensors -> one output tensor (float32, on CPU).
Executable = Callable[[dict[str, torch.Tensor]], torch.Tensor]

EVALUATED_ALL = 1 << 30  # "every example" as calibration_inputs' n (Task.evaluated_inputs)


@dataclass(frozen=True)
class EvalProtocol:
    """How quality is scored: which examples, how they are cut and batched. Owned here; the CLI derives its flags
    from these fields' metadata (``flag``: the option name when it is not the field's; ``help``)."""

    seq_len: int = field(default=128, metadata={"help": "tokens per input for latency and scoring", "positive": True})
    eval_batch_size: int = field(default=16, metadata={"help": "batch size of quality scoring", "positive": True})
    limit: Optional[int] = field(default=None, metadata={
        "help": "use a deterministic, class-balanced subset of N examples", "positive": True})
    seed: int = field(default=0, metadata={"help": "seed of the subset and splits"})
    ppl_window: int = field(default=512, metadata={"help": "perplexity window (tokens)", "positive": True})
    ppl_stride: int = field(default=256, metadata={"help": "perplexity stride (tokens)", "positive": True})
    ppl_max_tokens: int = field(default=8192, metadata={"help": "tokens scored for perplexity", "positive": True})
    gen_prompt_tokens: int = field(default=64, metadata={"cli": False})
    gen_new_tokens: int = field(default=32, metadata={"flag": "--gen-tokens",
                                                      "help": "tokens generated for decode speed", "positive": True})
    gen_repeats: int = field(default=3, metadata={"cli": False})
    work_examples: Optional[int] = field(default=None, metadata={
        "help": "examples the task-level inference time cycles through, in order (utterances, prompts; "
                "default: the task's, recorded)", "positive": True})
    test_fraction: float = field(default=0.5, metadata={"cli": False})
    gen_prompt: Optional[str] = field(default=None, metadata={
        "flag": "--prompt", "type": lambda text: text.replace("\\n", "\n").replace("\\t", "\t"),
        "help": "text-generation prompt with {text}, e.g. 'Title for this article: {text}\\n' (\\n: a line "
                "break; default: the tokenizer's chat template)"})

    def __post_init__(self):
        if self.gen_prompt is not None and "{text}" not in self.gen_prompt:
            raise SqueezebenchError(f"--prompt {self.gen_prompt!r} has no {{text}} placeholder; put {{text}} where the "
                                    "input text goes, e.g. --prompt 'Title for this article: {text}\\n'")


@dataclass(frozen=True)
class CalibrationProtocol:
    """How many inputs a calibrated method (static int8, GPTQ, AWQ, pruning, distillation) draws from the task."""

    calibration_samples: int = field(default=32, metadata={"help": "calibration inputs for calibrated methods",
                                                           "positive": True})
    calibration_dataset: Optional[str] = field(default=None, metadata={
        "help": "calibrate and train (static int8, GPTQ, distill, student) on this dataset, read with the same "
                "--*-column options, instead of the --dataset examples outside --limit: e.g. a training split while "
                "--dataset is the test split, or other recordings when the evaluated ones are all there are"})


@dataclass
class UnitOfWork:
    """What the inference column times: one unit of the task's work, end to end in the measuring process (a forward
    at the fixed shape; transcribing an utterance; producing an answer), so that a row's time is what a team means by
    "inference time". ``call()`` does one unit and appends the amount it processed (seconds of audio, new tokens) to
    ``amounts`` when the unit has one; ``rate`` says how that amount is reported ("ms per": ms per second of audio;
    "per s": tokens per second)."""

    label: str  # the unit in a few words: "per utterance", "per answer", "per 128-token input"
    call: Callable[[], Any]
    amount_unit: Optional[str] = None  # what one call processes: "s audio", "new tokens"
    rate: Optional[str] = None  # "ms per" (ms per amount unit) or "per s" (amount per second)
    amounts: list[float] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)  # which examples, limits: recorded with the latency

    def summary(self, samples_ms: list[float]) -> dict[str, Any]:
        """The unit as recorded beside the timing: its label, the mean amount per timed call and the rate over
        the timed calls (the last ``len(samples_ms)`` calls; warm-up calls come first)."""
        out: dict[str, Any] = {"label": self.label, **self.protocol}
        timed = self.amounts[-len(samples_ms):] if self.amount_unit and samples_ms else []
        if len(timed) == len(samples_ms) and timed and sum(timed) > 0:
            total_ms = float(sum(samples_ms))
            out.update(amount_unit=self.amount_unit, mean_amount=float(sum(timed)) / len(timed))
            if self.rate == "ms per":
                out["ms_per_amount"] = total_ms / float(sum(timed))
            elif self.rate == "per s":
                out["amount_per_s"] = float(sum(timed)) / (total_ms / 1e3)
        return out


def shape_label(inputs: dict[str, torch.Tensor]) -> str:
    """The fixed-shape forward in words, from its inputs: "per 128-token input", "per 224×224 image",
    "per batch of 8 × 128-token inputs"."""
    name, first = next(iter(inputs.items()))
    batch = int(first.shape[0]) if first.dim() else 1
    if name == "input_ids" and first.dim() == 2:
        one = f"{int(first.shape[1])}-token input"
    elif name == "pixel_values" and first.dim() == 4:
        one = f"{int(first.shape[2])}×{int(first.shape[3])} image"
    elif name == "input_values" and first.dim() == 2:
        one = f"{int(first.shape[1])}-sample audio input"
    else:  # a shape this function does not know: the inputs as they are
        return "per input (" + ", ".join(f"{k} {'×'.join(str(int(d)) for d in v.shape)}" for k, v in inputs.items()) + ")"
    return f"per {one}" if batch == 1 else f"per batch of {batch} × {one}s"


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
    metrics: tuple[str, ...] = ()  # every metric evaluate() may record: listings and the quality cell's order
    default_dataset: str = "bbc-news"
    input_names: tuple[str, ...] = ()
    output_kind: str = "logits"  # what wrap() returns: "logits" (last dim = classes) or "embedding"
    input_kind: str = "text"  # what each example carries for the model: "text", "image", "audio" (or its own)
    example_fields: tuple[str, ...] = ()  # other fields every example must carry (a new shape's own, e.g. "answer")
    needs_labels: bool = False  # every example must have a label
    labels_from_model: bool = False  # the model's own head names the classes (id2label); a base model gets a new head
    calibration_held_out: bool = True  # calibration inputs come from data that is never scored

    def auto_class_for(self, config) -> str:
        """The transformers Auto class that loads this task's model from ``config`` (raise SqueezebenchError
        for a model of the wrong kind)."""
        return self.auto_class

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "primary_metric": self.primary_metric}

    def check_dataset(self, dataset: Dataset) -> None:
        """Fail before any variant runs when the data cannot serve this task (one-line error)."""
        if any(self.input_kind not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no {self.input_kind}, which {self.name} needs")
        for name in self.example_fields:
            if any(name not in ex for ex in dataset.examples):
                raise SqueezebenchError(f"dataset {dataset.spec!r} has no {name}, which {self.name} needs")
        if self.needs_labels and any("label" not in ex for ex in dataset.examples):
            raise SqueezebenchError(f"dataset {dataset.spec!r} has no labels, which {self.name} needs "
                                    "(pass --label-column)")

    # --- model side -------------------------------------------------------------------------------
    def attach_preprocessing(self, bundle, where: str, kwargs: dict) -> None:
        """Load the tokenizer/image processing for ``bundle`` from ``where``."""

    def save_preprocessing(self, bundle, directory: Path) -> None:
        """Save what attach_preprocessing loads, into ``directory``."""

    def export_graphs(self, bundle) -> Any:
        """The graphs an export writes for ``bundle`` (models.graphs.ExportGraphs), or None for one graph,
        ``wrap(bundle)``: an encoder-decoder returns its encoder and decoder graphs so that generation runs on them."""
        return None

    def wrap(self, bundle) -> torch.nn.Module:
        """An nn.Module with forward(**inputs) -> one tensor: what runtimes execute and export."""
        raise NotImplementedError

    # --- data side --------------------------------------------------------------------------------
    def examples_from_rows(self, rows: Rows, options: DatasetOptions) -> Dataset:
        """This task's examples from a tabular dataset's rows (csv, jsonl, hf): its columns -> its example fields
        (``input_kind``, ``example_fields``). Default: text, an optional label and reference (tasks.data.text_rows).
        A task's own folder layouts are dataset kinds its module registers (``DATASETS.register``)."""
        return text_rows(rows, options)

    def prepare(self, dataset: Dataset, bundle, protocol: Protocol) -> Any:
        """Check and split the dataset for this task (raises SqueezebenchError on unusable data)."""
        return dataset

    def example_inputs(self, bundle, data: Any, protocol: Protocol) -> dict[str, torch.Tensor]:
        """Fixed-shape inputs (batch_size x seq_len or image size) of real data, for latency."""
        raise NotImplementedError

    def unit_of_work(self, executable, bundle, data: Any, inputs: dict[str, torch.Tensor],
                     protocol: Protocol) -> UnitOfWork:
        """The unit the inference column times. Default: one forward of ``executable`` on the fixed-shape
        ``inputs`` (prepared once, outside the timed call). Tasks whose work is more than a forward (transcribing,
        generating) override this."""
        prepared = executable.prepare(inputs)
        return UnitOfWork(label=shape_label(inputs), call=lambda: executable.run_prepared(prepared))

    def calibration_data(self, data: Any, rest: Dataset, bundle, protocol: Protocol) -> tuple[Any, Optional[str]]:
        """What calibration_inputs draws from: ``rest`` (examples outside the evaluated subset) prepared like
        ``data`` when there are any, else ``data`` itself with a note saying so."""
        if rest.examples:
            return self.prepare(rest, bundle, protocol), None
        return data, "calibration data overlaps the evaluated examples (no examples outside --limit)"

    def calibration_inputs(self, bundle, data: Any, protocol: Protocol, n: int) -> list[dict[str, torch.Tensor]]:
        """``n`` model input dicts for calibration, taken from the training part of the data."""
        raise NotImplementedError

    def evaluated_inputs(self, bundle, data: Any, protocol: Protocol) -> list[dict[str, torch.Tensor]]:
        """Every scored example as a model input dict, prepared as calibration_inputs prepares its own: what a
        method that trains (a student) must never see. Default: calibration_inputs over the evaluated data (right
        where that data is all scored); a task that also holds an unscored split (a classifier's train split)
        returns only the scored one."""
        return self.calibration_inputs(bundle, data, protocol, EVALUATED_ALL)

    def pseudo_labelled(self, teacher: torch.nn.Module, bundle, inputs: list[dict[str, torch.Tensor]],
                        ) -> tuple[list[dict[str, torch.Tensor]], Optional[str]]:
        """Training inputs for distilling a student of ``teacher``, with the teacher's own outputs as targets where
        the task generates (a transcript, an answer) instead of the data's references, and a one-line note of what
        was done (None: the inputs are used as they are)."""
        return inputs, None

    def evaluate(self, run: Executable, bundle, data: Any, protocol: Protocol,
                 reference: Optional[dict[str, Any]]) -> EvalResult:
        raise NotImplementedError

    def generation_speed(self, run: Executable, bundle, data: Any, protocol: Protocol) -> Optional[EvalResult]:
        """Greedy generation speed for the generation measure (measures/generation.py): the metrics
        time_to_first_token, decode_tokens_per_s (and decode_bandwidth_percent where known), the protocol they were
        timed under and flags; None when this task does not generate."""
        return None

    # --- serving (squeezebench serve / loadtest) ------------------------------------------------------
    def request_of(self, example: dict[str, Any]) -> dict[str, Any]:
        """The JSON body a client sends to ask about one evaluation example (the load test's queries)."""
        raise SqueezebenchError(f"task {self.name} cannot be served yet (it has no request handling)")

    def check_request(self, body: Any) -> Optional[str]:
        """What is wrong with one request body, in one line (answered with a 400), or None when it can be served."""
        return f"task {self.name} cannot be served yet (it has no request handling)"

    def serving_context(self, record) -> Any:
        """What ``serve_batch`` needs of the measured record besides its protocol (e.g. the prompt format a
        text-generation variant was evaluated with), read once when the variant is loaded; None for most tasks."""
        return None

    def serve_batch(self, run: Executable, bundle, bodies: list[dict[str, Any]], protocol: Protocol,
                    context: Any = None) -> list[Any]:
        """The answers (JSON values) to checked request bodies, run as one batch (``context``: serving_context)."""
        raise SqueezebenchError(f"task {self.name} cannot be served yet (it has no request handling)")


TASKS: Registry[Task] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    TASKS.register(cls.name, cls())
    METRIC_ORDER[cls.name] = tuple(cls.metrics)  # the quality cell shows them in this order
    return cls
