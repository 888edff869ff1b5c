"""Enumerations of docs/architecture.md: lifecycle, sub-steps, route status, health, traffic, strategies,
the policy's choices.

Values are the lower-case strings used in JSON (plan format, REST API) and in the database.
"""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class Lifecycle(_StrEnum):
    """Deployment lifecycle: PENDING -> SCALING -> READY <-> DEPLOYING -> DESTROYING -> DESTROYED."""

    PENDING = "pending"
    SCALING = "scaling"
    READY = "ready"
    DEPLOYING = "deploying"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class SubStep(_StrEnum):
    """Where a DEPLOYING deployment stands after a cycle; completed/rolled_back end the rollout."""

    PROVISIONING = "provisioning"
    PROGRESSING = "progressing"
    AWAITING_PROMOTION = "awaiting_promotion"
    PAUSED = "paused"
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


class RouteStatus(_StrEnum):
    PROVISIONING = "provisioning"
    RUNNING = "running"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED_TO_START = "failed_to_start"

    @property
    def is_alive(self) -> bool:
        return self in (RouteStatus.PROVISIONING, RouteStatus.RUNNING)


class Health(_StrEnum):
    NOT_CHECKED = "not_checked"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DEGRADED = "degraded"


class Traffic(_StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class StrategyName(_StrEnum):
    ROLLING = "rolling"
    BLUE_GREEN = "blue_green"
    RECREATE = "recreate"
    CANARY = "canary"


class Mode(_StrEnum):
    FORWARD = "forward"
    ROLLING_BACK = "rolling_back"


class OnDeadline(_StrEnum):
    ROLLBACK = "rollback"
    PAUSE = "pause"


class CapacityFallback(_StrEnum):
    """What a rolling update does when no more routes of the new revision can be placed (placeable 0):
    `replace` terminates one old route at a time to make room, `wait` waits for capacity (the progress
    deadline still applies). docs/strategies.md, "Capacity"."""

    REPLACE = "replace"
    WAIT = "wait"


class RollbackReason(_StrEnum):
    """Why a rollout went into rollback mode; recorded in history."""

    FAILURE_THRESHOLD = "failure_threshold"
    ABORTED = "aborted"
    PROGRESS_DEADLINE = "progress_deadline"
    EVALUATION_ERROR = "evaluation_error"
    ANALYSIS = "analysis"
    """A canary's analysis reached its failure limit (docs/strategies.md, "Canary")."""
