"""TraefikLayer's process life against the real Traefik binary: adoption across server restarts (and
why a Traefik is not adopted), supervision after a crash (`ensure_running`), the table in place before
Traefik listens, `close` versus `detach`, the scrubbed environment and private file modes.

Every Traefik a test starts is closed in a `finally`; the autouse fixture of conftest.py kills anything
marked with this test's data directory that is left anyway. Tests wait on conditions, never on fixed
sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from rollwise.traffic import _traefik_process as proc
from rollwise.traffic.base import Backend, NoTraffic, TrafficFailure, TrafficLayer
from rollwise.traffic.traefik import TraefikLayer

if TYPE_CHECKING:
    from conftest import TinyBackend

MakeBackend = Callable[[str], "TinyBackend"]


def free_port() -> int:
    return proc.pick_free_port("127.0.0.1")


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> float:
    """Poll `condition` until true; returns the seconds it took. Fails the test after `timeout`."""
    started = time.monotonic()
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, "condition not met in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def hammering(url: str, workers: int = 3) -> AsyncIterator[collections.Counter[str]]:
    """Clients sending GETs to `url` back to back for the duration of the block; the counter holds
    "ok" and one entry per kind of failure."""
    results: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()

    async def hammer() -> None:
        async with httpx.AsyncClient(timeout=5.0, trust_env=False) as c:
            while not stop.is_set():
                try:
                    r = await c.get(url)
                    results["ok" if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    results[type(e).__name__] += 1
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(hammer()) for _ in range(workers)]
    try:
        yield results
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def served_by(layer: TraefikLayer, path: str = "/d/demo/version") -> str:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as c:
        r = await c.get(layer.proxy_url + path)
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}"


def kill_left(pid: int | None) -> None:
    """Finalizer for a Traefik a detached layer left running (started by this test)."""
    if pid is not None and proc.is_alive(pid):
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # a detached layer's child: reap it here


# -- adoption ---------------------------------------------------------------------------------------


async def test_next_server_adopts_the_running_traefik_without_a_failed_request(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    port = free_port()
    a = make_backend("a")
    first = TraefikLayer(tmp_path, proxy_port=port)
    second = TraefikLayer(tmp_path, proxy_port=port)
    pid = None
    try:
        await first.start()
        pid = first.pid
        await first.apply({"demo": [Backend(a.address, 1.0)]})
        assert await first.wait_applied()
        async with hammering(first.proxy_url + "/d/demo/version") as results:
            await wait_until(lambda: results["ok"] >= 20)
            await first.detach()  # the old server loses its role: Traefik stays
            assert proc.is_alive(pid or 0) and first.pid is None and not first.running
            started = time.monotonic()
            await second.start()
            adopt_seconds = time.monotonic() - started
            assert second.pid == pid and second.adopted and second.running
            assert second.api_port == first.api_port  # read back from the running static file
            before = results["ok"]
            await wait_until(lambda: results["ok"] >= before + 20)
            # The adopted table is known: its digest matches, so removals can be confirmed.
            assert await second.wait_applied(1.0)
            b = make_backend("b")
            await second.apply({"demo": [Backend(b.address, 1.0)]})
            assert await second.wait_applied()
            assert await second.confirm_removed("demo", [a.address])
            before = results["ok"]
            await wait_until(lambda: results["ok"] >= before + 20)
        assert set(results) == {"ok"}, results
        assert adopt_seconds < 1.0, adopt_seconds
        assert await served_by(second) == "b"
        await second.close()  # a clean stop of the adopting server leaves nothing running
        assert not proc.is_alive(pid or 0)
        assert not second.pid_file.exists()
    finally:
        await first.close()
        await second.close()
        kill_left(pid)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"proxy_port": None}, id="other-proxy-port"),
        pytest.param({"idle_timeout": 0.5}, id="other-idle-timeout"),
        pytest.param({"throttle": "100ms"}, id="other-throttle"),
        pytest.param({"access_log": True}, id="access-log-added"),
    ],
)
async def test_a_traefik_running_another_configuration_is_replaced(
    tmp_path: Path, make_backend: MakeBackend, change: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    a = make_backend("a")
    first = TraefikLayer(tmp_path, proxy_port=port)
    settings: dict[str, object] = {"proxy_port": port, **change}
    if settings["proxy_port"] is None:
        settings["proxy_port"] = free_port()
    second = TraefikLayer(tmp_path, **settings)  # type: ignore[arg-type]
    pid = None
    try:
        await first.start()
        pid = first.pid
        await first.apply({"demo": [Backend(a.address, 1.0)]})
        await first.detach()
        with caplog.at_level(logging.WARNING, logger="rollwise.traffic.traefik"):
            await second.start()
        assert not proc.is_alive(pid or 0)
        assert second.pid not in (None, pid) and not second.adopted
        assert "instead of adopting it" in caplog.text
        # The previous table serves from the first request on the new Traefik.
        assert await served_by(second) == "a"
    finally:
        await first.close()
        await second.close()
        kill_left(pid)


async def test_a_legacy_pid_file_is_never_adopted_but_its_traefik_is_stopped(tmp_path: Path) -> None:
    port = free_port()
    first = TraefikLayer(tmp_path, proxy_port=port)
    second = TraefikLayer(tmp_path, proxy_port=port)
    pid = None
    try:
        await first.start()
        pid = first.pid
        await first.detach()
        first.pid_file.write_text(f"{pid}\n")  # what an older rollwise wrote: no identity
        await second.start()
        assert not proc.is_alive(pid or 0)
        assert second.pid not in (None, pid) and not second.adopted
    finally:
        await first.close()
        await second.close()
        kill_left(pid)


async def test_a_pid_file_with_another_identity_is_never_signalled(tmp_path: Path) -> None:
    """A pid that does not have the recorded start time may be any process: it is left alone (here it
    still holds the proxy port, so the start fails clearly instead)."""
    port = free_port()
    first = TraefikLayer(tmp_path, proxy_port=port)
    second = TraefikLayer(tmp_path, proxy_port=port)
    pid = None
    try:
        await first.start()
        pid = first.pid
        identity = proc.read_identity(pid or 0)
        assert pid is not None and identity is not None
        await first.detach()
        proc.write_pid_file(first.pid_file, pid, proc.Identity(identity.boot_id, identity.start_ticks + 1))
        with pytest.raises(TrafficFailure, match="for the proxy"):
            await second.start()
        assert proc.is_alive(pid)
    finally:
        await first.close()
        await second.close()
        kill_left(pid)


# -- the table is there before Traefik listens ------------------------------------------------------


async def test_apply_before_start_is_served_from_the_first_request(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    a = make_backend("a")
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    try:
        await layer.apply({"demo": [Backend(a.address, 1.0)]})
        assert layer.dynamic_file.exists() and not layer.pid_file.exists()
        written = layer.dynamic_file.read_text()
        await layer.start()
        assert layer.dynamic_file.read_text() == written  # start kept the table
        assert await served_by(layer) == "a"  # start returned: the table is loaded already
    finally:
        await layer.close()


async def test_apply_before_start_replaces_the_table_of_an_adopted_traefik(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    port = free_port()
    a, b = make_backend("a"), make_backend("b")
    first = TraefikLayer(tmp_path, proxy_port=port)
    second = TraefikLayer(tmp_path, proxy_port=port)
    pid = None
    try:
        await first.start()
        pid = first.pid
        await first.apply({"demo": [Backend(a.address, 1.0)]})
        assert await first.wait_applied()
        await first.detach()
        await second.apply({"demo": [Backend(b.address, 1.0)]})
        await second.start()
        assert second.pid == pid and second.adopted
        assert await second.wait_applied()
        assert await second.confirm_removed("demo", [a.address])
        assert await served_by(second) == "b"
    finally:
        await first.close()
        await second.close()
        kill_left(pid)


# -- supervision -------------------------------------------------------------------------------------


async def test_killed_traefik_is_restarted_with_the_current_table_and_removals_confirm_after(
    layer: TraefikLayer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make_backend("a"), make_backend("b")
    await layer.apply({"demo": [Backend(a.address, 0.5), Backend(b.address, 0.5)]})
    assert await layer.wait_applied()
    ports = (layer.proxy_port, layer.api_port)
    # b leaves the table; Traefik dies before anyone confirmed the removal.
    await layer.apply({"demo": [Backend(a.address, 1.0)]})
    dead = layer.pid
    assert dead is not None
    assert not await layer.ensure_running()  # running: nothing to do
    os.kill(dead, signal.SIGKILL)
    await wait_until(lambda: not layer.running)
    assert not Path(f"/proc/{dead}").exists()  # `running` reaped it: no zombie
    assert layer.down_since is not None
    assert not await layer.confirm_removed("demo", [b.address])  # no API: False, no error
    with caplog.at_level(logging.WARNING, logger="rollwise.traffic.traefik"):
        assert await layer.ensure_running()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(dead) in warnings[0].getMessage()
    assert "exit code -9" in warnings[0].getMessage()
    assert layer.restarts == 1 and layer.down_since is None
    assert layer.pid not in (None, dead) and not layer.adopted
    assert (layer.proxy_port, layer.api_port) == ports
    # The drain carries on: the new Traefik reports the digest of the table written before the crash.
    assert await layer.confirm_removed("demo", [b.address])
    assert await served_by(layer) == "a"
    assert not await layer.ensure_running()


async def test_failed_restart_raises_warns_once_and_succeeds_on_a_later_call(
    layer: TraefikLayer, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    a = make_backend("a")
    await layer.apply({"demo": [Backend(a.address, 1.0)]})
    dead = layer.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    await wait_until(lambda: not layer.running)
    with caplog.at_level(logging.WARNING, logger="rollwise.traffic.traefik"):
        with socket.socket() as squatter:  # someone took the proxy port meanwhile
            squatter.bind(("127.0.0.1", layer.proxy_port))
            squatter.listen()
            for _ in range(2):
                with pytest.raises(TrafficFailure, match="for the proxy"):
                    await layer.ensure_running()
                assert layer.down_since is not None and layer.restarts == 0
        assert await layer.ensure_running()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert layer.restarts == 1 and layer.down_since is None
    assert await served_by(layer) == "a"


async def test_ensure_running_only_supervises_a_started_layer(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path, proxy_port=free_port())
    assert not await layer.ensure_running() and layer.pid is None  # never started: nothing started
    await layer.start()
    try:
        await layer.close()
        assert not await layer.ensure_running() and layer.pid is None
        await layer.start()
        pid = layer.pid
        await layer.detach()
        assert not await layer.ensure_running()
        assert layer.pid is None and proc.is_alive(pid or 0)  # detached: left alone, still running
        await layer.start()  # adopts it back
        assert layer.pid == pid and layer.adopted
    finally:
        await layer.close()
    assert layer.pid is None and not layer.pid_file.exists()


async def test_no_traffic_has_trivial_supervision() -> None:
    layer = NoTraffic()
    assert isinstance(layer, TrafficLayer)
    await layer.start()
    assert layer.running and layer.restarts == 0 and layer.down_since is None
    assert not await layer.ensure_running()
    await layer.detach()
    await layer.close()


# -- environment and files ---------------------------------------------------------------------------


async def test_traefik_gets_no_secret_from_the_server_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLWISE_TOKEN", "s3cret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-key")
    monkeypatch.setenv("TRAEFIK_LOG_LEVEL", "DEBUG")  # Traefik would read this as configuration
    monkeypatch.setenv("LANG", "C.UTF-8")
    layer = TraefikLayer(tmp_path / "data", proxy_port=free_port())
    try:
        await layer.start()
        raw = Path(f"/proc/{layer.pid}/environ").read_bytes()
    finally:
        await layer.close()
    env = dict(entry.decode().partition("=")[::2] for entry in raw.split(b"\0") if entry)
    assert b"s3cret" not in raw
    assert env["ROLLWISE_DATA_DIR"] == str((tmp_path / "data").resolve())
    assert env["LANG"] == "C.UTF-8"
    assert set(env) <= {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "ROLLWISE_DATA_DIR"}, env
    assert "ROLLWISE_ROUTE_ID" not in env  # the local runtime would take it for a route


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_traefik_files_are_private_even_when_an_older_version_left_them_open(
    tmp_path: Path, make_backend: MakeBackend
) -> None:
    a = make_backend("a")
    layer = TraefikLayer(tmp_path, proxy_port=free_port(), access_log=True)
    layer.dir.mkdir(parents=True, mode=0o755)
    os.chmod(layer.dir, 0o755)
    for old in (layer.log_file, layer.access_log_file):
        old.write_text("from an older version\n")
        os.chmod(old, 0o644)
    try:
        await layer.apply({"demo": [Backend(a.address, 1.0)]})
        await layer.start()
        assert await served_by(layer) == "a"
        await wait_until(lambda: layer.access_log_file.stat().st_size > len("from an older version\n"))
        assert mode(layer.dir) == 0o700
        files = [layer.static_file, layer.dynamic_file, layer.pid_file, layer.log_file, layer.access_log_file]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        await layer.close()


async def test_new_files_are_private_from_the_start(tmp_path: Path) -> None:
    layer = TraefikLayer(tmp_path / "fresh", proxy_port=free_port(), access_log=True)
    await layer.apply({})
    assert mode(layer.dir) == 0o700 and mode(layer.dynamic_file) == 0o600
    try:
        await layer.start()
        for f in (layer.static_file, layer.pid_file, layer.log_file, layer.access_log_file):
            assert mode(f) == 0o600, f
    finally:
        await layer.close()
