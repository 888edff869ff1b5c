"""A small, real model server: the route process that rollwise's demo and end-to-end tests deploy.

Run it as `python -m rollwise.examples.model_server --port 8001 --version v1`. It serves a bag-of-words
sentiment classifier (logistic regression: one weight per word plus a bias, sigmoid of the sum) whose
weights ship beside this file in `sentiment_weights.json`; tests/examples/sentiment_training.py trained
them on a few dozen hand-written sentences and can reproduce the file.

HTTP (HTTP/1.1 with keep-alive, many requests at once, so a proxy such as Traefik can reuse connections):

    POST /predict  {"text": "..."}  -> 200 {"label": "positive"|"negative", "score": p, "version": v}
                                       400 {"error": ...} on a bad body (413 when too large)
                                       500 {"error": ..., "version": v} when --error-rate picks it
    GET  /healthz                   -> 200 {"status": "ok"}, 503 once unhealthy or while draining
    GET  /version                   -> 200 {"version": v, "cuda_visible_devices": "0,1" | null,
                                                 "resources": {"gpu": [0, 1]} | null}

`score` is the model's probability for the returned label (0.5 to 1). `/version` also says which devices
the process was given: `cuda_visible_devices` is the CUDA_VISIBLE_DEVICES it received and `resources` the
parsed ROLLWISE_RESOURCES (rollwise sets both for a route that holds slots, e.g. `--resources gpu=4` and a
revision with `resources: {gpu: 1}`), each null when unset. A ROLLWISE_RESOURCES that is not JSON stops
it at start (exit 1). The model itself never touches a GPU.

Two HTTP front ends answer alike (`_serving` holds what they share):

- `--http stdlib` (the default): a threaded stdlib server, one thread per connection, quick to start
  (it never imports uvicorn). Idle keep-alive connections are closed after 120 s, above Traefik's 90 s,
  so the proxy normally closes first.
- `--http uvicorn`: an ASGI app run by uvicorn (`model_server_asgi`), like many third-party model
  servers (MLServer, vLLM's OpenAI server). Idle keep-alive connections are closed after uvicorn's
  own default of 5 s, well before the proxy would close them: the realistic case a proxy must survive.

`--keep-alive SECONDS` sets that idle timeout in either mode.

Misbehaviour on purpose, to exercise rollouts and rollbacks: `--fail-start` exits with status 1 shortly
after starting without ever listening; `--unhealthy-after S` turns /healthz to 503 S seconds after the
server started listening (predictions keep working); `--startup-delay S` sleeps before listening;
`--latency S` adds S seconds to every prediction (to make in-flight requests observable);
`--slow-health S` holds /healthz answers S seconds, and with `--slow-health-every N` only the N-th,
2N-th, 3N-th... /healthz request (counted from the start, whoever asks), so a health probe with a
shorter timeout fails now and then while predictions stay fast. `--error-rate F` (0 to 1) answers that
share of the /predict requests with 500 `{"error": "injected failure (--error-rate F)", "version": v}`,
deterministically and evenly spread (the n-th fails when floor(n F) > floor((n - 1) F): 0.2 fails every
5th), while /healthz stays healthy: a bad model that only an analysis of its answers catches (a canary's
`error_rate` metric), not a health check.

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
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, Protocol

from rollwise.examples._serving import (
    MAX_BODY_BYTES,
    HttpError,
    SentimentModel,
    ServingState,
    devices_from,
    parse_predict_body,
    tokenize,
)

__all__ = ["SentimentModel", "ServingState", "build_parser", "main", "tokenize"]

STDLIB_KEEPALIVE_SECONDS = 120.0
"""--http stdlib closes an idle keep-alive connection after this long unless --keep-alive says otherwise
(above Traefik's 90 s idle timeout, so the proxy, not the server, normally closes it and never races a
request against our close)."""
UVICORN_KEEPALIVE_SECONDS = 5.0
"""--http uvicorn's default: uvicorn's own `timeout_keep_alive`, which third-party servers keep."""
READ_TIMEOUT_SECONDS = 30.0
"""Once a request has begun, each read of it must progress within this time."""
FAIL_START_SECONDS = 0.2


class ModelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer whose close drains: handler threads are joined, idle connections woken."""

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: in-flight requests finish
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        state: ServingState,
        *,
        keep_alive: float = STDLIB_KEEPALIVE_SECONDS,
    ) -> None:
        self.state = state
        self.keep_alive = keep_alive
        self._wake_r, self._wake_w = os.pipe()
        try:
            super().__init__(address, _Handler)
        except OSError:
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise

    @property
    def wake_fd(self) -> int:
        """Becomes readable (and stays so) when draining starts; idle connections wait on it."""
        return self._wake_r

    def begin_drain(self) -> int:
        """Answer what is in flight with `Connection: close`, wake idle keep-alive connections; the
        number of requests in flight."""
        in_flight = self.state.begin_drain()
        os.write(self._wake_w, b"x")
        return in_flight

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
            with self.server.state.request_in_flight():
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
        ready = {fd for fd, _ in poller.poll(self.server.keep_alive * 1000)}
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
        state = self.server.state
        if path == "/healthz":
            delay = state.health_delay()
            if delay > 0:
                time.sleep(delay)
            self._send_json(*state.health())
        elif path == "/version":
            self._send_json(HTTPStatus.OK, state.version_info())
        elif path == "/predict":
            self._send_error_json(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /predict", allow="POST")
        else:
            self._send_error_json(HTTPStatus.NOT_FOUND, f"no route {path}")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()  # always drained, so the connection stays usable
            if path != "/predict":
                raise HttpError(HTTPStatus.NOT_FOUND, f"no route {path}")
            text = parse_predict_body(body)
        except HttpError as e:
            self._send_error_json(e.status, e.message, close=e.close)
            return
        status, answer = self.server.state.predict(text)
        if self.server.state.latency > 0:
            time.sleep(self.server.state.latency)
        self._send_json(status, answer)

    # Bodies -----------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", close=True)
        try:
            length = int(raw_length)
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True) from None
        if length < 0:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True)
        if length > MAX_BODY_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise HttpError(HTTPStatus.BAD_REQUEST, "bad chunk size", close=True) from None
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
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
        if close or self.server.state.draining.is_set():
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


