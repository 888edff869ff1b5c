"""`rollwise server`: the assembly of one server process — store, runtime, traffic layer (Traefik),
coordinator (route controller and lifecycle cycles), proxy supervisor and the REST API (uvicorn) — and its
clean stop.

`build_plane` assembles everything but the API (the demo and end-to-end tests use it in-process);
`run_server` adds the API and runs until SIGTERM/SIGINT. Start-up order, so that a restart is invisible to
clients (docs/operations.md, "Faults"):

1. the data directory (0700), the active role (SQLite: a file lock; PostgreSQL: an advisory lock), the
   store; a standby of the local runtime whose host or data directory differs from the active server's
   refuses to start;
2. the API answers at once (`/healthz` role `starting`, writes accepted once the role is held);
3. activation, in the background: route processes adopted, the routing table computed from the database
   and written, then the proxy started — or, far more often, the proxy of the previous server adopted
   (it never stopped serving); then the coordinator and the proxy supervisor run (role `active`).

A clean stop stops the coordinator, every route process (the runtime's `close`) and Traefik, in that order.
A server that loses the active role leaves route processes and Traefik to the next server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollwise.cli.early import EarlyResponder
from rollwise.control.clock import Clock, SystemClock
from rollwise.control.coordinator import Coordinator, Intervals, node_totals
from rollwise.control.operations import Operations
from rollwise.control.supervisor import ProxySupervisor
from rollwise.model.errors import RollwiseError, ValidationFailed
from rollwise.runtime.base import Prober, Runtime
from rollwise.store import Store
from rollwise.traffic.base import NoTraffic, TrafficLayer

log = logging.getLogger("rollwise.server")

LOCAL_MAX_STARTING = 64
"""Local route processes started but not listening yet, at most (a thousand replicas boot in waves)."""
ACTIVE_SERVER_KEY = "active_server"
"""`meta` key: where the active server runs ({"host", "data_dir", "runtime"})."""


def default_data_dir() -> Path:
    # A process that rollwise runs as a route carries ROLLWISE_DATA_DIR as its marker (runtime.local):
    # that names its parent's data directory, never a setting for a rollwise started inside a route.
    configured = None if os.environ.get("ROLLWISE_ROUTE_ID") else os.environ.get("ROLLWISE_DATA_DIR")
    return Path(configured or Path.home() / ".rollwise")


def prepare_data_dir(path: Path) -> None:
    """Create the data directory readable by its owner only (it holds the token, the database, route logs);
    an existing one is made so too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


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
    """"local" (processes), "simulated" (no processes; routes become ready after a startup time) or "ray"
    (actors on a Ray cluster, `rollwise[ray]`)."""
    token: str | None = None
    token_file: Path | None = None
    ray_address: str | None = None
    """The Ray cluster of runtime "ray" (`--ray-address`); None: RAY_ADDRESS or what Ray finds."""
    resources: dict[str, int] | None = None
    """The node's slots (`--resources gpu=4`); None = detect GPUs with nvidia-smi (local runtime), none
    for the simulated runtime."""
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
    clock: Clock
    supervisor: ProxySupervisor
    role: str = "standby"
    """What /healthz says: "standby", "starting" (adopting routes and the proxy) or "active"."""
    writable: bool = False
    """True while this server holds the active role: it takes writes (from "starting" on)."""
    active: bool = False
    """True once activated: the coordinator and the supervisor run."""
    abandon: bool = False
    """Set when this server lost the active role: leave route processes and the proxy to the next server."""

    async def activate(self) -> None:
        """Take the active role: adopt route processes, write the routing table, then start (or adopt)
        the proxy, so a new proxy never serves a partial table and an adopted one never stops."""
        self.writable = True
        self.role = "starting"
        adopted, lost = await self.coordinator.start()
        if adopted or lost:
            log.info("adopted %d route processes, %d lost while no server was active", adopted, lost)
        await self.coordinator.routes.publish_table()
        await self.traffic.start()
        await self.record_active_server()
        self.active = True
        # One round before reporting active: the proxy is configured from the adopted routes, so a
        # deployment read as READY is served from the first request on.
        await self.coordinator.run_once()
        self.role = "active"

    async def record_active_server(self) -> None:
        where = {"host": socket.gethostname(), "data_dir": str(self.config.data_dir.resolve()),
                 "runtime": self.config.runtime}
        await self.store.set_meta(ACTIVE_SERVER_KEY, json.dumps(where, sort_keys=True), self.clock.now())

    async def check_standby_fits(self) -> None:
        """A standby of the local runtime must share the active server's machine and data directory:
        it adopts that server's processes, which it can only see there. Raises ServerRefused."""
        if self.config.runtime != "local":
            return
        text = await self.store.get_meta(ACTIVE_SERVER_KEY)
        if text is None:
            return
        active = json.loads(text)
        here = {"host": socket.gethostname(), "data_dir": str(self.config.data_dir.resolve())}
        for key, words in (("host", "host"), ("data_dir", "--data-dir")):
            if active.get(key) != here[key]:
                raise ServerRefused(
                    f"the active server runs with {words} {active.get(key)!r}, this one with {here[key]!r}: a "
                    "standby of the local runtime must share the active server's machine and --data-dir "
                    "(it adopts that server's route processes)"
                )


