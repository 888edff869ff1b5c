"""The traffic-layer seam used by the route controller (rollwise.control).

`apply(services)` replaces the whole routing table: for each deployment name, the weighted backends that
should receive traffic now (only running, ready, active routes with ratio > 0; the caller filters). It
returns when the new table is written; `confirm_removed(name, addresses)` returns True once the proxy
itself reports that none of `addresses` is still a backend of that deployment (used before draining a
route's process). The table is served as given: the proxy runs no health checks of its own (the route
controller's prober decides which routes are in the table).

Each backend carries the revision number its route runs: the proxy splits a deployment's traffic between
revisions exactly in the ratio of their backends' summed weights, then within a revision by weight, and
a request with the header `X-Rollwise-Revision: rN` goes only to revision N (404 when the table has no
backend of it). `revision_stats()` reads the proxy's per-revision counters (`RevisionStats`);
`rollwise.traffic.stats` has the pure window arithmetic over them.

Supervision: while the layer is started, `running` says whether its proxy is alive and
`ensure_running()` (polled by the server, about every 0.25 s) brings a dead proxy back with the current
table. `close()` stops the proxy; `detach()` forgets it without stopping it (a server that loses the active
role leaves the proxy to the next one, which adopts it in `start()`).

Errors (rollwise.model.errors.RollwiseError subclasses):

    RollwiseError
     +-- TrafficFailure           "traffic.failure": the proxy cannot be started or controlled
          +-- TrafficUnavailable  "traffic.unavailable": the proxy's API did not answer now; retry later
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
    revision: int = 0
    """The revision number the route runs (the proxy splits by revision, then by route)."""


@dataclass(frozen=True, slots=True)
class RevisionStats:
    """What the proxy counted for one revision of one deployment: cumulative since `started`.

    Counts are of the proxy's attempts to the revision's backends: a request the retry middleware sent
    three times counts three (a backend that refuses connections shows as three 502s per request). A
    request the proxy answered itself (503 without backends, 404 for an unknown revision) is not counted.
    Use `rollwise.traffic.stats.window` for the counts between two reads."""

    requests: int = 0
    errors: int = 0
    """Answers with a 5xx status (Traefik's own 502 for a connection failure included)."""
    by_code: dict[int, int] = field(default_factory=dict)
    """HTTP status -> answers."""
    buckets: tuple[tuple[float, int], ...] = ()
    """(upper bound in seconds, cumulative count) of the request durations, ascending, +Inf last."""
    started: float = 0.0
    """Unix time since which these counters count: the proxy's start, or later when the proxy dropped and
    restarted this revision's counters (it does so for a revision that left the routing table). A
    different `started` between two reads means the counters were reset in between."""


@runtime_checkable
class TrafficLayer(Protocol):
    async def start(self) -> None: ...

    async def apply(self, services: Mapping[str, Sequence[Backend]]) -> None: ...

    async def confirm_removed(self, deployment: str, addresses: Sequence[str]) -> bool: ...

    async def wait_applied(self, timeout: float = 5.0) -> bool:
        """Return once the proxy serves the last applied table (False after `timeout` seconds)."""
        ...

    async def revision_stats(self) -> dict[tuple[str, int], RevisionStats]:
        """(deployment, revision number) -> the proxy's cumulative counters of that revision (every
        revision of the last applied table, and any other the proxy still counts). Empty without a
        proxy. Raises TrafficUnavailable when the proxy does not answer."""
        ...

    @property
    def running(self) -> bool:
        """True while the proxy is alive (always True for a layer without a process)."""
        ...

    @property
    def restarts(self) -> int:
        """How many times `ensure_running` brought the proxy back."""
        ...

    @property
    def down_since(self) -> float | None:
        """time.monotonic() when the proxy was first seen down; None while it runs."""
        ...

    async def ensure_running(self) -> bool:
        """Restart a dead proxy with the current table: True when it did, False when it was running
        (or the layer is not started). Raises TrafficFailure when the restart failed."""
        ...

    async def close(self) -> None:
        """Stop the proxy (a clean server stop leaves nothing running)."""
        ...

    async def detach(self) -> None:
        """Forget the proxy without stopping it (the next server adopts it)."""
        ...


class NoTraffic:
    """No proxy at all: routing tables are kept in memory only (simulated runs, `rollwise plan`)."""

    def __init__(self) -> None:
        self.services: dict[str, tuple[Backend, ...]] = {}
        self.restarts = 0
        self.down_since: float | None = None

    @property
    def running(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def apply(self, services: Mapping[str, Sequence[Backend]]) -> None:
        self.services = {k: tuple(v) for k, v in services.items()}

    async def confirm_removed(self, deployment: str, addresses: Sequence[str]) -> bool:
        present = {b.address for b in self.services.get(deployment, ())}
        return not present.intersection(addresses)

    async def wait_applied(self, timeout: float = 5.0) -> bool:
        return True

    async def revision_stats(self) -> dict[tuple[str, int], RevisionStats]:
        return {}

    async def ensure_running(self) -> bool:
        return False

    async def close(self) -> None:
        self.services = {}

    async def detach(self) -> None:
        self.services = {}
