"""What the store accepts: the write commands of rollwise, one frozen value per kind of change.

    RevisionSpec       a new revision's content (the number is the store's business)
    NewRoute           a route to insert (id generated when None)
    RouteUpdate        some fields of one route; fields left UNSET are not written
    DeploymentChange   typed changes of one deployment's columns (and its policy)
    DeploymentUpdate   a DeploymentChange guarded by the version read, optionally with the revision swap
    NewHistory         a history row (merged into the previous one when identical, see `merge_key`)
    NewMeasurement     a canary analysis measurement (`Store.add_measurements`)
    NewRollout         a rollout that starts (its `rollouts` row; the one still open is closed first)
    RolloutUpdate      the deployment's open rollout: timeline samples to append, and/or its end
    ChangeSet          one write (a cycle's or a request's) for `Store.apply`; ApplyResult is what it did

Called by: the control layer (builds them), store.repository and store.apply (write them). Must not:
do I/O or import SQLAlchemy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from typing import Any, Final

from rollwise.model import Health, Lifecycle, Mode, Policy, RollbackReason, RouteStatus, SubStep, Traffic
from rollwise.store.records import ROLLOUT_OUTCOMES, VERDICTS, DeploymentRecord, TimelineSample

__all__ = [
    "DEPLOYMENT_CHANGE_COLUMNS",
    "NO_CHANGE",
    "ROUTE_UPDATE_COLUMNS",
    "UNSET",
    "ApplyResult",
    "ChangeSet",
    "DeploymentChange",
    "DeploymentUpdate",
    "NewHistory",
    "NewMeasurement",
    "NewRollout",
    "NewRoute",
    "RevisionSpec",
    "RolloutUpdate",
    "RouteUpdate",
    "new_route_id",
]


class _Unset(Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset.UNSET
"""'Leave this column alone' in a RouteUpdate (None means: write NULL)."""


def new_route_id() -> str:
    """A fresh route id: 12 random hex characters (48 bits; what the first 12 of a uuid4's hex are,
    without building a UUID: a cycle creates thousands)."""
    return os.urandom(6).hex()


@dataclass(frozen=True, slots=True, kw_only=True)
class RevisionSpec:
    """A new revision's content; `Store.create_deployment` / `add_revision` give it the next number."""

    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    health_check: dict[str, Any] | None = None
    startup_timeout_seconds: float = 60.0
    drain_seconds: float = 1.0
    stop_grace_seconds: float = 5.0
    label: str | None = None
    ports: tuple[str, ...] = ()
    resources: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.command, str):
            raise TypeError("RevisionSpec.command is an argv sequence, not a string")
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "ports", tuple(self.ports))


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRoute:
    """A route to insert; `id=None` lets the store generate one (`new_route_id()`)."""

    id: str | None = None
    deployment_id: int
    revision: int
    status: RouteStatus = RouteStatus.PROVISIONING
    health: Health = Health.NOT_CHECKED
    traffic: Traffic = Traffic.ACTIVE
    traffic_ratio: float = 1.0
    created_at: datetime
    """Also the initial `status_updated_at`."""
    failed: bool = False
    address: str | None = None
    pid: int | None = None
    identity: str | None = None
    detail: str | None = None
    holds: Mapping[str, int] | None = None
    """The slots the route holds (its revision's `resources`); None or empty = none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteUpdate:
    """Some columns of one route. Only fields not UNSET are written (None writes NULL).

    `deployment_id` tags the update with its deployment: `Store.apply` requires it (a deployment skipped
    by its guard is skipped with its route updates, and an update whose route belongs to another
    deployment changes nothing); `Store.update_routes` does not need it.
    """

    id: str
    deployment_id: int | None = None
    status: RouteStatus | _Unset = UNSET
    health: Health | _Unset = UNSET
    traffic: Traffic | _Unset = UNSET
    traffic_ratio: float | _Unset = UNSET
    failed: bool | _Unset = UNSET
    address: str | None | _Unset = UNSET
    pid: int | None | _Unset = UNSET
    identity: str | None | _Unset = UNSET
    health_failures: int | _Unset = UNSET
    health_successes: int | _Unset = UNSET
    status_updated_at: datetime | _Unset = UNSET
    drain_until: datetime | None | _Unset = UNSET
    detail: str | None | _Unset = UNSET
    started_at: datetime | None | _Unset = UNSET
    devices: Mapping[str, tuple[int, ...]] | _Unset = UNSET
    node: str | None | _Unset = UNSET

    def __post_init__(self) -> None:
        for name, enum in (("status", RouteStatus), ("health", Health), ("traffic", Traffic)):
            value = getattr(self, name)
            if value is not UNSET and type(value) is not enum:
                object.__setattr__(self, name, enum(value))

    def then(self, later: RouteUpdate) -> RouteUpdate:
        """This update followed by `later` (of the same route): the fields `later` sets win."""
        return replace(self, **{name: v for name in ROUTE_UPDATE_COLUMNS if (v := getattr(later, name)) is not UNSET})

    def changes(self) -> dict[str, Any]:
        """The columns this update writes, as model values."""
        # ROUTE_UPDATE_COLUMNS, not dataclasses.fields(): a cycle calls this for thousands of updates.
        return {name: value for name in ROUTE_UPDATE_COLUMNS if (value := getattr(self, name)) is not UNSET}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentChange:
    """Typed changes of one deployment's columns: fields left UNSET are not written (None writes NULL).

    `policy` replaces the deployment's policy row in the same transaction. `current_revision` is never
    set directly: the revision swap of `DeploymentUpdate.swap_expected` moves it. Built by the
    transition functions of rollwise.control (the one owner of lifecycle and rollout changes).
    """

    replicas: int | _Unset = UNSET
    lifecycle: Lifecycle | _Unset = UNSET
    sub_step: SubStep | None | _Unset = UNSET
    mode: Mode | _Unset = UNSET
    deploying_revision: int | None | _Unset = UNSET
    paused: bool | _Unset = UNSET
    abort_requested: bool | _Unset = UNSET
    promote_requested: bool | _Unset = UNSET
    rollout_started_at: datetime | None | _Unset = UNSET
    last_progress_at: datetime | None | _Unset = UNSET
    rollback_reason: RollbackReason | None | _Unset = UNSET
    error_count: int | _Unset = UNSET
    last_error: str | None | _Unset = UNSET
    canary_step: int | _Unset = UNSET
    step_started_at: datetime | None | _Unset = UNSET
    traffic_weights: Mapping[int, int] | None | _Unset = UNSET
    promote_full_requested: bool | _Unset = UNSET
    policy: Policy | _Unset = UNSET

    def columns(self) -> dict[str, Any]:
        """The `deployments` columns this change writes, as model values (the policy is not one)."""
        return {name: value for name in DEPLOYMENT_CHANGE_COLUMNS if (value := getattr(self, name)) is not UNSET}

    @property
    def is_empty(self) -> bool:
        return not self.columns() and self.policy is UNSET

    def then(self, later: DeploymentChange) -> DeploymentChange:
        """This change followed by `later`: the fields `later` sets win."""
        return replace(self, **{f: v for f in _CHANGE_FIELDS if (v := getattr(later, f)) is not UNSET})

    def applied_to(self, dep: DeploymentRecord) -> DeploymentRecord:
        """`dep` with this change's fields (version and timestamps are the caller's business)."""
        fields_ = {f: v for f in _CHANGE_FIELDS if (v := getattr(self, f)) is not UNSET}
        if "policy" in fields_:
            fields_["policy_error"] = None
        return replace(dep, **fields_)


_CHANGE_FIELDS: Final = tuple(f.name for f in fields(DeploymentChange))
DEPLOYMENT_CHANGE_COLUMNS: Final = tuple(name for name in _CHANGE_FIELDS if name != "policy")
"""Columns a DeploymentChange may write (id, name, version, timestamps, current_revision: never)."""
NO_CHANGE: Final = DeploymentChange()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentUpdate:
    """A change of one deployment, applied only while its row is as the caller read it.

    - `expected_version`: apply only if the row's `version` still equals it (None: no version guard).
      Every write that changes the row bumps `version` (and sets `updated_at`).
    - `change`: the typed column changes (and the policy, written in the same transaction).
    - `swap_expected`: also perform the revision swap `current_revision = deploying_revision,
      deploying_revision = NULL`, and only if `deploying_revision` still equals this number; otherwise
      the whole update is skipped like a failed version guard. The change may then name
      `deploying_revision` only as None.
    An empty change without a swap is a pure guard: nothing is written, but the deployment's routes
    and history in the same ChangeSet are applied only if the guard holds.
    """

    deployment_id: int
    expected_version: int | None
    change: DeploymentChange = NO_CHANGE
    swap_expected: int | None = None

    def __post_init__(self) -> None:
        if self.swap_expected is not None and self.change.deploying_revision not in (UNSET, None):
            raise ValueError("DeploymentUpdate: the revision swap sets deploying_revision to NULL")

    @property
    def changes(self) -> dict[str, Any]:
        """The `deployments` columns the update writes (the swap's columns aside)."""
        columns = self.change.columns()
        if self.swap_expected is not None:
            columns.pop("deploying_revision", None)
        return columns

    @property
    def writes(self) -> bool:
        """True when applying it changes the row (so it bumps `version`)."""
        return not self.change.is_empty or self.swap_expected is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewHistory:
    deployment_id: int
    lifecycle_from: Lifecycle
    lifecycle_to: Lifecycle
    sub_step: SubStep | None = None
    result: str
    """E.g. "success", "failure", "waiting", "progress", "error"."""
    message: str
    strategy: str | None = None
    from_revision: int | None = None
    to_revision: int | None = None
    error: str | None = None
    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "lifecycle_from", Lifecycle(self.lifecycle_from))
        object.__setattr__(self, "lifecycle_to", Lifecycle(self.lifecycle_to))
        if self.sub_step is not None:
            object.__setattr__(self, "sub_step", SubStep(self.sub_step))
        if self.strategy is not None:
            object.__setattr__(self, "strategy", str(self.strategy))

    def merge_key(self) -> tuple[object, ...]:
        """Rows with equal keys in a row merge: the later one bumps `attempts` of the earlier one."""
        return (self.lifecycle_from, self.lifecycle_to, self.sub_step, self.result, self.message,
                self.from_revision, self.to_revision)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMeasurement:
    """One metric's measurement of one analysis interval (docs/control.md, "Analysis")."""

    deployment_id: int
    revision: int
    """The canary revision measured."""
    rollout_started_at: datetime
    """The deployment's `rollout_started_at`: the rollout this measurement counts for."""
    metric: str
    verdict: str
    """"passed", "failed" or "inconclusive" (ValueError otherwise)."""
    value: str | None
    words: str
    window_start: datetime
    window_end: datetime
    at: datetime
    """When it was measured (`created_at`)."""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"NewMeasurement.verdict: {self.verdict!r} is not one of {', '.join(VERDICTS)}")


