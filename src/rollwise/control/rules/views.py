"""Row -> strategy view mapping for one cycle (pure): turns store records into the frozen
`DeploymentView` / `RouteView` values the strategy engine reads. Revisions are integers in the control
layer and "r<number>" on the strategy side ("r3": what the strategy's messages and the live plan show);
`revision_key` and `revision_number` are the only conversions between the two. Of a revision, the rules
only need whether it has a health check: they take `HealthChecks`, a mapping (deployment_id, number) ->
bool (`Store.read_cycle` reads it with the routes; `Store.health_check_flags`).

Called by the lifecycle cycles; must not do I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import overload

from rollwise.model import DeploymentView, RouteView
from rollwise.model.views import NO_ANALYSIS, UNLIMITED, AnalysisCounts, CapacityView
from rollwise.store.records import DeploymentRecord, RouteRecord

HealthChecks = Mapping[tuple[int, int], bool]
"""(deployment_id, revision number) -> whether that revision has a health check; a missing key: no."""


@overload
def revision_key(number: int) -> str: ...


@overload
def revision_key(number: None) -> None: ...


@overload
def revision_key(number: int | None) -> str | None: ...


def revision_key(number: int | None) -> str | None:
    """The strategy-side key of revision `number` ("r3"); the ONE place that writes one (control
    modules keep revision numbers as integers and convert at the strategy edge, here)."""
    return None if number is None else f"r{number}"


def revision_number(key: str) -> int:
    """The revision number a strategy-side key names (inverse of `revision_key`)."""
    return int(key.removeprefix("r"))


def compute_deployment_view(
    dep: DeploymentRecord, analysis: AnalysisCounts = NO_ANALYSIS, capacity: CapacityView = UNLIMITED
) -> DeploymentView:
    """The engine's view of a deployment; `analysis`: what the canary analysis measured this rollout;
    `capacity`: what the nodes have room for (control.rules.capacity)."""
    return DeploymentView(
        desired_replicas=dep.replicas,
        current_revision=revision_key(dep.current_revision),
        deploying_revision=revision_key(dep.deploying_revision),
        mode=dep.mode,
        paused=dep.paused,
        abort_requested=dep.abort_requested,
        promote_requested=dep.promote_requested,
        rollout_started_at=dep.rollout_started_at,
        last_progress_at=dep.last_progress_at,
        canary_step=dep.canary_step,
        step_started_at=dep.step_started_at,
        promote_full_requested=dep.promote_full_requested,
        analysis=analysis,
        capacity=capacity,
    )


def compute_route_view(route: RouteRecord, *, has_health_check: bool) -> RouteView:
    return RouteView(
        id=route.id,
        revision=revision_key(route.revision),
        status=route.status,
        health=route.health,
        traffic=route.traffic,
        traffic_ratio=route.traffic_ratio,
        has_health_check=has_health_check,
        failed=route.failed,
        created_at=route.created_at,
        status_updated_at=route.status_updated_at,
    )


def compute_route_views(routes: Iterable[RouteRecord], health_checks: HealthChecks) -> list[RouteView]:
    return [
        compute_route_view(r, has_health_check=health_checks.get((r.deployment_id, r.revision), False))
        for r in routes
    ]


def group_by_deployment(routes: Iterable[RouteRecord]) -> dict[int, list[RouteRecord]]:
    grouped: dict[int, list[RouteRecord]] = {}
    for r in routes:
        grouped.setdefault(r.deployment_id, []).append(r)
    return grouped
