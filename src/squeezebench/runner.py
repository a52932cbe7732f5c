"""Plan and run variants: each (model, method, device) is built and measured in fresh subprocesses.

The runner plans (executors.base.Unit: a variant's build job and its measure jobs per device) and an executor
carries the plan out: ``local`` (the default) one phase after another on this machine, ``ray`` on a cluster.
The parent of each worker blocks on it (no polling while it is measured), reads the kernel's accounting of the
child's peak RSS afterwards (wait4); the runner writes every record to the run file the moment it is complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from squeezebench import isolation, outdir, references
from squeezebench.errors import SqueezebenchError
from squeezebench.executors import Executor, Slot, Unit, make_executor
from squeezebench.methods import METHODS, chain_spec, parse_chain
from squeezebench.models.checks import check_model_config
from squeezebench.models.sources import check_available, fingerprint, source_of
from squeezebench.outdir import check_team
from squeezebench.plugins import load_plugins
from squeezebench.protocol import Protocol
from squeezebench.results import Record, RunFile, iter_records
from squeezebench.results.schema import Placement
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import DatasetOptions
from squeezebench.variant import Job, Variant

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    models: list[str]
    task: str
    methods: list[str] = field(default_factory=lambda: ["original"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    dataset: Optional[str] = None
    dataset_options: DatasetOptions = DatasetOptions()
    protocol: Protocol = Protocol()
    out: Path = Path("results")
    team: str = "local"
    force: bool = False
    trust_remote_code: bool = False
    tokenizer: Optional[str] = None  # for onnx: models (directory, Hugging Face id or offline:NAME)
    timeout_s: float = 3600.0
    command: str = ""
    plugins: list[str] = field(default_factory=list)  # modules registering tasks/measures/methods (squeezebench.plugins)
    executor: str = "local"  # where the phases run (squeezebench.executors): local, ray
    executor_options: dict[str, Any] = field(default_factory=dict)  # e.g. {"address": ..., "artifact_dir": ...}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:80] or "x"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _variant_key(protocol_key: str, method: str, links: list[dict[str, Any]], *more: str) -> str:
    """A digest of what makes two builds or records the same: the protocol key, the method text, ``more`` (the
    device) and the versions of the links past their first, which a chain recorded before configs had versions
    lacks, so its key is unchanged."""
    revised = {link["name"]: link["version"] for link in links if link.get("version", 1) != 1}
    return _digest([protocol_key, method, *more] + ([revised] if revised else []))


@dataclass(frozen=True)
class DataInfo:
    """The evaluated examples as recorded: their content fingerprint and count (part of the comparability key)."""

    fingerprint: str
    examples: int


def validate(config: RunConfig) -> tuple[Any, list[Variant], DataInfo]:
    """Check everything that can be checked before any subprocess starts (one-line errors); parse every method chain
    once into the run's variants."""
    config.plugins = load_plugins(config.plugins)
    task = TASKS.get(config.task)
    p = config.protocol
    p.validate()
    if config.executor == "local":
        p.check_threads()
    if not config.models:
        raise SqueezebenchError("no model given; pass --model")
    sources = [source_of(m, config.trust_remote_code, config.tokenizer) for m in config.models]
    for source in sources:
        check_available(source)
        check_model_config(source, p.seq_len, p.gen_new_tokens)
        source["fingerprint"] = fingerprint(source)
    chains = []
    for text in config.methods:
        chain = parse_chain(text)
        chains.append((chain_spec(chain), tuple(chain)))
    for d in config.devices:
        if d.split(":")[0] not in ("cpu", "cuda"):
            raise SqueezebenchError(f"unknown device {d!r}; use cpu or cuda (or cuda:N)")
    check_team(config.team)
    if config.dataset is None:
        config.dataset = task.default_dataset
    # datasets are loaded here once, so a bad dataset fails before any variant runs
    from squeezebench.tasks.data import load_dataset

    ds = load_dataset(config.dataset, config.dataset_options, task.examples_from_rows).subset(p.limit, p.seed)
    task.check_dataset(ds)
    if p.calibration_dataset:
        calibration = load_dataset(p.calibration_dataset, config.dataset_options, task.examples_from_rows)
        if not calibration.examples:
            raise SqueezebenchError(f"--calibration-dataset {p.calibration_dataset!r} has no examples; point it at "
                                    "the data to calibrate and train on")
    # the original first, so that the others can be compared with it
    chains.sort(key=lambda c: c[0] != "original")
    variants = [Variant(source, chain, label) for source in sources for label, chain in chains]
    return task, variants, DataInfo(ds.content_fingerprint(), len(ds.examples))


