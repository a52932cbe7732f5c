"""``squeezebench loadtest``: drive a served variant with MLPerf LoadGen and record what it sustains.

LoadGen (``mlcommons-loadgen``) decides when each query is issued (Server: Poisson arrivals at a target rate;
Offline: every query at once), enforces its minimum duration and query count, times every query from its issue to
its answer, and gives the verdict (VALID/INVALID) and the summary log. This module is the system under test it
drives: every query is one HTTP request (an evaluation example's request body) sent by a bounded pool of client
threads, each with its own keep-alive connection, to a loopback address only unless ``allow_remote``.

Every load loop stops by itself: LoadGen's query count and duration are capped (``max_query_count``,
``max_duration_ms``), every request has a timeout, and a peak search runs at most ``max_steps`` tests. Queries the
service does not answer (it died, a 5xx, a timeout) are completed as failures, counted, and make the test INVALID.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from squeezebench.errors import SqueezebenchError
from squeezebench.measures.serving import ONE_MACHINE, SERVING_HISTORY, Serving, ServingHistory, ServingStep

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
SUMMARY_FILE = "mlperf_log_summary.txt"
DETAIL_FILE = "mlperf_log_detail.txt"
# a kept-alive connection the server closed while it was idle: the request was not read, so it is sent again once
STALE_CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)  # + RemoteDisconnected
REOPEN_IDLE_S = 20.0  # below the service's keep-alive timeout (60 s, serving.server.Handler.timeout)


def check_loopback(url: str, allow_remote: bool = False) -> tuple[str, int]:
    """(host, port) of an http:// URL on this machine's loopback; one line otherwise (unless ``allow_remote``)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SqueezebenchError(f"{url!r} is not an http://HOST:PORT URL; pass e.g. http://127.0.0.1:8000")
    host = parts.hostname
    try:
        port = parts.port or 80
    except ValueError:
        raise SqueezebenchError(f"{url!r} has no valid port; pass e.g. http://127.0.0.1:8000") from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_NAMES
    if not loopback and not allow_remote:
        raise SqueezebenchError(f"{host} is not a loopback address; load goes to 127.0.0.1, localhost or [::1] "
                                "unless you pass --allow-remote for a machine you are allowed to load")
    return host, port


@dataclass(frozen=True)
class LoadSettings:
    """What one load test asks of LoadGen and of the client."""

    scenario: str  # "server" or "offline"
    p99_bound_ms: float
    target_qps: Optional[float] = None  # Server: the Poisson arrival rate; Offline: LoadGen's expected rate
    duration_s: float = 60.0  # LoadGen's minimum duration
    min_queries: int = 1024  # LoadGen's minimum query count
    clients: int = 64  # client threads (concurrent requests at most)
    request_timeout_s: float = 30.0
    max_steps: int = 6  # --find-peak: at most this many Server tests after the Offline one

    def __post_init__(self):
        if self.scenario not in ("server", "offline"):
            raise SqueezebenchError(f"unknown scenario {self.scenario!r}; use server or offline")
        if self.p99_bound_ms <= 0 or self.duration_s <= 0 or self.min_queries <= 0 or self.clients <= 0:
            raise SqueezebenchError("--p99-ms, --duration-s, --min-queries and --clients must be positive")
        if self.target_qps is not None and self.target_qps <= 0:
            raise SqueezebenchError(f"--target-qps must be positive, got {self.target_qps}")


