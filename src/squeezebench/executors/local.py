"""The default executor: every variant built and measured on this machine, one phase at a time."""

from __future__ import annotations

import platform
import time

from squeezebench.executors.base import Executor, Sink, Unit, register_executor
from squeezebench.results.schema import Placement


@register_executor
class LocalExecutor(Executor):
    """Sequential: a variant is built (once) before its first device is measured; nothing runs beside a timing."""

    name = "local"

    def __init__(self, **options):
        if options:
            raise TypeError(f"the local executor takes no options, got {sorted(options)}")

    def execute(self, units: list[Unit], sink: Sink) -> None:
        for unit in units:
            build = None
            for slot in unit.slots:
                if slot.done is not None:
                    sink.keep(slot)
                    continue
                record = sink.start(unit, slot)
                if build is None:
                    sink.progress(slot.step(f"building the variant (load, compress, save; its progress, e.g. a "
                                            f"distillation's loss and ETA, in {slot.log_path})...", "build"))
                    build, acct = sink.spawn("build", unit.build_job, slot.log_path)
                    build["os"] = acct
                if sink.apply_build(record, build):
                    sink.progress(slot.step("measuring (latency, memory, quality)...", "measure"))
                    start = time.time()
                    result, acct = sink.spawn("measure", slot.job, slot.log_path)
                    sink.apply_measure(record, result, acct,
                                       Placement(executor=self.name, hostname=platform.node(), start=start,
                                                 end=time.time()))
                sink.finish(slot, record)
