"""`squeezebench serve` and `loadtest` end to end, against a plug-in runtime with a known service time, on
127.0.0.1 only: the queueing theory's M/D/1 p99, malformed requests, a server killed mid-test, a port in use,
graceful shutdown, the loopback rule and the serving columns."""

from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.results import iter_records
from squeezebench.serving.loadtest import LoadSettings, check_loopback, find_peak, run_loadtest
from squeezebench.serving.server import ServeOptions
from tests.serving import fake_service as fake

pytest.importorskip("mlperf_loadgen")


# --- M/D/1 theory ------------------------------------------------------------------------------------------------
def md1_wait_cdf(t: float, lam: float, d: float) -> float:
    """P(waiting time <= t) in an M/D/1 queue (Erlang's formula); exact, numerically fine for t up to ~20 d."""
    if t < 0:
        return 0.0
    total = 0.0
    for k in range(int(math.floor(t / d)) + 1):
        x = lam * (k * d - t)
        total += x ** k / math.factorial(k) * math.exp(-x)
    return (1 - lam * d) * total


def md1_sojourn_quantile(q: float, lam: float, d: float) -> float:
    """The q-quantile of the time in system (wait + service d), by bisection on the exact CDF."""
    lo, hi = d, 20 * d
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if md1_wait_cdf(mid - d, lam, d) < q else (lo, mid)
    return hi


def test_md1_formula_matches_a_simulated_queue():
    rng = np.random.default_rng(0)
    lam, d, n = 25.0, 0.02, 200_000
    gaps, wait, waits = rng.exponential(1 / lam, n), 0.0, np.empty(n)
    for i in range(n):  # Lindley's recursion
        wait = max(0.0, wait + d - gaps[i]) if i else 0.0
        waits[i] = wait
    simulated = np.percentile(waits + d, 99)
    assert md1_sojourn_quantile(0.99, lam, d) == pytest.approx(simulated, rel=0.03)
    assert md1_sojourn_quantile(0.99, lam, d) > 4 * d  # the queue, not the service, makes the tail


# --- the service ---------------------------------------------------------------------------------------------------
SERVICE_MS = 20.0
ORIGINAL = ServeOptions("original")


@pytest.fixture(scope="module")
def results(topic_csv, tmp_path_factory) -> Path:
    return fake.make_results(tmp_path_factory.mktemp("serving-results"), topic_csv, SERVICE_MS)


@pytest.fixture(scope="module")
def service(results):
    proc, url = fake.start_serve(results)
    yield url
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_poisson_load_on_a_deterministic_server_gives_the_md1_p99(service, results):
    """LoadGen's Server scenario (Poisson arrivals) at utilisation 0.5 against one batcher thread with a fixed
    service time: the measured p99 and mean of the time in system are those of an M/D/1 queue."""
    rate = 0.5 / (SERVICE_MS / 1e3)
    section, path, logs = run_loadtest(service, ORIGINAL, LoadSettings("server", 1000.0, rate, duration_s=16.0,
                                                                          min_queries=400))
    assert section.errors == 0 and section.queries >= 380
    assert section.server_stats["mean_batch"] == 1.0
    d = section.server_stats["mean_service_ms"] / 1e3  # the sleep as it really took on this machine
    assert d == pytest.approx(SERVICE_MS / 1e3, rel=0.5)
    rho = rate * d
    theory_p99 = md1_sojourn_quantile(0.99, rate, d) * 1e3
    theory_mean = d * (1 + rho / (2 * (1 - rho))) * 1e3
    # generous: a p99 of ~400 queries varies by about ±30 % between arrival sequences, and HTTP adds a little
    assert 0.6 * theory_p99 <= section.p99_ms <= 1.8 * theory_p99, (section.p99_ms, theory_p99)
    assert 0.8 * theory_mean <= section.mean_ms <= 1.4 * theory_mean, (section.mean_ms, theory_mean)
    assert section.p50_ms <= section.p90_ms <= section.p99_ms <= section.p999_ms
    # recorded: the variant's record carries the section and LoadGen's own summary; its other sections are kept
    (rec,) = list(iter_records([results]))
    assert rec.section("serving", type(section)).p99_ms == section.p99_ms
    assert rec.latency.median == SERVICE_MS  # the measured section is kept
    assert "MLPerf Results Summary" in rec.section("serving", type(section)).summary
    assert (logs / "server" / "mlperf_log_summary.txt").is_file()
    assert json.loads((logs / "serving.json").read_text())["p99_ms"] == section.p99_ms