class Client:
    """Sends request bodies to ``POST /predict`` from a bounded pool of threads (one keep-alive connection each)
    and counts what was not answered."""

    def __init__(self, host: str, port: int, clients: int, timeout_s: float):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=clients, thread_name_prefix="squeezebench-client")
        self._lock = threading.Lock()
        self.errors = 0
        self.first_error: Optional[str] = None

    def set_timeout(self, timeout_s: float) -> None:
        """How long a request may wait for its answer from now on (each test sets its own: client_timeout_s)."""
        self.timeout_s = timeout_s

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it has carried a request before. One idle for longer than
        ``REOPEN_IDLE_S`` is replaced first: the server may be closing it right now."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and time.monotonic() - self._local.last_used > REOPEN_IDLE_S:
            conn.close()
            conn = None
        if conn is not None and conn.timeout != self.timeout_s:
            conn.timeout = self.timeout_s
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout_s)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.used = False
        return conn, self._local.used

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, bytes]:
        """One request; sent once more on a new connection when a kept-alive one turns out closed by the server
        (as browsers and urllib3 do): at a low rate a client thread may idle past the server's keep-alive timeout,
        and that request never reached a handler, so counting it as unanswered would blame the service."""
        conn, reused = self._connection()
        try:
            return self._exchange(conn, method, path, body)
        except STALE_CONNECTION_ERRORS as exc:
            if not reused:
                raise
            log.debug("kept-alive connection closed by the server (%s); sending again on a new one", exc)
            self._local.conn = None
            conn, _ = self._connection()
            return self._exchange(conn, method, path, body)

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str,
                  body: Optional[bytes]) -> tuple[int, bytes]:
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        self._local.used, self._local.last_used = True, time.monotonic()
        if response.will_close:
            conn.close()
            self._local.conn = None
        return response.status, data

    def submit(self, body: bytes, done: Callable[[bool], None]) -> None:
        """Send one query in the pool; ``done(answered)`` is called exactly once."""
        def send() -> None:
            try:
                status, data = self.request("POST", "/predict", body)
                problem = None if status == 200 else f"HTTP {status}: {data.decode(errors='replace').strip()[:200]}"
            except (OSError, http.client.HTTPException) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if problem:
                with self._lock:
                    self.errors += 1
                    self.first_error = self.first_error or problem
            done(problem is None)
        self._pool.submit(send)

    def reset_errors(self) -> None:
        with self._lock:
            self.errors, self.first_error = 0, None

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def get_json(host: str, port: int, path: str, timeout_s: float = 10.0) -> tuple[int, Any]:
    """One GET on a fresh connection; (status, parsed JSON body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


# --- LoadGen ----------------------------------------------------------------------------------------------
def _loadgen():
    try:
        import mlperf_loadgen
    except ImportError:
        raise SqueezebenchError("loadtest needs MLPerf LoadGen; pip install 'squeezebench[serve]' "
                                "(mlcommons-loadgen)") from None
    return mlperf_loadgen


def read_detail_log(path: Path) -> dict[str, Any]:
    """The ``:::MLLOG {json}`` entries of LoadGen's detail log, by key (the last of each)."""
    values: dict[str, Any] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            values[entry.get("key")] = entry.get("value")
    return values


@dataclass
class TestResult:
    """One LoadGen test as read back from its logs, plus the client's count of unanswered queries."""

    settings: LoadSettings
    target_qps: Optional[float]
    log: dict[str, Any]
    summary: str
    errors: int
    first_error: Optional[str]
    log_dir: Path
    reasons: list[str] = field(default_factory=list)

    def ms(self, name: str) -> Optional[float]:
        value = self.log.get(f"result_{name}_latency_ns")
        return float(value) / 1e6 if value is not None else None

    @property
    def p99_ms(self) -> Optional[float]:
        return self.ms("99.00_percentile")

    @property
    def queries(self) -> int:
        """Samples answered or failed (an Offline test is one LoadGen query of many samples)."""
        count = self.log.get("result_query_count") or self.log.get("generated_query_count") or 0
        return int(count) * int(self.log.get("generated_samples_per_query") or 1)

    @property
    def achieved_qps(self) -> Optional[float]:
        value = self.log.get("result_completed_samples_per_sec", self.log.get("result_samples_per_second"))
        return float(value) if value is not None else None

    @property
    def meets_bound(self) -> bool:
        """Every query answered, and (Server) LoadGen's latency constraint, p99 ≤ bound, met."""
        if self.errors:
            return False
        if self.settings.scenario == "offline":
            return True
        return bool(self.log.get("result_perf_constraints_met"))

    @property
    def verdict(self) -> str:
        return "VALID" if self.log.get("result_validity") == "VALID" and not self.errors else "INVALID"

    def why_invalid(self) -> list[str]:
        reasons = []
        if self.errors:
            reasons.append(f"{self.errors} of {self.queries} queries unanswered (first: {self.first_error})")
        if self.settings.scenario == "server" and not self.log.get("result_perf_constraints_met", True):
            reasons.append(f"p99 {self.p99_ms:.1f} ms exceeds the {self.settings.p99_bound_ms:g} ms bound")
        if not self.log.get("result_min_duration_met", True):
            reasons.append("LoadGen's minimum duration not met")
        if not self.log.get("result_min_queries_met", True):
            reasons.append("LoadGen's minimum query count not met")
        if self.log.get("early_stopping_met") is False:
            reasons.append("LoadGen's early-stopping criterion not met (too few queries for a p99 claim)")
        if self.log.get("result_validity") != "VALID" and not reasons:
            reasons.append(f"LoadGen: {self.log.get('result_invalid_reason') or 'INVALID'}")
        return reasons if self.verdict != "VALID" else []


