"""Fixtures of the traffic-layer tests: tiny HTTP backends in threads, a started TraefikLayer, and a
finalizer that kills any Traefik a test left behind.

Used by tests/traffic/test_traefik*.py and test_keepalive.py. Backends are real `ThreadingHTTPServer`s
on free loopback ports; they answer every GET with their name (on `/health` with 200 or 503 as the test
sets `healthy`, on `/fail` with 500 while `failing`, on `/sleep/<ms>` after that long) and record the
paths they received. Nothing here mocks Traefik.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rollwise.traffic._traefik_process import pick_free_port
from rollwise.traffic.traefik import TraefikLayer


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # 50 concurrent connections must not overflow the listen backlog


class TinyBackend:
    """A named HTTP server in a thread: GET anything -> 200 with its name; GET /health -> 200 or 503
    (`healthy`); GET /fail -> 500 while `failing`; GET /sleep/<ms> -> 200 after that long."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.paths: list[str] = []
        self.healthy = True
        self.failing = True
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                backend.paths.append(self.path)
                if self.path == "/health" and not backend.healthy:
                    status, body = 503, b"unhealthy"
                elif self.path == "/fail" and backend.failing:
                    status, body = 500, backend.name.encode()
                else:
                    status, body = 200, backend.name.encode()
                if self.path.startswith("/sleep/"):
                    threading.Event().wait(int(self.path.rpartition("/")[2]) / 1000)  # a slow backend
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(timeout=5)


@pytest.fixture
def make_backend() -> Iterator[Callable[[str], TinyBackend]]:
    created: list[TinyBackend] = []

    def make(name: str) -> TinyBackend:
        backend = TinyBackend(name)
        created.append(backend)
        return backend

    yield make
    for backend in created:
        backend.close()


@pytest.fixture
async def layer(tmp_path: Path) -> AsyncIterator[TraefikLayer]:
    """A started TraefikLayer on free ports; closed (and its Traefik gone) after the test."""
    traefik = TraefikLayer(tmp_path / "data", proxy_port=pick_free_port("127.0.0.1"))
    await traefik.start()
    try:
        yield traefik
    finally:
        await traefik.close()


def marked_pids(root: str) -> list[int]:
    """Pids of this user's processes whose ROLLWISE_DATA_DIR marker is `root` or a directory in it."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != os.getuid():
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"ROLLWISE_DATA_DIR="):
                marker = entry.partition(b"=")[2].decode(errors="replace")
                if marker == root or marker.startswith(root + "/"):
                    found.append(int(name))
    return found


@pytest.fixture(autouse=True)
def no_traefik_left_behind(tmp_path: Path) -> Iterator[None]:
    """After each test: SIGKILL any process marked with a data directory of this test's tmp_path (a
    Traefik a failing test did not close). Tests that close everything leave nothing to kill."""
    yield
    for pid in marked_pids(str(tmp_path.resolve())):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        try:
            os.waitpid(pid, 0)  # no zombie when it was a child of this process
        except ChildProcessError:
            pass
