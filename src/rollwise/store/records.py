"""What the store returns: frozen records built from rows (store.rows), never mutated (ask the store
again instead).

    DeploymentRecord   a `deployments` row joined with its `policies` row
    RevisionRecord     a `revisions` row (immutable once written)
    RouteRecord        a `routes` row
    HistoryRecord      a `history` row
    MeasurementRecord  a `measurements` row (one metric of one canary analysis interval)
    AnalysisTally      the counts of a deployment's measurements in its current rollout
    MeasurementSummary a deployment's measurements of one metric, counted by verdict (the metrics page)
    RolloutRecord      a `rollouts` row without its samples (one rollout: revisions, times, outcome)
    TimelineSample     one sample of a rollout's timeline: ready routes and traffic share per revision
    RolloutMark        what the DEPLOYING cycle reads of a deployment's open rollout (count, newest sample)

What the store accepts is in store.commands; the row <-> record mapping in store.rows.
Called by: the store and every layer above it that reads. Must not: do I/O or import SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from rollwise.model import Health, Lifecycle, Mode, Policy, RollbackReason, RouteStatus, SubStep, Traffic

__all__ = [
    "MAX_SAMPLES",
    "NOTHING",
    "NO_TALLY",
    "ROLLOUT_OUTCOMES",
    "VERDICTS",
    "AnalysisTally",
    "CycleSnapshot",
    "DeploymentRecord",
    "HistoryRecord",
    "MeasurementRecord",
    "MeasurementSummary",
    "RevisionRecord",
    "RolloutMark",
    "RolloutRecord",
    "RouteRecord",
    "TimelineSample",
]

VERDICTS: Final = ("passed", "failed", "inconclusive")
"""The verdicts a measurement may have (`measurements.verdict`)."""


class _Nothing(Mapping[str, Any]):
    """An empty mapping that is hashable, so it can be a frozen dataclass field's shared default."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"


