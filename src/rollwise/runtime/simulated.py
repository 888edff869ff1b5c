"""A deterministic runtime with its own clock: routes become ready after a startup time, fail to
start, or run and turn unhealthy, as each revision's behaviour says. Used by tests and by
`rollwise simulate`; it is a product feature, not a mock of the local runtime.

It implements both the Runtime and the Prober protocols (runtime.base): a simulated route has no socket,
so the prober answers from the same simulated state. Time comes from the `now` callable given at
construction (the control layer's ManualClock in simulations); nothing here reads the wall clock.

Ports: a spec's extra `ports` are accepted and ignored (a simulated route listens on nothing). Upkeep:
`maintain` has nothing to do. Exit reports are deterministic: a START failure exits with code 1 and
the tail ("simulated: exited before listening",); a crash (`crash`) is a SIGKILL (-9) with
("simulated: crashed",); a route stopped by rollwise, running, or unknown reports code None, no tail.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

SIGKILL = 9
"""The signal a simulated crash reports (the number is the same on every platform rollwise runs on)."""

from rollwise.runtime.base import ExitReport, LaunchSpec, NodeCapacity, RouteHandle
from rollwise.runtime.devices import DeviceTable


NODE = "sim"
"""The simulated runtime's one node."""


class SimFailure(str, Enum):
    NONE = "none"
    START = "start"
    """The process exits after its startup time without ever listening."""
    UNHEALTHY = "unhealthy"
    """The process listens but its health check fails (after `unhealthy_after` seconds)."""


@dataclass(frozen=True, slots=True)
class SimBehaviour:
    startup_seconds: float = 2.0
    failure: SimFailure = SimFailure.NONE
    unhealthy_after: float = 0.0


@dataclass(slots=True)
class _SimRoute:
    spec: LaunchSpec
    handle: RouteHandle
    started_at: datetime
    behaviour: SimBehaviour
    stopped: bool = False
    stopped_at: datetime | None = None
    crashed: bool = False
    lost: bool = False


