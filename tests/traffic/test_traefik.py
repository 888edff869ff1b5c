"""TraefikLayer against the real Traefik binary and real HTTP backends (see conftest.py).

Each test starts its own Traefik on free ports (about 0.2 s) and checks one promise of the layer:
lifecycle, routing under /d/NAME/, weights, removal confirmation, atomic and skipped writes, zero failed
requests while backends are swapped and drained, 503 without backends, no health checks of Traefik's
own, and clear errors. Adoption, supervision, environment and file modes: test_traefik_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from rollwise.model.errors import ValidationFailed
from rollwise.traffic import _traefik_process as proc
from rollwise.traffic.base import Backend, TrafficFailure, TrafficLayer, TrafficUnavailable
from rollwise.traffic.traefik import TraefikLayer

if TYPE_CHECKING:
    from conftest import TinyBackend

MakeBackend = Callable[[str], "TinyBackend"]


def free_port() -> int:
    return proc.pick_free_port("127.0.0.1")


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=5.0, trust_env=False)


async def get_names(layer: TraefikLayer, path: str, n: int) -> collections.Counter[str]:
    async with client() as c:
        names: collections.Counter[str] = collections.Counter()
        for _ in range(n):
            r = await c.get(layer.proxy_url + path)
            names[r.text if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
    return names


async def apply_and_wait(layer: TraefikLayer, services: dict[str, list[Backend]]) -> None:
    await layer.apply(services)
    assert await layer.wait_applied(5.0)
    assert await layer.config_errors() == {}


async def test_start_and_close_leave_no_process(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    assert isinstance(layer, TrafficLayer)
    await layer.start()
    pid = layer.pid
    assert pid is not None and proc.is_alive(pid)
    assert layer.running and not layer.adopted
    assert proc.read_pid_file(layer.pid_file) == proc.PidRecord(pid, proc.read_identity(pid))
    assert await proc.is_port_open("127.0.0.1", layer.proxy_port)
    await layer.close()
    assert not proc.is_alive(pid)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert not layer.pid_file.exists()
    assert not await proc.is_port_open("127.0.0.1", layer.proxy_port)
    assert not layer.running and layer.pid is None
    await layer.close()  # idempotent


async def test_deployment_served_under_its_prefix_with_prefix_stripped(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    demo = make_backend("demo-1")
    await apply_and_wait(layer, {"demo": [Backend(demo.address, 1.0)]})
    async with client() as c:
        r = await c.get(layer.proxy_url + "/d/demo/version?x=1")
        assert (r.status_code, r.text) == (200, "demo-1")
        assert (await c.get(layer.proxy_url + "/d/demo")).status_code == 200
        assert (await c.get(layer.proxy_url + "/d/demox/version")).status_code == 404
        assert (await c.get(layer.proxy_url + "/version")).status_code == 404
    assert demo.paths == ["/version?x=1", "/"]


async def test_weights_are_honoured_and_zero_gets_nothing(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    a, b, z = make_backend("a"), make_backend("b"), make_backend("z")
    await apply_and_wait(
        layer, {"demo": [Backend(a.address, 0.9), Backend(b.address, 0.1), Backend(z.address, 0.0)]}
    )
    names = await get_names(layer, "/d/demo/version", 200)
    assert 170 <= names["a"] <= 190, names
    assert names["a"] + names["b"] == 200, names
    assert z.paths == []


async def test_confirm_removed_only_once_traefik_dropped_the_backend(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    a, b = make_backend("a"), make_backend("b")
    await apply_and_wait(layer, {"demo": [Backend(a.address, 0.5), Backend(b.address, 0.5)]})
    assert not await layer.confirm_removed("demo", [b.address])
    await layer.apply({"demo": [Backend(a.address, 1.0)]})
    started = time.monotonic()
    while not await layer.confirm_removed("demo", [b.address]):
        assert time.monotonic() - started < 5.0, "Traefik never reported the backend removed"
        await asyncio.sleep(0.01)
    assert not await layer.confirm_removed("demo", [a.address])
    assert await layer.confirm_removed("other", [a.address])
    assert (await get_names(layer, "/d/demo/version", 20)) == {"a": 20}


async def test_confirm_removed_is_false_not_an_error_without_traefik(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    await layer.apply({})
    assert not await layer.confirm_removed("demo", ["127.0.0.1:1"])
    assert not await layer.wait_applied(0.05)
    with pytest.raises(TrafficUnavailable):
        await layer.request_counts()


async def test_unchanged_apply_does_not_rewrite_the_file(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    a = make_backend("a")
    await layer.apply({"demo": [Backend(a.address, 1.0)]})
    before = layer.dynamic_file.stat()
    # A write is a new file renamed over the old one: a new inode, whatever the clock's resolution.
    await layer.apply({"demo": [Backend(a.address, 1.0)]})
    after = layer.dynamic_file.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    await layer.apply({"demo": [Backend(a.address, 0.5)]})  # same ratio after scaling: same file
    assert (layer.dynamic_file.stat().st_mtime_ns, layer.dynamic_file.stat().st_ino) == (before.st_mtime_ns,
                                                                                         before.st_ino)
    assert layer.services == {"demo": (Backend(a.address, 0.5),)}
    await layer.apply({"demo": [Backend(a.address, 1.0)], "other": []})
    assert layer.dynamic_file.stat().st_ino != before.st_ino
    assert not list(layer.dir.glob(".*.tmp"))


async def test_no_failed_request_while_backends_are_swapped_and_drained(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    current = [make_backend("gen-0"), make_backend("gen-0b")]
    await apply_and_wait(layer, {"demo": [Backend(b.address, 0.5) for b in current]})
    results: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    workers = 4
    mark = 0
    """Raised at each moment the test waits from: requests begun after it were routed with what Traefik
    had loaded then."""
    finished = [0] * workers
    """Per worker: the mark when its last finished request began (each worker sends one at a time)."""
    progress = asyncio.Condition()

    async def hammer(worker: int) -> None:
        async with client() as c:
            while not stop.is_set():
                began = mark
                try:
                    r = await c.get(layer.proxy_url + "/d/demo/version")
                    results["ok" if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    results[type(e).__name__] += 1
                async with progress:
                    finished[worker] = began
                    progress.notify_all()

    async def every_worker_finished_a_request_begun_now() -> None:
        """Each worker has finished a request it began from now on, so none begun before is open."""
        nonlocal mark
        mark += 1
        now = mark
        async with progress:
            await asyncio.wait_for(progress.wait_for(lambda: min(finished) >= now), timeout=10)

    tasks = [asyncio.create_task(hammer(i)) for i in range(workers)]
    try:
        for gen in range(1, 21):
            # One rolling step, as the route controller does it: add the new backend, drop the old
            # one from the table, confirm Traefik dropped it, then stop its process.
            new, old = make_backend(f"gen-{gen}"), current[0]
            current = [current[1], new]
            await layer.apply({"demo": [Backend(b.address, 0.5) for b in current]})
            while not await layer.confirm_removed("demo", [old.address]):
                await asyncio.sleep(0.005)  # the next look at Traefik's API
            # Drain: the requests Traefik may have sent to the old backend before it loaded the new
            # table finish before the backend goes away (the route controller waits drain_seconds for
            # this; here the requests can be seen). Then traffic flows on without it.
            await every_worker_finished_a_request_begun_now()
            await asyncio.to_thread(old.close)
            await every_worker_finished_a_request_begun_now()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert results["ok"] > 200, results
    assert set(results) == {"ok"}, results


async def test_empty_table_removes_every_route(layer: TraefikLayer, make_backend: MakeBackend) -> None:
    a = make_backend("a")
    await apply_and_wait(layer, {"demo": [Backend(a.address, 1.0)]})
    await apply_and_wait(layer, {})
    assert await layer.confirm_removed("demo", [a.address])
    assert (await get_names(layer, "/d/demo/version", 1)) == {"HTTP 404": 1}


async def test_deployment_without_backends_answers_503_at_once(
    layer: TraefikLayer, make_backend: MakeBackend
) -> None:
    a = make_backend("a")
    await apply_and_wait(layer, {"empty": [], "zero": [Backend(a.address, 0.0)]})
    async with client() as c:
        for path in ("/d/empty/version", "/d/zero/version"):
            started = time.monotonic()
            r = await c.get(layer.proxy_url + path)
            assert r.status_code == 503, path
            assert time.monotonic() - started < 0.5
    assert a.paths == []


async def test_traefik_never_drops_a_backend_on_its_own(layer: TraefikLayer, make_backend: MakeBackend) -> None:
    """No Traefik health checks: a backend whose health endpoint fails keeps its share until rollwise's
    prober takes it out of the table."""
    good, bad = make_backend("good"), make_backend("bad")
    bad.healthy = False
    await apply_and_wait(layer, {"demo": [Backend(good.address, 0.5), Backend(bad.address, 0.5)]})
    assert "healthCheck" not in layer.dynamic_file.read_text()
    assert "healthCheck" not in layer.static_file.read_text()
    await get_names(layer, "/d/demo/health", 4)
    assert (await get_names(layer, "/d/demo/version", 20)) == {"good": 10, "bad": 10}
    # Traefik itself never asked for /health: only the 4 requests this test sent did.
    assert (good.paths + bad.paths).count("/health") == 4


class BreakingBackend:
    """A raw HTTP/1.1 server that reads a request and then drops the connection without an answer,
    `drops` times; afterwards it answers 200 (Connection: close). Counts the requests it read."""

    def __init__(self) -> None:
        self.drops = 0
        self.requests: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
                    0,
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(head.split(b" ")[0].decode())
                if self.drops > 0:
                    self.drops -= 1
                    continue  # the request was written and read: closing now is a broken connection
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def breaking_backend() -> Iterator[BreakingBackend]:
    backend = BreakingBackend()
    yield backend
    backend.close()


@pytest.mark.parametrize(
    ("method", "status", "attempts"),
    [("GET", 200, 2), ("PUT", 200, 2), ("DELETE", 200, 2), ("POST", 502, 1), ("PATCH", 502, 1)],
)
async def test_idempotent_requests_are_retried_after_a_broken_connection_others_are_not(
    layer: TraefikLayer, breaking_backend: BreakingBackend, method: str, status: int, attempts: int
) -> None:
    """The retry middleware's `status: [502]`: a request that reached the backend whose connection then
    broke is sent again when its method is idempotent; a POST or PATCH may have had an effect, so the
    client gets Traefik's 502 (the idle timeout keeps the keep-alive race from causing this)."""
    await apply_and_wait(layer, {"demo": [Backend(breaking_backend.address, 1.0)]})
    breaking_backend.drops = 1
    async with client() as c:
        r = await c.request(method, layer.proxy_url + "/d/demo/x", content=b"{}" if method != "GET" else None)
    assert r.status_code == status
    assert breaking_backend.requests == [method] * attempts