def proxy_base_url(config: ServerConfig) -> str:
    """The proxy's base URL as a process on this machine reaches it (a canary's command metrics get
    `{it}/d/NAME/`): a wildcard host is reached on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    return f"http://[{host}]:{config.proxy_port}" if ":" in host else f"http://{host}:{config.proxy_port}"


@contextlib.asynccontextmanager
async def build_plane(
    config: ServerConfig, *, activate: bool = True, clock: Clock | None = None
) -> AsyncIterator[Plane]:
    """Open the store and assemble runtime, traffic layer, coordinator and operations; with `activate`
    (the default: a lone server) also take the active role. On exit an active plane stops everything it
    runs (coordinator, every route process, Traefik) unless it was told to `abandon` them.

    `clock`: real time by default; tests pass a ManualClock to drive the coordinator, the proxy
    supervisor and the simulated runtime in fake time."""
    prepare_data_dir(config.data_dir)
    clock = clock or SystemClock()
    store = await Store.open(config.database_url)
    runtime: Runtime
    prober: Prober
    closers: list[Any] = []
    max_starting: int | None = None
    try:
        if config.runtime == "simulated":
            from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime

            sim = SimulatedRuntime(clock.now, default=SimBehaviour(startup_seconds=0.5),
                                   resources=config.resources or {})
            runtime, prober = sim, sim
        elif config.runtime == "ray":
            # Ray swaps 127.0.0.1 for another interface address unless told not to, before its import.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            from rollwise.runtime.ray import RayRuntime
            from rollwise.traffic.health import HttpProber

            ray_runtime = RayRuntime(config.ray_address)
            await ray_runtime.connect()  # RuntimeFailure (one line) when the cluster cannot be reached
            runtime = ray_runtime
            http = HttpProber()
            prober = http
            closers.append(http.aclose)
            max_starting = LOCAL_MAX_STARTING
        else:
            from rollwise.runtime.local import LocalRuntime
            from rollwise.traffic.health import HttpProber

            runtime = LocalRuntime(config.data_dir, resources=config.resources)
            http = HttpProber()
            prober = http
            closers.append(http.aclose)
            max_starting = LOCAL_MAX_STARTING
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
            max_starting=max_starting,
            proxy_url=proxy_base_url(config) if config.proxy else None,
        )
        ops = Operations(
            store, clock, coordinator.mark,
            is_active=lambda: bool(holder) and holder[0].writable,
            route_overlay=coordinator.routes.overlay,
            capacity=lambda: node_totals(runtime),
        )
        supervisor = ProxySupervisor(traffic, clock=clock, on_restart=coordinator.wake)
        plane = Plane(config, store, runtime, prober, traffic, coordinator, ops, clock, supervisor)
        holder.append(plane)
        try:
            if activate:
                await plane.activate()
            yield plane
        finally:
            await coordinator.close()
            if plane.abandon:
                await traffic.detach()
            elif plane.active or plane.writable:  # also a server stopped while it was still starting
                await runtime.close()
                await traffic.close()
    finally:
        for close in closers:
            await close()
        await store.close()


@contextlib.asynccontextmanager
async def running(plane: Plane) -> AsyncIterator[asyncio.Event]:
    """Run the coordinator loop and the proxy supervisor in the background for the duration of the block."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(plane.coordinator.run_forever(stop)),
        asyncio.create_task(plane.supervisor.run(stop)),
    ]
    try:
        yield stop
    finally:
        stop.set()
        plane.coordinator.wake()
        await asyncio.gather(*tasks)


