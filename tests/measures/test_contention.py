"""The contention measure wraps latency's timed window, records what other processes did on its cores in its own
section, and the table flags a busy timing, for new records and for older ones that kept it in latency."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from squeezebench.tasks.base import Task
from squeezebench.measures.base import MeasureSession, Row
from squeezebench.measures.contention import ContentionMeasure
from squeezebench.measures.latency import LatencyMeasure
from squeezebench.protocol import Protocol
from squeezebench.results import Record


class Sleepy:
    """An executable whose call sleeps (leaves the core to whoever wants it)."""

    info = {"threads": 1}

    def prepare(self, inputs):
        return inputs

    def run_prepared(self, prepared):
        time.sleep(0.002)


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _record(**sections) -> Record:
    return Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "fp16", "status": "ok",
                                  **{k: v.dump() if hasattr(v, "dump") else v for k, v in sections.items()}})


def _session(**protocol) -> MeasureSession:
    return MeasureSession(task=Task(), protocol=Protocol(**protocol), device="cpu", executable=Sleepy(),
                          inputs={"x": torch.zeros(1)}, measures=[ContentionMeasure(), LatencyMeasure()])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_competing_busy_loop_on_our_core_is_recorded_and_flagged():
    core = sorted(os.sched_getaffinity(0))[0]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        ctx = multiprocessing.get_context("fork")
        spinner = ctx.Process(target=_spin, args=(4.0,))
        spinner.start()  # inherits the one-core affinity: it competes with the timing on that core
        session = _session(warmup_iters=1, min_iters=20, min_time_s=1.0)
        latency = LatencyMeasure().run(session)
        spinner.join()
    finally:
        os.sched_setaffinity(0, before)
    contention = session.sections["contention"]  # stored by the measure's around_timing, not by latency
    assert latency.contention is None
    assert contention.available and contention.cores == [core]
    assert contention.busy, contention
    assert contention.window_s >= 1.0  # the whole timed window, warm-up included
    assert any(w.startswith("machine busy during timing") for w in contention.warnings)
    row = Row("t", "m", "t", "fp16", cpu=_record(latency=latency, contention=contention))
    assert any(f.startswith("machine busy during CPU timing") for f in ContentionMeasure().flags(row))


def test_an_idle_window_is_not_flagged():
    rec = _record(latency={"median": 1.0}, contention={"available": True, "busy": False, "others_cores_avg": 0.01})
    assert ContentionMeasure().flags(Row("t", "m", "t", "fp16", cpu=rec)) == []


def test_an_older_record_with_contention_inside_latency_is_still_read_and_flagged():
    old = _record(latency={"median": 1.0, "contention": {"available": True, "busy": True, "others_cores_avg": 0.5,
                                                         "cores": [0, 1]}})
    assert old.contention is None and ContentionMeasure().read(old).busy
    assert ContentionMeasure().flags(Row("t", "m", "t", "fp16", gpu=old)) == \
        ["machine busy during GPU timing (others used 0.50 cores)"]


def test_wait_idle_is_recorded_in_the_section(monkeypatch):
    from squeezebench.measures import contention

    monkeypatch.setattr(contention, "wait_idle", lambda seconds: {"idle": True, "waited_s": 0.0, "seconds": seconds})
    session = _session(warmup_iters=0, min_iters=2, min_time_s=0.0, wait_idle_s=3.0)
    LatencyMeasure().run(session)
    assert session.sections["contention"].wait_idle == {"idle": True, "waited_s": 0.0, "seconds": 3.0}
