"""LocalRuntime with real processes: launch, identity, stop, adoption after a crash, close, errors."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rollwise.model.errors import RollwiseError
from rollwise.runtime import _proc
from rollwise.runtime.base import RouteHandle, Runtime, RuntimeFailure
from rollwise.runtime.local import LocalRuntime, RegistryEntry

from .support import (
    MODEL_SERVER,
    PY,
    SLEEPER,
    STUBBORN,
    has_stopped,
    is_gone,
    route_of_a_killed_server,
    serves,
    spec,
    wait_for,
    wait_ready,
)

# Launch ------------------------------------------------------------------------------------------------


async def test_is_a_runtime(runtime: LocalRuntime) -> None:
    assert isinstance(runtime, Runtime)


async def test_start_serves_with_port_substitution_and_port_env(runtime: LocalRuntime, pids: list[int]) -> None:
    by_argv = await runtime.start(spec("r-1", (*MODEL_SERVER, "--port", "{port}", "--version", "v1")))
    by_env = await runtime.start(spec("r-2", (*MODEL_SERVER, "--version", "v2")))  # --port defaults to $PORT
    pids += [by_argv.pid or 0, by_env.pid or 0]
    assert by_argv.address.startswith("127.0.0.1:") and by_argv.address != by_env.address
    await wait_for(lambda: serves(by_argv.address))
    await wait_for(lambda: serves(by_env.address))
    async with httpx.AsyncClient(trust_env=False) as client:
        for handle, version in ((by_argv, "v1"), (by_env, "v2")):
            assert (await client.get(f"http://{handle.address}/version")).json()["version"] == version
    assert await runtime.is_running(by_argv) and await runtime.is_running(by_env)
    log = runtime.log_path("r-1").read_text()
    assert "route r-1 (deployment demo, revision 1) starting" in log and "listening on" in log


async def test_registry_file_names_the_process_until_stopped(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    entry = RegistryEntry.from_json(runtime.registry_path("r-1").read_text())
    assert (entry.pid, entry.pgid, entry.identity, entry.address) == (handle.pid, handle.pid, handle.identity, handle.address)
    assert entry.port == int(handle.address.rsplit(":", 1)[1])
    assert entry.deployment == "demo" and entry.command == SLEEPER
    await runtime.stop(handle, grace_seconds=1)
    assert not runtime.registry_path("r-1").exists()


async def test_env_and_markers(runtime: LocalRuntime, pids: list[int]) -> None:
    code = "import os; print('ready', os.environ['GREETING'], os.environ['PORT'], os.environ['ROLLWISE_ROUTE_ID'], flush=True); import time; time.sleep(60)"
    handle = await runtime.start(spec("r-1", (PY, "-c", code), GREETING="hi", ROLLWISE_ROUTE_ID="spoofed"))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    port = handle.address.rsplit(":", 1)[1]
    assert f"ready hi {port} r-1" in runtime.log_path("r-1").read_text()


async def test_ports_are_distinct(runtime: LocalRuntime, pids: list[int]) -> None:
    handles = [await runtime.start(spec(f"r-{i}", ("sleep", "30"))) for i in range(6)]
    pids += [h.pid or 0 for h in handles]
    assert len({h.address for h in handles}) == 6


# Identity ----------------------------------------------------------------------------------------------


async def test_identity_is_boot_id_and_start_time(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    stat = _proc.read_stat(handle.pid or 0)
    assert stat is not None
    assert handle.identity == f"proc1:{_proc.boot_id()}:{stat.start_ticks}"


async def test_pid_reuse_or_wrong_identity_is_not_running(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    assert await runtime.is_running(handle)
    assert not await runtime.is_running(replace(handle, identity="proc1:other-boot:1"))
    # A live pid that is someone else (here: the test process itself) is not our route.
    assert not await runtime.is_running(replace(handle, pid=os.getpid()))
    # The right process under another route's name: its environment marker contradicts.
    assert not await runtime.is_running(replace(handle, route_id="r-2"))
    assert not await runtime.is_running(RouteHandle("r-1", handle.address))


async def test_a_program_that_clears_its_environment_is_still_ours(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", ("env", "-i", *SLEEPER)))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    assert _proc.read_markers(handle.pid or 0) == {}
    assert await runtime.is_running(handle)
    await runtime.stop(handle, grace_seconds=1)
    assert is_gone(handle.pid or 0) and runtime.exit_code("r-1") == -signal.SIGTERM


# Stop --------------------------------------------------------------------------------------------------


async def test_stop_with_sigterm(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", (*MODEL_SERVER, "--port", "{port}")))
    pids.append(handle.pid or 0)
    await wait_for(lambda: serves(handle.address))
    started = time.monotonic()
    await runtime.stop(handle, grace_seconds=5)
    assert time.monotonic() - started < 2
    assert is_gone(handle.pid or 0) and not await runtime.is_running(handle)
    assert runtime.exit_code("r-1") == 0
    log = runtime.log_path("r-1").read_text()
    assert "stopped after draining" in log and "route r-1 stopped (exit code 0)" in log


async def test_sigterm_ignored_means_sigkill_after_grace(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", STUBBORN))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    started = time.monotonic()
    await runtime.stop(handle, grace_seconds=0.5)
    assert 0.5 <= time.monotonic() - started < 2.5
    assert is_gone(handle.pid or 0)
    assert runtime.exit_code("r-1") == -signal.SIGKILL


async def test_stop_reaches_children_in_and_out_of_the_group(runtime: LocalRuntime, pids: list[int]) -> None:
    code = textwrap.dedent(
        """
        import subprocess, time
        inside = subprocess.Popen(["sleep", "60"])
        escaped = subprocess.Popen(["sleep", "60"], start_new_session=True)
        print("ready", inside.pid, escaped.pid, flush=True)
        time.sleep(60)
        """
    )
    handle = await runtime.start(spec("r-1", (PY, "-c", code)))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    line = next(line for line in runtime.log_path("r-1").read_text().splitlines() if line.startswith("ready"))
    inside, escaped = (int(x) for x in line.split()[1:])
    inside_stat = _proc.read_stat(inside)
    assert inside_stat is not None  # a process of the route, but not its leader: no handle names it
    assert not await runtime.is_running(replace(handle, pid=inside, identity=inside_stat.identity))
    await runtime.stop(handle, grace_seconds=1)
    await wait_for(lambda: is_gone(inside) and is_gone(escaped), timeout=3)
    assert is_gone(handle.pid or 0)


async def test_stop_is_idempotent_and_never_raises_for_gone_routes(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    await asyncio.gather(runtime.stop(handle, grace_seconds=1), runtime.stop(handle, grace_seconds=1))
    await runtime.stop(handle, grace_seconds=1)
    await runtime.stop(RouteHandle("never-started", "127.0.0.1:1", 999_999, "proc1:x:1"), grace_seconds=1)
    await runtime.stop(RouteHandle("no-pid", ""), grace_seconds=1)
    assert is_gone(handle.pid or 0)


async def test_a_cancelled_stop_still_finishes(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", STUBBORN))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    stopping = asyncio.create_task(runtime.stop(handle, grace_seconds=0.3))
    await asyncio.sleep(0.1)
    stopping.cancel()
    await wait_for(lambda: is_gone(handle.pid or 0), timeout=3)  # SIGKILL came after the grace anyway


async def test_early_exit_is_not_running_and_keeps_its_exit_code(runtime: LocalRuntime, pids: list[int]) -> None:
    failing = await runtime.start(spec("r-1", (*MODEL_SERVER, "--port", "{port}", "--fail-start")))
    three = await runtime.start(spec("r-2", (PY, "-c", "raise SystemExit(3)")))
    pids += [failing.pid or 0, three.pid or 0]
    await wait_for(lambda: has_stopped(runtime, failing))
    await wait_for(lambda: has_stopped(runtime, three))
    assert runtime.exit_code("r-1") == 1 and runtime.exit_code("r-2") == 3
    await runtime.stop(failing, grace_seconds=1)
    assert runtime.exit_code("r-1") == 1
    assert not runtime.registry_path("r-1").exists()


# Adoption ----------------------------------------------------------------------------------------------


async def test_adopt_after_a_crash(tmp_path: Path, pids: list[int]) -> None:
    first = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    kept = await first.start(spec("r-1", (*MODEL_SERVER, "--port", "{port}")))
    bad = await first.start(spec("r-2", SLEEPER))
    orphan = await first.start(spec("r-3", STUBBORN))
    pids += [kept.pid or 0, bad.pid or 0, orphan.pid or 0]
    await wait_ready(first, "r-3")
    await wait_for(lambda: serves(kept.address))
    del first  # the server dies without closing anything

    second = LocalRuntime(tmp_path, grace_seconds=0.5, resources={})
    verified = await second.adopt([kept, replace(bad, identity="proc1:bogus:1")])
    assert verified == {"r-1"}
    assert is_gone(bad.pid or 0) and is_gone(orphan.pid or 0)
    assert await second.is_running(kept) and await serves(kept.address)
    assert sorted(p.name for p in (tmp_path / "routes").iterdir()) == ["r-1.json"]

    await second.close()
    assert is_gone(kept.pid or 0)
    assert list((tmp_path / "routes").iterdir()) == []


async def test_adopt_finds_marked_orphans_without_registry_files(tmp_path: Path, pids: list[int]) -> None:
    first = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    lost = await first.start(spec("r-1", SLEEPER))
    pids.append(lost.pid or 0)
    first.registry_path("r-1").unlink()  # as if the server died between spawn and the registry write
    second = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    assert await second.adopt([]) == set()
    assert is_gone(lost.pid or 0)


async def test_adopt_leaves_other_data_directories_alone(tmp_path: Path, pids: list[int]) -> None:
    mine = LocalRuntime(tmp_path / "a", grace_seconds=1, resources={})
    handle = await mine.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    other = LocalRuntime(tmp_path / "b", grace_seconds=1, resources={})
    assert await other.adopt([handle]) == set()  # not under b's data directory: not b's to keep
    assert await mine.is_running(handle)
    await mine.close()
    assert is_gone(handle.pid or 0)


async def test_routes_survive_kill_9_of_the_server_and_are_adopted(tmp_path: Path, pids: list[int]) -> None:
    handle = route_of_a_killed_server(tmp_path, pids)
    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    assert await runtime.is_running(handle)
    assert await runtime.adopt([handle]) == {"r-1"}
    await runtime.close()
    await wait_for(lambda: is_gone(handle.pid or 0), timeout=3)  # not our child: init reaps it


# Close -------------------------------------------------------------------------------------------------


async def test_close_stops_everything_in_parallel(tmp_path: Path, pids: list[int]) -> None:
    runtime = LocalRuntime(tmp_path, grace_seconds=0.5, resources={})
    handles = [await runtime.start(spec(f"r-{i}", STUBBORN)) for i in range(4)]
    pids += [h.pid or 0 for h in handles]
    for h in handles:
        await wait_ready(runtime, h.route_id)
    started = time.monotonic()
    await runtime.close()
    assert time.monotonic() - started < 2.0  # four 0.5 s graces one after the other would take 2 s+
    assert all(is_gone(h.pid or 0) for h in handles)
    with pytest.raises(RuntimeFailure, match="closed"):
        await runtime.start(spec("r-9", SLEEPER))


# Errors ------------------------------------------------------------------------------------------------


async def test_command_not_found(runtime: LocalRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="route r-12: command 'no-such-program-xyz' not found"):
        await runtime.start(spec("r-12", ("no-such-program-xyz", "--port", "{port}")))
    assert not runtime.registry_path("r-12").exists()


async def test_launch_errors_are_runtime_failures(runtime: LocalRuntime, tmp_path: Path) -> None:
    not_executable = tmp_path / "script.sh"
    not_executable.write_text("#!/bin/sh\n")
    cases = [
        spec("r-1", (str(not_executable),)),
        spec("r-2", (str(tmp_path / "missing"),)),
        spec("r-3", ()),
        spec("../escape", SLEEPER),
        spec("r-4", (PY, "-c", "nul\0byte")),
    ]
    for case in cases:
        with pytest.raises(RuntimeFailure) as info:
            await runtime.start(case)
        assert isinstance(info.value, RollwiseError) and not isinstance(info.value, OSError)
        assert info.value.code == "runtime.failure"


def test_unusable_data_directory_is_a_runtime_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RuntimeFailure, match="data directory"):
        LocalRuntime(blocker, resources={})


async def test_start_refuses_a_route_id_that_is_running(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER))
    pids.append(handle.pid or 0)
    with pytest.raises(RuntimeFailure, match="already running"):
        await runtime.start(spec("r-1", SLEEPER))
