"""The latency measure records what other processes did on its cores, and the table flags a busy timing."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

from squeezebench.measures.base import MeasureSession, Row
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


def _record(latency) -> Record:
    return Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "fp16", "status": "ok",
                                  "latency": latency.dump()})


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_a_competing_busy_loop_on_our_core_is_recorded_and_flagged():
    core = sorted(os.sched_getaffinity(0))[0]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        ctx = multiprocessing.get_context("fork")
        spinner = ctx.Process(target=_spin, args=(4.0,))
        spinner.start()  # inherits the one-core affinity: it competes with the timing on that core
        session = MeasureSession(task=None, protocol=Protocol(warmup_iters=1, min_iters=20, min_time_s=1.0),
                                 device="cpu", executable=Sleepy(), inputs={"x": torch.zeros(1)})
        latency = LatencyMeasure().run(session)
        spinner.join()
    finally:
        os.sched_setaffinity(0, before)
    assert latency.contention["available"] and latency.contention["cores"] == [core]
    assert latency.busy, latency.contention
    assert any(w.startswith("machine busy during timing") for w in latency.warnings)
    row = Row("t", "m", "t", "fp16", cpu=_record(latency))
    assert any(f.startswith("machine busy during CPU timing") for f in LatencyMeasure().flags(row))


def test_an_idle_window_is_not_flagged():
    latency = Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "fp16", "status": "ok",
                                     "latency": {"median": 1.0, "contention": {"available": True, "busy": False,
                                                                               "others_cores_avg": 0.01}}})
    assert not latency.latency.busy
    assert LatencyMeasure().flags(Row("t", "m", "t", "fp16", cpu=latency)) == []