class Runner:
    def __init__(self, config: RunConfig, progress: Callable[[str], None] = lambda s: None):
        self.config = config
        self.progress = progress
        self.task, self.variants, self.data = validate(config)
        self.executor = make_executor(config.executor, **config.executor_options)
        self.out = Path(config.out)
        self.records: list[Record] = []

    # ---------------------------------------------------------------------------------------------
    def _protocol_dict(self) -> dict[str, Any]:
        return self.config.protocol.to_dict()

    def _key(self, variant: Variant, device: str) -> str:
        """Resume key: the comparability key of the record this variant would produce, plus method, device and the
        versions of its links past their first (not the record of an earlier version)."""
        return _variant_key(self._base_record(variant, device, None).protocol_key(), variant.label, variant.links(),
                            device)

    def _reference_key(self, variant: Variant) -> str:
        """The key of the variant's original on the CPU, which names the reference file every variant reads."""
        return _variant_key(self._base_record(variant, "cpu", None).protocol_key(), "original", [], "cpu")

    def _done_keys(self) -> dict[str, Record]:
        """ok records of earlier runs into this team folder; skipped and failed ones are tried again (a skip may
        have been caused by the environment, e.g. a package installed since)."""
        if self.config.force or not (self.out / self.config.team).exists():
            return {}
        return {rec.key: rec for rec in iter_records([self.out / self.config.team]) if rec.ok and rec.key}

    def _job(self, variant: Variant, device: str, artifact_dir: Path, reference: Path) -> Job:
        return Job(source=variant.source, task=self.task.name, dataset=self.config.dataset,
                   dataset_options=dataclasses.asdict(self.config.dataset_options), protocol=self._protocol_dict(),
                   method=variant.label, chain=variant.links(), device=device, artifact_dir=str(artifact_dir),
                   reference_path=str(reference), is_original=variant.is_original, build_device=device,
                   plugins=self.config.plugins)

    def _spawn(self, phase: str, job: Job, log_path: Path) -> tuple[dict, dict]:
        """Run one phase in a fresh interpreter (squeezebench.isolation); return (result, os accounting)."""
        return isolation.spawn(phase, dataclasses.asdict(job), log_path, self.config.timeout_s)

    # ---------------------------------------------------------------------------------------------
    def run(self) -> list[Record]:
        """Measure every variant; the output folder is claimed (checked writable, locked) before the first build."""
        with outdir.claim(self.out, self.config.team):
            return self._run_all(self.executor)

    def _run_all(self, executor: Executor) -> list[Record]:
        self._started = datetime.now(timezone.utc)
        self._run_path = outdir.inside(self.out, self.out / self.config.team /
                                       f"run-{self._started.strftime('%Y%m%dT%H%M%S%fZ')}.json", "the run file")
        self._run_file: Optional[RunFile] = None
        executor.execute(self.plan(), self)
        return self.records

    def plan(self) -> list[Unit]:
        """Every variant with its build job and, per device, its measure job; ok records of earlier runs stand in
        for their slots (resume)."""
        done = self._done_keys()
        total = len(self.variants) * len(self.config.devices)
        units, i = [], 0
        for variant in self.variants:
            source, method = variant.source, variant.label
            artifact_dir = outdir.inside_tree(self.out, artifact_dir_of(self.out, self._base_record(variant, "cpu", None)),
                                              "the artifact folder")
            reference = outdir.inside(self.out, self.out / "references" /
                                      f"{_slug(source['name'])}-{self._reference_key(variant)}.npz",
                                      "the reference file")
            unit = Unit(variant, artifact_dir, reference,
                        self._job(variant, _build_device(variant), artifact_dir, reference))
            for device in self.config.devices:
                i += 1
                key = self._key(variant, device)
                prior = done.get(key)
                unit.slots.append(Slot(
                    label=f"[{i}/{total}] {source['name']} · {method} · {device}", device=device, key=key,
                    index=i, total=total,
                    job=self._job(variant, device, artifact_dir, reference),
                    log_path=outdir.inside(self.out, self.out / "logs" /
                                           f"{_slug(source['name'])}-{_slug(method)}-{_slug(device)}.log", "the log"),
                    done=prior if prior is not None and not _reference_lost(prior) else None))
            units.append(unit)
        self._warn_lost_references(units, done)
        return units

    def _warn_lost_references(self, units: list[Unit], done: dict[str, Record]) -> None:
        """A reference an earlier run wrote that is gone, with no original measured in this run to write it again:
        the variants measured now get no agreement metrics. Said here, not left to an empty column."""
        written = {getattr(r.quality, "reference_file", None) for r in done.values() if r.quality is not None}
        remeasured = {str(u.reference) for u in units if u.variant.is_original and any(s.done is None for s in u.slots)}
        lost = sorted({str(u.reference) for u in units if not u.variant.is_original and str(u.reference) in written
                       and str(u.reference) not in remeasured and not references.readable(u.reference)
                       and any(s.done is None for s in u.slots)})
        for path in lost:
            log.warning("the original's reference %s is gone: variants measured now get no agreement with the "
                        "original; add --method original to this run to measure it again", path)

    # --- the Sink an executor reports to (executors.base.Sink) ------------------------------------
    @property
    def timeout_s(self) -> float:
        return self.config.timeout_s

    def spawn(self, phase: str, job: Job, log_path: Path) -> tuple[dict, dict]:
        return self._spawn(phase, job, log_path)

    def keep(self, slot: Slot) -> None:
        self.progress(slot.step(f"already measured ({slot.done.status}), skipped (use --force to redo)", "done"))
        self.records.append(slot.done)

    def start(self, unit: Unit, slot: Slot) -> Record:
        return self._base_record(unit.variant, slot.device, slot.key)

    def apply_build(self, record: Record, build: dict, check_cuda: bool = True) -> bool:
        record.set_section("build", build)
        built = record.build
        if built.status == "ok" and check_cuda and record.device.startswith("cuda") and not _cuda_available():
            record.status, record.reason = "skipped", "no CUDA device visible to PyTorch"
        elif built.status != "ok":
            record.status, record.reason, record.error = built.status, built.reason, built.error
        else:
            return True
        return False

    def apply_measure(self, record: Record, result: dict, accounting: dict, placement: Placement) -> None:
        for name, value in result.items():
            record.set_section(name, value)
        if record.ok and record.memory is not None:
            record.memory.os_child_maxrss_mb = accounting["child_maxrss_mb"]
            record.memory.parent_peak_rss_at_spawn_mb = accounting["parent_peak_rss_at_spawn_mb"]
        record.set_section("os", accounting)
        record.set_section("node", placement)

    def finish(self, slot: Slot, record: Record) -> None:
        record.finished = datetime.now(timezone.utc).isoformat()
        if self._run_file is None:
            self._run_file = RunFile(self._run_path, self._header(self._started))
        self._run_file.add(record)
        self.records.append(record)
        self.progress(slot.step(_summary(record), "done"))

    def _header(self, started: datetime) -> dict[str, Any]:
        return {"team": self.config.team, "started": started.isoformat(), "command": self.config.command,
                "task": self.task.describe(), "dataset": self.config.dataset}

    def _base_record(self, variant: Variant, device: str, key: Optional[str]) -> Record:
        return Record.model_validate({
            "key": key, "team": self.config.team,
            "model": {"name": variant.source["name"], "source": variant.source,
                      "fingerprint": variant.source.get("fingerprint")},
            "task": self.task.describe(), "dataset": {"spec": self.config.dataset,
                                                      "options": dataclasses.asdict(self.config.dataset_options),
                                                      "fingerprint": self.data.fingerprint,
                                                      "examples": self.data.examples},
            "method": variant.label, "chain": variant.links(), "device": device, "protocol": self._protocol_dict(),
            "status": "pending"})


