"""The typed record: what the runner, the workers and the reports share.

Every section is a pydantic model that keeps unknown fields (``extra="allow"``), so a measure added later (its own
section), or an older file with fields no longer written, round-trips unchanged. Code outside ``results/`` reads
records through these attributes, never by dict key paths.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

# protocol settings that change when a measurement is taken, not what is measured: left out of the comparability key
NOT_COMPARED = ("wait_idle_s",)

Status = Literal["ok", "skipped", "failed", "pending", "imported"]


class Section(BaseModel):
    """Base of every record section: typed where squeezebench reads it, open to any further field."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), validate_assignment=False)

    def dump(self) -> dict[str, Any]:
        """The section as written to JSON: fields that were set, plus the extra ones."""
        return self.model_dump(mode="json", exclude_unset=True)


class MetricValue(Section):
    value: float
    unit: str
    higher_is_better: bool = True
    version: int = 1
    n: int = 0
    ci95: Optional[tuple[float, float]] = None
    # each evaluated example's share of the metric, in the evaluated order: the metric is sum(per_example) /
    # sum(per_example_weight) (weights 1 when absent: a mean). Written by tasks whose metric decomposes (accuracy,
    # WER errors per utterance), so that two variants on the same examples get a PAIRED interval (squeezebench.search)
    per_example: Optional[list[float]] = None
    per_example_weight: Optional[list[float]] = None


class Quality(Section):
    primary: str
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)
    protocol: dict[str, Any] = Field(default_factory=dict)
    task_version: int = 1
    eval_s: Optional[float] = None

    @property
    def primary_value(self) -> Optional[MetricValue]:
        return self.metrics.get(self.primary)


class WorkUnit(Section):
    """The unit of work a latency times (tasks.base.UnitOfWork.summary): label, mean amount per call, rate, and the
    fixed set of examples it cycles through (utterances or prompts)."""

    label: str
    amount_unit: Optional[str] = None
    mean_amount: Optional[float] = None
    ms_per_amount: Optional[float] = None
    amount_per_s: Optional[float] = None
    utterances: Optional[int] = None
    audio_s: Optional[float] = None
    prompts: Optional[int] = None
    max_new_tokens: Optional[int] = None

    def parts(self) -> list[str]:
        """The cell's words, each an English template the table translates: "per utterance", "6.3 s audio",
        "150 ms per s audio" / "per answer", "23.7 new tokens", "23.2 new tokens/s"."""
        out = [self.label]
        if self.mean_amount is not None and self.amount_unit:
            out.append(f"{self.mean_amount:.1f} {self.amount_unit}")
            if self.ms_per_amount is not None:
                out.append(f"{self.ms_per_amount:.0f} ms per {self.amount_unit}")
            if self.amount_per_s is not None:
                out.append(f"{self.amount_per_s:.1f} {self.amount_unit}/s")
        return out

    def describe(self, translate=lambda text: text) -> str:
        """"per utterance (6.3 s audio, 150 ms per s audio)"; ``translate`` renders each part in a language."""
        label, *rest = [translate(p) for p in self.parts()]
        return f"{label} ({', '.join(rest)})" if rest else label

    def scope(self) -> Optional[str]:
        """The fixed set the unit cycles through, for the protocol note (None for a fixed-shape forward)."""
        if self.utterances:
            return f"{self.utterances} fixed utterances ({self.audio_s or 0:.1f} s audio)"
        if self.prompts:
            return f"{self.prompts} fixed prompts, ≤ {self.max_new_tokens} new tokens each"
        return None


class Latency(Section):
    median: float
    std: float = 0.0
    mean: Optional[float] = None
    min: Optional[float] = None
    max: Optional[float] = None
    p90: Optional[float] = None
    p99: Optional[float] = None
    cv: Optional[float] = None
    iterations: Optional[int] = None
    unit: str = "ms"
    warnings: list[str] = Field(default_factory=list)
    samples: list[float] = Field(default_factory=list)
    warmup_ms: list[float] = Field(default_factory=list)
    timer: str = "perf_counter"
    first_call_ms: Optional[float] = None
    contention: Optional[dict[str, Any]] = None  # older records only: now the record's own ``contention`` section
    unit_of_work: Optional[WorkUnit] = None  # what one timed call did (absent in records before task-level timing)