@pytest.mark.parametrize("body, headers, status", [
    (b"not json", None, 400),
    (b'{"txt": "a"}', None, 400),
    (b'{"text": "   "}', None, 400),
    (b'["a list"]', None, 400),
    (b'{"text": 5}', None, 400),
    (b"\xff\xfe", None, 400),
    (b'{"text": "a"}', {"Content-Length": "abc"}, 400),
])
def test_malformed_requests_get_a_4xx_with_one_line(service, body, headers, status):
    got, text = fake.post(service, body, headers)
    assert got == status
    assert text.count("\n") == 1 and json.loads(text)["error"]
    assert fake.post(service, b'{"text": "The match ended 2-1."}') == (200, '{"label":"sport","index":1}\n')


def test_a_failing_batch_is_a_500_with_one_line_and_the_service_goes_on(service):
    status, text = fake.post(service, json.dumps({"text": "word " * 60}).encode())
    assert status == 500 and text.count("\n") == 1
    assert json.loads(text)["error"] == "RuntimeError: the test runtime takes at most 30 tokens"
    assert fake.post(service, b'{"text": "The match ended 2-1."}')[0] == 200


def test_wrong_paths_and_sizes(service):
    import http.client

    host, port = service[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for method, path, body, status in [("GET", "/nope", None, 404), ("POST", "/other", b"{}", 404),
                                       ("PUT", "/predict", b"{}", 405), ("GET", "/health", None, 200),
                                       ("GET", "/ready", None, 200)]:
        conn.request(method, path, body=body)  # reconnects when the service closed the connection
        response = conn.getresponse()
        assert response.status == status and response.read().count(b"\n") == 1
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(100 << 20))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/predict")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_a_port_in_use_gives_one_line_and_a_nonzero_exit(results):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "squeezebench", "--plugin", fake.PLUGIN, "serve", str(results),
                               "--method", "original", "--port", str(port)], capture_output=True, text=True,
                              env=fake.env(), cwd=fake.ROOT, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and f"port {port}" in proc.stderr and "in use" in proc.stderr
    assert proc.stdout == ""


def test_sigterm_answers_accepted_requests_then_exits(topic_csv, tmp_path):
    results = fake.make_results(tmp_path, topic_csv, 800.0)
    proc, url = fake.start_serve(results)
    answers = []
    thread = threading.Thread(target=lambda: answers.append(fake.post(url, b'{"text": "a slow one"}')))
    thread.start()
    time.sleep(0.3)  # the request is in its batch now
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    thread.join(10)
    assert answers == [(200, '{"label":"sport","index":1}\n')]
    assert proc.returncode == 0 and "stopped (signal 15)" in out


def test_a_server_killed_mid_test_is_recorded_and_nothing_is_lost(topic_csv, tmp_path):
    results = fake.make_results(tmp_path, topic_csv, 5.0)
    before = json.loads(next((results / "local").glob("run-*.json")).read_text())
    proc, url = fake.start_serve(results)
    threading.Timer(1.5, proc.kill).start()
    t0 = time.monotonic()
    section, path, logs = run_loadtest(url, ORIGINAL, LoadSettings("server", 100.0, 40.0, duration_s=5.0,
                                                                      min_queries=100, request_timeout_s=5.0))
    proc.wait()
    assert time.monotonic() - t0 < 60  # the load loop stopped by itself
    assert section.errors > 0 and section.verdict == "INVALID" and not section.meets_bound
    assert "stopped answering" in section.error
    assert any("unanswered" in r for r in section.reasons)
    after = json.loads(path.read_text())
    (rec,) = after["records"]
    assert rec["serving"]["errors"] == section.errors
    assert {k: v for k, v in rec.items() if k != "serving"} == before["records"][0]
    assert (logs / "server" / "mlperf_log_summary.txt").is_file() and (logs / "serving.json").is_file()


