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

Errors: implementations raise `RuntimeFailure` (a RollwiseError) for launch problems, never raw OSError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rollwise.model.errors import RollwiseError


class RuntimeFailure(RollwiseError):
    """A route could not be launched or controlled (bad command, no free port, permission...)."""

    code = "runtime.failure"


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    route_id: str
    deployment: str
    revision: int
    command: tuple[str, ...]
    """argv, never a shell string; "{port}" in any element is replaced by the route's port."""
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteHandle:
    route_id: str
    address: str
    """host:port where the route serves HTTP."""
    pid: int | None = None
    identity: str = ""
    """Opaque proof that `pid` is still the process we started (e.g. its start time)."""


@runtime_checkable
class Runtime(Protocol):
    async def start(self, spec: LaunchSpec) -> RouteHandle: ...

    async def is_running(self, handle: RouteHandle) -> bool: ...

    async def stop(self, handle: RouteHandle, *, grace_seconds: float) -> None: ...

    async def adopt(self, handles: Sequence[RouteHandle]) -> set[str]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Prober(Protocol):
    """Health probing of one route: True when `GET http://address{path}` answers 2xx within timeout."""

    async def probe(self, address: str, path: str, *, timeout: float) -> bool: ...

    async def listening(self, address: str, *, timeout: float) -> bool:
        """True once something accepts connections at `address` (a route's process has started)."""
        ...

