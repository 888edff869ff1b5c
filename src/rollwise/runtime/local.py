"""The local runtime: one OS process per route on this machine (Linux), surviving server crashes.

Called by the route controller (rollwise.control) through the `Runtime` protocol (runtime.base), and by
the CLI to build it. It never waits for a route to become healthy (the controller probes) and never
imports store, traffic or control.

Launch. `start(spec)` picks a free TCP port on the runtime's host for the route and one more for each
name in `spec.ports`, replaces "{port}" and "{port.NAME}" in every argv element and every value of
`spec.env`, and spawns the argv (never a shell). The environment is not the server's: only PATH, HOME,
LANG, TZ and TMPDIR are inherited, then the spec's env, then PORT, PORT_<NAME> per extra port and two
markers, ROLLWISE_ROUTE_ID and ROLLWISE_DATA_DIR, which the spec cannot override (runtime._launch). The
process gets its own session and process group, so a killed server (even `kill -9`) does not take
routes down with it and a stop reaches the route's children too.

Devices. The node's slots are `resources` (e.g. {"gpu": 4}, from `rollwise server --resources gpu=4`,
used as given) or, when None, the GPUs `nvidia-smi -L` lists (runtime._gpus; none when it is absent or
fails); `capacity()` is the one node "local" with them. `start` allocates what `spec.resources` asks
for from a `DeviceTable` (runtime.devices) before anything is spawned: the lowest free indices, or
`DevicesBusy` (transient) when they are held, or `RuntimeFailure` when the node has too few of them.
The route gets CUDA_VISIBLE_DEVICES and ROLLWISE_RESOURCES (`device_env`, over the spec's own values),
its handle's `devices` and `node="local"`, and its registry file records them. An index is free again
only once every process of its route has exited (the leader, its group, marked strays): when a stop
ends with them gone, when `is_running` finds them gone, at `close`; a launch that fails before its
spawn gives its indices back at once. A stop that leaves processes behind keeps the route's indices
and registry file; the route is "lingering" until a later check (a start that finds no free index,
`maintain`, `is_running`, `close`) sees them gone. `adopt` gives verified routes back what their
registry file and handle name (their union); an index already held by another adopted route stays
with it and is handed to the claimant the moment it is released, with a warning, so no new route ever
gets an index an alive route may be using (stopping a verified route on a bookkeeping conflict would
be worse than waiting). Routes `adopt` stops hold nothing afterwards, unless they outlive the stop.

Logs. stdout and stderr are appended to `<data_dir>/logs/<route>.log` through an O_APPEND descriptor
(the runtime adds one line at each start and stop). `maintain()` rotates logs over `max_log_bytes` by
copy-truncate, keeping `log_backups` backups, and removes the logs of routes this runtime neither runs
nor has in its registry once they are unchanged for `log_retention_seconds` (runtime._logs says why a
route never writes into a pipe). `exit_report` reads the exit status and the end of the log.

Identity. A handle's `identity` is `"proc1:<boot id>:<start time in ticks>"` (see runtime._proc). A
route is running when its pid is alive (not a zombie), has that identity, leads its own session, and
its environment does not name another route or data directory (ROLLWISE_ROUTE_ID, ROLLWISE_DATA_DIR). A
reused pid is therefore never ours, and signals go through pidfds, so they cannot reach a process that
merely inherited a number. The runtime never signals its own process or process group, whatever a
handle says.

Registry. `<data_dir>/routes/<route>.json` is written atomically right after a spawn and removed when a
stop has finished (unless the route lingers, above): {route_id, pid, pgid, identity, port, ports,
address, deployment, revision, command, started_at, devices}; `ports` holds the extra ports by name and
`devices` the indices per resource (files of older versions, without them, load with none). With the
environment markers it lets `adopt` find processes of a previous server that no handle names: anything
under this data directory that is not verified by a handle is stopped.

Stop. SIGTERM to the route's process group (and to marked processes that left the group), up to the
grace period for all of them to exit, then SIGKILL, then the exit status is collected when the process
is our child. Concurrent stops of one route share one stop; stopping a gone route is a no-op. Then the
route's devices are released if its processes are all gone (see Devices).

Files. The logs/ and routes/ directories are 0700, log files, backups and registry files 0600 (they
hold commands and output); the constructor fixes the modes of what an older version left.

Errors. Launch problems (command not found, not executable, argument list too long, no port,
unwritable data directory, a resource the node lacks) raise `RuntimeFailure` naming the route and the
cause in one line (`DevicesBusy` when the indices are merely held for now); OSError never leaks.
Stopping never raises for processes that are already gone; neither do `maintain` and `exit_report`
for file problems.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import re
import shlex
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rollwise.runtime import _gpus, _launch, _logs, _proc
from rollwise.runtime._proc import Pinned
from rollwise.runtime.base import (
    Devices,
    DevicesBusy,
    ExitReport,
    LaunchSpec,
    NodeCapacity,
    RouteHandle,
    RuntimeFailure,
)
from rollwise.runtime.devices import GPU, DeviceTable, device_env

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.05
"""How often a stop checks whether the route's processes are gone."""
RECENT_PORT_SECONDS = 120.0
"""A port handed out is not handed out again for this long (the route may not have bound it yet)."""
EXEC_WAIT_POLLS = 500
"""At most this many 1 ms waits for a spawned program's environment to appear (see _exec_finished)."""
DEFAULT_GRACE_SECONDS = 5.0
DEFAULT_KILL_WAIT_SECONDS = 5.0
DEFAULT_MAX_LOG_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 3
DEFAULT_LOG_RETENTION_SECONDS = 7 * 24 * 3600.0
RETENTION_SWEEP_SECONDS = 600.0
"""Old logs are looked for at most this often (rotation checks run at every `maintain`)."""

