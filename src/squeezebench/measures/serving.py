"""Serving under load: what ``squeezebench loadtest`` measured of a served variant (MLPerf LoadGen's Server or
Offline scenario against ``squeezebench serve``), stored as the variant record's ``serving`` section.

It is not measured by the worker (``phase = "loadtest"``): the load test attaches it to the record of the variant it
drove. Two serving results are compared (Δ) only when their ``key()`` is equal: scenario, latency bound, batching,
server threads, device and where client and server ran.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from squeezebench.measures.base import Column, Measure, pct, register_measure
from squeezebench.results.schema import Record, Section

ONE_MACHINE = "client and server on one machine (loopback)"


class ServingStep(Section):
    """One LoadGen test of a peak search: its target rate and what it gave."""

    target_qps: float
    achieved_qps: Optional[float] = None
    p99_ms: Optional[float] = None
    meets_bound: bool = False
    verdict: str = "INVALID"
    errors: int = 0


class Serving(Section):
    """One load test of a served variant (latencies in ms from LoadGen's issue to the answer, client included)."""

    scenario: str  # "server" (Poisson arrivals) or "offline" (all queries at once)
    p99_bound_ms: float
    target_qps: Optional[float] = None  # the Server scenario's arrival rate (the last one tested with --find-peak)
    max_batch: int = 1
    batch_window_ms: float = 0.0
    server_threads: Optional[int] = None
    device: str = "cpu"
    placement: str = ONE_MACHINE
    url: Optional[str] = None
    queries: int = 0
    errors: int = 0  # queries the service did not answer (connection refused, 5xx, timeout)
    error: Optional[str] = None  # the first of them, in one line
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    p999_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    max_ms: Optional[float] = None
    achieved_qps: Optional[float] = None  # LoadGen's completed samples per second (Offline: samples per second)
    meets_bound: bool = False  # p99 within the bound and every query answered
    verdict: str = "INVALID"  # LoadGen's validity, made INVALID when any query failed
    reasons: list[str] = Field(default_factory=list)  # why it is not VALID
    peak_qps: Optional[float] = None  # --find-peak: the highest tested rate that met the bound
    search: list[ServingStep] = Field(default_factory=list)
    loadgen_version: Optional[str] = None
    log_dir: Optional[str] = None  # LoadGen's logs (mlperf_log_summary.txt, ...) of every test
    summary: Optional[str] = None  # LoadGen's summary log of the last test, as written
    server_stats: dict[str, Any] = Field(default_factory=dict)  # the service's own count of batches and busy time
    started: Optional[str] = None
    finished: Optional[str] = None

    def key(self) -> str:
        """What must be equal for two load tests to be compared."""
        return "|".join(str(v) for v in (self.scenario, self.p99_bound_ms, self.max_batch, self.batch_window_ms,
                                          self.server_threads, self.device, self.placement))

    @property
    def qps(self) -> Optional[float]:
        """The rate this test stands for: the peak meeting the bound when searched, else the achieved rate when the
        bound was met (Offline: its throughput), else None."""
        if self.search:
            return self.peak_qps
        if self.scenario == "offline" or self.meets_bound:
            return self.achieved_qps
        return None


class ServingHistory(Section):
    """The load tests a record had before its latest one (``serving`` holds the latest), oldest first: a second test
    of the same variant (e.g. with dynamic batching) never replaces the first one's result."""

    tests: list[Serving] = Field(default_factory=list)


SERVING_HISTORY = "serving_history"


def serving_history(record: Optional[Record]) -> list[Serving]:
    """Every load test of the record, oldest first, the latest (the ``serving`` section) last."""
    if record is None:
        return []
    history = record.section(SERVING_HISTORY, ServingHistory)
    latest = record.section("serving", Serving)
    return (history.tests if history is not None else []) + ([latest] if latest is not None else [])


def serving_of(record: Optional[Record]) -> Optional[Serving]:
    return SERVING.read(record) if record is not None and record.ok else None


def _pick(row) -> tuple[Optional[str], Optional[Serving]]:
    """The row's serving result (CPU first) and its device."""
    for dev in ("cpu", "gpu"):
        section = serving_of(row.on(dev))
        if section is not None:
            return dev, section
    return None, None


def _original(row, dev: str, mine: Serving) -> Optional[Serving]:
    """The original's serving result on the same device, when it was load-tested the same way."""
    ref = row.original.get(dev)
    theirs = serving_of(ref) if ref is not None and not row.is_original else None
    return theirs if theirs is not None and theirs.key() == mine.key() else None


def _qps_cell(row) -> str:
    dev, s = _pick(row)
    if s is None:
        return "—"
    if s.qps is None:
        return f"— (p99 {s.p99_ms:.0f} ms > {s.p99_bound_ms:g})" if s.p99_ms is not None else "—"
    orig = _original(row, dev, s)
    delta = f" ({pct(s.qps, orig.qps)})" if orig is not None and orig.qps else ""
    return f"{s.qps:.1f}{delta}"


def _p99_cell(row) -> str:
    _, s = _pick(row)
    return f"{s.p99_ms:.1f} ≤ {s.p99_bound_ms:g}" if s is not None and s.p99_ms is not None and s.meets_bound else (
        f"{s.p99_ms:.1f} > {s.p99_bound_ms:g}" if s is not None and s.p99_ms is not None else "—")


def _setup_cell(row) -> str:
    dev, s = _pick(row)
    if s is None:
        return "—"
    batch = f"batch ≤ {s.max_batch} / {s.batch_window_ms:g} ms" if s.max_batch > 1 else "no batching"
    return f"{s.scenario} {dev.upper()}, {batch}, {s.server_threads or '?'} threads: {s.verdict}"


def _value(attr: str):
    def value(row):
        _, s = _pick(row)
        return getattr(s, attr) if s is not None else None
    return value


@register_measure
class ServingMeasure(Measure):
    """Throughput at a p99 latency bound under MLPerf LoadGen (`squeezebench loadtest`)."""

    name = "serving"
    section = Serving
    phase = "loadtest"  # attached by the load test, never run by the measure worker
    order = 90
    columns = (
        Column("serving_qps", {"en": "Serving QPS at p99 bound", "ru": "Сервинг QPS при p99"}, "queries/s",
               _qps_cell, _value("qps"), position=90),
        Column("serving_p99_ms", {"en": "Serving p99 (ms)", "ru": "Сервинг p99 (мс)"}, "ms", _p99_cell,
               _value("p99_ms"), position=91),
        Column("serving_setup", {"en": "Serving setup", "ru": "Сервинг: условия"}, "", _setup_cell,
               _value("verdict"), position=92),
    )

    def flags(self, row) -> list[str]:
        _, s = _pick(row)
        if s is None or not s.errors:
            return []
        return [f"serving: {s.errors} of {s.queries} queries unanswered ({s.error})"]


SERVING = ServingMeasure()
