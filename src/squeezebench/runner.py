"""Plan and run variants: each (model, method, device) is built and measured in fresh subprocesses.

The parent blocks on each child (no polling while it is measured), reads the kernel's accounting of the
child's peak RSS afterwards (wait4), and writes every record to the run file before starting the next.
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
from squeezebench.methods import METHODS, chain_spec, parse_chain
from squeezebench.models.checks import check_model_config
from squeezebench.models.sources import check_available, source_of
from squeezebench.outdir import check_team
from squeezebench.results import RunFile, iter_records
from squeezebench.tasks import TASKS, Protocol
from squeezebench.tasks.data import DatasetOptions

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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:80] or "x"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def validate(config: RunConfig) -> tuple[Any, list[dict], list[str]]:
    """Check everything that can be checked before any subprocess starts; one-line errors."""
    task = TASKS.get(config.task)
    p = config.protocol
    for name in ("batch_size", "seq_len", "eval_batch_size", "min_iters", "ppl_window", "ppl_stride",
                 "gen_new_tokens", "calibration_samples"):
        if getattr(p, name) <= 0:
            raise SqueezebenchError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(p, name)}")
    if p.limit is not None and p.limit <= 0:
        raise SqueezebenchError(f"--limit must be a positive number, got {p.limit}")
    if p.threads is not None and p.threads <= 0:
        raise SqueezebenchError(f"--threads must be a positive number, got {p.threads}")
    if p.warmup_iters < 0 or p.min_time_s < 0:
        raise SqueezebenchError("--warmup and --min-time must not be negative")
    if not config.models:
        raise SqueezebenchError("no model given; pass --model")
    sources = [source_of(m, config.trust_remote_code, config.tokenizer) for m in config.models]
    for source in sources:
        check_available(source)
        check_model_config(source, p.seq_len)
    methods = [chain_spec(parse_chain(m)) for m in config.methods]
    for d in config.devices:
        if d.split(":")[0] not in ("cpu", "cuda"):
            raise SqueezebenchError(f"unknown device {d!r}; use cpu or cuda (or cuda:N)")
    check_team(config.team)
    if config.dataset is None:
        config.dataset = task.default_dataset
    # datasets are loaded here once, so a bad dataset fails before any variant runs
    from squeezebench.tasks.data import load_dataset

    ds = load_dataset(config.dataset, config.dataset_options).subset(p.limit, p.seed)
    if task.name in ("text-classification", "sentence-embedding", "image-classification"):
        if any("label" not in ex for ex in ds.examples):
            raise SqueezebenchError(f"dataset {config.dataset!r} has no labels, which {task.name} needs "
                                    "(pass --label-column)")
    if task.name != "image-classification" and "text" not in ds.examples[0]:
        raise SqueezebenchError(f"dataset {config.dataset!r} has no text, which {task.name} needs")
    if task.name == "image-classification" and "image" not in ds.examples[0]:
        raise SqueezebenchError(f"dataset {config.dataset!r} has no images, which image-classification needs")
    return task, sources, methods


class Runner:
    def __init__(self, config: RunConfig, progress: Callable[[str], None] = lambda s: None):
        self.config = config
        self.progress = progress
        self.task, self.sources, self.methods = validate(config)
        self.out = Path(config.out)
        self.records: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------------------
    def _protocol_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config.protocol)

    def _key(self, source: dict, method: str, device: str) -> str:
        return _digest({"source": source.get("id") or source.get("path") or source.get("target"),
                        "task": self.task.name, "task_version": self.task.version, "dataset": self.config.dataset,
                        "dataset_options": dataclasses.asdict(self.config.dataset_options),
                        "method": method, "device": device, "protocol": self._protocol_dict()})

    def _done_keys(self) -> dict[str, dict]:
        if self.config.force or not (self.out / self.config.team).exists():
            return {}
        done = {}
        for rec in iter_records([self.out / self.config.team]):
            if rec.get("status") in ("ok", "skipped") and rec.get("key"):
                done[rec["key"]] = rec
        return done

    def _job(self, source: dict, method: str, device: str, artifact_dir: Path, reference: Path) -> dict:
        return {"source": source, "task": self.task.name, "dataset": self.config.dataset,
                "dataset_options": dataclasses.asdict(self.config.dataset_options), "protocol": self._protocol_dict(),
                "method": method, "device": device, "build_device": device, "artifact_dir": str(artifact_dir),
                "reference_path": str(reference), "is_original": method == "original"}

    def _spawn(self, phase: str, job: dict, log_path: Path) -> tuple[dict, dict]:
        """Run one phase in a fresh interpreter; block until it ends; return (result, os accounting)."""
        return isolation.spawn(phase, job, log_path, self.config.timeout_s)

    # ---------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Measure every variant, holding --out for this run alone (checked writable before the first build)."""
        with outdir.claim(self.out, self.config.team):
            return self._run_all()

    def _run_all(self) -> list[dict[str, Any]]:
        started = datetime.now(timezone.utc)
        run_path = self.out / self.config.team / f"run-{started.strftime('%Y%m%dT%H%M%S%fZ')}.json"
        done = self._done_keys()
        run_file: Optional[RunFile] = None
        total = len(self.sources) * len(self.methods) * len(self.config.devices)
        i = 0
        for source in self.sources:
            # the original first, so that the others can be compared with it
            methods = sorted(self.methods, key=lambda m: m != "original")
            for method in methods:
                build_key = _digest([source.get("id") or source.get("path") or source.get("target"), method,
                                     self.config.dataset, self._protocol_dict()])
                artifact_dir = self.out / "artifacts" / _slug(source["name"]) / f"{_slug(method)}-{build_key}"
                reference = self.out / "references" / f"{_slug(source['name'])}-{self._key(source, 'original', 'cpu')}.npz"
                build: Optional[dict] = None
                for device in self.config.devices:
                    i += 1
                    label = f"[{i}/{total}] {source['name']} · {method} · {device}"
                    key = self._key(source, method, device)
                    if key in done and not _reference_lost(done[key]):
                        self.progress(f"{label}: already measured ({done[key]['status']}), skipped (use --force to redo)")
                        self.records.append(done[key])
                        continue
                    record = self._base_record(source, method, device, key)
                    log_path = self.out / "logs" / f"{_slug(source['name'])}-{_slug(method)}-{_slug(device)}.log"
                    if build is None:
                        self.progress(f"{label}: building the variant (load, compress, save)...")
                        job = self._job(source, method, "cpu", artifact_dir, reference)
                        job["build_device"] = _build_device(method)
                        build, acct = self._spawn("build", job, log_path)
                        build["os"] = acct
                    record["build"] = build
                    if build["status"] == "ok" and device.startswith("cuda") and not _cuda_available():
                        record.update(status="skipped", reason="no CUDA device visible to PyTorch")
                    elif build["status"] != "ok":
                        record.update(status=build["status"], reason=build.get("reason"), error=build.get("error"))
                    else:
                        self.progress(f"{label}: measuring (latency, memory, quality)...")
                        result, acct = self._spawn("measure", self._job(source, method, device, artifact_dir, reference),
                                                   log_path)
                        record.update(result)
                        if result.get("status") == "ok":
                            record["memory"]["os_child_maxrss_mb"] = acct["child_maxrss_mb"]
                            record["memory"]["parent_peak_rss_at_spawn_mb"] = acct["parent_peak_rss_at_spawn_mb"]
                        record["os"] = acct
                    record["finished"] = datetime.now(timezone.utc).isoformat()
                    if run_file is None:
                        run_file = RunFile(run_path, self._header(started))
                    run_file.add(record)
                    self.records.append(record)
                    self.progress(f"{label}: {_summary(record)}")
        return self.records

    def _header(self, started: datetime) -> dict[str, Any]:
        return {"team": self.config.team, "started": started.isoformat(), "command": self.config.command,
                "task": self.task.describe(), "dataset": self.config.dataset}

    def _base_record(self, source: dict, method: str, device: str, key: str) -> dict[str, Any]:
        return {"key": key, "team": self.config.team, "model": {"name": source["name"], "source": source},
                "task": self.task.describe(), "dataset": {"spec": self.config.dataset,
                                                          "options": dataclasses.asdict(self.config.dataset_options)},
                "method": method, "chain": [{"name": c.name, "params": c.params()} for c in parse_chain(method)],
                "device": device, "protocol": self._protocol_dict(), "status": "pending"}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _build_device(method: str) -> str:
    """Methods that only exist on CUDA (e.g. bitsandbytes) are built there; everything else on CPU."""
    return "cuda" if any(METHODS.get(c.name).devices == ("cuda",) for c in parse_chain(method)) else "cpu"


def _reference_lost(record: dict) -> bool:
    """A measured original whose reference file is gone or unreadable is measured again, which rewrites it."""
    path = (record.get("quality") or {}).get("reference_file")
    return bool(path) and not references.readable(Path(path))


def _summary(record: dict) -> str:
    if record["status"] == "ok":
        lat = record["latency"]
        q = record["quality"]
        primary = q["metrics"].get(q["primary"], {})
        return (f"done: {lat['median']:.2f} ms median (n={lat['iterations']}), "
                f"{q['primary']} {primary.get('value', float('nan')):.4g}, RAM {record['memory']['ram_mb']:.0f} MB")
    return f"{record['status']}: {record.get('reason') or record.get('error')}"