class Contention(Section):
    """What other processes did on our cores while latency was timed (measures/contention.py; the probe is
    hardware/contention.py). Older records kept this dict inside the latency section (``Latency.contention``)."""

    available: bool = False
    busy: Optional[bool] = None
    cores: list[int] = Field(default_factory=list)
    others_cores_avg: Optional[float] = None
    others_fraction: Optional[float] = None
    threshold_fraction: Optional[float] = None
    window_s: Optional[float] = None
    warnings: list[str] = Field(default_factory=list)
    wait_idle: Optional[dict[str, Any]] = None


class Generation(Section):
    """Greedy generation speed (measures/generation.py): time to first token, decode tokens/s and, where the task
    computes it, the % of the machine's memory bandwidth the decode rate uses; each as a metric value. Older
    records kept these in ``quality.metrics`` and their protocol in ``quality.protocol``."""

    time_to_first_token: Optional[MetricValue] = None
    decode_tokens_per_s: Optional[MetricValue] = None
    decode_bandwidth_percent: Optional[MetricValue] = None
    protocol: dict[str, Any] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)


class Vram(Section):
    peak_allocated_mb: float
    peak_reserved_mb: float
    nvml_process_mb: Optional[float] = None
    unit: str = "MB"


class Memory(Section):
    ram_mb: float
    baseline_rss_mb: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    process_peak_rss_mb: Optional[float] = None
    scope: str = ""
    unit: str = "MB"
    vram: Optional[Vram] = None


class Size(Section):
    weights_bytes: int
    weights_mb: float
    artifact_bytes: Optional[int] = None
    weight_files: list[str] = Field(default_factory=list)
    parameters: Optional[int] = None
    bits_per_weight: Optional[float] = None
    in_memory_compressed: Optional[bool] = None
    unit: str = "MB (10^6 bytes)"


class Build(Section):
    status: Status
    runtime: Optional[str] = None
    size: Optional[Size] = None
    notes: list[str] = Field(default_factory=list)
    reason: Optional[str] = None
    error: Optional[str] = None


class Environment(Section):
    hostname: Optional[str] = None
    cpu: Optional[str] = None
    cpu_flags: list[str] = Field(default_factory=list)
    cores: Optional[int] = None
    torch_threads: Optional[int] = None
    torch: Optional[str] = None
    transformers: Optional[str] = None
    gpu: Optional[str] = None

    def key(self) -> str:
        """Two measurements are compared (Δ %) only when this key is equal."""
        return "|".join(str(v) for v in (self.hostname, self.cpu, self.torch_threads, self.gpu))


class Placement(Section):
    """Where and when a variant was measured: the executor, the machine (on Ray: the node's id and address, and
    what the task was granted) and the measuring process's start and end (``time.time()``), so that overlapping
    measurements on one node can be found."""

    executor: str = "local"
    hostname: Optional[str] = None
    node_id: Optional[str] = None
    node_ip: Optional[str] = None
    resources: dict[str, float] = Field(default_factory=dict)
    build_node_id: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None


class RuntimeInfo(Section):
    name: str
    threads: Optional[int] = None


class ModelInfo(Section):
    name: str
    source: dict[str, Any] = Field(default_factory=dict)
    fingerprint: Optional[str] = None  # hash of the model's files (models.sources.fingerprint); None in old records


class TaskInfo(Section):
    name: str
    version: int = 1
    primary_metric: str = ""


class DatasetInfo(Section):
    spec: Optional[str] = None
    options: dict[str, Any] = Field(default_factory=dict)
    fingerprint: Optional[str] = None  # hash of the evaluated examples' content; None in old records
    examples: Optional[int] = None  # how many examples the run used (after --limit)


class ChainLink(Section):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    version: int = 1  # the method config's version (MethodConfig.version); records before versions: 1