MAX_APPENDED_SAMPLES: Final = 2
"""Samples one RolloutUpdate may append (a cycle appends what it saw, and at the end what it left)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRollout:
    """A rollout that starts: an operator's activate or undo, or a DEPLOYING cycle that finds no open
    rollout row (one started before the table existed). `Store.apply` first closes the deployment's
    rollout still open, if any, as "aborted" (superseded), so at most one is open."""

    deployment_id: int
    from_revision: int | None
    to_revision: int
    strategy: str
    at: datetime
    """`started_at`."""
    samples: tuple[TimelineSample, ...] = ()
    adopted: bool = False
    """Found running without a row (by a cycle): its events are the history rows from `at` on, not from
    the newest history row of this write (its start row, for a rollout that starts now)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(self.samples))


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutUpdate:
    """The deployment's OPEN rollout (none open: it changes nothing): append `samples` (oldest first, at
    most MAX_APPENDED_SAMPLES) and/or end it with `outcome` at `at`."""

    deployment_id: int
    at: datetime
    samples: tuple[TimelineSample, ...] = ()
    outcome: str | None = None
    """"completed", "rolled_back" or "aborted": the rollout ends (`ended_at = at`); None: it goes on."""
    known_count: int = 0
    """The rollout's `sample_count` as the caller read it (RolloutMark): when appending would pass
    records.MAX_SAMPLES, the store reads the list and thins it in the same write."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(self.samples))
        if len(self.samples) > MAX_APPENDED_SAMPLES:
            raise ValueError(f"RolloutUpdate: at most {MAX_APPENDED_SAMPLES} samples at once, got {len(self.samples)}")
        if self.outcome is not None and self.outcome not in ROLLOUT_OUTCOMES[1:]:
            raise ValueError(f"RolloutUpdate.outcome: {self.outcome!r} is not one of {', '.join(ROLLOUT_OUTCOMES[1:])}")

    def then(self, later: RolloutUpdate) -> RolloutUpdate:
        """This update followed by `later` (same deployment): samples of both, the later end and time."""
        return replace(later, samples=self.samples + later.samples, outcome=later.outcome or self.outcome,
                       known_count=self.known_count)


@dataclass(slots=True, kw_only=True)
class ChangeSet:
    """One cycle's whole write (`Store.apply`). Every item is tagged with its deployment_id."""

    deployments: list[DeploymentUpdate] = field(default_factory=list)
    new_routes: list[NewRoute] = field(default_factory=list)
    route_updates: list[RouteUpdate] = field(default_factory=list)
    history: list[NewHistory] = field(default_factory=list)
    rollout_updates: list[RolloutUpdate] = field(default_factory=list)
    """Applied before `new_rollouts` (a superseded rollout ends, then the new one starts)."""
    new_rollouts: list[NewRollout] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.deployments or self.new_routes or self.route_updates or self.history
                    or self.rollout_updates or self.new_rollouts)

    def deployment_ids(self) -> set[int | None]:
        """Every deployment this ChangeSet writes something of (its row, routes, history, rollouts)."""
        items: list[Any] = [*self.deployments, *self.new_routes, *self.route_updates, *self.history,
                            *self.rollout_updates, *self.new_rollouts]
        return {item.deployment_id for item in items}


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyResult:
    skipped: set[int] = field(default_factory=set)
    """Deployments whose guard failed (or that no longer exist): nothing of them was written."""
    applied: set[int] = field(default_factory=set)
    """Deployments whose row was changed (version bumped)."""
    versions: dict[int, int] = field(default_factory=dict)
    """The row version after this apply, for every guarded-and-kept deployment of the ChangeSet."""
    route_ids: list[str] = field(default_factory=list)
    """Ids of the routes inserted, in ChangeSet order (generated ids included)."""
    routes_updated: int = 0
    """Route updates sent for kept deployments (an id that matches no row is counted too)."""
    history_inserted: int = 0
    history_merged: int = 0
    written_at: datetime | None = None
    """A request's combined write (`Store.apply(..., combine=True)`): the `now` its batch wrote (the
    deployment's `updated_at`); the history counts are then the batch's."""


ROUTE_UPDATE_COLUMNS: Final = tuple(
    f.name for f in fields(RouteUpdate) if f.name not in ("id", "deployment_id")
)
