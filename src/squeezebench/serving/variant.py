"""Which measured variant a results folder holds for ``--method``, and how it is loaded for serving: the same
artifact folder and the same runtime code (``runtimes.load_artifact``) that the measure worker used, and the
evaluation examples of its record as the load test's queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.results import Record, iter_records


def find_record(results: Path, method: str, device: str = "cpu", model: Optional[str] = None,
                team: Optional[str] = None) -> Record:
    """The latest ok record of ``method`` measured on ``device`` in ``results``; one line when there is none or
    when several models or teams would match (then --model / --team choose)."""
    kind = device.split(":")[0]
    found = [r for r in iter_records([Path(results)]) if r.ok and r.device_kind == kind
             and (model is None or r.model.name == model) and (team is None or r.team == team)]
    mine = [r for r in found if r.method == method]
    if not mine:
        methods = sorted({r.method for r in found})
        hint = f"; measured there: {', '.join(methods)}" if methods else "; run `squeezebench run` first"
        raise SqueezebenchError(f"no ok {kind.upper()} record of method {method!r} in {results}{hint}")
    variants = {(r.team, r.model.name, r.protocol_key()) for r in mine}
    if len(variants) > 1:
        names = "; ".join(f"team {t}, model {m}, protocol {k}" for t, m, k in sorted(variants))
        raise SqueezebenchError(f"{len(variants)} variants of {method!r} in {results} ({names}); choose one with "
                                "--model and --team")
    return max(mine, key=lambda r: str(r.finished or ""))


@dataclass
class Served:
    """A loaded variant ready to answer requests: ``answer(bodies)`` runs one batch of checked request bodies."""

    record: Record
    results: Path
    task: Any
    protocol: Any
    bundle: Any
    executable: Any
    threads: Optional[int]
    device: str
    context: Any = None  # task.serving_context(record): what answering needs of the record besides its protocol

    def answer(self, bodies: list[dict[str, Any]]) -> list[Any]:
        return self.task.serve_batch(self.executable, self.bundle, bodies, self.protocol, self.context)

    def check(self, body: Any) -> Optional[str]:
        return self.task.check_request(body)


def protocol_of(record: Record):
    from squeezebench.protocol import Protocol

    return Protocol.from_dict(record.protocol.dump())


def load_served(results: Path, record: Record, device: str = "cpu", threads: Optional[int] = None) -> Served:
    """Load ``record``'s artifact on ``device`` with ``threads`` torch threads (default: as it was measured)."""
    import torch

    import squeezebench.methods  # noqa: F401  (registers the structure restores the PyTorch runtime replays)
    import squeezebench.runtimes  # noqa: F401
    from squeezebench.runner import artifact_dir_of
    from squeezebench.runtimes.base import load_artifact
    from squeezebench.tasks import TASKS

    task = TASKS.get(record.task.name)
    protocol = protocol_of(record)
    threads = threads or protocol.threads
    if threads:
        torch.set_num_threads(int(threads))
    artifact = artifact_dir_of(results, record)
    if not artifact.is_dir():
        raise SqueezebenchError(f"the artifact of {record.model.name} · {record.method} is not in {artifact}; "
                                "measure it again with `squeezebench run --force` into this folder")
    bundle, executable = load_artifact(artifact, task, device, threads)
    return Served(record, Path(results), task, protocol, bundle, executable, torch.get_num_threads(), device,
                  task.serving_context(record))


def evaluation_bodies(record: Record) -> list[dict[str, Any]]:
    """The request bodies of the record's evaluated examples (its dataset, --limit and seed), in order."""
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    protocol = protocol_of(record)
    task = TASKS.get(record.task.name)
    options = DatasetOptions(**record.dataset.options)
    examples = load_dataset(record.dataset.spec, options).subset(protocol.limit, protocol.seed).examples
    if not examples:
        raise SqueezebenchError(f"dataset {record.dataset.spec!r} has no examples to send as queries")
    return [task.request_of(ex) for ex in examples]