async def test_request_counts_per_deployment(layer: TraefikLayer, make_backend: MakeBackend) -> None:
    a = make_backend("a")
    await apply_and_wait(layer, {"demo": [Backend(a.address, 1.0)]})
    await get_names(layer, "/d/demo/version", 7)
    counts = await layer.request_counts()
    assert counts["demo"][200] == 7


@pytest.mark.parametrize("format", ["legacy", "current"])
async def test_pid_file_naming_a_foreign_process_is_ignored(tmp_path: Path, format: str) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    layer.dir.mkdir(parents=True)
    me = os.getpid()  # this pytest process, not a traefik
    identity = proc.read_identity(me)
    assert identity is not None
    if format == "legacy":
        layer.pid_file.write_text(f"{me}\n")
    else:
        proc.write_pid_file(layer.pid_file, me, identity)
    await layer.start()
    try:
        assert layer.pid not in (None, me)
        assert not layer.adopted
    finally:
        await layer.close()


async def test_missing_binary_is_a_clear_traffic_failure(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port(), binary=tmp_path / "no-traefik")
    with pytest.raises(TrafficFailure, match="no-traefik does not exist"):
        await layer.start()
    assert layer.pid is None


async def test_proxy_port_in_use_is_a_clear_traffic_failure(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        layer = TraefikLayer(tmp_path, proxy_port=s.getsockname()[1])
        with pytest.raises(TrafficFailure, match="for the proxy"):
            await layer.start()
    assert layer.pid is None


async def test_traefik_refusing_its_configuration_fails_start_with_its_log(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port(), throttle="not-a-duration")
    with pytest.raises(TrafficFailure, match="traefik exited at start") as caught:
        await layer.start()
    assert "not-a-duration" in str(caught.value)
    assert layer.pid is None and not layer.pid_file.exists()


async def test_invalid_names_and_weights_are_refused_before_writing(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    tables: tuple[dict[str, list[Backend]], ...] = (
        {"bad name": []},
        {"a:b": []},
        {"demo": [Backend("127.0.0.1:1", -1.0)]},
        {"demo": [Backend("127.0.0.1:1", float("nan"))]},
    )
    for services in tables:
        with pytest.raises(ValidationFailed):
            await layer.apply(services)
    assert not layer.dynamic_file.exists()
