"""What the store returns and accepts, and the ONLY row <-> model mapping of rollwise.

Returned (frozen; built from rows only here; never mutate, ask the store again instead):
    DeploymentRecord   a `deployments` row joined with its `policies` row
    RevisionRecord     a `revisions` row (immutable once written)
    RouteRecord        a `routes` row
    HistoryRecord      a `history` row

Accepted:
    RevisionSpec       a new revision's content (the number is the store's business)
    NewRoute           a route to insert (id generated when None)
    RouteUpdate        some fields of one route; fields left UNSET are not written
    DeploymentUpdate   guarded column changes of one deployment, optionally the revision swap
    NewHistory         a history row (merged into the previous one when identical, see `merge_key`)
    ChangeSet          one cycle's whole write, for `Store.apply`; ApplyResult is what it did

Mapping rules (row -> record): enum columns hold the enum's `.value` and come back as the enum
(`Lifecycle`, `SubStep | None`, `Mode`, `RollbackReason | None`, `RouteStatus`, `Health`, `Traffic`);
timestamps are aware UTC (schema.UtcDateTime); JSON `command` becomes a tuple of str; the policy document
goes through `parse_policy` — a document that no longer validates (or a missing policy row) gives
`policy=None` and says why in `policy_error`, so one bad row cannot stop a cycle over all deployments.
Record -> row: `*_values()` functions below, used by repository.py and apply.py only.

Rows are read by column name through `NamedRow` (a SQLAlchemy `RowMapping` or a dict), except the two a cycle reads by the ten thousand: deployment
and route rows are plain sequences in the order of DEPLOYMENT_COLUMNS / ROUTE_COLUMNS (the SELECTs in
queries.py name exactly those columns), which saves SQLAlchemy's per-row mapping objects.

Called by: store.repository, store.apply; the control layer builds the input types and reads records.
Must not: do I/O or import SQLAlchemy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any, Final, Protocol

from rollwise.model import (
    Health,
    Lifecycle,
    Mode,
    Policy,
    RollbackReason,
    RouteStatus,
    SubStep,
    Traffic,
    ValidationFailed,
    parse_policy,
)

__all__ = [
    "UNSET",
    "ApplyResult",
    "ChangeSet",
    "DEPLOYMENT_CHANGE_COLUMNS",
    "NO_CHANGE",
    "DeploymentChange",
    "DeploymentRecord",
    "DeploymentUpdate",
    "HistoryRecord",
    "NamedRow",
    "NewHistory",
    "NewRoute",
    "RevisionRecord",
    "RevisionSpec",
    "RouteRecord",
    "RouteUpdate",
    "new_route_id",
]


class NamedRow(Protocol):
    """A row read by column name: SQLAlchemy's `RowMapping` (whose keys may also be columns) or a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


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


# --------------------------------------------------------------------------------------------- records


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


# ---------------------------------------------------------------------------------------------- inputs


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

    def __post_init__(self) -> None:
        for name, enum in (("status", RouteStatus), ("health", Health), ("traffic", Traffic)):
            value = getattr(self, name)
            if value is not UNSET and type(value) is not enum:
                object.__setattr__(self, name, enum(value))

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


@dataclass(slots=True, kw_only=True)
class ChangeSet:
    """One cycle's whole write (`Store.apply`). Every item is tagged with its deployment_id."""

    deployments: list[DeploymentUpdate] = field(default_factory=list)
    new_routes: list[NewRoute] = field(default_factory=list)
    route_updates: list[RouteUpdate] = field(default_factory=list)
    history: list[NewHistory] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.deployments or self.new_routes or self.route_updates or self.history)


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


# ----------------------------------------------------------------------------------- row -> record


DEPLOYMENT_COLUMNS: Final = tuple(f.name for f in fields(DeploymentRecord) if f.name not in ("policy", "policy_error"))
"""The `deployments` columns `deployment_from_row` expects, in this order, followed by the policy document."""

