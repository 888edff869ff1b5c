"""`rollwise plan` input and output (docs/strategies.md): JSON values <-> strategy engine values. Pure.

    parse_plan_input(obj)        parsed JSON -> PlanInput (frozen: now, deployment, routes, policy)
    decision_to_json(decision)   Decision -> the plan output object
    compute_plan_output(obj)     both, with `decide` in between

Called by the `rollwise plan` command and by the API's dry run. Bad input raises
`rollwise.model.ValidationFailed` whose message is ONE line naming the field and the problem:
`routes[2].status: "runing" is not one of provisioning, running, terminating, terminated,
failed_to_start`. The first problem found wins, in document order (now, deployment, policy, routes,
capacity, analysis). Unknown keys are ignored. Defaults are those of docs/strategies.md (route: health
not_checked, traffic active, ratio 1.0, health check true, not failed, timestamps = now; deployment:
mode forward, flags false, last_progress_at = now, rollout_started_at null, canary_step 0,
step_started_at = now; capacity unlimited; analysis all 0, interval passed).
`capacity.placeable` (an integer >= 0, or null / absent for unlimited) becomes the deployment view's
`CapacityView`; the plan input gives no per-route needs, so its reasons count placeable routes.
`analysis` (the canary's measurements so far) becomes the deployment view's `AnalysisCounts`.
The output gains `set_canary_step`, `weights` and `requeue_after` for canary decisions.

Must not: open files, read the clock or print; the command does that.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from rollwise.model import (
    NO_ANALYSIS,
    UNLIMITED,
    AnalysisCounts,
    CapacityView,
    Decision,
    DeploymentView,
    Health,
    Mode,
    Policy,
    RouteStatus,
    RouteView,
    Traffic,
    ValidationFailed,
    parse_policy,
)
from rollwise.model.names import MAX_REPLICAS
from rollwise.model.policy import MAX_COUNT
from rollwise.strategy.engine import check_decidable, decide


E = TypeVar("E", bound=Enum)

_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class PlanInput:
    """One deployment's state as `rollwise plan` reads it."""

    now: datetime
    deployment: DeploymentView
    routes: tuple[RouteView, ...]
    policy: Policy


def parse_plan_input(obj: Any) -> PlanInput:
    """Validate a parsed JSON document (see the module docstring); raises ValidationFailed."""
    if not isinstance(obj, dict):
        raise ValidationFailed(f"input: {_show(obj)} is not an object")
    root = _Fields(obj, "")
    now = root.timestamp("now")
    deployment = _parse_deployment(root.object("deployment"), now)
    policy = _parse_policy(obj)
    routes = _parse_routes(obj.get("routes", _MISSING), now)
    deployment = dataclasses.replace(
        deployment,
        capacity=_parse_capacity(obj.get("capacity", _MISSING)),
        analysis=_parse_analysis(obj.get("analysis", _MISSING)),
    )
    check_decidable(deployment)
    return PlanInput(now=now, deployment=deployment, routes=routes, policy=policy)


def decision_to_json(decision: Decision) -> dict[str, Any]:
    """The plan output object (docs/strategies.md); `rollback_reason`, `set_paused`, `set_canary_step`,
    `weights` and `requeue_after` only when they apply (`requeue_after`: canary decisions only, in
    seconds rounded to the millisecond)."""
    out: dict[str, Any] = {
        "sub_step": decision.sub_step.value,
        "create": [
            {"revision": c.revision, "traffic": c.traffic.value, "traffic_ratio": c.traffic_ratio}
            for c in decision.create
        ],
        "terminate": list(decision.terminate),
        "traffic": [
            {"id": t.id, "traffic": t.traffic.value, "traffic_ratio": t.traffic_ratio} for t in decision.traffic
        ],
        "mode": decision.mode.value,
        "reason": decision.reason,
    }
    if decision.rollback_reason is not None:
        out["rollback_reason"] = decision.rollback_reason.value
    if decision.set_paused:
        out["set_paused"] = True
    if decision.set_canary_step is not None:
        out["set_canary_step"] = decision.set_canary_step
    if decision.weights is not None:
        out["weights"] = dict(decision.weights)
        if decision.requeue_after is not None:
            out["requeue_after"] = round(decision.requeue_after, 3)
    return out


