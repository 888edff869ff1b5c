"""The API port answers from the first moment of `rollwise server`, before the server is even imported.

Importing FastAPI, SQLAlchemy and the rest takes about a second on an idle machine and five or more on a
saturated one, and health checkers (a supervisor, a load balancer, a standby script) should not read a
refused connection as "dead" meanwhile. So the command binds the API socket first and serves it from a
thread with the standard library only:

    GET /healthz   200 {"status": "ok", "role": "starting", "proxy": null}
    anything else  503 {"error": "server.starting", "message": ...}, Retry-After: 1

Once the real API is built, `hand_over()` stops this responder and returns the same listening socket,
which uvicorn then serves: connections that arrive in between wait in the kernel's backlog, none is
refused.

Called by `cli.server` only. Must not import anything beyond the standard library (that is its point).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STARTING_HEALTH = {"status": "ok", "role": "starting", "proxy": None}
STARTING_ERROR = {"error": "server.starting", "message": "the rollwise server is starting; retry in a moment"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        healthz = self.command in ("GET", "HEAD") and self.path.split("?", 1)[0] == "/healthz"
        body = json.dumps(STARTING_HEALTH if healthz else STARTING_ERROR).encode()
        self.send_response(200 if healthz else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")  # the next request may find the real API
        if not healthz:
            self.send_header("Retry-After", "1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        return


class EarlyResponder:
    """Serves `STARTING_*` answers on a listening socket until `hand_over()`."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        server = ThreadingHTTPServer(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="rollwise-early-api", daemon=True)

    @classmethod
    def listen(cls, host: str, port: int) -> EarlyResponder:
        """Bind and listen on (host, port) and start answering. OSError when the port is taken."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        responder = cls(sock)
        responder._thread.start()
        return responder

    def hand_over(self) -> socket.socket:
        """Stop answering (requests being answered finish) and give the listening socket to the caller."""
        self._server.shutdown()
        self._thread.join()
        return self._sock

    def close(self) -> None:
        """Stop answering and close the socket (the server failed to start)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._sock.close()
