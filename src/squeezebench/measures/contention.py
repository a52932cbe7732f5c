"""Contention: did other processes compete for our cores while latency was timed? A measure around the timed window.

On a shared machine a timing can be wrong by 10x without looking noisy; the probe (hardware/contention.py) reads
what the kernel counted instead of guessing from the variance. With ``--wait-idle`` the window first waits (bounded)
for an idle machine. The record's ``contention`` section holds the probe's reading; the table flags a row whose
timing ran on a busy machine. Older records kept the same reading inside their latency section: still read.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from squeezebench.hardware.contention import ContentionProbe, thread_warning, wait_idle
from squeezebench.measures.base import Measure, MeasureSession, Row, ok, register_measure
from squeezebench.results.schema import Contention, Record


@register_measure
class ContentionMeasure(Measure):
    """CPU time other processes used on this process's cores during the timed window, and whether that is a lot."""

    name = "contention"
    section = Contention
    order = 15  # before latency: its window is the one latency opens
    flag_order = 25  # before latency's "slower than original" (the order the flags were shown in before)

    @contextmanager
    def around_timing(self, session: MeasureSession) -> Iterator[None]:
        wait = session.protocol.wait_idle_s
        idle = wait_idle(wait) if wait else None
        probe = ContentionProbe().start()  # what OTHER processes did on our cores while we were timed
        yield
        record = probe.stop()
        if idle is not None:
            record["wait_idle"] = idle
        warnings = []
        if record.get("busy"):
            warnings.append(f"machine busy during timing: other processes used "
                            f"{record['others_cores_avg']:.2f} of {len(record['cores'])} cores")
        import torch

        threads = (getattr(session.executable, "info", None) or {}).get("threads") or torch.get_num_threads()
        warning = thread_warning(record, int(threads))
        if warning:
            warnings.append(warning)
        session.sections[self.name] = Contention.model_validate({**record, "warnings": warnings})

    def read(self, record: Record) -> Optional[Contention]:
        if record.contention is not None:
            return record.contention
        old = record.latency.contention if record.latency is not None else None  # records before the measure
        return Contention.model_validate(old) if old else None

    def flags(self, row: Row) -> list[str]:
        out = []
        for dev, name in (("cpu", "CPU"), ("gpu", "GPU")):
            mine = self.read(row.on(dev)) if ok(row.on(dev)) else None
            if mine is not None and mine.busy:
                out.append(f"machine busy during {name} timing (others used {mine.others_cores_avg:.2f} cores)")
        return out