def server_hard_stop_ms(min_queries: int, target_qps: float) -> int:
    """The hard stop of a Server test that still lets ``min_queries`` Poisson arrivals at ``target_qps`` happen
    (1.5x their expected time)."""
    return int(1500 * min_queries / max(target_qps, 1e-6))


def offline_queries(settings: LoadSettings, expected_qps: float) -> int:
    """How many queries LoadGen's Offline test sends at once: max(min_query_count, expected_qps x min_duration),
    plus its 10 % margin, at most ``max_query_count``."""
    wanted = max(settings.min_queries, expected_qps * settings.duration_s)
    return min(int(math.ceil(1.1 * wanted)), settings.min_queries * 4)


def client_timeout_s(settings: LoadSettings, hard_stop_ms: int, queries: int,
                     service_ms: Optional[float]) -> float:
    """How long one request may wait for its answer in a test: waiting in the service's queue is what a load test
    measures, not a failure (a fixed 30-s timeout turned the Whisper original's Offline test, 66 queries at once
    on a 0.96-s service, into 35 "unanswered" queries). A Server test's queries are all issued by its hard stop;
    an Offline test's last query waits for every other one, twice the variant's single-request time each (its
    record's median) when known. ``request_timeout_s`` more on top, so a service that hangs still ends the test."""
    if settings.scenario == "server" or not service_ms:
        wait_s = hard_stop_ms / 1000
    else:
        wait_s = 2 * queries * service_ms / 1000
    return wait_s + settings.request_timeout_s


def run_test(client: Client, bodies: list[bytes], settings: LoadSettings, target_qps: Optional[float],
             log_dir: Path, service_ms: Optional[float] = None) -> TestResult:
    """One LoadGen test (Server at ``target_qps``, or Offline) against the service; its logs go to ``log_dir``.
    ``service_ms``: the variant's measured single-request time, which bounds how long an Offline query may wait."""
    lg = _loadgen()
    log_dir.mkdir(parents=True, exist_ok=True)
    client.reset_errors()

    def complete(sample_id: int, ok: bool) -> None:
        lg.QuerySamplesComplete([lg.QuerySampleResponse(sample_id, 0, 0)])

    def issue(samples) -> None:
        for s in samples:
            client.submit(bodies[s.index], lambda ok, sid=s.id: complete(sid, ok))

    ts = lg.TestSettings()
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(settings.duration_s * 1000)
    ts.max_duration_ms = int(settings.duration_s * 3000)  # a hard stop, whatever the rate
    ts.min_query_count = settings.min_queries
    if settings.scenario == "server":
        # ... long enough for the minimum query count at a low rate (else the test can never be VALID)
        ts.max_duration_ms = max(ts.max_duration_ms, server_hard_stop_ms(settings.min_queries, float(target_qps)))
        ts.scenario = lg.TestScenario.Server
        ts.server_target_qps = float(target_qps)
        ts.server_target_latency_ns = int(settings.p99_bound_ms * 1e6)
        ts.max_query_count = max(settings.min_queries, int(target_qps * settings.duration_s * 2) + 1)
    else:
        ts.scenario = lg.TestScenario.Offline
        # LoadGen issues max(min_query_count, expected_qps x min_duration) queries in one go: keep it at the minimum
        ts.offline_expected_qps = float(target_qps or settings.min_queries / settings.duration_s)
        ts.max_query_count = settings.min_queries * 4
    client.set_timeout(client_timeout_s(settings, ts.max_duration_ms,
                                        offline_queries(settings, ts.offline_expected_qps), service_ms))
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    log_settings = lg.LogSettings()
    log_settings.log_output = out
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(len(bodies), len(bodies), lambda indices: None, lambda indices: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, ts, log_settings)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary = (log_dir / SUMMARY_FILE).read_text(errors="replace") if (log_dir / SUMMARY_FILE).is_file() else ""
    result = TestResult(settings, target_qps if settings.scenario == "server" else None,
                        read_detail_log(log_dir / DETAIL_FILE), summary, client.errors, client.first_error, log_dir)
    result.reasons = result.why_invalid()
    return result


