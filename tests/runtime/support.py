"""Helpers shared by the runtime tests: commands, specs, waiting on conditions (never fixed sleeps)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rollwise.runtime import _proc
from rollwise.runtime.base import LaunchSpec, RouteHandle
from rollwise.runtime.local import LocalRuntime

PY = sys.executable
MODEL_SERVER = (PY, "-m", "rollwise.examples.model_server")
SLEEPER = (PY, "-c", "import time; print('ready', flush=True); time.sleep(60)")
STUBBORN = (
    PY,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)",
)


def spec(route_id: str, command: tuple[str, ...], *, ports: tuple[str, ...] = (), **env: str) -> LaunchSpec:
    return LaunchSpec(route_id=route_id, deployment="demo", revision=1, command=command, env=env, ports=ports)


def is_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a parent that is not us (it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = _proc.read_stat(pid)
    return stat is None or stat.has_exited


async def wait_for(condition: object, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = condition() if callable(condition) else condition
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def log_lines(runtime: LocalRuntime, route_id: str) -> list[str]:
    try:
        return runtime.log_path(route_id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def logged(runtime: LocalRuntime, route_id: str, prefix: str) -> Callable[[], bool]:
    return lambda: any(line.startswith(prefix) for line in log_lines(runtime, route_id))


async def wait_ready(runtime: LocalRuntime, route_id: str) -> None:
    """Wait until the process printed 'ready' (so its signal handlers are installed)."""
    await wait_for(logged(runtime, route_id, "ready"))


async def wait_ready_or_exit(runtime: LocalRuntime, handle: RouteHandle) -> None:
    """Wait until the route printed 'ready', failing at once (with its log) if it exited instead."""

    async def done() -> bool:
        if logged(runtime, handle.route_id, "ready")():
            return True
        if not await runtime.is_running(handle):
            raise AssertionError(f"route {handle.route_id} exited: {log_lines(runtime, handle.route_id)}")
        return False

    await wait_for(done)


async def serves(address: str) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (await client.get(f"http://{address}/healthz", timeout=1)).status_code == 200
    except httpx.HTTPError:
        return False


async def has_stopped(runtime: LocalRuntime, handle: RouteHandle) -> bool:
    return not await runtime.is_running(handle)


def route_of_a_killed_server(data_dir: Path, pids: list[int]) -> RouteHandle:
    """A route started by another server process that was then killed with -9 (the route lives on,
    not our child): its handle, as the dead server's database would give it."""
    server_code = textwrap.dedent(
        f"""
        import asyncio, dataclasses, json
        from pathlib import Path
        from rollwise.runtime.base import LaunchSpec
        from rollwise.runtime.local import LocalRuntime

        async def main():
            runtime = LocalRuntime(Path({str(data_dir)!r}), resources={{}})
            handle = await runtime.start(LaunchSpec("r-1", "demo", 1, {SLEEPER!r}))
            print(json.dumps(dataclasses.asdict(handle)), flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    server = subprocess.Popen([PY, "-c", server_code], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        handle = RouteHandle(**json.loads(server.stdout.readline()))
        pids.append(handle.pid or 0)
    finally:
        server.kill()
        server.wait()
    return handle
