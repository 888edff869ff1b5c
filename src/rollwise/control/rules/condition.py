"""A deployment's condition in words (pure): is it at full strength, and if not, why.

The API shows it on every deployment (`fail_open`, `degraded`, `next_restart_at`) and the metrics count
it; both compute it from the stored routes with the same rules the controller acts on:

- fail-open (control.rules.routing): every serving route is unhealthy, the proxy sends to all of them;
- fewer ready routes of the serving revision than desired (READY);
- the crash-loop back-off (control.rules.restarts) holds the next replacement until `next_restart_at`.

Called by api.schemas (deployment bodies) and api.metrics. Must not do I/O or read the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rollwise.control.rules.restarts import compute_restart_backoff, failure_cause
from rollwise.control.rules.routing import HasCheck, compute_served, is_route_ready
from rollwise.model import Lifecycle
from rollwise.store.records import DeploymentRecord, RouteRecord

FAIL_OPEN_WORDS = "every serving route is unhealthy: the proxy sends requests to all of them"


@dataclass(frozen=True, slots=True)
class Condition:
    fail_open: bool
    degraded: str | None
    """Why the deployment is not at full strength, in one line; None when it is."""
    next_restart_at: datetime | None
    """When the back-off lets the next replacement start; None when nothing waits."""


def compute_condition(
    dep: DeploymentRecord, routes: Sequence[RouteRecord], has_check: HasCheck, now: datetime
) -> Condition:
    _, fail_open = compute_served(routes, has_check)
    backoff = compute_restart_backoff(routes, dep.current_revision, now)
    waiting = backoff.not_before if backoff.remaining(now) > 0 else None
    reasons = []
    if fail_open:
        reasons.append(FAIL_OPEN_WORDS)
    if dep.lifecycle is Lifecycle.READY:
        ready = sum(1 for r in routes if r.revision == dep.current_revision and is_route_ready(r, has_check))
        if ready < dep.replicas:
            reasons.append(f"{ready}/{dep.replicas} routes of revision {dep.current_revision} ready")
    if waiting is not None and backoff.latest is not None:
        reasons.append(
            f"{backoff.failures} failed route(s) in a row, next start at {waiting:%H:%M:%S} UTC: "
            f"{failure_cause(backoff.latest.detail)}"
        )
    return Condition(fail_open=fail_open, degraded="; ".join(reasons) or None, next_restart_at=waiting)