def find_peak(run: Callable[[Optional[float], str], TestResult], settings: LoadSettings,
              ) -> tuple[Optional[TestResult], list[TestResult]]:
    """The highest Server rate meeting the p99 bound, by a bounded bisection: an Offline test first measures what
    the service can do at all (the upper end), then at most ``max_steps`` Server tests. Returns (the best passing
    test or None, every Server test)."""
    offline = run(None, "offline")
    if offline.errors or not offline.achieved_qps:
        return None, [offline]
    lo, hi, best, tests = 0.0, offline.achieved_qps, None, []
    rate = hi
    for _ in range(settings.max_steps):
        test = run(rate, f"server-{len(tests) + 1}-{rate:.4g}qps")
        tests.append(test)
        if test.errors:  # the service stopped answering: no further test can tell anything
            break
        if test.meets_bound:
            lo, best = rate, test
        else:
            hi = rate
        if best is not None and hi - lo <= 0.05 * hi:
            break
        rate = (lo + hi) / 2
    return best, tests


# --- the service: started here for a results folder, or found at a URL ---------------------------------------
@dataclass
class Target:
    """The service under test: its address, what it serves (GET /info) and, when started here, its process."""

    host: str
    port: int
    info: dict[str, Any]
    process: Any = None

    @property
    def url(self) -> str:
        return f"http://{'[' + self.host + ']' if ':' in self.host else self.host}:{self.port}"


