"""`rollwise server`: the assembly of one server process — store, runtime, traffic layer (Traefik),
coordinator (route controller and lifecycle cycles) and the REST API (uvicorn) — and its clean stop.

`build_plane` assembles everything but the API (the demo and end-to-end tests use it in-process);
`run_server` adds the API and runs until SIGTERM/SIGINT. A clean stop stops the coordinator, every route
process (the runtime's `close`) and Traefik, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollwise.control.clock import SystemClock
from rollwise.control.coordinator import Coordinator, Intervals
from rollwise.control.operations import Operations
from rollwise.model.errors import RollwiseError
from rollwise.runtime.base import Prober, Runtime
from rollwise.store import Store
from rollwise.traffic.base import NoTraffic, TrafficLayer

log = logging.getLogger("rollwise.server")


def default_data_dir() -> Path:
    # A process that rollwise runs as a route carries ROLLWISE_DATA_DIR as its marker (runtime.local):
    # that names its parent's data directory, never a setting for a rollwise started inside a route.
    configured = None if os.environ.get("ROLLWISE_ROUTE_ID") else os.environ.get("ROLLWISE_DATA_DIR")
    return Path(configured or Path.home() / ".rollwise")


@dataclass
class ServerConfig:
    data_dir: Path = field(default_factory=default_data_dir)
    database: str | None = None
    """SQLAlchemy URL; default: a SQLite file in the data directory."""
    host: str = "127.0.0.1"
    api_port: int = 8700
    proxy_port: int = 8080
    proxy: bool = True
    """Run Traefik; without it routes are reachable only at their own addresses."""
    runtime: str = "local"
    """"local" (processes) or "simulated" (no processes; routes become ready after a startup time)."""
    token: str | None = None
    intervals: Intervals = field(default_factory=Intervals)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite+aiosqlite:///{self.data_dir / 'rollwise.db'}"


@dataclass
class Plane:
    """The parts of one server, minus the API. Inert until `activate` (the active server's role)."""

    config: ServerConfig
    store: Store
    runtime: Runtime
    prober: Prober
    traffic: TrafficLayer
    coordinator: Coordinator
    ops: Operations
    clock: SystemClock
    active: bool = False
    abandon: bool = False
    """Set when this server lost the active role: leave route processes to the new active server."""

    async def activate(self) -> None:
        """Take the active role: start the traffic layer, adopt route processes, accept writes."""
        await self.traffic.start()
        adopted, lost = await self.coordinator.start()
        if adopted or lost:
            log.info("adopted %d route processes, %d lost while no server was active", adopted, lost)
        self.active = True
        # One round before the API answers: the proxy is configured from the adopted routes, so a
        # deployment read as READY is served from the first request on.
        await self.coordinator.run_once()


@contextlib.asynccontextmanager
async def build_plane(config: ServerConfig, *, activate: bool = True) -> AsyncIterator[Plane]:
    """Open the store and assemble runtime, traffic layer, coordinator and operations; with `activate`
    (the default: a lone server) also take the active role. On exit an active plane stops everything it
    runs (coordinator, every route process, Traefik) unless it was told to `abandon` them."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    store = await Store.open(config.database_url)
    runtime: Runtime
    prober: Prober
    closers: list[Any] = []
    try:
        if config.runtime == "simulated":
            from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime

            sim = SimulatedRuntime(clock.now, default=SimBehaviour(startup_seconds=0.5))
            runtime, prober = sim, sim
        else:
            from rollwise.runtime.local import LocalRuntime
            from rollwise.traffic.health import HttpProber

            runtime = LocalRuntime(config.data_dir)
            http = HttpProber()
            prober = http
            closers.append(http.aclose)
        traffic: TrafficLayer
        if config.proxy:
            from rollwise.traffic.traefik import TraefikLayer

            traffic = TraefikLayer(config.data_dir, proxy_port=config.proxy_port, host=config.host)
        else:
            traffic = NoTraffic()
        holder: list[Plane] = []
        coordinator = Coordinator(
            store=store,
            runtime=runtime,
            prober=prober,
            traffic=traffic,
            clock=clock,
            intervals=config.intervals,
            is_active=lambda: bool(holder) and holder[0].active,
        )
        ops = Operations(store, clock, coordinator.mark, is_active=lambda: bool(holder) and holder[0].active)
        plane = Plane(config, store, runtime, prober, traffic, coordinator, ops, clock)
        holder.append(plane)
        try:
            if activate:
                await plane.activate()
            yield plane
        finally:
            await coordinator.close()
            if plane.active and not plane.abandon:
                await runtime.close()
                await traffic.close()
    finally:
        for close in closers:
            await close()
        await store.close()


@contextlib.asynccontextmanager
async def running(plane: Plane) -> AsyncIterator[asyncio.Event]:
    """Run the coordinator loop in the background for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(plane.coordinator.run_forever(stop))
    try:
        yield stop
    finally:
        stop.set()
        plane.coordinator.wake()
        await task


class _Uvicorn:
    """uvicorn.Server without its own signal handling (rollwise stops it, then cleans up)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True


class ServerRefused(RollwiseError):
    """This server cannot start (another server uses the same SQLite database file)."""

    code = "server.refused"


LEADERSHIP_POLL = 1.0
"""Seconds between a standby's attempts to take the active role, and between the active one's checks."""


async def run_server(config: ServerConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit status (3 when the active role was lost)."""
    from rollwise.api.app import create_app
    from rollwise.api.auth import load_or_create_token
    from rollwise.store.leadership import FileLeadership, leadership_for

    config.data_dir.mkdir(parents=True, exist_ok=True)
    leadership = leadership_for(config.database_url)
    if isinstance(leadership, FileLeadership) and not await leadership.acquire():
        raise ServerRefused(
            f"database {config.database_url} is in use by another rollwise server (pid {leadership.holder()}); "
            "SQLite allows one server: use PostgreSQL for a standby"
        )
    token, token_path = load_or_create_token(config.data_dir, config.token)
    status = 0
    try:
        async with build_plane(config, activate=False) as plane:
            role = {"now": "standby"}
            app = create_app(plane.ops, token=token, role=lambda: role["now"], coordinator=plane.coordinator)
            api = _Uvicorn(app, config.host, config.api_port)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def on_signal() -> None:
                stop.set()
                api.stop()
                plane.coordinator.wake()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            if token_path is not None:
                print(f"rollwise: API token in {token_path}", flush=True)
            print(
                f"rollwise: API on http://{config.host}:{config.api_port}"
                + (f", proxy on http://{config.host}:{config.proxy_port}/d/NAME/" if config.proxy else ""),
                flush=True,
            )
            coordinator_task: asyncio.Task[None] | None = None
            if await leadership.acquire():
                # A lone server is active before its API answers: no write is ever refused at start.
                await plane.activate()
                role["now"] = "active"
                coordinator_task = asyncio.create_task(plane.coordinator.run_forever(stop))
            api_task = asyncio.create_task(api.serve())
            try:
                while not stop.is_set() and not api_task.done():
                    if not plane.active:
                        if await leadership.acquire():
                            await plane.activate()
                            role["now"] = "active"
                            print("rollwise: active server (running cycles)", flush=True)
                            coordinator_task = asyncio.create_task(plane.coordinator.run_forever(stop))
                        elif role["now"] == "standby" and "announced" not in role:
                            role["announced"] = "yes"
                            print("rollwise: standby (another server is active); serving reads", flush=True)
                    elif not await leadership.check():
                        # Lost the role (database connection gone): stop acting at once, leave the route
                        # processes to the server that takes over, and exit.
                        log.error("lost the active role; stopping")
                        print("rollwise: lost the active role (database connection lost); exiting", flush=True)
                        plane.active = False
                        plane.abandon = True
                        role["now"] = "standby"
                        status = 3
                        on_signal()
                        break
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=LEADERSHIP_POLL)
                    except TimeoutError:
                        pass
            finally:
                stop.set()
                api.stop()
                plane.coordinator.wake()
                if coordinator_task is not None:
                    await coordinator_task
                await api_task
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await leadership.release()
    return status