# Process ----------------------------------------------------------------------------------------------


class _StopBeforeListening(Exception):
    pass


class _FrontEnd(Protocol):
    """What main needs of either HTTP front end once it listens."""

    def request_stop(self) -> None:
        """Begin a graceful stop; safe to call from a signal handler, more than once."""

    def serve(self) -> int:
        """Serve until stopped and drained; the number of requests that were in flight at the stop."""


class _StdlibFrontEnd:
    def __init__(self, server: ModelServer) -> None:
        self._server = server

    def request_stop(self) -> None:
        # shutdown() waits for serve_forever() to return, which runs in the main thread: the one
        # running this signal handler. Hence another thread.
        threading.Thread(target=self._server.shutdown, daemon=True).start()

    def serve(self) -> int:
        self._server.serve_forever(poll_interval=0.1)
        in_flight = self._server.begin_drain()
        self._server.server_close()
        return in_flight


def _non_negative(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a non-negative number of seconds")
    return number


def _positive(value: str) -> float:
    number = _non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return number


def _share(value: str) -> Fraction:
    """A number 0..1 as written (\"0.3\" is exactly 3/10: the schedule never drifts by rounding)."""
    try:
        share = Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 1")
    return share


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not 1 or more")
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
    parser.add_argument(
        "--http",
        choices=("stdlib", "uvicorn"),
        default="stdlib",
        help="HTTP front end: threaded stdlib server (default) or an ASGI app run by uvicorn",
    )
    parser.add_argument(
        "--keep-alive",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help=f"close idle keep-alive connections after this long (default: {UVICORN_KEEPALIVE_SECONDS:g} "
        f"with uvicorn, as uvicorn does; {STDLIB_KEEPALIVE_SECONDS:g} with stdlib)",
    )
    parser.add_argument("--fail-start", action="store_true", help="exit 1 shortly after start, never listen")
    parser.add_argument("--unhealthy-after", type=_non_negative, default=None, metavar="SECONDS")
    parser.add_argument("--startup-delay", type=_non_negative, default=0.0, metavar="SECONDS")
    parser.add_argument("--latency", type=_non_negative, default=0.0, metavar="SECONDS")
    parser.add_argument(
        "--slow-health", type=_non_negative, default=0.0, metavar="SECONDS", help="hold /healthz answers this long"
    )
    parser.add_argument(
        "--slow-health-every",
        type=_positive_int,
        default=1,
        metavar="N",
        help="slow only the N-th, 2N-th, ... /healthz request (default 1: every one)",
    )
    parser.add_argument(
        "--error-rate",
        type=_share,
        default="0",
        metavar="F",
        help="answer this share (0..1) of /predict requests with HTTP 500, evenly spread and deterministic: "
        "the n-th fails when floor(n*F) > floor((n-1)*F) (0.2: every 5th); /healthz stays healthy",
    )
    return parser


def _listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket for uvicorn (bound here so a busy port is our one-line error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out, not 0: asyncio sets TCP_NODELAY on accepted sockets only when their
    # proto says TCP; without it every response (headers and body written apart) stalls ~40 ms.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ThreadingHTTPServer does
        sock.bind((host, port))
        sock.listen(ModelServer.request_queue_size)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"model_server {args.version} (pid {os.getpid()})"

    def log(message: str) -> None:
        print(f"{prefix}: {message}", file=sys.stderr, flush=True)

    front_end: _FrontEnd | None = None
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if front_end is None:
            raise _StopBeforeListening
        front_end.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if args.fail_start:
            time.sleep(FAIL_START_SECONDS)
            log("failing on purpose (--fail-start), never listened")
            return 1
        devices = devices_from(os.environ)
        time.sleep(args.startup_delay)
        model = SentimentModel.load_packaged()
        if args.http == "uvicorn":
            # Imported here, not at the top: the stdlib mode must start without paying for uvicorn.
            from rollwise.examples.model_server_asgi import UvicornFrontEnd

            keep_alive = UVICORN_KEEPALIVE_SECONDS if args.keep_alive is None else args.keep_alive
            sock = _listening_socket(args.host, args.port)
            state = _state(args, model, devices)
            front_end = UvicornFrontEnd(sock, state, keep_alive=keep_alive)
        else:
            keep_alive = STDLIB_KEEPALIVE_SECONDS if args.keep_alive is None else args.keep_alive
            state = _state(args, model, devices)
            front_end = _StdlibFrontEnd(ModelServer((args.host, args.port), state, keep_alive=keep_alive))
    except _StopBeforeListening:
        log("stopped before listening")
        return 0
    except (OSError, ValueError, KeyError) as e:
        log(f"cannot start on {args.host}:{args.port}: {e}")
        return 1
    log(
        f"listening on {args.host}:{args.port} ({args.http}, keep-alive {keep_alive:g} s), "
        f"{len(model.weights)} word weights"
    )
    in_flight = front_end.serve()
    # Interpreter shutdown restores default handlers; a repeated SIGTERM then must not turn exit 0 into -15.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log(f"stopped after draining ({in_flight} request(s) were in flight)")
    return 0


def _state(args: argparse.Namespace, model: SentimentModel, devices: tuple[str | None, Any]) -> ServingState:
    cuda_visible_devices, resources = devices
    return ServingState(
        cuda_visible_devices=cuda_visible_devices,
        resources=resources,
        model=model,
        version=args.version,
        unhealthy_after=args.unhealthy_after,
        latency=args.latency,
        slow_health=args.slow_health,
        slow_health_every=args.slow_health_every,
        error_rate=args.error_rate,
    )


if __name__ == "__main__":
    sys.exit(main())
