"""Request body size limit of the REST API: bodies over `MAX_BODY_BYTES` answer 413 with the usual JSON
error, before anything is parsed or stored.

A deployment or revision body is a few KiB; the limit only stops mistakes (a 50 MB environment value)
and abuse from reaching validation, the database and, worse, a route's exec. A declared
`Content-Length` over the limit is refused at once; a body without one (chunked) is counted as it
arrives and refused as soon as it passes the limit.

Called by `api.app.create_app` (installed as the outermost ASGI middleware). Must not: read more of a
body than the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1024 * 1024
TOO_LARGE = "body.too_large"


class BodyLimit:
    """ASGI middleware: 413 `{"error": "body.too_large", ...}` for request bodies over `limit` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if not started:
                        refused = True
                        await self._refuse(scope, receive, send)
                    # The app sees a client that went away: it stops reading and its answer is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from rollwise.api.errors import error_response

        message = f"request body over {self.limit // 1024} KiB; rollwise bodies are a few KiB"
        await error_response(TOO_LARGE, message, status=413)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for key, value in headers:
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