def compute_plan_output(obj: Any) -> dict[str, Any]:
    """Parsed JSON state in, plan output out: what `rollwise plan` prints."""
    plan = parse_plan_input(obj)
    return decision_to_json(decide(plan.deployment, plan.routes, plan.policy, plan.now))


# --------------------------------------------------------------------------------------------------


def _parse_deployment(d: _Fields, now: datetime) -> DeploymentView:
    desired = d.integer("desired_replicas", low=0, high=MAX_REPLICAS)
    return DeploymentView(
        desired_replicas=desired,
        current_revision=d.revision("current_revision"),
        deploying_revision=d.revision("deploying_revision"),
        mode=d.enum("mode", Mode, default=Mode.FORWARD),
        paused=d.flag("paused"),
        abort_requested=d.flag("abort_requested"),
        promote_requested=d.flag("promote_requested"),
        rollout_started_at=d.optional_timestamp("rollout_started_at", default=None),
        last_progress_at=d.optional_timestamp("last_progress_at", default=now),
        canary_step=d.integer("canary_step", low=0, high=MAX_COUNT, default=0),
        step_started_at=d.optional_timestamp("step_started_at", default=now),
        promote_full_requested=d.flag("promote_full_requested"),
    )


def _parse_policy(obj: Mapping[str, Any]) -> Policy:
    raw = obj.get("policy", _MISSING)
    if raw is _MISSING:
        raise ValidationFailed("policy: is required")
    if isinstance(raw, dict) and "strategy" not in raw:
        raise ValidationFailed("policy.strategy: is required")
    return parse_policy(raw, prefix="policy")


def _parse_capacity(raw: Any) -> CapacityView:
    """`{"placeable": N}`: N routes of the target revision can be placed this cycle; absent or null
    (the whole object or `placeable`) is unlimited."""
    if raw is _MISSING or raw is None:
        return UNLIMITED
    if not isinstance(raw, dict):
        raise ValidationFailed(f"capacity: {_show(raw)} is not an object")
    if raw.get("placeable") is None:
        return UNLIMITED
    return CapacityView(placeable=_Fields(raw, "capacity").integer("placeable", low=0, high=MAX_COUNT))


def _parse_analysis(raw: Any) -> AnalysisCounts:
    """The canary's analysis so far: `{"failed": 0, "passed": 0, "inconclusive": 0}` (each default 0),
    `last_failure` (string or null) and `interval_passed` (default true); absent or null: nothing
    measured."""
    if raw is _MISSING or raw is None:
        return NO_ANALYSIS
    if not isinstance(raw, dict):
        raise ValidationFailed(f"analysis: {_show(raw)} is not an object")
    f = _Fields(raw, "analysis")
    return AnalysisCounts(
        failed=f.integer("failed", low=0, high=MAX_COUNT, default=0),
        passed=f.integer("passed", low=0, high=MAX_COUNT, default=0),
        inconclusive=f.integer("inconclusive", low=0, high=MAX_COUNT, default=0),
        last_failure=f.optional_string("last_failure"),
        interval_passed=f.flag("interval_passed", default=True),
    )


