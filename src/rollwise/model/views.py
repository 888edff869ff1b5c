"""What one evaluation cycle sees and what it decides, as frozen values.

`DeploymentView` and `RouteView` are the strategy engine's input (built by the plan reader from JSON, or
by the control layer from database rows); `Decision` is its output. Route and revision ids are opaque
strings here: the control layer maps them to its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rollwise.model.enums import Health, Mode, RollbackReason, RouteStatus, SubStep, Traffic


READY_HEALTH = frozenset({Health.HEALTHY, Health.DEGRADED})
"""Health values of a running route that serves and counts (docs/strategies.md, "Words"): `degraded`
means some probes failed, but fewer than the revision's `unhealthy_threshold` in a row."""


def is_ready_state(status: RouteStatus, health: Health, *, has_health_check: bool) -> bool:
    """THE definition of "ready", used by the strategies, the route controller's routing table and the
    API: running, and healthy or degraded (or without a health check)."""
    return status is RouteStatus.RUNNING and (health in READY_HEALTH or not has_health_check)


@dataclass(frozen=True, slots=True)
class RouteView:
    id: str
    revision: str
    status: RouteStatus
    health: Health
    traffic: Traffic
    traffic_ratio: float
    has_health_check: bool
    failed: bool
    created_at: datetime
    status_updated_at: datetime

    @property
    def is_ready(self) -> bool:
        return is_ready_state(self.status, self.health, has_health_check=self.has_health_check)


@dataclass(frozen=True, slots=True)
class DeploymentView:
    desired_replicas: int
    current_revision: str | None
    deploying_revision: str | None
    mode: Mode = Mode.FORWARD
    paused: bool = False
    abort_requested: bool = False
    promote_requested: bool = False
    rollout_started_at: datetime | None = None
    last_progress_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RouteCreate:
    revision: str
    traffic: Traffic
    traffic_ratio: float


@dataclass(frozen=True, slots=True)
class TrafficChange:
    id: str
    traffic: Traffic
    traffic_ratio: float


@dataclass(frozen=True, slots=True)
class Decision:
    """One cycle's decision for one deployment (as JSON: docs/strategies.md, `rollwise plan` "Output")."""

    sub_step: SubStep
    mode: Mode
    reason: str
    create: tuple[RouteCreate, ...] = ()
    terminate: tuple[str, ...] = ()
    traffic: tuple[TrafficChange, ...] = ()
    rollback_reason: RollbackReason | None = None
    """Set in the cycle that starts a rollback."""
    set_paused: bool = False
    """The progress deadline paused the rollout: the controller sets the deployment's paused flag."""
    requeue_after: float | None = None
    """Seconds after which this decision changes with no other event (auto-promotion or the progress
    deadline falls due): the controller looks again then. Not part of the plan output."""

    @property
    def changes_routes(self) -> bool:
        return bool(self.create or self.terminate or self.traffic)
