"""No 502 from the keep-alive race: real Traefik in front of real uvicorn backends.

The race: a backend closes an idle keep-alive connection (uvicorn after `--timeout-keep-alive`) at the
moment Traefik sends a request on it. Traefik has written the request, so it cannot know whether the
backend saw it: a POST is never retried and the client gets 502. With Traefik's default idle timeout
(90 s) this happened a few times per minute at steady load. TraefikLayer sets Traefik's idle timeout
below the backends' keep-alive, so Traefik always closes first.

The load pattern aims at the race: bursts of concurrent POSTs, spaced by a gap that jitters just below
the backend's keep-alive, so the connections of one burst reach their keep-alive expiry while the next
burst is arriving. Each request costs the backend about 2 ms of CPU on its event loop (as model
inference would); a busy loop runs its expired keep-alive timers late, after requests have arrived on
those connections, which widens the race window from microseconds to milliseconds. Measured with this
test's pattern (12 bursts of 24 POSTs): Traefik's default idle timeout (90 s) gave 1, 5 and 5 502s in
three runs (and reused connections across bursts); the 0.5 s idle timeout gave 0 in four runs
(docs/traffic.md).

The backends are this module's `app`, run by uvicorn in subprocesses; each answer carries the client
port of the connection it came on, which shows whether Traefik reused connections across bursts.
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.traffic import _traefik_process as proc
from rollwise.traffic.base import Backend
from rollwise.traffic.traefik import TraefikLayer

KEEP_ALIVE_SECONDS = 1  # uvicorn takes whole seconds
IDLE_TIMEOUT_SECONDS = 0.5
BURSTS = 12
CONCURRENCY = 24
CPU_WORK = 200_000  # sum(range(CPU_WORK)): about 2 ms


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    """The backend: reads the body, spends a little CPU, answers with the client port."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = bool((await receive()).get("more_body", False))
    sum(range(CPU_WORK))
    body = str(scope["client"][1]).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Uvicorn:
    """One uvicorn subprocess serving `app` with a short keep-alive."""

    def __init__(self) -> None:
        self.port = proc.pick_free_port("127.0.0.1")
        self.address = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", f"{Path(__file__).stem}:app",
                "--app-dir", str(Path(__file__).parent),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--timeout-keep-alive", str(KEEP_ALIVE_SECONDS),
                "--http", "h11", "--loop", "asyncio", "--lifespan", "off",
                "--log-level", "warning", "--no-access-log", "--no-proxy-headers",
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not await proc.is_port_open("127.0.0.1", self.port):
            assert self.process.poll() is None, "uvicorn exited at start"
            assert time.monotonic() < deadline, "uvicorn did not listen in time"
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def uvicorn_backends() -> Iterator[Callable[[int], list[Uvicorn]]]:
    started: list[Uvicorn] = []

    def start(n: int) -> list[Uvicorn]:
        new = [Uvicorn() for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[TraefikLayer]:
    layer = TraefikLayer(tmp_path, proxy_port=proc.pick_free_port("127.0.0.1"), idle_timeout=IDLE_TIMEOUT_SECONDS)
    try:
        await layer.start()
        yield layer
    finally:
        await layer.close()


async def test_no_502_when_backends_close_idle_keep_alive_connections(
    proxy: TraefikLayer, uvicorn_backends: Callable[[int], list[Uvicorn]]
) -> None:
    assert IDLE_TIMEOUT_SECONDS < KEEP_ALIVE_SECONDS
    backends = uvicorn_backends(1)  # one busy backend: the widest race window
    await asyncio.gather(*(b.wait_listening() for b in backends))
    await proxy.apply({"demo": [Backend(b.address, 1.0) for b in backends]})
    assert await proxy.wait_applied()

    statuses: collections.Counter[str] = collections.Counter()
    bursts_of_port: dict[str, set[int]] = collections.defaultdict(set)
    rng = random.Random(1234)
    async with httpx.AsyncClient(
        timeout=10.0, trust_env=False, limits=httpx.Limits(max_connections=CONCURRENCY)
    ) as client:

        async def post(burst: int) -> None:
            try:
                r = await client.post(proxy.proxy_url + "/d/demo/infer", content=b"x" * 256)
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
                return
            statuses[str(r.status_code)] += 1
            if r.status_code == 200:
                bursts_of_port[r.text].add(burst)

        for burst in range(BURSTS):
            await asyncio.gather(*(post(burst) for _ in range(CONCURRENCY)))
            # Just below the keep-alive: the previous burst's connections expire as this one arrives.
            await asyncio.sleep(KEEP_ALIVE_SECONDS + rng.uniform(-0.08, 0.0))

    assert statuses == {"200": BURSTS * CONCURRENCY}, statuses
    # Traefik closes idle connections itself before the next burst (TIME_WAIT on its side keeps a closed
    # connection's port from coming back within the test), so connections do not serve two bursts. With
    # Traefik's default idle timeout the same connections carry burst after burst (16-37 ports reused per
    # run); on a saturated machine a timer may fire late now and then (2 seen with busy loops on every
    # core, 8 once while the suite ran on two workers), which is why some are tolerated: the statuses above
    # are what clients see, and the bound stays below what the default timeout gives.
    reused = {port: sorted(b) for port, b in bursts_of_port.items() if len(b) > 1}
    assert len(reused) <= 12, reused
