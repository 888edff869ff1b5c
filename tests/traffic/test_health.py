"""HttpProber and tcp_open against the real example model server, closed ports and silent sockets."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from rollwise.runtime.base import Prober
from rollwise.traffic.health import HttpProber, ProbeResult, tcp_open


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_model_server(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rollwise.examples.model_server", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError("model server did not start") from None
            time.sleep(0.02)
    return process, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def healthy() -> Iterator[str]:
    process, address = start_model_server()
    yield address
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def unhealthy() -> Iterator[str]:
    process, address = start_model_server("--unhealthy-after", "0")
    yield address
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A socket that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
async def prober() -> AsyncIterator[HttpProber]:
    async with HttpProber() as p:
        yield p


async def test_is_a_prober(prober: HttpProber) -> None:
    assert isinstance(prober, Prober)


async def test_healthy_route(prober: HttpProber, healthy: str) -> None:
    assert await prober.probe(healthy, "/healthz", timeout=2)
    assert await prober.check(healthy, "/healthz", timeout=2) == ProbeResult(True, status=200)


async def test_unhealthy_route_and_non_2xx(prober: HttpProber, unhealthy: str, healthy: str) -> None:
    assert not await prober.probe(unhealthy, "/healthz", timeout=2)
    assert await prober.check(unhealthy, "/healthz", timeout=2) == ProbeResult(False, 503, "HTTP 503")
    assert not await prober.probe(healthy, "/no-such-path", timeout=2)


async def test_closed_port(prober: HttpProber, closed_address: str) -> None:
    assert not await prober.probe(closed_address, "/healthz", timeout=2)
    result = await prober.check(closed_address, "/healthz", timeout=2)
    assert result == ProbeResult(False, None, "connection refused")


async def test_timeout_is_a_failure_within_the_timeout(prober: HttpProber, silent_address: str) -> None:
    started = time.monotonic()
    result = await prober.check(silent_address, "/healthz", timeout=0.3)
    assert time.monotonic() - started < 1.0
    assert not result.ok and "0.3s" in result.error


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1:notaport", "", "[::1"])
async def test_malformed_addresses_are_failures_not_errors(prober: HttpProber, address: str) -> None:
    assert not await prober.probe(address, "/healthz", timeout=0.5)
    assert not await tcp_open(address, 0.5)


async def test_many_concurrent_probes_share_one_client(prober: HttpProber, healthy: str, closed_address: str) -> None:
    results = await asyncio.gather(
        *(prober.probe(healthy, "/healthz", timeout=5) for _ in range(150)),
        *(prober.probe(closed_address, "/healthz", timeout=5) for _ in range(20)),
    )
    assert results == [True] * 150 + [False] * 20


async def test_proxy_variables_are_ignored(
    prober: HttpProber, healthy: str, closed_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://{closed_address}")
    monkeypatch.setenv("ALL_PROXY", f"http://{closed_address}")
    async with HttpProber() as fresh:
        assert await fresh.probe(healthy, "/healthz", timeout=2)


async def test_tcp_open_and_listening(
    prober: HttpProber, healthy: str, closed_address: str, silent_address: str
) -> None:
    assert await tcp_open(healthy, 1)
    assert await tcp_open(silent_address, 1)  # listening is not answering
    assert not await tcp_open(closed_address, 1)
    assert await prober.listening(healthy, timeout=1)
    assert not await prober.listening(closed_address, timeout=1)


async def test_transport_seam_and_aclose() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(204 if request.url.path == "/ok" else 500)

    prober = HttpProber(transport=httpx.MockTransport(answer))
    assert await prober.probe("route:1", "ok", timeout=1)
    assert not await prober.probe("route:1", "/bad", timeout=1)
    await prober.aclose()
    assert seen == ["http://route:1/ok", "http://route:1/bad"]
