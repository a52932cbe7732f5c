"""A toy measure around the artifact load (load time), written in this file alone, run end to end through the real
runner: the worker processes import this module as a plug-in, the measure's ``around_load`` brackets the load, its
section is stored in the record, and its column appears in ``table --format json`` and ``--extra-columns``."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Iterator

from squeezebench.measures.base import Column, Measure, MeasureSession, register_measure
from squeezebench.results.schema import Section

PLUGIN = __name__  # "tests.test_plugin_load_measure": what the workers import


class LoadTime(Section):
    seconds: float
    loaded_inside: bool  # nothing was loaded when the hook was entered, and the executable was there when it exited
    unit: str = "s"


def _load_time(row):
    rec = row.any
    section = rec.section("load_time", LoadTime) if rec is not None and rec.ok else None
    return section.seconds if section is not None else None


@register_measure
class LoadTimeMeasure(Measure):
    """Seconds to load the saved artifact into a runnable executable."""

    name = "load_time"
    section = LoadTime
    columns = (Column("load_s", {"en": "Load (s)", "ru": "Загрузка (s)"}, "s",
                      lambda row: "—" if _load_time(row) is None else f"{_load_time(row):.3f}", _load_time),)

    @contextmanager
    def around_load(self, session: MeasureSession) -> Iterator[None]:
        before = session.executable
        t0 = time.perf_counter()
        yield
        session.sections[self.name] = LoadTime(seconds=time.perf_counter() - t0,
                                               loaded_inside=before is None and session.executable is not None)


def test_a_load_time_measure_in_one_file_end_to_end(tmp_path, image_dir, capsys):
    from squeezebench.cli import main
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original"], dataset=f"image-dir:{image_dir}", out=tmp_path / "out", team="t",
                       protocol=fast_protocol(), plugins=[PLUGIN])
    (record,) = Runner(config).run()
    assert record.ok, record
    load = record.section("load_time", LoadTime)
    assert load is not None and load.loaded_inside  # the hook bracketed the load itself
    assert load.seconds >= record.load_artifact_s > 0  # the worker's own load timer runs inside the hook
    assert load.seconds < record.node.end - record.node.start  # ... and the hook not around the whole measurement

    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out"), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["load_s"] == load.seconds
    assert main(["--plugin", PLUGIN, "table", str(tmp_path / "out"), "--extra-columns"]) == 0
    header, _, line = capsys.readouterr().out.splitlines()[:3]
    assert "| Load (s) |" in header and f"| {load.seconds:.3f} |" in line