def test_a_results_folder_is_served_here_and_stopped_offline(topic_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", fake.env()["PYTHONPATH"])
    results = fake.make_results(tmp_path, topic_csv, 2.0)
    said: list[str] = []
    section, _, logs = run_loadtest(str(results), ServeOptions("original", max_batch=8, window_ms=5.0),
                                    LoadSettings("offline", 1000.0, duration_s=1.0, min_queries=60),
                                    plugins=[fake.PLUGIN], say=said.append)
    assert section.scenario == "offline" and section.errors == 0 and section.queries >= 60
    assert section.max_batch == 8 and section.batch_window_ms == 5.0
    assert section.server_stats["mean_batch"] > 1  # all queries at once: batching took several per call
    assert section.achieved_qps and section.qps == section.achieved_qps
    assert said[0].startswith("starting the service") and not any("exited with code" in line for line in said)
    assert "Offline" in section.summary


# --- pure parts ----------------------------------------------------------------------------------------------------
def test_load_goes_to_loopback_only():
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000", "http://127.0.0.2:80"):
        check_loopback(url)
    for url in ("http://10.1.2.3:8000", "http://example.org:80", "http://0.0.0.0:80"):
        with pytest.raises(SqueezebenchError, match="allow-remote"):
            check_loopback(url)
        with pytest.raises(SqueezebenchError, match="allow-remote"):
            run_loadtest(url, ORIGINAL, LoadSettings("server", 100.0, 10.0))
    assert check_loopback("http://10.1.2.3:8000", allow_remote=True) == ("10.1.2.3", 8000)
    with pytest.raises(SqueezebenchError, match="http://"):
        check_loopback("ftp://127.0.0.1:1")


def test_peak_search_is_bounded_and_brackets_the_capacity():
    """A service that meets the bound up to 63 QPS and sustains 100 offline: the search ends near 63, within its
    step budget."""
    from dataclasses import dataclass

    @dataclass
    class Fake:
        target_qps: float | None
        achieved_qps: float
        meets_bound: bool
        errors: int = 0

    calls = []

    def run(rate, name):
        calls.append(name)
        if rate is None:
            return Fake(None, 100.0, True)
        return Fake(rate, rate, rate <= 63.0)

    best, tests = find_peak(run, LoadSettings("server", 100.0, max_steps=8))
    assert calls[0] == "offline" and len(tests) <= 8 and len(calls) == len(tests) + 1
    assert 55.0 <= best.target_qps <= 63.0
    best, tests = find_peak(run, LoadSettings("server", 100.0, max_steps=2))
    assert len(tests) == 2 and best.target_qps == 50.0


def test_serving_columns_compare_only_like_with_like():
    from squeezebench.measures import MEASURES, Row
    from squeezebench.measures.serving import Serving
    from squeezebench.results.schema import Record

    def record(method, **serving):
        rec = Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": method,
                                     "status": "ok"})
        rec.set_section("serving", Serving(scenario="server", p99_bound_ms=100.0, **serving))
        return rec

    measure = MEASURES.get("serving")
    cols = {c.key: c for c in measure.columns}
    orig = record("original", peak_qps=40.0, search=[{"target_qps": 40.0, "meets_bound": True}], p99_ms=90.0,
                  meets_bound=True, server_threads=1)
    mine = record("int8", peak_qps=60.0, search=[{"target_qps": 60.0, "meets_bound": True}], p99_ms=95.0,
                  meets_bound=True, server_threads=1)
    row = Row("local", "m", "t", "int8", cpu=mine, original={"cpu": orig})
    assert cols["serving_qps"].cell(row) == "60.0 (+50 %)" and cols["serving_qps"].value(row) == 60.0
    assert cols["serving_p99_ms"].cell(row) == "95.0 ≤ 100"
    assert "no batching" in cols["serving_setup"].cell(row)
    batched = record("int8", peak_qps=60.0, search=[{"target_qps": 60.0}], max_batch=8, batch_window_ms=2.0,
                     server_threads=1)
    assert cols["serving_qps"].cell(Row("local", "m", "t", "int8", cpu=batched, original={"cpu": orig})) == "60.0"
    failed = record("int8", target_qps=50.0, p99_ms=400.0, errors=3, queries=10, error="refused")
    row = Row("local", "m", "t", "int8", cpu=failed)
    assert cols["serving_qps"].cell(row).startswith("— (p99 400 ms")
    assert measure.flags(row) == ["serving: 3 of 10 queries unanswered (refused)"]
    assert cols["serving_qps"].cell(Row("local", "m", "t", "int8")) == "—"


def test_loadtest_command_refuses_remote_and_rateless_server_runs(capsys, results):
    from squeezebench.cli import main

    assert main(["loadtest", "http://192.0.2.1:8000", "--method", "original", "--p99-ms", "100",
                 "--target-qps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a loopback address" in err
    assert main(["loadtest", str(results), "--method", "original", "--p99-ms", "100"]) == 2
    assert "--target-qps Q or --find-peak" in capsys.readouterr().err


def test_the_report_plots_latency_under_load_per_variant():
    from squeezebench.measures import Row
    from squeezebench.measures.serving import Serving
    from squeezebench.report.html import _load_plots
    from squeezebench.results.schema import Record

    rec = Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "int8", "status": "ok"})
    steps = [{"target_qps": q, "p99_ms": p, "meets_bound": p <= 100} for q, p in ((80, 400.0), (40, 60.0), (60, 95.0))]
    rec.set_section("serving", Serving(scenario="server", p99_bound_ms=100.0, search=steps, peak_qps=60.0))
    (plot,) = _load_plots([Row("local", "m", "t", "int8", cpu=rec), Row("local", "m", "t", "original")])
    assert plot.count("<circle") == 3 and plot.count(" dominated") == 1 and "80 QPS: p99 400 ms (over the bound)" in plot
    assert "int8 · CPU · server, 100.0, 1" in plot


