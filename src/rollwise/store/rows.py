"""The ONLY row <-> model mapping of rollwise: records from rows, column values from commands.

Mapping rules (row -> record): enum columns hold the enum's `.value` and come back as the enum
(`Lifecycle`, `SubStep | None`, `Mode`, `RollbackReason | None`, `RouteStatus`, `Health`, `Traffic`);
timestamps are aware UTC (schema.UtcDateTime); JSON `command` becomes a tuple of str; the policy document
goes through `parse_policy` — a document that no longer validates (or a missing policy row) gives
`policy=None` and says why in `policy_error`, so one bad row cannot stop a cycle over all deployments.
Record -> row: the `*_values()` functions.

Rows are read by column name through `NamedRow` (a SQLAlchemy `RowMapping` or a dict), except the two a
cycle reads by the ten thousand: deployment and route rows are plain sequences in the order of
DEPLOYMENT_COLUMNS / ROUTE_COLUMNS (the SELECTs in queries.py name exactly those columns), which saves
SQLAlchemy's per-row mapping objects.

Called by: store.repository, store.apply, store.queries. Must not: do I/O or import SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
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
from rollwise.store.commands import ROUTE_UPDATE_COLUMNS, UNSET, NewHistory, NewMeasurement, NewRollout, NewRoute, RevisionSpec, RouteUpdate
from rollwise.store.records import (
    NOTHING,
    DeploymentRecord,
    HistoryRecord,
    MeasurementRecord,
    RevisionRecord,
    RolloutRecord,
    RouteRecord,
    TimelineSample,
)


class NamedRow(Protocol):
    """A row read by column name: SQLAlchemy's `RowMapping` (whose keys may also be columns) or a dict."""

    def __getitem__(self, key: str, /) -> Any: ...


# ----------------------------------------------------------------------------------- row -> record


DEPLOYMENT_COLUMNS: Final = tuple(f.name for f in fields(DeploymentRecord) if f.name not in ("policy", "policy_error"))
"""The `deployments` columns `deployment_from_row` expects, in this order, followed by the policy document."""

ROUTE_COLUMNS: Final = tuple(f.name for f in fields(RouteRecord))
"""The `routes` columns `route_from_row` expects, in this order."""

ROLLOUT_COLUMNS: Final = tuple(f.name for f in fields(RolloutRecord))
"""The `rollouts` columns `rollout_from_row` reads (all but the samples)."""


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
     last_error, version, created_at, updated_at, canary_step, step_started_at, traffic_weights,
     promote_full_requested, policy_document) = row
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
        canary_step=canary_step or 0,
        step_started_at=step_started_at,
        traffic_weights=None if traffic_weights is None else {int(k): int(v) for k, v in traffic_weights.items()},
        promote_full_requested=bool(promote_full_requested),
    )


def add_revision_facts(
    deployment_id: int, facts: Sequence[Any], checks: dict[tuple[int, int], bool], needs: dict[tuple[int, int], dict[str, int]]
) -> None:
    """Record one revision's facts (number, has a health check, resources: queries.with_revision_facts)."""
    number, has_check, resources = facts
    if number is not None:
        checks[(deployment_id, number)] = bool(has_check)
        if resources and resources != "null" and (need := _resources(resources)):
            needs[(deployment_id, number)] = dict(need)


@lru_cache(maxsize=1024)
def _resources(text: str) -> Mapping[str, int]:
    """A `revisions.resources` JSON text decoded (a few distinct texts, read once per route)."""
    return {str(name): int(n) for name, n in (json.loads(text) or {}).items()}


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
        resources=row["resources"] or NOTHING,
    )


def route_from_row(row: Sequence[Any]) -> RouteRecord:
    """A `routes` row as ROUTE_COLUMNS (positional: a cycle maps 40,000 of them)."""
    (id_, deployment_id, revision, status, health, traffic, traffic_ratio, failed, address, pid, identity,
     health_failures, health_successes, created_at, status_updated_at, drain_until, detail, started_at,
     holds, devices, node) = row
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
        holds=holds or NOTHING,
        devices=devices_from_json(devices),
        node=node,
    )


def devices_from_json(value: Any) -> Mapping[str, tuple[int, ...]]:
    """A `routes.devices` value ({"gpu": [0, 1]} or NULL) as the record's mapping of tuples."""
    if not value:
        return NOTHING
    return {str(name): tuple(int(i) for i in idx) for name, idx in value.items()}