NOTHING: Final[Mapping[str, Any]] = _Nothing()
"""The empty, shared `resources` / `holds` / `devices` of records that have none (most of them)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRecord:
    id: int
    name: str
    replicas: int
    lifecycle: Lifecycle
    sub_step: SubStep | None
    mode: Mode
    current_revision: int | None
    """Number of the serving revision."""
    deploying_revision: int | None
    """Number of the revision a rollout moves to; None when no rollout runs."""
    paused: bool
    abort_requested: bool
    promote_requested: bool
    rollout_started_at: datetime | None
    last_progress_at: datetime | None
    rollback_reason: RollbackReason | None
    error_count: int
    last_error: str | None
    version: int
    """Bumped by every write that changes the row; the guard of `DeploymentUpdate.expected_version`."""
    created_at: datetime
    updated_at: datetime
    policy: Policy | None
    """None only when the policy row is missing or its stored document no longer validates."""
    policy_error: str | None = None
    canary_step: int = 0
    """A canary rollout's current step (index into the policy's `steps`; len(steps) = the final step)."""
    step_started_at: datetime | None = None
    """When the current canary step began (a timed pause counts from here)."""
    traffic_weights: Mapping[int, int] | None = None
    """Revision number -> percent of the deployment's requests (a canary's split); None = by routes."""
    promote_full_requested: bool = False
    """`promote --full`: a canary skips to its final step."""
    """Why `policy` is None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionRecord:
    id: int
    deployment_id: int
    number: int
    command: tuple[str, ...]
    env: dict[str, str]
    health_check: dict[str, Any] | None
    """{path, interval_seconds, timeout_seconds, healthy_threshold, unhealthy_threshold,
    initial_delay_seconds} or None (no health check: a running route is ready)."""
    startup_timeout_seconds: float
    drain_seconds: float
    stop_grace_seconds: float
    label: str | None
    created_at: datetime
    ports: tuple[str, ...] = ()
    """Names of the extra ports the route gets besides its main one (e.g. ("grpc", "metrics"))."""
    resources: Mapping[str, int] = NOTHING
    """What ONE route of this revision needs of the node's slots, e.g. {"gpu": 1}; empty = nothing."""

    @property
    def has_health_check(self) -> bool:
        return self.health_check is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRecord:
    id: str
    deployment_id: int
    revision: int
    """Revision number."""
    status: RouteStatus
    health: Health
    traffic: Traffic
    traffic_ratio: float
    failed: bool
    address: str | None
    pid: int | None
    identity: str | None
    health_failures: int
    health_successes: int
    created_at: datetime
    status_updated_at: datetime
    drain_until: datetime | None
    detail: str | None
    started_at: datetime | None = None
    """When its process was started (None before): the startup timeout counts from here, not from
    `created_at`, because a route may wait for a start slot (starts are bounded per pass)."""
    holds: Mapping[str, int] = NOTHING
    """The slots this route holds from its creation until its process has exited (its revision's
    `resources`, copied when the route is created); empty = none."""
    devices: Mapping[str, tuple[int, ...]] = NOTHING
    """The device indices the runtime gave it at start, e.g. {"gpu": (0,)}."""
    node: str | None = None
    """The node it runs on (set at start)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryRecord:
    id: int
    deployment_id: int
    created_at: datetime
    updated_at: datetime
    """When the last merged attempt happened (== created_at when attempts == 1)."""
    lifecycle_from: Lifecycle
    lifecycle_to: Lifecycle
    sub_step: SubStep | None
    result: str
    message: str
    strategy: str | None
    from_revision: int | None
    to_revision: int | None
    attempts: int
    error: str | None

    def merge_key(self) -> tuple[object, ...]:
        return (self.lifecycle_from, self.lifecycle_to, self.sub_step, self.result, self.message,
                self.from_revision, self.to_revision)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasurementRecord:
    id: int
    deployment_id: int
    revision: int
    """The canary revision measured."""
    rollout_started_at: datetime
    """The rollout it belongs to (the deployment's `rollout_started_at` when it was measured)."""
    metric: str
    verdict: str
    """One of VERDICTS."""
    value: str | None
    """The measured number as text, or a command's last line of output; None when nothing was measured."""
    words: str
    """The verdict in words, e.g. "errors = 0.034 > 0.01" or "inconclusive: 12 requests < 50"."""
    window_start: datetime
    window_end: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisTally:
    """A deployment's measurements in its current rollout (`Store.analysis_counts`)."""

    failed: int = 0
    passed: int = 0
    inconclusive: int = 0
    last_failure: str | None = None
    """The words of the newest failed measurement."""
    last_window_end: datetime | None = None
    """The end of the newest window measured (None: nothing measured yet)."""
    last_window_passed: bool = False
    """Every measurement of the newest window passed (False when nothing was measured yet)."""


NO_TALLY: Final = AnalysisTally()
"""What a deployment without measurements in its current rollout has."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasurementSummary:
    """One (deployment, metric): its measurements of every rollout counted by verdict, and the newest value."""

    deployment: str
    """The deployment's name."""
    metric: str
    counts: Mapping[str, int]
    """verdict -> measurements (verdicts without any are absent)."""
    last_value: str | None
    """The value of the newest measurement."""


ROLLOUT_OUTCOMES: Final = ("in_progress", "completed", "rolled_back", "aborted")
"""How a rollout ended (`rollouts.outcome`); "in_progress" while it runs."""

MAX_SAMPLES: Final = 500
"""Timeline samples kept per rollout: a full list is thinned (every other one of the middle goes, the
first and the newest stay) before the next is appended (store.rollouts)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineSample:
    """One look at a rollout: ready routes and the traffic share (percent) per revision number."""

    at: datetime
    ready: Mapping[int, int]
    """Revision number -> routes ready (running and healthy or degraded), served or not."""
    weights: Mapping[int, int]
    """Revision number -> percent of the requests the proxy sends it (sums to 100; empty when nothing serves)."""

    @property
    def key(self) -> str:
        """`ready` and `weights` as canonical JSON text: equal keys mean nothing changed (the time aside).
        What `rollouts.last_sample` holds."""
        # What json.dumps({"ready": {"1": 3}, "weights": {…}}, separators=(",", ":")) writes (revision
        # numbers and counts are integers: nothing to escape), without it: a cycle keys 30,000 samples.
        return f'{{"ready":{_int_object(self.ready)},"weights":{_int_object(self.weights)}}}'


def _int_object(values: Mapping[int, int]) -> str:
    """A mapping of integers to integers as compact JSON text, keys in ascending order."""
    return "{" + ",".join([f'"{k}":{v:d}' for k, v in sorted(values.items())]) + "}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutRecord:
    """A `rollouts` row without its samples (`Store.list_rollouts`, `Store.rollout_timeline`)."""

    id: int
    deployment_id: int
    from_revision: int | None
    """The revision serving when it started (None only if nothing served)."""
    to_revision: int
    strategy: str
    """The policy's strategy when it started ("rolling", "blue_green", "recreate", "canary"; "unknown")."""
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    """One of ROLLOUT_OUTCOMES."""
    sample_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutMark:
    """A deployment's open rollout as the DEPLOYING cycle reads it (`Store.read_cycle`):
    enough to decide whether to append a sample, without reading the samples."""

    rollout_id: int
    sample_count: int
    last_key: str | None
    """The newest sample's `TimelineSample.key`; None before the first sample."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CycleSnapshot:
    """What a lifecycle cycle reads (`Store.read_cycle`), in one read transaction: its deployments (by
    id), their open rollouts' marks, their routes (ordered like `Store.list_routes`), and of the
    revisions those routes run and the deployments serve or roll out to: whether each has a health
    check and what one route needs of a node's slots (only those that need something)."""

    deployments: list[DeploymentRecord]
    marks: dict[int, RolloutMark]
    routes: list[RouteRecord]
    health_checks: dict[tuple[int, int], bool]
    needs: dict[tuple[int, int], dict[str, int]]
