"""``squeezebench serve``: one variant behind HTTP (the standard library's threading HTTP server, HTTP/1.1
keep-alive), with dynamic batching.

Every request is handled in its own thread, which checks the body (a 4xx with one line when it cannot be served)
and queues it; one batcher thread runs the model: it takes the oldest request, waits at most ``batch_window_ms`` for
more, up to ``max_batch``, answers them in one call, then takes the next. The model is therefore never run by two
threads at once (a server thread count is the torch thread count of that one batcher).

Endpoints: ``GET /health`` (the process answers), ``GET /ready`` (503 until the model is loaded and warmed up),
``GET /info`` (what is served and the batcher's counts), ``POST /predict`` (one request body as the task defines it,
e.g. ``{"text": "..."}``). SIGTERM or SIGINT stops accepting connections, answers what was accepted, then exits.
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from squeezebench.errors import SqueezebenchError

log = logging.getLogger(__name__)

MAX_BODY = 16 << 20  # bytes (a 30-s 16-bit WAV in base64 is ~1.3 MB); a larger request body gets a 413
ANSWER_TIMEOUT_S = 120.0  # a request whose batch has not run by then gets a 503
DRAIN_TIMEOUT_S = 30.0  # on SIGTERM: how long accepted requests may take to be answered


class BadRequest(Exception):
    """A request that cannot be served; ``status`` is its 4xx, the message one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    busy_s: float = 0.0
    failed_batches: int = 0

    def dump(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batches, "busy_s": round(self.busy_s, 6),
                "failed_batches": self.failed_batches,
                "mean_batch": round(self.requests / self.batches, 3) if self.batches else None,
                "mean_service_ms": round(self.busy_s / self.batches * 1e3, 3) if self.batches else None}


