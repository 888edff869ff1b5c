"""The route controller's copy of the live routes and of their deployments, indexed the ways a pass uses.

The route controller (control.route_controller) loads it whole now and then, and between those loads
re-reads only the deployments the store's write feed names (store.feed): `load(ids, ...)` replaces
everything the book holds of those deployments with what was read (a deployment or route not read is
gone). Its own changes go in with `put`. A route that is no longer live (terminated, failed to start)
leaves the book.

Called by the route controller only. Must not: do I/O, read the clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator

from rollwise.model import RouteStatus
from rollwise.store.records import DeploymentRecord, RouteRecord

LIVE_STATUSES = (RouteStatus.PROVISIONING, RouteStatus.RUNNING, RouteStatus.TERMINATING)


class RouteBook:
    def __init__(self) -> None:
        self.deployments: dict[int, DeploymentRecord] = {}
        self.routes: dict[str, RouteRecord] = {}
        """Live routes by id."""
        self._of: dict[int, dict[str, None]] = {}
        """Deployment id -> its live route ids (an ordered set: in the order they were read)."""
        self.by_status: dict[RouteStatus, dict[str, None]] = {s: {} for s in LIVE_STATUSES}

    # --- loading ------------------------------------------------------------------------------------

    def load_all(self, deployments: Iterable[DeploymentRecord], routes: Iterable[RouteRecord]) -> set[int]:
        """Replace everything; returns the ids of the deployments whose row or live routes differ from
        what the book held (new and gone ones included)."""
        old_deployments, old_routes = self.deployments, self.routes
        self.deployments, self.routes, self._of = {}, {}, {}
        self.by_status = {s: {} for s in LIVE_STATUSES}
        self._add(deployments, routes)
        changed = {i for i in old_deployments.keys() | self.deployments.keys()
                   if old_deployments.get(i) != self.deployments.get(i)}
        changed.update(r.deployment_id for r in self.routes.values() if old_routes.get(r.id) != r)
        changed.update(r.deployment_id for i, r in old_routes.items() if i not in self.routes)
        return changed

    def load(self, ids: Collection[int], deployments: Iterable[DeploymentRecord], routes: Iterable[RouteRecord]) -> None:
        """Replace what the book holds of the deployments `ids` with `deployments` and `routes` (those of
        the ids that were found; the others are gone)."""
        for dep_id in ids:
            self.deployments.pop(dep_id, None)
            for route_id in self._of.pop(dep_id, {}):
                self._forget(route_id)
        self._add(deployments, routes)

    def _add(self, deployments: Iterable[DeploymentRecord], routes: Iterable[RouteRecord]) -> set[int]:
        ids = set()
        for d in deployments:
            self.deployments[d.id] = d
            ids.add(d.id)
        for r in routes:
            self.put(r)
        return ids

    # --- changes ------------------------------------------------------------------------------------

    def put(self, route: RouteRecord) -> None:
        """Hold `route` as it is now (a route that is no longer live leaves the book)."""
        old = self.routes.get(route.id)
        if old is not None and old.status is not route.status:
            self.by_status[old.status].pop(route.id, None)
        if route.status not in self.by_status:
            if old is not None:
                self._forget(route.id)
            return
        self.routes[route.id] = route
        self.by_status[route.status][route.id] = None
        self._of.setdefault(route.deployment_id, {})[route.id] = None

    def _forget(self, route_id: str) -> None:
        old = self.routes.pop(route_id, None)
        if old is None:
            return
        self.by_status[old.status].pop(route_id, None)
        of = self._of.get(old.deployment_id)
        if of is not None:
            of.pop(route_id, None)
            if not of:
                del self._of[old.deployment_id]

    # --- reading ------------------------------------------------------------------------------------

    def routes_of(self, deployment_id: int) -> list[RouteRecord]:
        return [self.routes[i] for i in self._of.get(deployment_id, ())]

    def routes_of_all(self, deployment_ids: Iterable[int]) -> Iterator[RouteRecord]:
        for dep_id in deployment_ids:
            for route_id in self._of.get(dep_id, ()):
                yield self.routes[route_id]

    def with_status(self, status: RouteStatus) -> list[RouteRecord]:
        return [self.routes[i] for i in self.by_status[status]]

    def is_running(self, route_id: str) -> bool:
        return route_id in self.by_status[RouteStatus.RUNNING]

    def name_of(self, deployment_id: int) -> str:
        dep = self.deployments.get(deployment_id)
        return dep.name if dep is not None else str(deployment_id)
