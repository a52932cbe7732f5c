"""Result files: one JSON file per run, with a schema version, written atomically after every record."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from squeezebench.atomic import atomic_write_json
from squeezebench.errors import SqueezebenchError
from squeezebench.results.schema import Record, RunDoc

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def migrate(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """Bring an older result file to SCHEMA_VERSION, or refuse a newer one with what to do."""
    version = doc.get("schema_version")
    if not isinstance(version, int):
        raise SqueezebenchError(f"{path} is not a squeezebench result file (no schema_version); move it out of the results folder")
    if version < 1 or isinstance(version, bool):
        raise SqueezebenchError(f"{path} has schema_version {version!r}, which no squeezebench wrote (known: 1 to "
                                f"{SCHEMA_VERSION}); fix or remove the file")
    if version > SCHEMA_VERSION:
        raise SqueezebenchError(
            f"{path} has schema_version {version}, newer than this squeezebench reads ({SCHEMA_VERSION}); "
            "upgrade squeezebench (pip install -U squeezebench)")
    # version 1 is the first schema: nothing to migrate yet. Future migrations go here, one step each.
    return doc


def read_run(path: Path) -> RunDoc:
    """A run file, migrated and validated against the typed schema; one-line errors name the file and the field."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SqueezebenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or remove it") from None
    except (UnicodeDecodeError, RecursionError, MemoryError):
        raise SqueezebenchError(f"{path} is not a readable JSON text file; move it out of the results folder") from None
    except OSError as exc:
        raise SqueezebenchError(f"cannot read {path}: {exc.strerror}") from None
    if not isinstance(doc, dict):
        raise SqueezebenchError(f"{path} is not a squeezebench result file; move it out of the results folder")
    doc = migrate(doc, Path(path))
    try:
        run = RunDoc.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SqueezebenchError(f"{path}: field {where}: {err['msg']}; fix or remove the file") from None
    except RecursionError:
        raise SqueezebenchError(f"{path} is nested too deeply to be a result file; move it out of the results folder") from None
    kept = []
    for i, rec in enumerate(run.records):
        problem = rec.impossible()
        if problem is not None:  # one impossible record is left out; the file's other records still count
            log.warning("skipped: %s: record %d (%s / %s / %s): %s; fix or remove it", path, i, rec.model.name,
                        rec.method, rec.device, problem)
            continue
        rec.source_file = str(path)
        kept.append(rec)
    run.records = kept
    return run


def run_files(directory: Path) -> list[Path]:
    directory = Path(directory)
    if not directory.exists():
        raise SqueezebenchError(f"results folder {str(directory)!r} does not exist")
    if directory.is_file():
        return [directory]
    return sorted(p for p in directory.rglob("run-*.json") if p.is_file())


def iter_records(directories: list[Path], strict: bool = False) -> Iterator[Record]:
    """Every record of every run file below the given folders (or files), oldest run first.

    A file that cannot be read as a result file is skipped with a warning (one line naming the file and the field),
    so that one bad file never hides the others; ``strict`` raises instead.
    """
    for d in directories:
        for path in run_files(Path(d)):
            try:
                doc = read_run(path)
            except SqueezebenchError as exc:
                if strict:
                    raise
                log.warning("skipped: %s", exc)
                continue
            yield from doc.records


class RunFile:
    """The file of one run; every added record is on disk before the next variant starts."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.doc = {"schema_version": SCHEMA_VERSION, **header, "records": []}
        atomic_write_json(self.path, self.doc)

    def add(self, record: Record | dict[str, Any]) -> None:
        rec = record if isinstance(record, Record) else Record.model_validate(record)
        self.doc["records"].append(rec.dump())
        atomic_write_json(self.path, self.doc)