def test_find_peak_runs_offline_then_a_bounded_number_of_server_tests(topic_csv, tmp_path):
    results = fake.make_results(tmp_path, topic_csv, 10.0)
    proc, url = fake.start_serve(results)
    try:
        section, _, logs = run_loadtest(url, ORIGINAL, LoadSettings("server", 100.0, duration_s=1.5, min_queries=40,
                                                                     max_steps=3), peak=True)
    finally:
        proc.kill()
        proc.wait()
    assert section.scenario == "server" and section.errors == 0
    assert (logs / "offline" / "mlperf_log_summary.txt").is_file()
    assert 1 <= len(section.search) <= 3
    assert [p.name for p in sorted(logs.glob("server-*"))] and len(list(logs.glob("server-*"))) == len(section.search)
    first = section.search[0].target_qps  # the Offline throughput: no Server rate above it is tried
    assert all(step.target_qps <= first for step in section.search)
    passed = [s.target_qps for s in section.search if s.meets_bound]
    assert section.peak_qps == (max(passed) if passed else None)
    assert section.qps == section.peak_qps


def test_queries_queued_longer_than_the_request_timeout_are_answered_not_failed(topic_csv, tmp_path):
    """Offline sends every query at once: on a 60-ms service the last of ~44 queries waits ~2.6 s, longer than a
    1-s request timeout. Waiting in the queue is what the test measures: every query is answered, none counted as
    unanswered (the Whisper original's Offline test lost 35 of 66 queries to a fixed 30-s timeout)."""
    results = fake.make_results(tmp_path, topic_csv, 60.0)
    proc, url = fake.start_serve(results)
    try:
        section, _, _ = run_loadtest(url, ORIGINAL, LoadSettings("offline", 1e5, duration_s=0.5, min_queries=40,
                                                                      request_timeout_s=1.0))
    finally:
        proc.kill()
        proc.wait()
    assert section.errors == 0 and section.queries >= 40, section.error
    assert section.max_ms > 1000  # the last queries really waited longer than the request timeout
    # the bound stays finite: a hung service still ends a test
    from squeezebench.serving.loadtest import client_timeout_s

    settings = LoadSettings("offline", 100.0, min_queries=40, request_timeout_s=1.0)
    assert client_timeout_s(settings, 90_000, 44, 60.0) == pytest.approx(2 * 44 * 0.06 + 1.0)
    assert client_timeout_s(LoadSettings("server", 100.0, 5.0, request_timeout_s=1.0), 90_000, 0, 60.0) == 91.0


def test_a_low_rate_server_test_may_run_long_enough_for_its_minimum_query_count():
    from squeezebench.serving.loadtest import server_hard_stop_ms

    # 700 queries at 4.4 QPS take 159 s on average: a 90-s cap (3x a 30-s minimum) made such a test INVALID always
    assert server_hard_stop_ms(700, 4.4) == int(1500 * 700 / 4.4) > 159_000
    assert server_hard_stop_ms(500, 100.0) == 7500  # fast rates keep the 3x-minimum-duration cap (the larger one)


def test_a_connection_the_server_closed_while_idle_is_not_an_unanswered_query():
    """At a low rate a client thread idles past the server's keep-alive timeout; the server closes that connection
    and the next request on it fails before any handler reads it (BrokenPipe or RemoteDisconnected). That is the
    client's stale connection, not an unanswered query: it is sent again on a new one, and counted as answered."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from squeezebench.serving.loadtest import Client

    handled = []

    class ShortKeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 0.2  # the server drops a connection idle for longer

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            handled.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), ShortKeepAlive)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = Client("127.0.0.1", server.server_address[1], clients=1, timeout_s=5.0)
    try:
        answered = []
        for _ in range(3):
            done = threading.Event()
            client.submit(b"{}", lambda ok: (answered.append(ok), done.set()))
            assert done.wait(10)
            time.sleep(0.6)  # idle past the server's keep-alive timeout: it has closed this thread's connection
        assert answered == [True, True, True] and client.errors == 0, client.first_error
        assert len(handled) == 3  # each query reached the handler exactly once
    finally:
        client.close()
        server.shutdown()
        server.server_close()
