"""Fixtures of the example model server's tests: servers started as processes, always stopped after.

`http_mode` runs a test once per HTTP front end (stdlib, uvicorn); `start_server` starts servers in that
mode and kills whatever is still running when the test ends, passed or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from model_server_process import HTTP_MODES, Server


@pytest.fixture(params=HTTP_MODES)
def http_mode(request: pytest.FixtureRequest) -> str:
    mode: str = request.param
    return mode


@pytest.fixture
def start_server(http_mode: str) -> Iterator[Callable[..., Server]]:
    """start(*args, wait=True, python_options=(), env=None) -> Server, in the test's HTTP mode."""
    servers: list[Server] = []

    def start(*args: str, wait: bool = True, python_options: tuple[str, ...] = (),
              env: Mapping[str, str] | None = None) -> Server:
        server = Server("--http", http_mode, *args, python_options=python_options, env=env)
        servers.append(server)
        if wait:
            server.wait_listening()
        return server

    yield start
    for server in servers:
        server.kill()
