"""The traffic-layer seam used by the route controller (rollwise.control).

`apply(services)` replaces the whole routing table: for each deployment name, the weighted backends that
should receive traffic now (only running, ready, active routes with ratio > 0; the caller filters). It
returns when the new table is written; `confirm_removed(name, addresses)` returns True once the proxy
itself reports that none of `addresses` is still a backend of that deployment (used before draining a
route's process).

Errors (rollwise.model.errors.RollwiseError subclasses):

    RollwiseError
     +-- TrafficFailure           "traffic.failure": the proxy cannot be started or controlled
          +-- TrafficUnavailable  "traffic.unavailable": the proxy's API did not answer now; retry later
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rollwise.model.errors import RollwiseError


class TrafficFailure(RollwiseError):
    """The proxy cannot be started or controlled (binary missing, port taken, proxy exited...)."""

    code = "traffic.failure"


class TrafficUnavailable(TrafficFailure):
    """The proxy's API did not answer this time; asking again later may succeed."""

    code = "traffic.unavailable"
    transient = True


@dataclass(frozen=True, slots=True)
class Backend:
    address: str
    """host:port"""
    weight: float
    health_path: str | None = None
    """Path the proxy probes on this backend (the revision's health check); None: no proxy probe."""


@runtime_checkable
class TrafficLayer(Protocol):
    async def start(self) -> None: ...

    async def apply(self, services: Mapping[str, Sequence[Backend]]) -> None: ...

    async def confirm_removed(self, deployment: str, addresses: Sequence[str]) -> bool: ...

    async def wait_applied(self, timeout: float = 5.0) -> bool:
        """Return once the proxy serves the last applied table (False after `timeout` seconds)."""
        ...

    async def close(self) -> None: ...


class NoTraffic:
    """No proxy at all: routing tables are kept in memory only (simulated runs, `rollwise plan`)."""

    def __init__(self) -> None:
        self.services: dict[str, tuple[Backend, ...]] = {}

    async def start(self) -> None:
        return None

    async def apply(self, services: Mapping[str, Sequence[Backend]]) -> None:
        self.services = {k: tuple(v) for k, v in services.items()}

    async def confirm_removed(self, deployment: str, addresses: Sequence[str]) -> bool:
        present = {b.address for b in self.services.get(deployment, ())}
        return not present.intersection(addresses)

    async def wait_applied(self, timeout: float = 5.0) -> bool:
        return True

    async def close(self) -> None:
        self.services = {}
