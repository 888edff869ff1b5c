"""What differs between the two HTTP front ends: who serves, idle keep-alive timeouts (--keep-alive),
and that the stdlib mode never imports uvicorn.

The rest (endpoints, misbehaviour, SIGTERM) runs in both modes in test_model_server.py.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from model_server_process import Server, raw_request, read_responses


def idle_seconds_until_closed(port: int, *, limit: float) -> float:
    """Two requests on one connection (it is kept alive), then how long it stays open while idle."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(raw_request("/healthz"))
        read_responses(sock, 1)
        sock.sendall(raw_request("/version"))  # still open after the first answer: keep-alive works
        (answer,) = read_responses(sock, 1)
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer.lower()
        idle_since = time.monotonic()
        assert sock.recv(100) == b"", "the server sent bytes on an idle connection"  # blocks until EOF
        return time.monotonic() - idle_since


@pytest.mark.parametrize("http_mode", ["uvicorn"], indirect=True)
def test_uvicorn_mode_is_served_by_uvicorn(start_server: Callable[..., Server]) -> None:
    server = start_server()
    response = httpx.get(f"{server.url}/version")
    assert response.headers["server"] == "uvicorn"
    assert response.json()["version"] == "v1"


def test_keep_alive_flag_sets_the_idle_timeout(start_server: Callable[..., Server]) -> None:
    # 1 s, against defaults of 5 s (uvicorn) and 120 s (stdlib): closing within 4 s shows the flag acts.
    server = start_server("--keep-alive", "1")
    idle = idle_seconds_until_closed(server.port, limit=10)
    assert 0.9 <= idle < 4.0, idle


def test_keep_alive_takes_fractions_of_a_second(start_server: Callable[..., Server]) -> None:
    server = start_server("--keep-alive", "0.3")
    idle = idle_seconds_until_closed(server.port, limit=10)
    assert 0.25 <= idle < 0.9, idle


@pytest.mark.parametrize("http_mode", ["uvicorn"], indirect=True)
def test_uvicorn_keeps_idle_connections_5_seconds_by_default(start_server: Callable[..., Server]) -> None:
    # uvicorn's own default, as MLServer and vLLM's server run it: the case a pooling proxy must survive.
    server = start_server()
    idle = idle_seconds_until_closed(server.port, limit=20)
    assert 4.5 <= idle < 10.0, idle


@pytest.mark.parametrize("http_mode", ["stdlib"], indirect=True)
def test_stdlib_keeps_idle_connections_open_much_longer(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw_request("/healthz"))
        read_responses(sock, 1)
        sock.settimeout(1.5)  # a negative check has to wait: 1.5 s is far below 120 s, above 0.3 s
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.settimeout(5)
        sock.sendall(raw_request("/version"))
        assert read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("value", ["0", "-2", "soon"])
def test_bad_keep_alive_is_refused(start_server: Callable[..., Server], value: str) -> None:
    server = start_server("--keep-alive", value, wait=False)
    assert server.process.wait(timeout=10) == 2
    assert "--keep-alive" in server.stop()[1]


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from `python -X importtime` lines: "import time: self | cumulative | name"."""
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*([\w.]+)\s*$", importtime_log, re.MULTILINE)}


def test_only_the_uvicorn_mode_imports_uvicorn(start_server: Callable[..., Server], http_mode: str) -> None:
    server = start_server(python_options=("-X", "importtime"))
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    code, err = server.stop()
    assert code == 0
    modules = imported_modules(err)
    assert "rollwise.examples.model_server" in modules or "rollwise.examples._serving" in modules
    assert ("uvicorn" in modules) == (http_mode == "uvicorn")
    assert ("rollwise.examples.model_server_asgi" in modules) == (http_mode == "uvicorn")