def artifact_dir_of(out: Path, record: Record) -> Path:
    """Where the run into ``out`` saved the artifact of ``record``'s variant (shared by its devices; also what
    ``squeezebench serve`` loads)."""
    build_key = _variant_key(record.protocol_key(), record.method, [link.dump() for link in record.chain])
    return Path(out) / "artifacts" / _slug(record.model.name) / f"{_slug(record.method)}-{build_key}"


def _reference_lost(record: Record) -> bool:
    """A measured original whose reference file is gone or unreadable is measured again, which rewrites it."""
    path = getattr(record.quality, "reference_file", None) if record.quality is not None else None
    return bool(path) and not references.readable(Path(path))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _build_device(variant: Variant) -> str:
    """Methods that only exist on CUDA (e.g. bitsandbytes) are built there; everything else on CPU."""
    return "cuda" if any(METHODS.get(c.name).devices == ("cuda",) for c in variant.chain) else "cpu"


def _summary(record: Record) -> str:
    if record.ok:
        lat, q = record.latency, record.quality
        primary = q.primary_value
        return (f"done: {lat.median:.2f} ms median (n={lat.iterations}), "
                f"{q.primary} {primary.value if primary else float('nan'):.4g}, RAM {record.memory.ram_mb:.0f} MB")
    return f"{record.status}: {record.reason or record.error}"