class SimulatedRuntime:
    """Runtime + Prober over simulated routes. `behaviours` maps revision numbers to behaviours."""

    def __init__(
        self,
        now: Callable[[], datetime],
        behaviours: Mapping[int, SimBehaviour] | None = None,
        *,
        default: SimBehaviour | None = None,
        seed: int | None = None,
        jitter: float = 0.0,
        resources: Mapping[str, int] | None = None,
    ) -> None:
        """`jitter` spreads each route's startup time by up to +-jitter (a fraction), drawn from a
        random generator seeded with `seed`, so runs with the same seed are identical. `resources`: the
        slots of the one simulated node ("sim"), e.g. {"gpu": 4}; devices are given and freed like the
        local runtime's (runtime.devices)."""
        self._now = now
        self._behaviours = dict(behaviours or {})
        self._default = default or SimBehaviour()
        self._routes: dict[str, _SimRoute] = {}
        self._by_address: dict[str, _SimRoute] = {}
        self._next_port = 20000
        self._rng = random.Random(seed)
        self._jitter = jitter
        self.starts = 0
        self.stops = 0
        self.devices = DeviceTable(resources or {})
        """Who holds which simulated device; `devices.peak` is the most units ever held at once."""

    def set_behaviour(self, revision: int, behaviour: SimBehaviour) -> None:
        self._behaviours[revision] = behaviour

    # Runtime -------------------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> RouteHandle:
        devices = self.devices.allocate(spec.route_id, spec.resources)  # DevicesBusy: nothing started
        self._next_port += 1
        handle = RouteHandle(
            route_id=spec.route_id,
            address=f"sim:{self._next_port}",
            pid=self._next_port,
            identity=f"sim-{spec.route_id}",
            devices=devices,
            node=NODE,
        )
        behaviour = self._behaviours.get(spec.revision, self._default)
        if self._jitter:
            spread = 1 + self._rng.uniform(-self._jitter, self._jitter)
            behaviour = replace(behaviour, startup_seconds=round(behaviour.startup_seconds * spread, 3))
        route = _SimRoute(spec, handle, self._now(), behaviour)
        self._routes[spec.route_id] = route
        self._by_address[handle.address] = route
        self.starts += 1
        return handle

    async def is_running(self, handle: RouteHandle) -> bool:
        route = self._routes.get(handle.route_id)
        if route is None or route.handle.identity != handle.identity:
            return False
        running = not (route.stopped or route.crashed)
        if running and route.behaviour.failure is SimFailure.START:
            running = self._age(route) < route.behaviour.startup_seconds
        if not running:
            self.devices.release(route.spec.route_id)  # the process is gone: its devices are free
        return running

    async def stop(self, handle: RouteHandle, *, grace_seconds: float) -> None:
        route = self._routes.get(handle.route_id)
        if route is not None:
            self._mark_stopped(route)

    async def adopt(self, handles: Sequence[RouteHandle]) -> set[str]:
        wanted = {h.route_id: h for h in handles}
        verified = set()
        for route_id, route in self._routes.items():
            h = wanted.get(route_id)
            if h is not None and h.identity == route.handle.identity and await self.is_running(h):
                verified.add(route_id)
            else:
                self._mark_stopped(route)
        return verified

    async def close(self) -> None:
        for route in self._routes.values():
            self._mark_stopped(route)

    async def maintain(self) -> None:
        """Nothing to maintain: simulated routes write no files."""

    def capacity(self) -> tuple[NodeCapacity, ...]:
        return (NodeCapacity(NODE, dict(self.devices.total)),)

    async def exit_report(self, handle: RouteHandle, *, lines: int = 5) -> ExitReport:
        """How the simulated process ended (module docstring); what ended it first wins."""
        route = self._routes.get(handle.route_id)
        if route is None or route.handle.identity != handle.identity:
            return ExitReport(None)
        if route.lost:
            return ExitReport(None, ("simulated: its node was lost",)[: max(lines, 0)], lost=True)
        if route.crashed:
            return ExitReport(-SIGKILL, ("simulated: crashed",)[: max(lines, 0)])
        exits_at = route.behaviour.startup_seconds
        if route.behaviour.failure is SimFailure.START:
            ended = self._age(route) if route.stopped_at is None else self._age(route, at=route.stopped_at)
            if ended >= exits_at:
                return ExitReport(1, ("simulated: exited before listening",)[: max(lines, 0)])
        return ExitReport(None)

    # Prober ----------------------------------------------------------------------------------------

    async def listening(self, address: str, *, timeout: float) -> bool:
        route = self._by_address.get(address)
        if route is None or route.stopped or route.crashed:
            return False
        if route.behaviour.failure is SimFailure.START:
            return False
        return self._age(route) >= route.behaviour.startup_seconds

    async def probe(self, address: str, path: str, *, timeout: float) -> bool:
        if not await self.listening(address, timeout=timeout):
            return False
        route = self._by_address[address]
        if route.behaviour.failure is SimFailure.UNHEALTHY:
            return self._age(route) < route.behaviour.startup_seconds + route.behaviour.unhealthy_after
        return True

    # Simulation controls -------------------------------------------------------------------------

    def crash(self, route_id: str) -> None:
        """Make a route's process die (for tests of replacement in READY)."""
        self._routes[route_id].crashed = True

    def lose(self, route_id: str) -> None:
        """Make a route go away with its node (ExitReport.lost), as a cluster runtime reports it."""
        self._routes[route_id].crashed = True
        self._routes[route_id].lost = True

    def running_route_ids(self) -> set[str]:
        return {rid for rid, r in self._routes.items() if not (r.stopped or r.crashed)}

    def _mark_stopped(self, route: _SimRoute) -> None:
        self.devices.release(route.spec.route_id)
        if not route.stopped:
            route.stopped = True
            route.stopped_at = self._now()
            self.stops += 1

    def _age(self, route: _SimRoute, *, at: datetime | None = None) -> float:
        return ((at or self._now()) - route.started_at) / timedelta(seconds=1)