def _parse_routes(raw: Any, now: datetime) -> tuple[RouteView, ...]:
    if raw is _MISSING:
        return ()
    if not isinstance(raw, list):
        raise ValidationFailed(f"routes: {_show(raw)} is not a list")
    routes: list[RouteView] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        path = f"routes[{i}]"
        if not isinstance(item, dict):
            raise ValidationFailed(f"{path}: {_show(item)} is not an object")
        f = _Fields(item, path)
        route_id = f.string("id")
        if route_id in seen:
            raise ValidationFailed(f"{path}.id: {_show(route_id)} is already the id of routes[{seen[route_id]}]")
        seen[route_id] = i
        revision = f.string("revision")
        status = f.enum("status", RouteStatus)
        health = f.enum("health", Health, default=Health.NOT_CHECKED)
        traffic = f.enum("traffic", Traffic, default=Traffic.ACTIVE)
        traffic_ratio = f.ratio("traffic_ratio", default=1.0)
        has_health_check = f.flag("has_health_check", default=True)
        failed = f.flag("failed")
        created_at = f.timestamp("created_at", default=now)
        status_updated_at = f.timestamp("status_updated_at", default=now)
        routes.append(
            RouteView(
                id=route_id,
                revision=revision,
                status=status,
                health=health,
                traffic=traffic,
                traffic_ratio=traffic_ratio,
                has_health_check=has_health_check,
                failed=failed,
                created_at=created_at,
                status_updated_at=status_updated_at,
            )
        )
    return tuple(routes)


class _Fields:
    """Typed reads of one JSON object's fields, raising ValidationFailed with the dotted field path."""

    def __init__(self, obj: Mapping[str, Any], path: str) -> None:
        self._obj = obj
        self._path = path

    def _where(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def _fail(self, key: str, problem: str) -> ValidationFailed:
        return ValidationFailed(f"{self._where(key)}: {problem}")

    def _get(self, key: str, default: Any) -> Any:
        value = self._obj.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self._fail(key, "is required")
            return default
        return value

    def object(self, key: str) -> _Fields:
        value = self._get(key, _MISSING)
        if not isinstance(value, dict):
            raise self._fail(key, f"{_show(value)} is not an object")
        return _Fields(value, self._where(key))

    def string(self, key: str) -> str:
        value = self._get(key, _MISSING)
        if not isinstance(value, str):
            raise self._fail(key, f"{_show(value)} is not a string")
        if not value.strip():
            raise self._fail(key, f"{_show(value)} is empty")
        return value

    def optional_string(self, key: str) -> str | None:
        """A string that may be null or absent (None)."""
        value = self._get(key, None)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, f"{_show(value)} is not a string or null")
        return value

    def revision(self, key: str) -> str | None:
        """A required revision name that may be null."""
        value = self._get(key, _MISSING)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._fail(key, f"{_show(value)} is not a string or null")
        if not value.strip():
            raise self._fail(key, f"{_show(value)} is empty")
        return value

    def integer(self, key: str, *, low: int, high: int, default: Any = _MISSING) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"{_show(value)} is not an integer")
        if value < low:
            raise self._fail(key, f"{value} is negative" if low == 0 else f"{value} is under {low}")
        if value > high:
            raise self._fail(key, f"{value} is over {high}")
        return value

    def flag(self, key: str, *, default: bool = False) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self._fail(key, f"{_show(value)} is not true or false")
        return value

    def ratio(self, key: str, *, default: float) -> float:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(key, f"{_show(value)} is not a number")
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise self._fail(key, f"{_show(value)} is not between 0 and 1")
        return float(value)

    def enum(self, key: str, kind: type[E], *, default: Any = _MISSING) -> E:
        value = self._get(key, default)
        if isinstance(value, kind):
            return value
        allowed = [str(m.value) for m in kind]
        if not isinstance(value, str) or value not in allowed:
            raise self._fail(key, f"{_show(value)} is not one of {', '.join(allowed)}")
        return kind(value)

    def timestamp(self, key: str, *, default: Any = _MISSING) -> datetime:
        value = self._get(key, default)
        if isinstance(value, datetime):  # the default
            return value
        parsed = _parse_timestamp(value)
        if parsed is None:
            raise self._fail(key, f"{_show(value)} is not an ISO 8601 timestamp with a zone")
        return parsed

    def optional_timestamp(self, key: str, *, default: datetime | None) -> datetime | None:
        """A timestamp that may be null (null: not known)."""
        value = self._obj.get(key, _MISSING)
        if value is None:
            return None
        if value is _MISSING:
            return default
        return self.timestamp(key)


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed


def _show(value: Any, limit: int = 60) -> str:
    """A value as JSON for an error line, shortened so the line stays short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