class ProtocolInfo(Section):
    """The run's protocol as recorded (flat; see squeezebench.protocol.Protocol for the fields and their owners)."""

    warmup_iters: int = 5
    min_iters: int = 30
    min_time_s: float = 3.0
    threads: Optional[int] = None


IMPORTED_NOTE = "imported, not measured by squeezebench"


class ImportedCell(Section):
    """One cell of a hand-written table row, as written, and the number read from it where that was unambiguous.

    ``value`` is in the column's unit (``unit``: "MB", "ms", or the metric's own); the unit as written and any
    parenthesised remark (e.g. "Tesla T4") are kept, so nothing the other team wrote is lost or reinterpreted."""

    text: str
    value: Optional[float] = None
    unit: Optional[str] = None
    written_unit: Optional[str] = None
    remark: Optional[str] = None
    metric: Optional[str] = None  # the quality column: the metric named in the cell (accuracy, perplexity, bleu)
    higher_is_better: Optional[bool] = None


class Imported(Section):
    """A row imported from someone's table (``squeezebench import-table``): numbers typed by a person, never measured
    here. Its record has ``status = "imported"``: never ``ok``, so no Δ, flag or Pareto front is computed against it."""

    note: str = IMPORTED_NOTE
    source: Optional[str] = None  # the file it was read from
    line: Optional[int] = None  # 1-based line in that file
    cells: dict[str, ImportedCell] = Field(default_factory=dict)  # by column key (weights_size_mb, cpu_ms, ...)


INF = float("inf")
# physical ranges of metric values by (unit, higher_is_better); None: either direction. An error rate (WER, CER) is a
# fraction that can pass 1 (insertions), so only higher-is-better fractions are capped at 1.
METRIC_RANGES: dict[tuple[str, Optional[bool]], tuple[float, float]] = {
    ("fraction", True): (0.0, 1.0), ("fraction", False): (0.0, INF), ("ms", None): (0.0, INF),
    ("score 0-100", None): (0.0, 100.0), ("ppl", None): (1.0, INF), ("cosine", None): (-1.0, 1.0),
    ("tokens/s", None): (0.0, INF), ("%", None): (0.0, INF), ("ratio", None): (0.0, INF),
}