def devices_to_json(devices: Mapping[str, Any]) -> dict[str, list[int]] | None:
    return {name: [int(i) for i in idx] for name, idx in devices.items()} or None


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


def measurement_from_row(row: NamedRow) -> MeasurementRecord:
    return MeasurementRecord(
        id=row["id"],
        deployment_id=row["deployment_id"],
        revision=row["revision"],
        rollout_started_at=row["rollout_started_at"],
        metric=row["metric"],
        verdict=row["verdict"],
        value=row["value"],
        words=row["words"],
        window_start=row["window_start"],
        window_end=row["window_end"],
        created_at=row["created_at"],
    )


def rollout_from_row(row: NamedRow) -> RolloutRecord:
    return RolloutRecord(**{name: row[name] for name in ROLLOUT_COLUMNS})


def samples_from_json(value: Any) -> list[TimelineSample]:
    """A `rollouts.samples` list ([{"at": ISO text, "ready": {"1": 3}, "weights": {"1": 100}}, …])."""
    return [
        TimelineSample(
            at=datetime.fromisoformat(item["at"]).astimezone(UTC),
            ready={int(k): int(v) for k, v in item["ready"].items()},
            weights={int(k): int(v) for k, v in item["weights"].items()},
        )
        for item in value or ()
    ]


# ----------------------------------------------------------------------------------- record -> row


def db_value(value: Any) -> Any:
    """A model value as stored: enums as their string value, everything else unchanged."""
    return value.value if isinstance(value, Enum) else value


def deployment_change_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = {key: db_value(value) for key, value in changes.items()}
    if values.get("traffic_weights") is not None:  # JSON object keys are strings
        values["traffic_weights"] = {str(k): int(v) for k, v in values["traffic_weights"].items()}
    return values


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
        "resources": dict(spec.resources) or None,
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
        "holds": dict(route.holds) if route.holds else None,
        "devices": None,
        "node": None,
    }




def route_update_values(update: RouteUpdate) -> dict[str, Any]:
    """`update.changes()` as column values (enums as their strings), in one pass over the fields."""
    values = {
        name: value._value_ if isinstance(value, Enum) else value
        for name in ROUTE_UPDATE_COLUMNS
        if (value := getattr(update, name)) is not UNSET
    }
    if "devices" in values:
        values["devices"] = devices_to_json(values["devices"])
    return values


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


HISTORY_KEY_COLUMNS: Final = ("lifecycle_from", "lifecycle_to", "sub_step", "result", "message", "from_revision",
                               "to_revision")
"""The `history` columns of a row's merge key (`NewHistory.merge_key`), in its order."""


def history_key_values(h: NewHistory) -> tuple[object, ...]:
    """`h.merge_key()` as the HISTORY_KEY_COLUMNS values it is stored as (enums as their strings)."""
    return (h.lifecycle_from._value_, h.lifecycle_to._value_, None if h.sub_step is None else h.sub_step._value_,
            h.result, h.message, h.from_revision, h.to_revision)


def measurement_values(m: NewMeasurement) -> dict[str, Any]:
    return {
        "deployment_id": m.deployment_id,
        "revision": m.revision,
        "rollout_started_at": m.rollout_started_at,
        "metric": m.metric,
        "verdict": m.verdict,
        "value": m.value,
        "words": m.words,
        "window_start": m.window_start,
        "window_end": m.window_end,
        "created_at": m.at,
    }


def sample_json(sample: TimelineSample) -> dict[str, Any]:
    """One element of `rollouts.samples` (revision numbers as string keys, the time as ISO text in UTC)."""
    return {
        "at": sample.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "ready": {str(k): int(v) for k, v in sorted(sample.ready.items())},
        "weights": {str(k): int(v) for k, v in sorted(sample.weights.items())},
    }


def new_rollout_values(r: NewRollout) -> dict[str, Any]:
    return {
        "deployment_id": r.deployment_id,
        "from_revision": r.from_revision,
        "to_revision": r.to_revision,
        "strategy": r.strategy,
        "started_at": r.at,
        "ended_at": None,
        "outcome": "in_progress",
        "samples": [sample_json(x) for x in r.samples],
        "sample_count": len(r.samples),
        "last_sample": r.samples[-1].key if r.samples else None,
    }