NODE = "local"
"""The name of the local runtime's one node (`capacity()`, `RouteHandle.node`)."""

_ROUTE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """What `<data_dir>/routes/<route_id>.json` holds about a started route."""

    route_id: str
    pid: int
    pgid: int
    identity: str
    port: int
    address: str
    deployment: str = ""
    revision: int = 0
    command: tuple[str, ...] = ()
    started_at: str = ""
    """UTC, ISO 8601; for people reading the file."""
    ports: Mapping[str, int] = field(default_factory=dict)
    """The extra ports by name (LaunchSpec.ports); absent from files of older versions."""
    devices: Devices = field(default_factory=dict)
    """The device indices the route's process was given, e.g. {"gpu": (0,)} (JSON {"gpu": [0]});
    absent from files of older versions (none)."""

    def to_json(self) -> str:
        data = asdict(self)
        data["ports"] = dict(self.ports)
        data["devices"] = {name: list(idx) for name, idx in sorted(self.devices.items()) if idx}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> RegistryEntry:
        """Parse a registry file; ValueError when it is not one."""
        try:
            data: dict[str, Any] = json.loads(text)
            entry = cls(
                route_id=str(data["route_id"]),
                pid=int(data["pid"]),
                pgid=int(data["pgid"]),
                identity=str(data["identity"]),
                port=int(data["port"]),
                address=str(data["address"]),
                deployment=str(data.get("deployment", "")),
                revision=int(data.get("revision", 0)),
                command=tuple(str(part) for part in data.get("command", ())),
                started_at=str(data.get("started_at", "")),
                ports={str(name): int(port) for name, port in data.get("ports", {}).items()},
                devices=_parse_devices(data.get("devices", {})),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a registry entry: {e}") from e
        return entry

    def handle(self) -> RouteHandle:
        return RouteHandle(self.route_id, self.address, self.pid, self.identity, dict(self.devices), NODE)


@dataclass(frozen=True, slots=True)
class _Route:
    handle: RouteHandle
    port: int
    ports: Mapping[str, int] = field(default_factory=dict)
    """Extra ports by name."""


class LocalRuntime:
    """Runtime over local processes; see the module docstring for identity, registry and stop rules.

    `grace_seconds` is the SIGTERM-to-SIGKILL grace used where the protocol gives none (`adopt`'s
    leftovers, `close`); `kill_wait_seconds` is how long a stop waits after SIGKILL before giving up.
    `max_log_bytes`, `log_backups` and `log_retention_seconds` (None: keep forever) govern the logs
    `maintain` rotates and removes. `resources` is the node's slots (e.g. {"gpu": 4}, used as given);
    None detects the GPUs with `nvidia-smi -L` (runtime._gpus): {"gpu": count}, or {} without any.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        kill_wait_seconds: float = DEFAULT_KILL_WAIT_SECONDS,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
        log_backups: int = DEFAULT_LOG_BACKUPS,
        log_retention_seconds: float | None = DEFAULT_LOG_RETENTION_SECONDS,
        resources: Mapping[str, int] | None = None,
    ) -> None:
        if not _proc.is_supported():
            raise RuntimeFailure("the local runtime needs Linux (/proc is missing)")
        if max_log_bytes < 1 or log_backups < 0:
            raise RuntimeFailure("local runtime: max_log_bytes must be positive and log_backups not negative")
        if resources is None:
            gpus = _gpus.detect_gpus()
            total = {GPU: gpus} if gpus > 0 else {}
        else:
            total = dict(resources)
        for name, count in total.items():
            if not name or isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise RuntimeFailure(f"local runtime: resource {name!r}: {count!r} is not a count of units")
        self._data_dir = Path(data_dir).resolve()
        self._marker = str(self._data_dir)
        self._logs_dir = self._data_dir / "logs"
        self._registry_dir = self._data_dir / "routes"
        try:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            unfixed = _logs.make_private(self._logs_dir, ("*.log", "*.log.*"))
            unfixed += _logs.make_private(self._registry_dir, ("*.json", "*.json.tmp"))
        except OSError as e:
            raise RuntimeFailure(f"local runtime: cannot use data directory {self._data_dir}: {e.strerror}") from e
        for path, error in unfixed:
            logger.warning("local runtime: cannot make %s private: %s", path, error)
        self._host = host
        self._grace = grace_seconds
        self._kill_wait = kill_wait_seconds
        self._max_log_bytes = max_log_bytes
        self._log_backups = log_backups
        self._log_retention = log_retention_seconds
        self._routes: dict[str, _Route] = {}
        self._exit_codes: dict[str, int] = {}
        self._recent_ports: dict[int, float] = {}
        self._stopping: dict[str, asyncio.Future[None]] = {}
        self._maintaining: asyncio.Future[None] | None = None
        self._last_sweep: float | None = None
        # Held while a log is opened for a start and while the retention sweep removes a route's logs:
        # a sweep must not delete a log that a start has just opened. (A thread lock: the sweep runs
        # in a worker thread; both sides hold it for a few system calls only.)
        self._log_lock = threading.Lock()
        self._closed = False
        # Devices: the table says who holds which index. A route may be found using indices that are
        # held by another route (adoption of inconsistent files): those wait in `_contested` and are
        # taken by it the moment their holder releases them, so no new route ever gets them.
        # `_lingering` holds the routes whose stop finished with processes left: they keep their
        # indices (and registry file) until their processes are seen gone. `_epochs` changes at every
        # allocation or claim of a route, so a check begun before it cannot release what it gave.
        self._total: dict[str, int] = total
        self._devices = DeviceTable(total)
        self._contested: dict[str, dict[str, set[int]]] = {}
        self._lingering: dict[str, RouteHandle] = {}
        self._epochs: dict[str, int] = {}
        self._epoch = 0

    # Facts ------------------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    def log_path(self, route_id: str) -> Path:
        return self._logs_dir / f"{route_id}.log"

    def registry_path(self, route_id: str) -> Path:
        return self._registry_dir / f"{route_id}.json"

    def ports(self, route_id: str) -> dict[str, int]:
        """The extra ports of a route this runtime started or adopted, by name (empty if none)."""
        route = self._routes.get(route_id)
        return dict(route.ports) if route is not None else {}

    def holders(self) -> dict[str, dict[int, str]]:
        """resource -> device index -> the route holding it (for people and tests)."""
        return self._devices.holders()

    @property
    def peak(self) -> dict[str, int]:
        """The most units of each resource held at once since this runtime was built."""
        return dict(self._devices.peak)

    def exit_code(self, route_id: str) -> int | None:
        """How the route's process ended: its exit status, or -N when killed by signal N.

        None while it runs, when it was never started here, or when it was adopted (it is not our child,
        so its status went to another parent).
        """
        route = self._routes.get(route_id)
        if route is not None:
            self._collect_exit(route_id, route.handle.pid, route.handle.identity)
        return self._exit_codes.get(route_id)

    # Runtime protocol ------------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> RouteHandle:
        route_id = spec.route_id
        if self._closed:
            raise RuntimeFailure(f"route {route_id}: the local runtime is closed")
        if not _ROUTE_ID.match(route_id):
            raise RuntimeFailure(f"route {route_id!r}: a route id must be letters, digits, '.', '_' or '-'")
        if not spec.command or not spec.command[0]:
            raise RuntimeFailure(f"route {route_id}: empty command")
        current = self._routes.get(route_id)
        if current is not None and await self.is_running(current.handle):
            raise RuntimeFailure(f"route {route_id}: already running as pid {current.handle.pid}")

        try:
            _launch.check_port_names(spec.ports)
        except ValueError as e:
            raise RuntimeFailure(f"route {route_id}: {e}") from e

        # From here to the spawn nothing awaits: the indices allocated cannot be claimed meanwhile.
        devices = await self._allocate(route_id, spec.resources)
        try:
            port = self._pick_port()
            extra = {name: self._pick_port() for name in spec.ports}
            try:
                argv = [_launch.substitute(part, port, extra) for part in spec.command]
                env = _launch.route_environment(
                    os.environ,
                    spec.env,
                    main_port=port,
                    ports=extra,
                    route_id=route_id,
                    data_dir=self._marker,
                    device_variables=device_env(devices, self._total),
                )
            except _launch.UnknownPort as e:
                raise RuntimeFailure(f"route {route_id}: {e}") from e
            program = _proc.resolve_executable(argv[0], env)
            if program is None:
                raise RuntimeFailure(f"route {route_id}: command {argv[0]!r} not found")
            pid = self._spawn(spec, program, argv, env)
        except BaseException:
            self._release(route_id)  # nothing was spawned
            raise
        stat = _proc.read_stat(pid)  # present: an unreaped child cannot vanish
        if stat is None:
            self._release(route_id)
            raise RuntimeFailure(f"route {route_id}: process {pid} vanished at start")
        address = f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"
        handle = RouteHandle(route_id, address, pid, stat.identity, dict(devices), NODE)
        # Known before the first await, so a concurrent close() stops it too.
        route = self._routes[route_id] = _Route(handle, port, extra)
        self._exit_codes.pop(route_id, None)
        await _exec_finished(pid)
        if self._routes.get(route_id) is not route:
            raise RuntimeFailure(f"route {route_id}: stopped while starting")
        entry = RegistryEntry(
            route_id=route_id,
            pid=pid,
            pgid=stat.pgid,
            identity=stat.identity,
            port=port,
            address=address,
            deployment=spec.deployment,
            revision=spec.revision,
            command=tuple(argv),
            started_at=_now(),
            ports=extra,
            devices=dict(devices),
        )
        try:
            self._write_registry(entry)
        except OSError as e:
            await self.stop(handle, grace_seconds=0.0)
            raise RuntimeFailure(f"route {route_id}: cannot write {self.registry_path(route_id)}: {e.strerror}") from e
        return handle

    async def is_running(self, handle: RouteHandle) -> bool:
        """Whether the handle's process is alive and ours. When it is not and the route holds devices,
        they are released once none of the route's processes is left (children included)."""
        running = False
        if handle.pid is not None and handle.identity:
            self._collect_exit(handle.route_id, handle.pid, handle.identity)
            running = _proc.verify(handle.pid, handle.identity, route_id=handle.route_id, data_dir=self._marker)
        if not running and self._holds(handle.route_id) and handle.route_id not in self._stopping:
            await self._release_if_gone(handle.route_id, handle)
        return running

    async def stop(self, handle: RouteHandle, *, grace_seconds: float) -> None:
        """Stop every process of `handle.route_id` under this data directory; see the module docstring.

        The stop goes on even if the caller is cancelled (a half-done stop would leave a process that
        got SIGTERM but never SIGKILL).
        """
        route_id = handle.route_id
        pending = self._stopping.get(route_id)
        if pending is None:
            pending = asyncio.ensure_future(self._stop_route(handle, grace_seconds))
            self._stopping[route_id] = pending

            def forget(done: asyncio.Future[None], route_id: str = route_id) -> None:
                if self._stopping.get(route_id) is done:
                    del self._stopping[route_id]

            pending.add_done_callback(forget)
        await asyncio.shield(pending)

    async def adopt(self, handles: Sequence[RouteHandle], *, grace_seconds: float | None = None) -> set[str]:
        """Keep the routes whose handles verify; stop everything else found under this data directory.

        "Everything else": unverified handles, registry files and marked processes (ROLLWISE_DATA_DIR
        equal to this data directory) whose route id no verified handle has. Returns the verified ids.

        A verified route holds again the device indices its registry file and handle name; an index
        another adopted route already holds is taken by it as soon as that route releases it (a warning
        says so), so no new route is given it meanwhile. Routes stopped here hold nothing afterwards,
        unless their processes survive the stop (then they keep their indices until seen gone).
        """
        grace = self._grace if grace_seconds is None else grace_seconds
        verified: set[str] = set()
        for handle in handles:
            if handle.route_id in verified or not await self.is_running(handle):
                continue
            verified.add(handle.route_id)
            entry = self._read_registry(handle.route_id)
            same = entry is not None and entry.pid == handle.pid and entry.identity == handle.identity
            ports = entry.ports if entry is not None and entry.pid == handle.pid else {}
            # What the process was given: its registry file's record and its handle's (they agree unless
            # a file was lost or is from an older version; the union is the side that never shares).
            devices = _union(handle.devices, entry.devices if entry is not None and same else {})
            self._claim(handle.route_id, devices)
            adopted = replace(handle, devices=devices, node=NODE)
            self._routes[handle.route_id] = _Route(adopted, _port_of(handle.address), ports)
            self._ensure_registered(adopted)
        registered = self._registered_route_ids()
        marked = await asyncio.to_thread(_proc.scan_marked, self._marker)
        by_id = {h.route_id: h for h in handles}
        # Routes in memory are verified ones and any this instance started itself: never leftovers.
        leftovers = (set(by_id) | registered | {m.route_id for m in marked}) - verified - set(self._routes)
        if leftovers:
            logger.info("adopt: stopping %d route(s) not verified: %s", len(leftovers), sorted(leftovers))
        await asyncio.gather(
            *(
                self.stop(by_id.get(route_id) or RouteHandle(route_id, ""), grace_seconds=grace)
                for route_id in sorted(leftovers)
            )
        )
        return verified

    async def close(self, *, grace_seconds: float | None = None) -> None:
        """Stop, in parallel, every route this runtime started or adopted; later starts are refused."""
        self._closed = True
        grace = self._grace if grace_seconds is None else grace_seconds
        stops: list[Awaitable[None]] = [
            self.stop(route.handle, grace_seconds=grace) for route in list(self._routes.values())
        ]
        stops += [self.stop(handle, grace_seconds=grace) for handle in list(self._lingering.values())]
        stops += [asyncio.shield(pending) for pending in list(self._stopping.values())]
        await asyncio.gather(*stops)

    async def maintain(self) -> None:
        """Rotate logs over `max_log_bytes`; now and then remove logs of long-gone routes.

        Covers every log under logs/, leftovers of earlier servers included. The file work runs in a
        worker thread; concurrent calls share one run. Problems are logged, never raised. Routes whose
        stop left processes behind release their devices here once those processes are gone.
        """
        if self._lingering:
            try:
                await self._reclaim_lingering()
            except Exception:  # upkeep never raises
                logger.exception("local runtime: checking routes whose processes outlived their stop failed")
        if self._maintaining is None:
            now = time.monotonic()
            sweep = self._log_retention is not None and (
                self._last_sweep is None or now - self._last_sweep >= RETENTION_SWEEP_SECONDS
            )
            if sweep:
                self._last_sweep = now
            self._maintaining = asyncio.ensure_future(
                asyncio.to_thread(self._maintain_files, frozenset(self._routes), sweep)
            )

            def forget(_: asyncio.Future[None]) -> None:
                self._maintaining = None

            self._maintaining.add_done_callback(forget)
        await asyncio.shield(self._maintaining)

    async def exit_report(self, handle: RouteHandle, *, lines: int = 5) -> ExitReport:
        """The route's exit status (None unless it was our child and has exited) and its last lines.

        Cheap: one status check and at most two reads of a few KiB; never raises for missing files.
        """
        code = None
        if _ROUTE_ID.match(handle.route_id):
            if handle.pid is not None and handle.identity:
                self._collect_exit(handle.route_id, handle.pid, handle.identity)
            code = self.exit_code(handle.route_id)
            tail = _logs.read_tail(self.log_path(handle.route_id), lines)
        else:
            tail = ()
        return ExitReport(code, tail)

    # Launch -----------------------------------------------------------------------------------------

    def _pick_port(self) -> int:
        now = time.monotonic()
        self._recent_ports = {p: t for p, t in self._recent_ports.items() if now - t < RECENT_PORT_SECONDS}
        taken = {port for route in self._routes.values() for port in (route.port, *route.ports.values())}
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        for _ in range(64):
            try:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.bind((self._host, 0))
                    port: int = probe.getsockname()[1]
            except OSError as e:
                raise RuntimeFailure(f"local runtime: no free port on {self._host}: {e.strerror}") from e
            if port not in self._recent_ports and port not in taken:
                self._recent_ports[port] = now
                return port
        raise RuntimeFailure(f"local runtime: no fresh free port on {self._host} after 64 tries")

    def _spawn(self, spec: LaunchSpec, program: str, argv: list[str], env: dict[str, str]) -> int:
        route_id = spec.route_id
        log_path = self.log_path(route_id)
        message = _logs.start_message(route_id, spec.deployment, spec.revision, shlex.join(argv))
        with self._log_lock:  # once the start line is written, the retention sweep leaves the log alone
            try:
                # O_APPEND (see _logs): the route keeps writing at the end after a copy-truncate rotation.
                fd = _logs.open_for_append(log_path)
            except OSError as e:
                raise RuntimeFailure(f"route {route_id}: cannot open log {log_path}: {e.strerror}") from e
            try:
                os.write(fd, _logs.marker_line(message))
            except OSError as e:
                os.close(fd)
                raise RuntimeFailure(f"route {route_id}: cannot write log {log_path}: {e.strerror}") from e
        try:
            return _proc.spawn(program, argv, env, output_fd=fd)
        except OSError as e:
            raise RuntimeFailure(f"route {route_id}: cannot run {argv[0]!r}: {_spawn_error(e, argv, env)}") from e
        except ValueError as e:  # e.g. a NUL byte in an argument or variable
            raise RuntimeFailure(f"route {route_id}: cannot run {argv[0]!r}: {e}") from e
        finally:
            os.close(fd)

    # Devices ----------------------------------------------------------------------------------------

    def capacity(self) -> tuple[NodeCapacity, ...]:
        """The one node, "local", with its slots ({} without any)."""
        return (NodeCapacity(NODE, dict(self._total)),)

    async def _allocate(self, route_id: str, need: Mapping[str, int]) -> Devices:
        """The lowest free indices for `need` (DevicesBusy, RuntimeFailure); the caller spawns at once."""
        if self._holds(route_id):
            # An earlier start under this id left processes that may still use its indices.
            if not await self._release_if_gone(route_id, self._lingering.get(route_id) or RouteHandle(route_id, "")):
                raise DevicesBusy(
                    f"route {route_id}: processes of its earlier start still hold {_describe(self._claims(route_id))}"
                )
        try:
            devices = self._devices.allocate(route_id, need)
        except DevicesBusy:
            if not self._lingering:
                raise
            await self._reclaim_lingering()  # a process that outlived its stop may have exited since
            if self._holds(route_id):
                raise RuntimeFailure(f"route {route_id}: started twice at once") from None
            devices = self._devices.allocate(route_id, need)
        self._new_epoch(route_id)
        return devices

    def _holds(self, route_id: str) -> bool:
        return bool(self._devices.held_by(route_id)) or route_id in self._contested

    def _claims(self, route_id: str) -> dict[str, set[int]]:
        """What the route holds plus what it waits for (contested)."""
        claims = {name: set(idx) for name, idx in self._devices.held_by(route_id).items()}
        for name, idx in self._contested.get(route_id, {}).items():
            claims.setdefault(name, set()).update(idx)
        return claims

    def _new_epoch(self, route_id: str) -> None:
        """Mark a change of what the route holds (kept only while it holds something)."""
        if not self._holds(route_id):
            self._epochs.pop(route_id, None)
            return
        self._epoch += 1
        self._epochs[route_id] = self._epoch

    def _claim(self, route_id: str, devices: Mapping[str, Iterable[int]]) -> None:
        """Hold `devices` for a route whose process may be using them (adopted, or outliving its stop).

        Indices another route holds cannot be taken now: they wait in `_contested` and are taken the
        moment that route releases them. Indices the node does not have are left out (no route can be
        given them anyway).
        """
        wanted = self._claims(route_id)
        for name, idx in devices.items():
            wanted.setdefault(name, set()).update(idx)
        holders = self._devices.holders()
        take: dict[str, tuple[int, ...]] = {}
        waiting: dict[str, set[int]] = {}
        for name, idx in sorted(wanted.items()):
            total = self._total.get(name, 0)
            outside = sorted(i for i in idx if not 0 <= i < total)
            if outside:
                logger.warning("route %s: holds %s %s, which this node (%s %d) does not have; left out",
                               route_id, name, outside, name, total)
            inside = sorted(i for i in idx if 0 <= i < total)
            mine = [i for i in inside if holders.get(name, {}).get(i, route_id) == route_id]
            others = {i: holders[name][i] for i in inside if i not in mine}
            if mine:
                take[name] = tuple(mine)
            if others:
                waiting[name] = set(others)
                if self._contested.get(route_id, {}).get(name, set()) != set(others):
                    logger.warning(
                        "route %s: %s %s also held by %s, whose processes are alive too; it keeps running and "
                        "takes them once the holder's processes have exited (no new route gets them)",
                        route_id, name, sorted(others), sorted(set(others.values())),
                    )
        previous = self._contested.pop(route_id, None)
        if not self._devices.restore(route_id, take):  # cannot fail: only free or own indices in range
            logger.error("route %s: could not hold %s", route_id, _describe(take))
        if waiting:
            self._contested[route_id] = waiting
        elif previous:
            logger.info("route %s: now holds %s", route_id, _describe(self._devices.held_by(route_id)))
        self._new_epoch(route_id)

    def _release(self, route_id: str) -> None:
        """Free the route's indices (its processes are gone) and give contested ones to their claimants."""
        self._devices.release(route_id)
        self._contested.pop(route_id, None)
        self._epochs.pop(route_id, None)
        if self._lingering.pop(route_id, None) is not None:
            logger.info("route %s: its remaining processes have exited; its devices are free", route_id)
            self._unregister(route_id)
        for claimant in list(self._contested):
            self._claim(claimant, {})

    async def _release_if_gone(self, route_id: str, handle: RouteHandle) -> bool:
        """Release the route's indices if none of its processes is left; True when it holds none."""
        if not self._holds(route_id):
            return True
        epoch = self._epochs.get(route_id)
        candidates = self._candidate_handles(handle)
        gone = await asyncio.to_thread(self._gone, route_id, candidates)
        if gone and self._epochs.get(route_id) == epoch:  # else: given again meanwhile, by a new start
            self._release(route_id)
        return not self._holds(route_id)

    async def _reclaim_lingering(self) -> None:
        for route_id, handle in list(self._lingering.items()):
            if route_id not in self._stopping:
                await self._release_if_gone(route_id, handle)

    async def _devices_after_stop(self, handle: RouteHandle) -> bool:
        """After a stop: release the route's indices if its processes are gone (True), else keep them,
        together with any its registry file or handles name, until they are (False: lingering)."""
        route_id = handle.route_id
        candidates = self._candidate_handles(handle)
        named = _union(*(candidate.devices for candidate in candidates))
        if not self._holds(route_id) and not named:
            return True
        epoch = self._epochs.get(route_id)
        if await asyncio.to_thread(self._gone, route_id, candidates):
            if self._epochs.get(route_id) == epoch:
                self._release(route_id)
            return True
        self._claim(route_id, named)
        if not self._holds(route_id):
            return True  # nothing this node has (indices out of range): nothing to keep
        route = self._routes.get(route_id)
        self._lingering[route_id] = route.handle if route is not None else candidates[-1]
        logger.warning("route %s: processes left after the stop; it keeps %s until they have exited",
                       route_id, _describe(self._claims(route_id)))
        return False

    def _gone(self, route_id: str, candidates: Sequence[RouteHandle]) -> bool:
        """No process of the route is left (worker thread): no candidate leader alive or with a live
        group, and no live process marked with the route's id under this data directory."""
        seen: set[tuple[int, str]] = set()
        for candidate in candidates:
            pid = candidate.pid
            if pid is None or not candidate.identity or (pid, candidate.identity) in seen:
                continue
            seen.add((pid, candidate.identity))
            if pid in (os.getpid(), os.getpgrp()):
                continue  # never the server itself
            stat = _proc.read_stat(pid)
            if stat is None:
                # The leader is reaped; a group with its id can only be its own (a pid is not reused
                # while a group bears it), whose members may run on.
                if _proc.live_group_members(pid):
                    return False
            elif stat.identity == candidate.identity:
                if not stat.has_exited or _proc.live_group_members(pid):
                    return False
            # else: the pid is another process's now, so the route's group had ended before
        return not _proc.scan_marked(self._marker, route_id=route_id)

    # Stop -------------------------------------------------------------------------------------------

    async def _stop_route(self, handle: RouteHandle, grace: float) -> None:
        route_id = handle.route_id
        leader = self._pin_leader(route_id, self._candidate_handles(handle))
        try:
            stopped_any = await self._terminate(route_id, leader, grace=grace)
        finally:
            if leader is not None:
                leader.close()
        for candidate in self._candidate_handles(handle):
            self._collect_exit(route_id, candidate.pid, candidate.identity)
        if stopped_any:
            code = self._exit_codes.get(route_id)
            self._append_log(route_id, f"stopped (exit code {'unknown' if code is None else code})")
        released = await self._devices_after_stop(handle)
        self._routes.pop(route_id, None)
        if released:
            self._unregister(route_id)
        # else: processes are left and the route keeps its devices and its registry file (lingering)

    def _candidate_handles(self, handle: RouteHandle) -> list[RouteHandle]:
        """Where the route's leader may be found: the caller's handle, our memory, the registry file."""
        candidates = [handle]
        route = self._routes.get(handle.route_id)
        if route is not None:
            candidates.append(route.handle)
        lingering = self._lingering.get(handle.route_id)
        if lingering is not None:
            candidates.append(lingering)
        entry = self._read_registry(handle.route_id)
        if entry is not None:
            candidates.append(entry.handle())
        return candidates

    def _pin_leader(self, route_id: str, candidates: Iterable[RouteHandle]) -> Pinned | None:
        for candidate in candidates:
            if candidate.pid is None or not candidate.identity:
                continue
            if candidate.pid in (os.getpid(), os.getpgrp()):
                continue
            pinned = Pinned.open(candidate.pid, identity=candidate.identity)
            if pinned is None:
                continue
            # An exited leader (a zombie, no longer a session leader in /proc) still anchors its group,
            # which may hold live children.
            is_leader = pinned.is_group_leader or pinned.has_exited()
            if is_leader and _proc.markers_allow(candidate.pid, route_id=route_id, data_dir=self._marker):
                return pinned
            pinned.close()
        return None

    def _pin_strays(self, route_id: str, leader: Pinned | None, known: Iterable[Pinned]) -> list[Pinned]:
        """Pin marked processes of the route that a signal to the leader's group would not reach."""
        seen = {p.pid for p in known}
        strays = []
        for process in _proc.scan_marked(self._marker, route_id=route_id):
            if process.pid in seen or process.pid == os.getpid():
                continue
            if leader is not None and process.stat.pgid == leader.pid:
                continue
            pinned = Pinned.open(process.pid, start_ticks=process.stat.start_ticks)
            if pinned is not None:
                strays.append(pinned)
        return strays

    async def _terminate(self, route_id: str, leader: Pinned | None, *, grace: float) -> bool:
        """SIGTERM, wait up to `grace`, SIGKILL, wait; True when there was something to stop."""
        strays = await asyncio.to_thread(self._pin_strays, route_id, leader, ())
        try:
            if leader is None and not strays:
                return False
            _signal_all(leader, strays, signal.SIGTERM)
            if await self._wait_gone(route_id, leader, strays, grace):
                return True
            strays += await asyncio.to_thread(self._pin_strays, route_id, leader, strays)
            logger.warning("route %s: still running %.1fs after SIGTERM, sending SIGKILL", route_id, grace)
            _signal_all(leader, strays, signal.SIGKILL)
            if not await self._wait_gone(route_id, leader, strays, self._kill_wait):
                logger.error("route %s: processes survive SIGKILL after %.1fs", route_id, self._kill_wait)
            return True
        finally:
            for pinned in strays:
                pinned.close()

    async def _wait_gone(self, route_id: str, leader: Pinned | None, strays: list[Pinned], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if leader is not None:
                self._collect_exit(route_id, leader.pid, leader.identity)
            if all(p.has_exited() for p in strays) and (
                leader is None or (leader.has_exited() and await asyncio.to_thread(leader.group_is_empty))
            ):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)

    def _collect_exit(self, route_id: str, pid: int | None, identity: str) -> None:
        """Reap the route's process if it is an exited child of ours, and remember its exit code."""
        if pid is None:
            return
        stat = _proc.read_stat(pid)
        # Only a zombie with the route's identity: a zombie keeps its pid until reaped, so this is ours.
        if stat is None or not stat.has_exited or stat.identity != identity:
            return
        code = _proc.reap(pid)
        if code is not None:
            self._exit_codes[route_id] = code

    def _append_log(self, route_id: str, message: str) -> None:
        try:
            _logs.append_marker(self.log_path(route_id), f"route {route_id} {message}")
        except OSError:
            pass  # the log is for people; a stop must not fail because of it

    # Maintenance (worker thread) ----------------------------------------------------------------------

    def _maintain_files(self, known: frozenset[str], sweep: bool) -> None:
        """Rotate oversized logs, fix file modes, and (when `sweep`) remove logs of long-gone routes."""
        try:
            found = _logs.scan(self._logs_dir)
        except OSError as e:
            logger.warning("local runtime: cannot list %s: %s", self._logs_dir, e)
            return
        for route_id, logs in found.items():
            for file in logs.files():
                if file.mode != _logs.FILE_MODE:
                    _quietly(os.chmod, file.path, _logs.FILE_MODE)
            if logs.live is not None and logs.live.size > self._max_log_bytes:
                try:
                    _logs.rotate(logs.live.path, backups=self._log_backups, keep_bytes=self._max_log_bytes)
                except OSError as e:
                    logger.warning("route %s: log rotation failed: %s", route_id, e)
        if sweep and self._log_retention is not None:
            self._remove_old_logs(found, known, time.time() - self._log_retention)

    def _remove_old_logs(self, found: Mapping[str, _logs.RouteLogs], known: frozenset[str], cutoff: float) -> None:
        """Logs of routes neither running here nor registered, unchanged since `cutoff`, are removed.

        A registered route may still run (a previous server's, not adopted yet): its descriptor would
        keep writing into a deleted file that no rotation could reach.
        """
        registered = self._registered_route_ids()
        for route_id, logs in found.items():
            if route_id in known or route_id in registered or logs.newest_mtime() > cutoff:
                continue
            with self._log_lock:
                try:
                    if _logs.remove_route_logs(self._logs_dir, route_id, unchanged_since=cutoff):
                        logger.info("route %s: removed logs unchanged for %.0fs", route_id, self._log_retention)
                except OSError as e:
                    logger.warning("route %s: cannot remove old logs: %s", route_id, e)

    # Registry ---------------------------------------------------------------------------------------

    def _write_registry(self, entry: RegistryEntry) -> None:
        path = self.registry_path(entry.route_id)
        temporary = path.with_suffix(".json.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _logs.FILE_MODE)
        try:
            os.fchmod(fd, _logs.FILE_MODE)  # a leftover temporary file may have another mode
            data = entry.to_json().encode()
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)

    def _read_registry(self, route_id: str) -> RegistryEntry | None:
        if not _ROUTE_ID.match(route_id):
            return None
        try:
            return RegistryEntry.from_json(self.registry_path(route_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            logger.warning("route %s: unreadable registry file: %s", route_id, e)
            return None

    def _registered_route_ids(self) -> set[str]:
        try:
            return {path.stem for path in self._registry_dir.glob("*.json")}
        except OSError as e:
            logger.warning("local runtime: cannot list %s: %s", self._registry_dir, e)
            return set()

    def _ensure_registered(self, handle: RouteHandle) -> None:
        """After adoption, make sure the registry names the adopted process (a crash may have lost it)
        and the devices it holds (a file of an older version has none)."""
        entry = self._read_registry(handle.route_id)
        if entry is not None and entry.pid == handle.pid and entry.identity == handle.identity:
            if _union(entry.devices, {}) != _union(handle.devices, {}):
                try:
                    self._write_registry(replace(entry, devices=dict(handle.devices)))
                except OSError as e:
                    logger.warning("route %s: cannot write registry file: %s", handle.route_id, e)
            return
        stat = _proc.read_stat(handle.pid) if handle.pid is not None else None
        if stat is None or handle.pid is None or not _ROUTE_ID.match(handle.route_id):
            return
        try:
            self._write_registry(
                RegistryEntry(
                    route_id=handle.route_id,
                    pid=handle.pid,
                    pgid=stat.pgid,
                    identity=handle.identity,
                    port=_port_of(handle.address),
                    address=handle.address,
                    started_at=_now(),
                    devices=dict(handle.devices),
                )
            )
        except OSError as e:
            logger.warning("route %s: cannot write registry file: %s", handle.route_id, e)

    def _unregister(self, route_id: str) -> None:
        if not _ROUTE_ID.match(route_id):
            return
        try:
            self.registry_path(route_id).unlink(missing_ok=True)
        except OSError as e:
            logger.warning("route %s: cannot remove registry file: %s", route_id, e)


async def _exec_finished(pid: int) -> None:
    """Wait (a few milliseconds at most, usually none) until the new process's environment is visible.

    posix_spawn returns once the child has begun exec, before the kernel has laid out the new
    program's environment; until then /proc shows no markers, and an identity check could not tell
    this route from another. The wait is bounded: a child that dies meanwhile ends it too.
    """
    for _ in range(EXEC_WAIT_POLLS):
        if _proc.exec_visible(pid):
            return
        stat = _proc.read_stat(pid)
        if stat is None or stat.has_exited:
            return
        await asyncio.sleep(0.001)


def _signal_all(leader: Pinned | None, strays: Sequence[Pinned], sig: int) -> None:
    if leader is not None:
        leader.signal_group(sig)
    for pinned in strays:
        pinned.signal(sig)


def _spawn_error(error: OSError, argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The cause of a failed spawn in words; E2BIG gets the sizes, since the message alone misleads."""
    if error.errno == errno.E2BIG:
        args = sum(len(part.encode()) + 1 for part in argv)
        variables = sum(len(name.encode()) + len(value.encode()) + 2 for name, value in env.items())
        longest = max(len(part.encode()) for part in [*argv, *env.values()])
        return (
            f"argument list too long (E2BIG: {args} bytes of arguments, {variables} bytes of environment, "
            f"longest single value {longest} bytes; Linux limits one value to 128 KiB)"
        )
    return error.strerror or str(error)


def _quietly(action: Callable[..., object], *args: object) -> None:
    try:
        action(*args)
    except OSError as e:
        logger.warning("local runtime: %s%s failed: %s", getattr(action, "__name__", action), args, e)


def _parse_devices(data: Any) -> dict[str, tuple[int, ...]]:
    """A registry file's {"gpu": [0, 1]}; TypeError unless it is one (resources with none left out)."""
    if not isinstance(data, dict) or not all(isinstance(idx, list) for idx in data.values()):
        raise TypeError(f"devices must map names to lists of indices, not {data!r}")
    return {str(name): tuple(int(i) for i in idx) for name, idx in data.items() if idx}


def _union(*devices: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
    """The indices named in any of `devices`, per resource, sorted; resources with none left out."""
    merged: dict[str, set[int]] = {}
    for one in devices:
        for name, idx in one.items():
            merged.setdefault(name, set()).update(idx)
    return {name: tuple(sorted(idx)) for name, idx in sorted(merged.items()) if idx}


def _describe(devices: Mapping[str, Iterable[int]]) -> str:
    """ "gpu 0,1" (or "nothing")."""
    parts = [f"{name} {','.join(str(i) for i in sorted(idx))}" for name, idx in sorted(devices.items()) if idx]
    return "; ".join(parts) or "nothing"


def _port_of(address: str) -> int:
    _, _, port = address.rpartition(":")
    return int(port) if port.isdigit() else 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