class Record(Section):
    """One variant (model, method chain, device) as measured (or, with ``imported``, as typed by someone else)."""

    key: Optional[str] = None
    team: str = "local"
    model: ModelInfo
    task: TaskInfo
    dataset: DatasetInfo = Field(default_factory=DatasetInfo)
    method: str
    chain: list[ChainLink] = Field(default_factory=list)
    device: str = "cpu"
    protocol: ProtocolInfo = Field(default_factory=ProtocolInfo)
    status: Status = "pending"
    reason: Optional[str] = None
    error: Optional[str] = None
    build: Optional[Build] = None
    load_artifact_s: Optional[float] = None
    input_shapes: dict[str, list[int]] = Field(default_factory=dict)
    latency: Optional[Latency] = None
    contention: Optional[Contention] = None
    memory: Optional[Memory] = None
    quality: Optional[Quality] = None
    generation: Optional[Generation] = None
    runtime: Optional[RuntimeInfo] = None
    environment: Optional[Environment] = None
    imported: Optional[Imported] = None  # set only on rows imported from a hand-written table
    node: Optional[Placement] = None
    finished: Optional[str] = None
    source_file: Optional[str] = Field(default=None, exclude=True)  # where it was read from; never written

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def impossible(self) -> Optional[str]:
        """What in this record no measurement can produce (a negative time or size, an accuracy above 1), or None.
        A hand-edited or corrupted record is skipped on load with this reason instead of being tabled."""
        checks: list[tuple[str, Optional[float], float, float]] = []
        if self.latency is not None:
            lat = self.latency
            checks += [(f"latency.{k}", getattr(lat, k), 0.0, INF) for k in ("median", "std", "mean", "min", "max",
                                                                             "p90", "p99")]
        if self.build is not None and self.build.size is not None:
            checks += [("build.size.weights_bytes", self.build.size.weights_bytes, 0.0, INF),
                       ("build.size.weights_mb", self.build.size.weights_mb, 0.0, INF)]
        if self.memory is not None and self.memory.vram is not None:
            checks += [("memory.vram.peak_reserved_mb", self.memory.vram.peak_reserved_mb, 0.0, INF)]
        for name, m in (self.quality.metrics.items() if self.quality is not None else ()):
            lo, hi = METRIC_RANGES.get((m.unit, m.higher_is_better), METRIC_RANGES.get((m.unit, None), (-INF, INF)))
            checks += [(f"quality.metrics.{name}", m.value, lo, hi)]
        for where, value, lo, hi in checks:
            if value is not None and not lo - 1e-6 <= value <= hi + 1e-6:  # rounding passes, NaN fails
                return f"{where} is {value}, outside [{lo:g}, {hi:g}]"
        return None

    def protocol_key(self) -> str:
        """What must be equal for two records to be compared (Δ) or for one to stand in for another on resume: the
        task and its version, the data (spec, options, content fingerprint, count), every protocol setting (threads
        and input shape included), the model's fingerprint and what the task declares about its scoring (the text
        normaliser's spelling map of speech recognition). Hardware is compared separately (hardware_key)."""
        import hashlib
        import json

        protocol = {k: v for k, v in self.protocol.dump().items() if v is not None and k not in NOT_COMPARED}
        data = {k: v for k, v in self.dataset.dump().items() if v is not None}
        payload = [self.task.name, self.task.version, data, protocol, self.model.fingerprint]
        if self.task.model_extra:  # what a task declares about its scoring, e.g. speech's spelling map (older
            payload.append(self.task.model_extra)  # records declare nothing: their keys stay as they were)
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def hardware_key(self) -> str:
        """The machine a measurement ran on, as far as it changes the numbers (CPU/GPU model, threads used)."""
        return self.environment.key() if self.environment is not None else ""

    def protocol_summary(self) -> str:
        """The protocol key in words, for the label of a group of rows."""
        p, d = self.protocol.dump(), self.dataset
        shown = ", ".join(f"{k}={p[k]}" for k in ("batch_size", "seq_len", "threads", "limit", "seed") if k in p)
        data = f"{d.spec} ({d.examples} examples, data {d.fingerprint})" if d.fingerprint else f"{d.spec}"
        model = f"; model files {self.model.fingerprint}" if self.model.fingerprint else ""
        scoring = "".join(f"; {k} {v}" for k, v in sorted((self.task.model_extra or {}).items()))
        return f"{self.task.name} v{self.task.version} on {data}; {shown}{model}{scoring}"

    @property
    def device_kind(self) -> str:
        """``cpu`` or ``cuda`` (without the index)."""
        return self.device.split(":")[0]

    @property
    def size(self) -> Optional[Size]:
        """The saved variant's size, when its build succeeded."""
        return self.build.size if self.build is not None and self.build.status == "ok" else None

    def section(self, name: str, model: type[Section]) -> Optional[Section]:
        """A section added by a plug-in measure (stored as an extra field), read as its typed model."""
        raw = (self.model_extra or {}).get(name)
        if raw is None:
            return None
        return raw if isinstance(raw, model) else model.model_validate(raw)

    def set_section(self, name: str, value: Section | dict[str, Any] | None) -> None:
        """Attach a section: a known field is validated into its type, a plug-in's section is kept as given."""
        if name in type(self).model_fields:
            field_type = type(self).model_fields[name].annotation
            setattr(self, name, value if value is None or isinstance(value, Section) else
                    _validate_field(field_type, value))
        else:
            setattr(self, name, value.dump() if isinstance(value, Section) else value)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, exclude={"source_file"})


def _validate_field(annotation: Any, value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation).validate_python(value)


class RunDoc(Section):
    """One run file: a header and the records in the order they were measured."""

    schema_version: int
    team: Optional[str] = None
    started: Optional[str] = None
    command: Optional[str] = None
    records: list[Record] = Field(default_factory=list)