class _Uvicorn:
    """uvicorn.Server without its own signal handling (rollwise stops it, then cleans up)."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))

    async def serve(self, sock: socket.socket | None = None) -> None:
        """Serve on `sock` when given (the early responder's listening socket), else bind host:port."""
        await self.server.serve(sockets=[sock] if sock is not None else None)

    def stop(self) -> None:
        self.server.should_exit = True


class ServerRefused(RollwiseError):
    """This server cannot start (another server uses the same SQLite database file, or a standby that
    does not share the active server's machine and data directory)."""

    code = "server.refused"


LEADERSHIP_POLL = 1.0
"""Seconds between a standby's attempts to take the active role, and between the active one's checks."""


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


def read_token_file(path: Path) -> str:
    """The token in `--token-file PATH` (surrounding whitespace ignored); ValidationFailed when unusable."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValidationFailed(f"--token-file: cannot read {path}: {getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise ValidationFailed(f"--token-file: {path} is empty")
    return token


async def run_server(config: ServerConfig, *, early: EarlyResponder | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit status (3 when the active role was lost).
    `early`: the responder that answered on the API port while this was imported; its socket is taken
    over by the API."""
    from rollwise.api.app import create_app
    from rollwise.api.auth import TOKEN_ENV, load_or_create_token
    from rollwise.store.leadership import FileLeadership, leadership_for

    prepare_data_dir(config.data_dir)
    leadership = leadership_for(config.database_url)
    if isinstance(leadership, FileLeadership) and not await leadership.acquire():
        raise ServerRefused(
            f"database {config.database_url} is in use by another rollwise server (pid {leadership.holder()}); "
            "SQLite allows one server: use PostgreSQL for a standby"
        )
    given = read_token_file(config.token_file) if config.token_file is not None else config.token
    token, token_path = load_or_create_token(config.data_dir, given)
    os.environ.pop(TOKEN_ENV, None)  # nothing this server starts may inherit it
    status = 0
    try:
        async with build_plane(config, activate=False) as plane:
            leader = await leadership.acquire()
            if not leader:
                await plane.check_standby_fits()
            app = create_app(plane.ops, token=token, role=lambda: plane.role, coordinator=plane.coordinator,
                             proxy=plane.traffic if config.proxy else None)
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
                + f", dashboard on http://{config.host}:{config.api_port}/ui/"
                + (f", proxy on http://{config.host}:{config.proxy_port}/d/NAME/" if config.proxy else "")
                + f", {slots_words(node_totals(plane.runtime))}",
                flush=True,
            )
            plane.role = "starting" if leader else "standby"
            plane.writable = leader
            api_task = asyncio.create_task(api.serve(early.hand_over() if early is not None else None))
            loops: list[asyncio.Task[None]] = []

            async def become_active() -> None:
                await plane.activate()
                loops.append(asyncio.create_task(plane.coordinator.run_forever(stop)))
                loops.append(asyncio.create_task(plane.supervisor.run(stop)))

            # Long work (adoption, the proxy) runs beside the API, which answers /healthz meanwhile.
            activation: asyncio.Task[None] | None = asyncio.create_task(become_active()) if leader else None
            announced = False
            try:
                while not stop.is_set() and not api_task.done():
                    if activation is not None:
                        if activation.done():
                            activation.result()  # a failed activation stops the server with its error
                            print("rollwise: active server (running cycles)", flush=True)
                            activation = None
                        await _wait(stop, 0.05)
                        continue
                    if not plane.writable:
                        if await leadership.acquire():
                            plane.role, plane.writable = "starting", True
                            activation = asyncio.create_task(become_active())
                            continue
                        if not announced:
                            announced = True
                            print("rollwise: standby (another server is active); serving reads", flush=True)
                    elif not await leadership.check():
                        # Lost the role (database connection gone): stop acting at once, leave the route
                        # processes and the proxy to the server that takes over, and exit.
                        log.error("lost the active role; stopping")
                        print("rollwise: lost the active role (database connection lost); exiting", flush=True)
                        plane.active = plane.writable = False
                        plane.abandon = True
                        plane.role = "standby"
                        status = 3
                        on_signal()
                        break
                    await _wait(stop, LEADERSHIP_POLL)
            finally:
                stop.set()
                api.stop()
                plane.coordinator.wake()
                if activation is not None:
                    activation.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await activation
                await asyncio.gather(*loops)
                await api_task
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await leadership.release()
    return status


def slots_words(totals: Mapping[str, Mapping[str, int]]) -> str:
    """"slots gpu=4" (or "no slots"): the node's slots as the start-up line says them."""
    slots = ",".join(f"{name}={n}" for node in totals.values() for name, n in sorted(node.items()) if n)
    return f"slots {slots}" if slots else "no slots"
