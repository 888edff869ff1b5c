"""A small, real model server: the route process that rollwise's demo and end-to-end tests deploy.

Run it as `python -m rollwise.examples.model_server --port 8001 --version v1`. It serves a bag-of-words
sentiment classifier (logistic regression: one weight per word plus a bias, sigmoid of the sum) whose
weights ship beside this file in `sentiment_weights.json`; tests/examples/sentiment_training.py trained
them on a few dozen hand-written sentences and can reproduce the file.

HTTP (HTTP/1.1 with keep-alive, one thread per connection, so a proxy such as Traefik can reuse
connections and many requests run at once):

    POST /predict  {"text": "..."}  -> 200 {"label": "positive"|"negative", "score": p, "version": v}
                                       400 {"error": ...} on a bad body (413 when too large)
    GET  /healthz                   -> 200 {"status": "ok"}, 503 once unhealthy or while draining
    GET  /version                   -> 200 {"version": v}

`score` is the model's probability for the returned label (0.5 to 1).

Misbehaviour on purpose, to exercise rollouts and rollbacks: `--fail-start` exits with status 1 shortly
after starting without ever listening; `--unhealthy-after S` turns /healthz to 503 S seconds after the
server started listening (predictions keep working); `--startup-delay S` sleeps before listening;
`--latency S` adds S seconds to every prediction (to make in-flight requests observable).

SIGTERM (or SIGINT) is graceful: the listening socket closes, requests in flight finish (their responses
say `Connection: close`), idle keep-alive connections are closed, and the process exits 0. Only start and
stop are logged (one line each, to stderr); requests are not.

Who calls it: people and the rollwise demo through the CLI, LocalRuntime (as a route's argv) and tests.
It must not import anything from rollwise beyond this package: it is a stand-alone program that only
happens to ship with rollwise.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import FrameType
from typing import Any

WEIGHTS_RESOURCE = "sentiment_weights.json"
MAX_BODY_BYTES = 64 * 1024
IDLE_KEEPALIVE_SECONDS = 120.0
"""An idle keep-alive connection is closed after this long (above Traefik's 90 s idle timeout, so the
proxy, not the server, normally closes it and never races a request against our close)."""
READ_TIMEOUT_SECONDS = 30.0
"""Once a request has begun, each read of it must progress within this time."""
FAIL_START_SECONDS = 0.2

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercased words (letters, with an inner apostrophe kept: "didn't"). Training uses this too."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, slots=True)
class SentimentModel:
    """Logistic regression over binary word features: p(positive) = sigmoid(bias + sum of weights)."""

    bias: float
    weights: Mapping[str, float]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> SentimentModel:
        bias = document["bias"]
        weights = document["weights"]
        if not isinstance(bias, int | float) or not isinstance(weights, dict):
            raise ValueError("weights document needs a numeric 'bias' and a 'weights' object")
        if not all(isinstance(k, str) and isinstance(v, int | float) for k, v in weights.items()):
            raise ValueError("'weights' must map words to numbers")
        return cls(bias=float(bias), weights={k: float(v) for k, v in weights.items()})

    @classmethod
    def load_packaged(cls) -> SentimentModel:
        text = resources.files(__package__ or "rollwise.examples").joinpath(WEIGHTS_RESOURCE).read_text()
        return cls.from_document(json.loads(text))

    def probability_positive(self, text: str) -> float:
        z = self.bias + sum(self.weights.get(word, 0.0) for word in set(tokenize(text)))
        # Two branches keep exp() from overflowing for large |z|.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def predict(self, text: str) -> tuple[str, float]:
        """(label, probability of that label); a tie (no known word, zero bias) counts as positive."""
        p = self.probability_positive(text)
        return ("positive", p) if p >= 0.5 else ("negative", 1.0 - p)


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


class ModelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer whose close drains: handler threads are joined, idle connections woken."""

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: in-flight requests finish
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        *,
        model: SentimentModel,
        version: str,
        unhealthy_after: float | None = None,
        latency: float = 0.0,
    ) -> None:
        self.model = model
        self.version = version
        self.latency = latency
        self.draining = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._in_flight = 0
        super().__init__(address, _Handler)
        started = time.monotonic()
        self.unhealthy_at = None if unhealthy_after is None else started + unhealthy_after

    @property
    def wake_fd(self) -> int:
        """Becomes readable (and stays so) when draining starts; idle connections wait on it."""
        return self._wake_r

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @contextmanager
    def request_in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def is_healthy(self) -> bool:
        if self.draining.is_set():
            return False
        return self.unhealthy_at is None or time.monotonic() < self.unhealthy_at

    def begin_drain(self) -> None:
        """Answer what is in flight with `Connection: close` and wake idle keep-alive connections."""
        self.draining.set()
        os.write(self._wake_w, b"x")

    def server_close(self) -> None:
        super().server_close()  # closes the listening socket, then joins handler threads
        os.close(self._wake_r)
        os.close(self._wake_w)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_SECONDS
    # A buffered writer sends headers and body in one segment (handle_one_request flushes it); with
    # the default unbuffered writer, Nagle plus the client's delayed ACK cost ~40 ms per request.
    wbufsize = 64 * 1024
    server: ModelServer
    rfile: io.BufferedReader  # makefile("rb") with the default rbufsize (-1) is buffered: `peek` below

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # Connection loop ------------------------------------------------------------------------------

    def handle(self) -> None:
        # BaseHTTPRequestHandler.handle blocks in readline() between keep-alive requests, where a
        # draining server could not wake it; wait for the next request ourselves instead.
        self.close_connection = True
        while self._next_request_arrived():
            with self.server.request_in_flight():
                self.handle_one_request()
            if self.close_connection:
                return

    def _next_request_arrived(self) -> bool:
        """True when bytes of a request are ready; False on idle timeout or when draining while idle."""
        if self._buffered_bytes_ready():
            return True
        poller = select.poll()  # not select(): a busy server's descriptors may exceed FD_SETSIZE
        poller.register(self.connection, select.POLLIN)
        poller.register(self.server.wake_fd, select.POLLIN)
        ready = {fd for fd, _ in poller.poll(IDLE_KEEPALIVE_SECONDS * 1000)}
        # Bytes (or EOF) from the client win over draining: a request already sent is served.
        return self.connection.fileno() in ready

    def _buffered_bytes_ready(self) -> bool:
        # A non-blocking peek sees bytes already buffered by rfile (pipelined requests), which
        # select() on the socket cannot see.
        self.connection.settimeout(0.0)
        try:
            return bool(self.rfile.peek(1))
        except OSError:
            return False
        finally:
            self.connection.settimeout(self.timeout)

    # Routes -----------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if self.server.is_healthy():
                self._send_json(HTTPStatus.OK, {"status": "ok"})
            else:
                status = "draining" if self.server.draining.is_set() else "unhealthy"
                self._send_json(HTTPStatus.SERVICE_UNAVAILABLE, {"status": status})
        elif path == "/version":
            self._send_json(HTTPStatus.OK, {"version": self.server.version})
        elif path == "/predict":
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /predict", allow="POST")
        else:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()  # always drained, so the connection stays usable
            if path != "/predict":
                raise _HttpError(HTTPStatus.NOT_FOUND, f"no route {path}")
            text = _parse_predict_body(body)
        except _HttpError as e:
            self._send_error_json(e.status, e.message, close=e.close)
            return
        label, score = self.server.model.predict(text)
        if self.server.latency > 0:
            time.sleep(self.server.latency)
        self._send_json(
            HTTPStatus.OK, {"label": label, "score": round(score, 6), "version": self.server.version}
        )

    # Bodies -----------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", close=True)
        try:
            length = int(raw_length)
        except ValueError:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True) from None
        if length < 0:
            raise _HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True)
        if length > MAX_BODY_BYTES:
            raise _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _HttpError(HTTPStatus.BAD_REQUEST, "bad chunk size", close=True) from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise _HttpError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline(8)  # the CRLF after each chunk
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    # Responses --------------------------------------------------------------------------------------

    def _send_json(
        self, status: HTTPStatus, payload: Mapping[str, Any], *, close: bool = False, allow: str | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if allow is not None:
            self.send_header("Allow", allow)
        if close or self.server.draining.is_set():
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error_json(
        self, status: HTTPStatus, message: str, *, close: bool = False, allow: str | None = None
    ) -> None:
        self._send_json(status, {"error": message}, close=close, allow=allow)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Protocol-level errors raised by http.server itself (malformed request line, 501...): JSON too.
        status = HTTPStatus(code)
        self._send_error_json(status, message or status.phrase, close=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        pass  # one line per start/stop only, never per request


def _parse_predict_body(body: bytes) -> str:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _HttpError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise _HttpError(HTTPStatus.BAD_REQUEST, 'body must be a JSON object like {"text": "..."}')
    text = document.get("text")
    if not isinstance(text, str):
        raise _HttpError(HTTPStatus.BAD_REQUEST, '"text" must be a string')
    return text


# Process ----------------------------------------------------------------------------------------------


class _StopBeforeListening(Exception):
    pass


def _non_negative(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a non-negative number of seconds")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rollwise.examples.model_server", description="Sentiment model server (example)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8001")), help="default: $PORT, else 8001"
    )
    parser.add_argument("--version", default="v1", help="reported by /version and /predict")
    parser.add_argument("--fail-start", action="store_true", help="exit 1 shortly after start, never listen")
    parser.add_argument("--unhealthy-after", type=_non_negative, default=None, metavar="SECONDS")
    parser.add_argument("--startup-delay", type=_non_negative, default=0.0, metavar="SECONDS")
    parser.add_argument("--latency", type=_non_negative, default=0.0, metavar="SECONDS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"model_server {args.version} (pid {os.getpid()})"

    def log(message: str) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    server: ModelServer | None = None
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if server is None:
            raise _StopBeforeListening
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.fail_start:
            time.sleep(FAIL_START_SECONDS)
            log("failing on purpose (--fail-start), never listened")
            return 1
        time.sleep(args.startup_delay)
        model = SentimentModel.load_packaged()
        server = ModelServer(
            (args.host, args.port),
            model=model,
            version=args.version,
            unhealthy_after=args.unhealthy_after,
            latency=args.latency,
        )
    except _StopBeforeListening:
        log("stopped before listening")
        return 0
    except (OSError, ValueError, KeyError) as e:
        log(f"cannot start on {args.host}:{args.port}: {e}")
        return 1
    log(f"listening on {args.host}:{args.port}, {len(model.weights)} word weights")
    server.serve_forever(poll_interval=0.1)
    in_flight = server.in_flight
    server.begin_drain()
    server.server_close()
    # Interpreter shutdown restores default handlers; a repeated SIGTERM then must not turn exit 0 into -15.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log(f"stopped after draining ({in_flight} request(s) were in flight)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