@dataclass
class Batcher:
    """Dynamic batching in front of ``answer(bodies) -> answers``: one thread, at most ``max_batch`` bodies per call,
    waiting at most ``window_s`` after the first one for others."""

    answer: Callable[[list[Any]], list[Any]]
    max_batch: int = 1
    window_s: float = 0.0
    stats: BatcherStats = field(default_factory=BatcherStats)

    def __post_init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="squeezebench-batcher", daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def submit(self, body: Any) -> Future:
        future: Future = Future()
        self._queue.put((body, future))
        return future

    def stop(self, timeout_s: float) -> None:
        """Answer everything queued, then end the thread (waits at most ``timeout_s``)."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _take(self) -> list[tuple[Any, Future]]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.perf_counter() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._take()
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                answers = self.answer([body for body, _ in batch])
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers to {len(batch)} requests")
            except Exception as exc:  # noqa: BLE001 - a failing batch answers its requests with a 500, never kills us
                log.exception("batch of %d failed", len(batch))
                self.stats.failed_batches += 1
                for _, future in batch:
                    future.set_exception(exc)
                continue
            finally:
                self.stats.busy_s += time.perf_counter() - t0
                self.stats.batches += 1
                self.stats.requests += len(batch)
            for (_, future), answer in zip(batch, answers):
                future.set_result(answer)


class Service:
    """What the HTTP handlers share: the check, the batcher (None until the model is ready) and what is served."""

    def __init__(self, check: Callable[[Any], Optional[str]], info: dict[str, Any]):
        self.check = check
        self.info = info
        self.batcher: Optional[Batcher] = None
        self.closing = False  # set on SIGTERM: requests already accepted are answered, new ones get a 503
        self.in_flight = 0
        self._lock = threading.Lock()

    def predict(self, body: Any) -> Any:
        if self.closing:
            raise BadRequest(503, "the service is shutting down")
        if self.batcher is None:
            raise BadRequest(503, "the model is still loading; retry when GET /ready answers 200")
        problem = self.check(body)
        if problem:
            raise BadRequest(400, problem)
        future = self.batcher.submit(body)
        try:
            return future.result(timeout=ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise BadRequest(503, f"not answered within {ANSWER_TIMEOUT_S:g} s; the service is overloaded") from None

    def track(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a load generator reuses its connections
    server_version = "squeezebench-serve"
    timeout = 60  # seconds an idle keep-alive connection is kept

    @property
    def service(self) -> Service:
        return self.server.service  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any) -> None:
        data = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")  # the client then opens a new connection for its next request
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": " ".join(str(message).split())})

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        if self.path == "/health":
            self._send(200, {"status": "alive"})
        elif self.path == "/ready":
            ready = self.service.batcher is not None
            self._send(200 if ready else 503, {"status": "ready" if ready else "loading"})
        elif self.path == "/info":
            batcher = self.service.batcher
            self._send(200, {**self.service.info, "ready": batcher is not None,
                             "stats": batcher.stats.dump() if batcher else None})
        else:
            self._error(404, f"no {self.path}; use POST /predict, GET /health, /ready or /info")

    def do_POST(self) -> None:  # noqa: N802
        self.service.track(+1)
        self._read = False
        try:
            if self.path != "/predict":
                raise BadRequest(404, f"no {self.path}; POST the request body to /predict")
            self._send(200, self.service.predict(self._body()))
        except BadRequest as exc:
            if self.service.closing or not self._read:  # an unread body would be taken for the next request
                self.close_connection = True
            self._error(exc.status, str(exc))
        except Exception as exc:  # noqa: BLE001 - one line to the client, the traceback to the log
            log.exception("request failed")
            self._error(500, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            self.service.track(-1)

    def _body(self) -> Any:
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "Content-Length is missing; send the JSON body with its length")
        try:
            n = int(length)
        except ValueError:
            raise BadRequest(400, f"Content-Length {length!r} is not a number") from None
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            raise BadRequest(413, f"the body is {n} bytes; at most {MAX_BODY} are accepted")
        raw = self.rfile.read(n)
        self._read = True
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(400, f"the body is not JSON ({exc})") from None

    def do_PUT(self) -> None:  # noqa: N802
        self.close_connection = True  # its body is not read
        self._error(405, "use POST /predict")

    do_DELETE = do_PATCH = do_PUT


class Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections do not hold the exit; accepted requests are drained first
    allow_reuse_address = True  # SO_REUSEADDR: a port held by a listener still fails (EADDRINUSE)
    request_queue_size = 256  # listen backlog: a burst of new connections must not wait for SYN retries (1 s)

    def __init__(self, host: str, port: int, service: Service):
        self.service = service
        try:
            super().__init__((host, port), Handler)
        except OSError as exc:
            if exc.errno == 98 or "in use" in str(exc).lower():
                raise SqueezebenchError(f"port {port} on {host} is already in use; stop what listens there or pass "
                                        "another --port") from None
            raise SqueezebenchError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --host "
                                    "or --port") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in str(host) else host}:{port}"


def serve(server: Server, load: Callable[[], tuple[Callable[[list[Any]], list[Any]], Any]], max_batch: int,
          window_ms: float, on_ready: Callable[[], None] = lambda: None) -> int:
    """Answer /health at once, load the model (``load() -> (answer, warm-up body)``), answer one warm-up request,
    become ready, and serve until SIGTERM/SIGINT; then drain. Returns the signal number that stopped it."""
    stopped = threading.Event()
    signum_box = [0]

    def on_signal(signum, _frame):
        signum_box[0] = signum
        stopped.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="squeezebench-http",
                              daemon=True)
    thread.start()
    try:
        answer, warm_body = load()
        if stopped.is_set():
            return signum_box[0]
        answer([warm_body])  # the first call pays one-time costs; fails here, in one line, for an unservable task
        server.service.batcher = Batcher(answer, max_batch, window_ms / 1e3)
        on_ready()
        while not stopped.wait(0.5):
            pass
        return signum_box[0]
    finally:
        server.service.closing = True
        server.shutdown()  # no new connections
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while server.service.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.service.batcher is not None:
            server.service.batcher.stop(max(deadline - time.monotonic(), 0.1))
        server.server_close()
        for s, handler in previous.items():
            signal.signal(s, handler)


def info_of(served, max_batch: int, window_ms: float) -> dict[str, Any]:
    """What GET /info says about the service: the variant, where its record is, how it batches."""
    rec = served.record
    return {"model": rec.model.name, "method": rec.method, "task": rec.task.name, "team": rec.team,
            "device": served.device, "threads": served.threads, "max_batch": max_batch, "batch_window_ms": window_ms,
            "results": str(Path(served.results).resolve()),  # absolute: a load test may run from another folder
            "record": {"file": str(Path(rec.source_file).resolve()), "key": rec.key,
                                                       "finished": rec.finished, "device": rec.device}}


@dataclass(frozen=True)
class ServeOptions:
    """Which variant of a results folder is served, and how (the options `serve` and `loadtest RESULTS` share)."""

    method: str
    device: str = "cpu"
    model: Optional[str] = None
    team: Optional[str] = None
    threads: Optional[int] = None
    max_batch: int = 1
    window_ms: float = 0.0

    def __post_init__(self):
        if self.max_batch < 1 or self.window_ms < 0:
            raise SqueezebenchError("--max-batch must be at least 1 and --batch-window-ms not negative")

    def find(self, results):
        from squeezebench.serving.variant import find_record

        return find_record(results, self.method, self.device, self.model, self.team)

    def args(self) -> list[str]:
        """The same options as `squeezebench serve` arguments."""
        out = ["--method", self.method, "--device", self.device, "--max-batch", str(self.max_batch),
               "--batch-window-ms", str(self.window_ms)]
        for flag, value in (("--model", self.model), ("--team", self.team), ("--threads", self.threads)):
            if value is not None:
                out += [flag, str(value)]
        return out


def run_serve(results, options: ServeOptions, host: str = "127.0.0.1", port: int = 8000,
              say: Callable[[str], None] = lambda s: None, warmup_body: Optional[Path] = None) -> int:
    """``squeezebench serve``: find the variant, listen (so that a port in use fails before a slow load), load it,
    serve until SIGTERM/SIGINT. ``say`` gets the lines a user reads (the first one names the URL); ``warmup_body``:
    a JSON request for the warm-up call instead of the first evaluation example (a Ray node may not have the data)."""
    from squeezebench.serving.variant import evaluation_bodies, load_served

    device, max_batch, window_ms = options.device, options.max_batch, options.window_ms
    record = options.find(results)
    service = Service(lambda body: "the model is still loading", {})
    server = Server(host, port, service)
    say(f"listening on {server.url} for {record.model.name} · {record.method} ({record.task.name}); "
        "loading the model (GET /ready answers 200 once loaded)")

    def load():
        served = load_served(results, record, device, options.threads)
        service.check = served.check
        service.info = info_of(served, max_batch, window_ms)
        if warmup_body is not None:
            try:
                body = json.loads(Path(warmup_body).read_text())
            except (OSError, ValueError) as exc:
                raise SqueezebenchError(f"--warmup-body {str(warmup_body)!r} is not a readable JSON file ({exc})") from None
            return served.answer, body
        return served.answer, evaluation_bodies(record)[0]

    def ready():
        batching = f"batches of up to {max_batch} within {window_ms:g} ms" if max_batch > 1 else "no batching"
        say(f"ready: POST {server.url}/predict ({batching}, {service.info['threads']} torch threads on {device}); "
            "SIGTERM or Ctrl-C stops it")

    signum = serve(server, load, max_batch, window_ms, ready)
    say(f"stopped (signal {signum}); every accepted request was answered")
    return 0
