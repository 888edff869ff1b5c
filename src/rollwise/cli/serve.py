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
from rollwise.runtime.base import Prober, Runtime
from rollwise.store import Store
from rollwise.traffic.base import NoTraffic, TrafficLayer

log = logging.getLogger("rollwise.server")


def default_data_dir() -> Path:
    return Path(os.environ.get("ROLLWISE_DATA_DIR") or Path.home() / ".rollwise")


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
    """The running parts of one server, minus the API."""

    config: ServerConfig
    store: Store
    runtime: Runtime
    prober: Prober
    traffic: TrafficLayer
    coordinator: Coordinator
    ops: Operations
    clock: SystemClock
    extras: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def build_plane(config: ServerConfig) -> AsyncIterator[Plane]:
    """Open the store, start the traffic layer, adopt route processes; on exit stop everything."""
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
        await traffic.start()
        coordinator = Coordinator(
            store=store, runtime=runtime, prober=prober, traffic=traffic, clock=clock, intervals=config.intervals
        )
        adopted, lost = await coordinator.start()
        if adopted or lost:
            log.info("adopted %d route processes, %d lost while the server was down", adopted, lost)
        ops = Operations(store, clock, coordinator.mark)
        plane = Plane(config, store, runtime, prober, traffic, coordinator, ops, clock)
        try:
            yield plane
        finally:
            await coordinator.close()
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


async def run_server(config: ServerConfig) -> None:
    from rollwise.api.app import create_app
    from rollwise.api.auth import load_or_create_token

    token, token_path = load_or_create_token(config.data_dir, config.token)
    async with build_plane(config) as plane:
        app = create_app(plane.ops, token=token, role=lambda: "active", coordinator=plane.coordinator)
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
        coordinator_task = asyncio.create_task(plane.coordinator.run_forever(stop))
        try:
            await api.serve()
        finally:
            stop.set()
            plane.coordinator.wake()
            await coordinator_task
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