def wait_ready(host: str, port: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> dict[str, Any]:
    """Poll GET /ready until 200 (the model is loaded), then return GET /info."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise SqueezebenchError("the service exited before it was ready; see its log")
        try:
            status, _ = get_json(host, port, "/ready", timeout_s=5.0)
            if status == 200:
                return get_json(host, port, "/info")[1]
        except (OSError, http.client.HTTPException, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise SqueezebenchError(f"the service at {host}:{port} was not ready within {timeout_s:g} s")


def start_service(results: Path, options, log_path: Path, plugins: list[str], ready_timeout_s: float = 900.0,
                  host: str = "127.0.0.1", extra_args: Optional[list[str]] = None) -> Target:
    """``squeezebench serve ... --host HOST --port 0`` in a subprocess; returns once it is ready."""
    import subprocess
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "squeezebench", *[a for p in plugins for a in ("--plugin", p)], "serve",
           str(results), *options.args(), *(extra_args or []), "--host", host, "--port", "0"]
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    host_port = None
    deadline = time.monotonic() + ready_timeout_s
    for line in proc.stdout:  # the first line names the address; loading the model follows
        _append(log_path, line)
        match = re.search(r"http://(\[[^\]]+\]|[^:/\s]+):(\d+)", line)
        if match:
            host_port = match.group(1).strip("[]"), int(match.group(2))
            break
        if time.monotonic() > deadline:
            break
    if host_port is None:
        proc.wait(timeout=30)
        raise SqueezebenchError(f"the service did not start (exit code {proc.returncode}); its log: {log_path}")
    # its stdout (ready, stopped) is drained into the log beside its stderr
    threading.Thread(target=lambda: [_append(log_path, line) for line in proc.stdout], daemon=True).start()
    try:
        info = wait_ready(*host_port, ready_timeout_s, alive=lambda: proc.poll() is None)
    except BaseException:
        stop_service(proc)
        raise
    return Target(host_port[0], host_port[1], info, proc)


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)


def stop_service(proc, timeout_s: float = 40.0) -> Optional[int]:
    """SIGTERM (the service drains and exits), then SIGKILL after ``timeout_s``; its exit code."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# --- one load test, end to end -------------------------------------------------------------------------------
def loadtest(target: Target, record, bodies: list[dict[str, Any]], settings: LoadSettings, peak: bool,
             log_dir: Path) -> Serving:
    """Run the test(s) and return the ``serving`` section; LoadGen's logs stay in ``log_dir``."""
    lg_version = None
    encoded = [json.dumps(b).encode() for b in bodies]
    client = Client(target.host, target.port, settings.clients, settings.request_timeout_s)
    service_ms = record.latency.median if record.latency is not None else None
    started = datetime.now(timezone.utc).isoformat()
    tests: list[TestResult] = []

    def run(rate: Optional[float], name: str) -> TestResult:
        test = run_test(client, encoded, LoadSettings(**{**settings.__dict__, "scenario": name.split("-")[0]}),
                        rate, log_dir / name, service_ms)
        log.info("%s: p99 %s ms, %s QPS, %s", name, test.p99_ms, test.achieved_qps, test.verdict)
        tests.append(test)
        return test

    try:
        if peak:
            best, searched = find_peak(run, settings)
        else:
            best, searched = run(settings.target_qps, "server" if settings.scenario == "server" else "offline"), []
    finally:
        client.close()
    last = tests[-1]
    shown = best if best is not None else last
    lg_version = last.log.get("loadgen_version")
    errors = sum(t.errors for t in tests)
    first_error = next((t.first_error for t in tests if t.first_error), None)
    stats = _server_stats(target)
    if stats is None and errors:
        first_error = f"the service stopped answering during the test ({first_error})"
    info = target.info
    return Serving(
        scenario="server" if peak else settings.scenario, p99_bound_ms=settings.p99_bound_ms,
        target_qps=shown.target_qps, max_batch=int(info.get("max_batch", 1)),
        batch_window_ms=float(info.get("batch_window_ms", 0.0)), server_threads=info.get("threads"),
        device=str(info.get("device", record.device)),
        placement=ONE_MACHINE if target.process is not None or _is_loopback(target.host) else
        f"client on this machine, server at {target.host}",
        url=target.url, queries=sum(t.queries for t in tests), errors=errors, error=first_error,
        p50_ms=shown.ms("50.00_percentile"), p90_ms=shown.ms("90.00_percentile"), p99_ms=shown.p99_ms,
        p999_ms=shown.ms("99.90_percentile"), mean_ms=shown.ms("mean"), max_ms=shown.ms("max"),
        achieved_qps=shown.achieved_qps, meets_bound=shown.meets_bound and not errors,
        verdict="INVALID" if errors else shown.verdict,
        reasons=sorted({r for t in ([shown] + [t for t in tests if t.errors]) for r in t.reasons}),
        peak_qps=(best.target_qps if best is not None else None) if peak else None,
        search=[ServingStep(target_qps=t.target_qps, achieved_qps=t.achieved_qps, p99_ms=t.p99_ms,
                            meets_bound=t.meets_bound, verdict=t.verdict, errors=t.errors)
                for t in (searched if peak else []) if t.target_qps is not None],
        loadgen_version=lg_version, log_dir=str(log_dir), summary=shown.summary or None,
        server_stats=stats or {}, started=started, finished=datetime.now(timezone.utc).isoformat())


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def _server_stats(target: Target) -> Optional[dict[str, Any]]:
    """The batcher's counts after the test (None when the service no longer answers)."""
    try:
        status, info = get_json(target.host, target.port, "/info", timeout_s=5.0)
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        return None
    return (info or {}).get("stats") if status == 200 else None


# --- the record ------------------------------------------------------------------------------------------------
def log_dir_for(results: Path, record) -> Path:
    """Where a load test of ``record``'s variant keeps LoadGen's logs: beside the run's artifacts, one folder per
    test (``results/serving/MODEL/METHOD-KEY/STAMP``)."""
    from squeezebench.runner import artifact_dir_of

    artifact = artifact_dir_of(results, record)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(results) / "serving" / artifact.parent.name / artifact.name / stamp


def attach(results: Path, record, section: Serving) -> Path:
    """Write ``section`` as the ``serving`` section of ``record`` in its run file (atomically, holding the results
    folder's lock so that no run writes it meanwhile). Returns the file."""
    from squeezebench import outdir
    from squeezebench.results import read_run
    from squeezebench.results.store import atomic_write_json

    path = Path(record.source_file)
    with outdir.claim(Path(results), record.team):
        doc = read_run(path)
        same = [r for r in doc.records if (r.key, r.method, r.device, r.finished) ==
                (record.key, record.method, record.device, record.finished)]
        if not same:
            raise SqueezebenchError(f"the record of {record.model.name} · {record.method} is no longer in {path}")
        target = same[-1]
        earlier = target.section("serving", Serving)
        if earlier is not None:  # kept: the latest test is shown, none is lost
            history = target.section(SERVING_HISTORY, ServingHistory) or ServingHistory()
            target.set_section(SERVING_HISTORY, ServingHistory(tests=history.tests + [earlier]))
        target.set_section("serving", section)
        atomic_write_json(path, doc.dump())
    return path


def _record_at(info: dict[str, Any]):
    """The record a running service says it serves (GET /info), read from its run file."""
    from squeezebench.results import read_run

    ref = info.get("record") or {}
    if not ref.get("file") or not Path(ref["file"]).is_file():
        raise SqueezebenchError("the service does not say which record it serves (GET /info); is it squeezebench "
                                "serve on this machine?")
    for rec in read_run(Path(ref["file"])).records:
        if (rec.key, rec.finished, rec.device) == (ref.get("key"), ref.get("finished"), ref.get("device")):
            return rec
    raise SqueezebenchError(f"the record the service serves is no longer in {ref['file']}")


def run_loadtest(target_spec: str, options, settings: LoadSettings, peak: bool = False,
                 allow_remote: bool = False, plugins: Optional[list[str]] = None,
                 say: Callable[[str], None] = lambda s: None) -> tuple[Serving, Path, Path]:
    """``squeezebench loadtest URL|RESULTS``: a URL names a running service (loopback only unless
    ``allow_remote``; it must serve ``options.method``); a results folder has the service started here on 127.0.0.1
    with ``options`` (server.ServeOptions) and stopped afterwards. Returns (the section, the run file it was written
    into, LoadGen's log folder)."""
    method = options.method
    if settings.scenario == "server" and not peak and settings.target_qps is None:
        raise SqueezebenchError("the server scenario needs --target-qps Q or --find-peak")
    started_here = not re.match(r"^[a-z]+://", target_spec)
    if started_here:
        results = Path(target_spec)
        if not results.is_dir():
            raise SqueezebenchError(f"{target_spec!r} is neither an http:// URL nor a results folder")
        probe = options.find(results)
        log_dir = log_dir_for(results, probe)
        say(f"starting the service for {probe.model.name} · {method} on 127.0.0.1 (log {log_dir / 'serve.log'})")
        target = start_service(results, options, log_dir / "serve.log", plugins or [])
    else:
        host, port = check_loopback(target_spec, allow_remote)
        info = wait_ready(host, port, timeout_s=30.0)
        target = Target(host, port, info)
        if info.get("method") != method:
            raise SqueezebenchError(f"{target_spec} serves method {info.get('method')!r}, not {method!r}")
        say(f"{target_spec} serves {info.get('model')} · {method} on {info.get('device')} with its own settings: "
            f"max batch {info.get('max_batch')}, window {info.get('batch_window_ms')} ms, {info.get('threads')} "
            "threads (these are recorded)")
        results = Path(info["results"])
        log_dir = log_dir_for(results, _record_at(info))
    try:
        record = _record_at(target.info)
        from squeezebench.serving.variant import evaluation_bodies

        bodies = evaluation_bodies(record)
        say(f"LoadGen {'peak search' if peak else settings.scenario} against {target.url} with {len(bodies)} "
            f"evaluation examples as queries; logs in {log_dir}")
        section = loadtest(target, record, bodies, settings, peak, log_dir)
    finally:
        if target.process is not None:
            code = stop_service(target.process)
            if code not in (0, None):
                say(f"the service exited with code {code}; see {log_dir / 'serve.log'}")
    kept = log_dir / "serving.json"
    kept.write_text(json.dumps(section.dump(), indent=1))  # kept even when the record cannot be written now
    try:
        return section, attach(results, record, section), log_dir
    except SqueezebenchError as exc:
        raise SqueezebenchError(f"{exc} (this load test's result is kept in {kept})") from None
