"""The runtime seam: what the route controller (rollwise.control) asks of a place where routes run.

Two real implementations live in this package: `local` (one OS process per route) and `simulated`
(deterministic, with its own clock). Both must honour this contract:

- `start` launches a route and returns at once with its handle (address, pid, identity); it never waits
  for the route to become healthy. Readiness is the route controller's business (it probes).
- `is_running` says whether the route's process is still there (and is the one we started).
- `stop` stops a route: SIGTERM (or equivalent), then a hard kill after `grace_seconds`. Idempotent.
- `adopt` is called once after a server (re)start with the handles the database knows: it returns the
  route ids whose processes are verified to be ours (pid plus identity) and still running; every other
  handle is stopped if anything of it is left, and processes that no handle names are stopped too.
- `close` stops every route the runtime started or adopted (clean shutdown: nothing outlives the server).
- `maintain` is periodic upkeep (log rotation, old files); the controller calls it every few seconds.
  It never raises for file problems and never blocks the event loop on file work.
- `exit_report` says how a route's process ended (exit status, last lines it wrote). The controller
  calls it once it sees the process gone; it is cheap and never raises for missing files.
- `capacity` says what the runtime offers, per node: named countable slots such as `{"gpu": 4}`
  (docs/strategies.md, "Capacity"). A route whose `LaunchSpec.resources` asks for slots gets free device
  indices on its node at `start` (in its handle's `devices`); an index is free again only once the
  route's process has exited, and `adopt` restores who holds what. Two alive routes never share an
  index. When the indices a route needs are still held (a process that has not exited yet), `start`
  raises `DevicesBusy`, which is transient: the controller tries again on a later pass.

Errors: implementations raise `RuntimeFailure` (a RollwiseError) for launch problems, never raw OSError.
This module holds only types: no I/O, no imports beyond rollwise.model.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rollwise.model.errors import RollwiseError


class RuntimeFailure(RollwiseError):
    """A route could not be launched or controlled (bad command, no free port, permission...)."""

    code = "runtime.failure"


class DevicesBusy(RuntimeFailure):
    """The device indices a route needs are still held by routes whose processes have not exited yet.
    Transient: the same start succeeds once they have."""

    code = "runtime.devices_busy"
    transient = True


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """One node's slots: `total` maps a resource name to how many units the node has (e.g. {"gpu": 4});
    units of a resource are device indices 0..total-1."""

    name: str
    total: Mapping[str, int] = field(default_factory=dict)


Devices = Mapping[str, tuple[int, ...]]
"""Device indices a route holds, per resource, e.g. {"gpu": (0, 1)}; resources it needs none of are absent."""


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    route_id: str
    deployment: str
    revision: int
    command: tuple[str, ...]
    """argv, never a shell string. In every element and every `env` value, "{port}" is replaced by the
    route's port and "{port.NAME}" by the extra port NAME (see `ports`)."""
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    """Names of extra ports the route needs besides its main one (e.g. "grpc", "metrics"): each gets
    its own free port, given as "{port.NAME}" and in the variable PORT_<NAME upper-cased>. Names match
    ^[a-z][a-z0-9_]{0,29}$, are distinct and are never "port" (the model validates them)."""
    resources: Mapping[str, int] = field(default_factory=dict)
    """What the route needs, per resource (e.g. {"gpu": 1}); zero or absent = none of it."""


@dataclass(frozen=True, slots=True)
class RouteHandle:
    route_id: str
    address: str
    """host:port where the route serves HTTP."""
    pid: int | None = None
    identity: str = ""
    """Opaque proof that `pid` is still the process we started (e.g. its start time)."""
    devices: Devices = field(default_factory=dict)
    """The device indices the route was given at start (see `Runtime.capacity`)."""
    node: str | None = None
    """The node the route runs on (None: the runtime has one node, or the route has not started)."""


@dataclass(frozen=True, slots=True)
class ExitReport:
    """How a route's process ended, for people: the controller puts it in the route's detail."""

    code: int | None
    """The exit status; -N when killed by signal N; None when unknown (e.g. an adopted process is not
    our child, so its status went to another parent; or it has not exited)."""
    log_tail: tuple[str, ...] = ()
    """The last lines the route itself wrote (stdout and stderr), oldest first, each cut short."""
    lost: bool = False
    """The route went away with the place it ran on (a cluster node was lost), not by its own doing: the
    controller counts it as terminated, not failed, so a node's loss never reads as the revision failing."""

    def describe(self) -> str:
        """"exit code 1", "killed by signal 9 (SIGKILL)" or "exit code unknown"."""
        if self.code is None:
            return "exit code unknown"
        if self.code >= 0:
            return f"exit code {self.code}"
        number = -self.code
        try:
            return f"killed by signal {number} ({signal.Signals(number).name})"
        except ValueError:  # a real-time or otherwise unnamed signal
            return f"killed by signal {number}"


@runtime_checkable
class Runtime(Protocol):
    async def start(self, spec: LaunchSpec) -> RouteHandle: ...

    async def is_running(self, handle: RouteHandle) -> bool: ...

    async def stop(self, handle: RouteHandle, *, grace_seconds: float) -> None: ...

    async def adopt(self, handles: Sequence[RouteHandle]) -> set[str]: ...

    async def close(self) -> None: ...

    async def maintain(self) -> None:
        """Periodic upkeep (every few seconds): rotate logs, remove old leftovers. Never raises."""
        ...

    async def exit_report(self, handle: RouteHandle, *, lines: int = 5) -> ExitReport:
        """How the route's process ended, with at most `lines` of its last output. Never raises."""
        ...

    def capacity(self) -> tuple[NodeCapacity, ...]:
        """The nodes and their slots; a node without slots still appears (with an empty `total`)."""
        ...


@runtime_checkable
class Prober(Protocol):
    """Health probing of one route: True when `GET http://address{path}` answers 2xx within timeout."""

    async def probe(self, address: str, path: str, *, timeout: float) -> bool: ...

    async def listening(self, address: str, *, timeout: float) -> bool:
        """True once something accepts connections at `address` (a route's process has started)."""
        ...