ROUTE_COLUMNS: Final = tuple(f.name for f in fields(RouteRecord))
"""The `routes` columns `route_from_row` expects, in this order."""


def _lookup(enum: type[Enum]) -> dict[Any, Any]:
    return {member.value: member for member in enum}


# Enum values read back from our own columns, by dict lookup: `Lifecycle(value)` goes through
# EnumMeta.__call__, which costs ~0.1 s over the 150,000 enum values of a 10,000-deployment cycle.
# A value missing from the table (never written by rollwise) still goes through `enum(value)`, which
# raises ValueError as before: `_LIFECYCLE.get(v) or Lifecycle(v)` (members are non-empty strings).
_LIFECYCLE = _lookup(Lifecycle)
_SUB_STEP = _lookup(SubStep)
_MODE = _lookup(Mode)
_ROLLBACK_REASON = _lookup(RollbackReason)
_ROUTE_STATUS = _lookup(RouteStatus)
_HEALTH = _lookup(Health)
_TRAFFIC = _lookup(Traffic)


@lru_cache(maxsize=4096)
def _policy(document: str | None) -> tuple[Policy | None, str | None]:
    """The policy of a stored document (its JSON text), or None and why.

    Most deployments share a handful of policy documents and Policy is immutable, so equal documents
    share one validated instance: the text is read without decoding it (queries.DEPLOYMENT_SELECT) and
    each distinct text is decoded and validated once (validating 10,000 rows one by one costs ~0.2 s).
    """
    parsed = None if document is None else json.loads(document)
    if parsed is None:
        return None, "the deployment has no policy row"
    try:
        return parse_policy(parsed), None
    except ValidationFailed as e:
        return None, f"stored policy no longer validates: {e.message}"


def deployment_from_row(row: Sequence[Any]) -> DeploymentRecord:
    """A `deployments` row as DEPLOYMENT_COLUMNS, then the joined policy document (JSON text or None)."""
    (id_, name, replicas, lifecycle, sub_step, mode, current_revision, deploying_revision, paused,
     abort_requested, promote_requested, rollout_started_at, last_progress_at, rollback_reason, error_count,
     last_error, version, created_at, updated_at, policy_document) = row
    policy, policy_error = _policy(policy_document)
    return DeploymentRecord(
        id=id_,
        name=name,
        replicas=replicas,
        lifecycle=_LIFECYCLE.get(lifecycle) or Lifecycle(lifecycle),
        sub_step=None if sub_step is None else _SUB_STEP.get(sub_step) or SubStep(sub_step),
        mode=_MODE.get(mode) or Mode(mode),
        current_revision=current_revision,
        deploying_revision=deploying_revision,
        paused=bool(paused),
        abort_requested=bool(abort_requested),
        promote_requested=bool(promote_requested),
        rollout_started_at=rollout_started_at,
        last_progress_at=last_progress_at,
        rollback_reason=(
            None if rollback_reason is None else _ROLLBACK_REASON.get(rollback_reason) or RollbackReason(rollback_reason)
        ),
        error_count=error_count,
        last_error=last_error,
        version=version,
        created_at=created_at,
        updated_at=updated_at,
        policy=policy,
        policy_error=policy_error,
    )


def revision_from_row(row: NamedRow) -> RevisionRecord:
    return RevisionRecord(
        id=row["id"],
        deployment_id=row["deployment_id"],
        number=row["number"],
        command=tuple(row["command"]),
        env=dict(row["env"]),
        health_check=None if row["health_check"] is None else dict(row["health_check"]),
        startup_timeout_seconds=row["startup_timeout_seconds"],
        drain_seconds=row["drain_seconds"],
        stop_grace_seconds=row["stop_grace_seconds"],
        label=row["label"],
        created_at=row["created_at"],
        ports=tuple(row["ports"] or ()),
    )


