"""The example model server's uvicorn front end (`python -m rollwise.examples.model_server --http uvicorn`).

A hand-written ASGI app answering exactly as the threaded stdlib front end does (same paths, bodies,
statuses and misbehaviour, from `_serving.ServingState`), run by uvicorn with its defaults except the
idle keep-alive timeout (`--keep-alive`, uvicorn's `timeout_keep_alive`, 5 s unless told). It exists so
tests and demos can run a route that behaves like the many uvicorn-based model servers (MLServer,
vLLM's OpenAI server): in particular one that closes idle keep-alive connections after a few seconds,
which a proxy reusing pooled connections must cope with.

No framework: the app is small enough by hand, and starting it imports only uvicorn. Stopping is
uvicorn's own graceful shutdown (stop accepting, close idle connections, let requests in flight finish),
plus `Connection: close` on the answers given while draining, as the stdlib front end does.

Who calls it: `model_server.main` only, and only in uvicorn mode (the stdlib mode never imports this
module, so it never pays for uvicorn). It must not import anything from rollwise beyond this package,
and not `model_server` itself (that runs as `__main__`; importing it would load a second copy).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, cast

import uvicorn

from rollwise.examples._serving import MAX_BODY_BYTES, HttpError, ServingState, parse_predict_body

# The ASGI shapes, spelled out here rather than taken from uvicorn's private `_types`.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _ClientGone(Exception):
    """The client disconnected before its request body arrived: nobody to answer."""


class _Answer:
    """One JSON response: status, body, and the headers beyond Content-Type and Content-Length."""

    __slots__ = ("status", "payload", "close", "allow")

    def __init__(
        self, status: HTTPStatus, payload: Mapping[str, Any], *, close: bool = False, allow: str | None = None
    ) -> None:
        self.status = status
        self.payload = payload
        self.close = close
        self.allow = allow


def _error(status: HTTPStatus, message: str, *, close: bool = False, allow: str | None = None) -> _Answer:
    return _Answer(status, {"error": message}, close=close, allow=allow)


class SentimentApp:
    """The ASGI app: /predict, /healthz, /version over one ServingState."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served (uvicorn then refuses them)
        with self.state.request_in_flight():
            try:
                answer = await self._answer(scope, receive)
            except _ClientGone:
                return
            await self._send(send, answer)

    async def _answer(self, scope: Scope, receive: Receive) -> _Answer:
        method: str = scope["method"]
        path: str = scope["path"]
        state = self.state
        if method == "GET":
            if path == "/healthz":
                delay = state.health_delay()
                if delay > 0:
                    await asyncio.sleep(delay)
                status, payload = state.health()
                return _Answer(status, payload)
            if path == "/version":
                return _Answer(HTTPStatus.OK, state.version_info())
            if path == "/predict":
                return _error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /predict", allow="POST")
            return _error(HTTPStatus.NOT_FOUND, f"no route {path}")
        if method == "POST":
            try:
                body = await _read_body(scope, receive)  # read first, as the stdlib mode does
                if path != "/predict":
                    raise HttpError(HTTPStatus.NOT_FOUND, f"no route {path}")
                text = parse_predict_body(body)
            except HttpError as e:
                return _error(e.status, e.message, close=e.close)
            status, answer = state.predict(text)
            if state.latency > 0:
                await asyncio.sleep(state.latency)
            return _Answer(status, answer)
        # The stdlib front end answers other methods (HEAD included) through http.server's 501.
        return _error(HTTPStatus.NOT_IMPLEMENTED, f"Unsupported method ({method!r})", close=True)

    async def _send(self, send: Send, answer: _Answer) -> None:
        body = json.dumps(answer.payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if answer.allow is not None:
            headers.append((b"allow", answer.allow.encode()))
        if answer.close or self.state.draining.is_set():
            # uvicorn closes the connection after a response saying so (h11 and httptools alike).
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": int(answer.status), "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:  # ASGI servers give header names lowercased
            return value
    return None


async def _read_body(scope: Scope, receive: Receive) -> bytes:
    """The whole request body, or HttpError: 411 without a length, 413 past MAX_BODY_BYTES."""
    if b"chunked" not in (_header(scope, b"transfer-encoding") or b"").lower():
        raw_length = _header(scope, b"content-length")
        if raw_length is None:
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", close=True)
        try:
            length = int(raw_length)  # uvicorn's parsers refuse most malformed ones with their own 400
        except ValueError:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length", close=True) from None
        if length > MAX_BODY_BYTES:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
    parts: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        total += len(chunk)
        if total > MAX_BODY_BYTES:  # a chunked body has no length to check up front
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY_BYTES} bytes", close=True)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


class _Server(uvicorn.Server):
    """uvicorn's Server, marking the state draining as its graceful shutdown begins.

    Marked here, in the event loop, rather than in the signal handler: ServingState takes a lock that
    the interrupted main thread might hold.
    """

    def __init__(self, config: uvicorn.Config, state: ServingState) -> None:
        super().__init__(config)
        self.state = state
        self.in_flight_at_stop = 0

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.in_flight_at_stop = self.state.begin_drain()
        await super().shutdown(sockets=sockets)


class UvicornFrontEnd:
    """uvicorn serving SentimentApp on a socket that is already bound and listening."""

    def __init__(self, sock: socket.socket, state: ServingState, *, keep_alive: float) -> None:
        config = uvicorn.Config(
            SentimentApp(state),
            lifespan="off",
            # No logging setup of our own and warnings only: the program logs one line at start and
            # one at stop; uvicorn's warnings and errors still reach stderr (logging's last resort).
            log_config=None,
            log_level="warning",
            access_log=False,
            # uvicorn annotates it as int but only hands it to loop.call_later, which takes any
            # number of seconds; tests use fractions to stay quick.
            timeout_keep_alive=cast(int, keep_alive),
        )
        self._sock = sock
        self._server = _Server(config, state)

    def request_stop(self) -> None:
        """Begin uvicorn's graceful shutdown. Called from a signal handler: it only sets a flag that
        uvicorn's main loop checks every 0.1 s (uvicorn's own handlers do the same while it serves)."""
        self._server.should_exit = True

    def serve(self) -> int:
        """Serve until stopped and drained; the requests that were in flight when the stop began."""
        self._server.run(sockets=[self._sock])
        return self._server.in_flight_at_stop
