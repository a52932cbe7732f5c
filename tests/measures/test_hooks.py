"""The around hooks: the timed window latency opens is exactly its warm-up and timed calls, and stacked hooks nest
in measure order (the first is the outermost)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from squeezebench.tasks.base import Task
from squeezebench.measures.base import Measure, MeasureSession, stacked
from squeezebench.measures.latency import LatencyMeasure
from squeezebench.protocol import Protocol


class Counting:
    """An executable that counts its prepares and calls."""

    info = {"threads": 1}

    def __init__(self):
        self.prepared = self.calls = 0

    def prepare(self, inputs):
        self.prepared += 1
        return inputs

    def run_prepared(self, prepared):
        self.calls += 1


class Window(Measure):
    """Sees the executable's counters as the timed window opens and closes."""

    name = "window"

    def __init__(self, log: list):
        self.log = log

    @contextmanager
    def around_timing(self, session):
        ex = session.executable
        self.log.append(("enter", ex.prepared, ex.calls))
        yield
        self.log.append(("exit", ex.prepared, ex.calls))


def test_the_timed_window_brackets_the_warm_up_and_timed_calls_only():
    log: list = []
    ex = Counting()
    session = MeasureSession(task=Task(), protocol=Protocol(warmup_iters=2, min_iters=5, min_time_s=0.0),
                             device="cpu", executable=ex, inputs={"x": torch.zeros(1)}, measures=[Window(log)])
    latency = LatencyMeasure().run(session)
    assert log == [("enter", 1, 0), ("exit", 1, 2 + latency.iterations)]  # prepared before; every call inside


def test_stacked_hooks_nest_in_measure_order():
    log: list = []

    class Named(Measure):
        def __init__(self, tag):
            self.tag = tag

        @contextmanager
        def around_load(self, session):
            log.append(f"enter {self.tag}")
            yield
            log.append(f"exit {self.tag}")

    session = MeasureSession(task=None, protocol=None, device="cpu")
    with stacked([Named("a"), Named("b")], "around_load", session):
        log.append("load")
    assert log == ["enter a", "enter b", "load", "exit b", "exit a"]
    with stacked([Measure()], "around_measurement", session):  # the base hooks do nothing
        pass