def route_from_row(row: Sequence[Any]) -> RouteRecord:
    """A `routes` row as ROUTE_COLUMNS (positional: a cycle maps 40,000 of them)."""
    (id_, deployment_id, revision, status, health, traffic, traffic_ratio, failed, address, pid, identity,
     health_failures, health_successes, created_at, status_updated_at, drain_until, detail, started_at) = row
    return RouteRecord(
        id=id_,
        deployment_id=deployment_id,
        revision=revision,
        status=_ROUTE_STATUS.get(status) or RouteStatus(status),
        health=_HEALTH.get(health) or Health(health),
        traffic=_TRAFFIC.get(traffic) or Traffic(traffic),
        traffic_ratio=traffic_ratio,
        failed=bool(failed),
        address=address,
        pid=pid,
        identity=identity,
        health_failures=health_failures,
        health_successes=health_successes,
        created_at=created_at,
        status_updated_at=status_updated_at,
        drain_until=drain_until,
        detail=detail,
        started_at=started_at,
    )


def history_from_row(row: NamedRow) -> HistoryRecord:
    return HistoryRecord(
        id=row["id"],
        deployment_id=row["deployment_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        lifecycle_from=Lifecycle(row["lifecycle_from"]),
        lifecycle_to=Lifecycle(row["lifecycle_to"]),
        sub_step=None if row["sub_step"] is None else SubStep(row["sub_step"]),
        result=row["result"],
        message=row["message"],
        strategy=row["strategy"],
        from_revision=row["from_revision"],
        to_revision=row["to_revision"],
        attempts=row["attempts"],
        error=row["error"],
    )


# ----------------------------------------------------------------------------------- record -> row


def db_value(value: Any) -> Any:
    """A model value as stored: enums as their string value, everything else unchanged."""
    return value.value if isinstance(value, Enum) else value


def deployment_change_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: db_value(value) for key, value in changes.items()}


def revision_values(deployment_id: int, number: int, spec: RevisionSpec, now: datetime) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id,
        "number": number,
        "command": list(spec.command),
        "env": dict(spec.env),
        "health_check": None if spec.health_check is None else dict(spec.health_check),
        "startup_timeout_seconds": float(spec.startup_timeout_seconds),
        "drain_seconds": float(spec.drain_seconds),
        "stop_grace_seconds": float(spec.stop_grace_seconds),
        "label": spec.label,
        "created_at": now,
        "ports": list(spec.ports) or None,
    }


def policy_values(deployment_id: int, policy: Policy, now: datetime) -> dict[str, Any]:
    return {
        "deployment_id": deployment_id,
        "strategy": policy.strategy.value,
        "document": policy.to_json(),
        "updated_at": now,
    }


def new_route_values(route: NewRoute, route_id: str) -> dict[str, Any]:
    return {
        "id": route_id,
        "deployment_id": route.deployment_id,
        "revision": route.revision,
        "status": RouteStatus(route.status).value,
        "health": Health(route.health).value,
        "traffic": Traffic(route.traffic).value,
        "traffic_ratio": float(route.traffic_ratio),
        "failed": route.failed,
        "address": route.address,
        "pid": route.pid,
        "identity": route.identity,
        "health_failures": 0,
        "health_successes": 0,
        "created_at": route.created_at,
        "status_updated_at": route.created_at,
        "drain_until": None,
        "detail": route.detail,
        "started_at": None,
    }


ROUTE_UPDATE_COLUMNS: Final = tuple(
    f.name for f in fields(RouteUpdate) if f.name not in ("id", "deployment_id")
)


def route_update_values(update: RouteUpdate) -> dict[str, Any]:
    return {key: db_value(value) for key, value in update.changes().items()}


def history_values(h: NewHistory) -> dict[str, Any]:
    return {
        "deployment_id": h.deployment_id,
        "created_at": h.at,
        "updated_at": h.at,
        "lifecycle_from": h.lifecycle_from.value,
        "lifecycle_to": h.lifecycle_to.value,
        "sub_step": None if h.sub_step is None else h.sub_step.value,
        "result": h.result,
        "message": h.message,
        "strategy": h.strategy,
        "from_revision": h.from_revision,
        "to_revision": h.to_revision,
        "attempts": 1,
        "error": h.error,
    }
