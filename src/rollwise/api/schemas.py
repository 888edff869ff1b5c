"""Request and response bodies of the REST API (Pydantic models, documented in /openapi.json), and the
one mapping from store records to response bodies.

Requests reuse the model's own declarations: a revision is `rollwise.model.revision.RevisionInput`; the
policy models are generated from `rollwise.model.Policy` (`PolicyBody`: the policy refusing unknown
fields; `PolicyPatch`: every field optional) and a name follows `rollwise.model`'s deployment-name rule.
Every request model forbids unknown fields, so a typo is a 422 naming the field rather than a setting
silently ignored.
Responses use lower-case enum values (the plan format's and the database's).

Called by `api.endpoints`. Must not: talk to the store or the operations layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, cast

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator
from pydantic_core import PydanticCustomError

from rollwise.model.names import MAX_REPLICAS
from rollwise.model import (
    DEPLOYMENT_NAME_MAX,
    DEPLOYMENT_NAME_PATTERN,
    Health,
    Lifecycle,
    Mode,
    Policy,
    RollbackReason,
    RouteStatus,
    SubStep,
    Traffic,
    deployment_name_problem,
    is_ready_state,
)
from rollwise.model.policy import MAX_COUNT
from rollwise.control.operations import NodeUsage
from rollwise.control.rules.condition import compute_condition
from rollwise.control.rules.timeline import Timeline
from rollwise.model.revision import HealthCheck, RevisionInput
from rollwise.store.records import (
    AnalysisTally,
    DeploymentRecord,
    HistoryRecord,
    MeasurementRecord,
    RevisionRecord,
    RolloutRecord,
    RouteRecord,
)

Replicas = Field(..., ge=0, le=MAX_REPLICAS, strict=True, description=f"Desired number of routes (0..{MAX_REPLICAS})")

# --------------------------------------------------------------------------------------------- requests


def every_field_optional(model: type[BaseModel], name: str, doc: str) -> type[BaseModel]:
    """A request model with `model`'s fields, each optional with default None (a field left out is
    not changed; `exclude_unset` tells them apart from an explicit null). A given value is validated by
    the field's own type, so exactly as `model` validates it (checks and bounds travel with the type,
    see rollwise.model.policy); descriptions are `model`'s. Model-level checks are not copied: the
    caller validates the merged result. Unknown fields and non-finite numbers are refused."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        fields[field_name] = (Optional[annotation], Field(None, description=info.description))
    return create_model(
        name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), __doc__=doc, __module__=__name__,
        **fields,
    )


class PolicyBody(Policy):
    """How the deployment rolls out a new revision (all fields optional; defaults shown). The fields,
    their validation, bounds and descriptions are `rollwise.model.Policy`'s; this subclass only refuses
    unknown fields."""

    model_config = ConfigDict(extra="forbid")


if TYPE_CHECKING:  # generated below; for the type checker it is just a model
    PolicyPatch = BaseModel
else:
    PolicyPatch = every_field_optional(
        Policy,
        "PolicyPatch",
        doc="Policy fields to change; fields left out keep their current value. Each given field is "
        "validated as in the policy; the merged policy is validated as a whole (e.g. max_surge and "
        "max_unavailable cannot both be 0).",
    )


class DeploymentCreate(BaseModel):
    """A new deployment: its name, size, policy and first revision."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., max_length=DEPLOYMENT_NAME_MAX, pattern=DEPLOYMENT_NAME_PATTERN,
        description=f"DNS label: lower-case letters, digits and '-', at most {DEPLOYMENT_NAME_MAX}, starting "
        "and ending alphanumeric",
    )
    replicas: int = Replicas
    policy: PolicyBody = Field(default_factory=PolicyBody, description="Rollout policy (default: rolling)")
    revision: RevisionInput = Field(..., description="The first revision: command, env, health check")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        problem = deployment_name_problem(v)
        if problem is not None:
            raise PydanticCustomError("name", "{problem}", {"problem": problem})
        return v


class DeploymentPatch(BaseModel):
    """Changes to a deployment; fields left out are unchanged."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS, strict=True, description="Desired number of routes")
    policy: PolicyPatch | None = Field(None, description="Policy fields to change (merged into the current policy)")


class PromoteRequest(BaseModel):
    """Promote: blue-green switches now; a canary completes its current step, or all of them (`full`)."""

    model_config = ConfigDict(extra="forbid")

    full: bool = Field(False, strict=True, description="Canary: skip to the final step (100 %)")


class RolloutRequest(BaseModel):
    """Activate a revision: start a rollout to it with the deployment's policy."""

    model_config = ConfigDict(extra="forbid")

    revision: int = Field(..., ge=1, le=MAX_COUNT, strict=True, description="Number of an existing revision")
    supersede: bool = Field(
        False, strict=True, description="Replace a rollout in progress instead of refusing with 409"
    )


# -------------------------------------------------------------------------------------------- responses


class RouteOut(BaseModel):
    """One replica of a revision."""

    id: str = Field(..., description="Route id")
    revision: int = Field(..., description="Revision number the route runs")
    status: RouteStatus = Field(..., description="provisioning, running, terminating, terminated, failed_to_start")
    health: Health = Field(..., description="not_checked, healthy, unhealthy, degraded")
    ready: bool = Field(
        ..., description="Running and healthy or degraded (or running without a health check): it serves and counts"
    )
    traffic: Traffic = Field(..., description="active or inactive")
    traffic_ratio: float = Field(..., description="Weight in the traffic layer")
    address: str | None = Field(None, description="host:port once started")
    pid: int | None = Field(None, description="Process id of the route (local runtime) once started")
    failed: bool = Field(..., description="Terminated because it failed")
    detail: str | None = Field(None, description="Why the route failed or stopped, when known")
    devices: dict[str, list[int]] = Field(
        default_factory=dict, description='Device indices it was given at start, e.g. {"gpu": [0]}'
    )
    node: str | None = Field(None, description="The node it runs on, once started")
    created_at: datetime
    status_updated_at: datetime


class DeploymentOut(BaseModel):
    """A deployment, its rollout state and its live routes."""

    name: str
    lifecycle: Lifecycle = Field(..., description="pending, scaling, ready, deploying, destroying")
    sub_step: SubStep | None = Field(None, description="Where a rollout stands (while deploying)")
    replicas: int = Field(..., description="Desired number of routes")
    ready_replicas: int = Field(..., description="Routes of the current revision that are ready")
    current_revision: int | None = Field(None, description="Number of the serving revision")
    deploying_revision: int | None = Field(None, description="Number of the revision a rollout moves to")
    mode: Mode = Field(..., description="forward, or rolling_back once a rollback started")
    paused: bool
    abort_requested: bool
    promote_requested: bool
    rollback_reason: RollbackReason | None = Field(None, description="Why the rollout is rolling back")
    rollout_started_at: datetime | None = None
    last_progress_at: datetime | None = None
    last_error: str | None = Field(
        None,
        description="The last error: a rollout's evaluation error, or the newest failed route (what happened, "
        "its exit code and last output lines); cleared after ten minutes without a failure",
    )
    fail_open: bool = Field(
        False, description="Every serving route is unhealthy: the proxy sends requests to all of them, not to none"
    )
    degraded: str | None = Field(None, description="Why the deployment is not at full strength; null when it is")
    next_restart_at: datetime | None = Field(
        None, description="When the crash-loop back-off lets the next replacement route start"
    )
    canary_step: int = Field(0, description="Canary: index of the current step (the number of steps = the final step)")
    step_started_at: datetime | None = Field(None, description="Canary: when the current step began")
    weights: dict[str, int] | None = Field(
        None, description='Canary: the split the proxy applies, e.g. {"r1": 90, "r2": 10}; null = by routes'
    )
    policy: PolicyBody | None = Field(None, description="Rollout policy (null only if the stored one is unreadable)")
    policy_error: str | None = Field(None, description="Why policy is null")
    routes: list[RouteOut] = Field(default_factory=list, description="Routes not yet terminated")
    version: int = Field(..., description="Bumped on every change")
    created_at: datetime
    updated_at: datetime


class RevisionOut(BaseModel):
    """An immutable revision of a deployment."""

    number: int = Field(..., description="1, 2, ... per deployment")
    command: list[str]
    env: dict[str, str]
    health_check: HealthCheck | None = None
    startup_timeout_seconds: float
    drain_seconds: float
    stop_grace_seconds: float
    label: str | None = None
    ports: list[str] = Field(default_factory=list, description="Names of the extra ports its routes get")
    resources: dict[str, int] = Field(
        default_factory=dict, description='What one of its routes needs of the node\'s slots, e.g. {"gpu": 1}'
    )
    created_at: datetime


class ActionsOut(BaseModel):
    """The operator verbs that apply to a deployment now."""

    actions: list[str] = Field(
        ..., description="Of promote, pause, resume, abort, undo: those the server would take now (decided by the "
        "rules that answer the others with 409); none on a standby"
    )


class HolderOut(BaseModel):
    """A route that holds slots on a node."""

    id: str = Field(..., description="Route id")
    deployment: str
    revision: int
    status: RouteStatus = Field(..., description="provisioning, running or terminating (all of them hold)")
    holds: dict[str, int] = Field(..., description="Units it holds, per resource")
    devices: dict[str, list[int]] = Field(
        default_factory=dict, description="The device indices it was given ({} until it has started)"
    )


class NodeOut(BaseModel):
    """One node's slots."""

    name: str
    total: dict[str, int] = Field(..., description="Units per resource")
    held: dict[str, int] = Field(..., description="Units held by routes whose process has not exited")
    free: dict[str, int] = Field(..., description="total - held (never below 0)")
    routes: list[HolderOut] = Field(default_factory=list, description="The routes holding slots here")


class CapacityOut(BaseModel):
    """What the runtime offers and who holds it."""

    nodes: list[NodeOut]


class HistoryOut(BaseModel):
    """One recorded step (repeated identical steps are merged; `attempts` counts them)."""

    id: int
    created_at: datetime
    updated_at: datetime = Field(..., description="When the last merged attempt happened")
    lifecycle_from: Lifecycle
    lifecycle_to: Lifecycle
    sub_step: SubStep | None = None
    result: str = Field(..., description='e.g. "success", "failure", "progress", "waiting", "operator", "error"')
    message: str
    strategy: str | None = None
    from_revision: int | None = None
    to_revision: int | None = None
    attempts: int
    error: str | None = None


class MeasurementOut(BaseModel):
    """One measurement of a canary's analysis: one metric over one window."""

    id: int
    metric: str = Field(..., description="The metric's name in the policy's analysis")
    verdict: str = Field(..., description="passed, failed or inconclusive")
    value: str | None = Field(
        None, description="The measured number (error rate 0..1, milliseconds), or a command's last line of output"
    )
    words: str = Field(..., description='The verdict in words, e.g. "errors = 0.034 > 0.01"')
    revision: int = Field(..., description="The canary revision measured")
    rollout_started_at: datetime = Field(..., description="The rollout the measurement belongs to")
    window_start: datetime
    window_end: datetime
    created_at: datetime


class AnalysisCountsOut(BaseModel):
    """The measurements of the current rollout, by verdict."""

    failed: int
    passed: int
    inconclusive: int


class AnalysisOut(BaseModel):
    """A deployment's canary analysis: the counts of its current (or last) rollout and its measurements."""

    rollout_started_at: datetime | None = Field(None, description="The current (or last) rollout")
    revision: int | None = Field(None, description="The canary revision of that rollout; null before any")
    counts: AnalysisCountsOut
    measurements: list[MeasurementOut] = Field(
        ..., description="Oldest first: the current rollout's, or every rollout's with ?all=true"
    )


class PlanRouteCreate(BaseModel):
    """A route the next cycle would create."""

    revision: str = Field(..., description="Revision number (as a string, like the plan format)")
    traffic: Traffic
    traffic_ratio: float


class PlanTrafficChange(BaseModel):
    """A traffic change the next cycle would make to a route that stays."""

    id: str = Field(..., description="Route id")
    traffic: Traffic
    traffic_ratio: float


class PlanOut(BaseModel):
    """The decision the next cycle would take (the `rollwise plan` output format; extra keys allowed)."""

    model_config = ConfigDict(extra="allow")

    sub_step: SubStep
    create: list[PlanRouteCreate] = Field(..., description="Routes to create")
    terminate: list[str] = Field(..., description="Route ids to terminate, in order")
    traffic: list[PlanTrafficChange] = Field(..., description="Traffic changes of routes that stay")
    mode: Mode
    reason: str


class HealthOut(BaseModel):
    """Liveness of the server."""

    status: str = Field(..., description='"ok", or "degraded" while the proxy is down (it is being restarted)')
    role: str = Field(
        ...,
        description='"active"; "starting" while an active server adopts its routes and proxy; "standby" for a '
        "server that does not take writes",
    )
    proxy: str | None = Field(None, description='"up" or "down"; null for a server without a proxy')


# --------------------------------------------------------------------------------- record -> response


def route_ready(r: RouteRecord, revisions: Mapping[int, RevisionRecord]) -> bool:
    """Whether a route is ready (one of a revision not given counts as health-checked)."""
    rev = revisions.get(r.revision)
    return is_ready_state(r.status, r.health, has_health_check=rev is None or rev.has_health_check)


def route_out(r: RouteRecord, revisions: dict[int, RevisionRecord]) -> RouteOut:
    ready = route_ready(r, revisions)
    return RouteOut(
        id=r.id, revision=r.revision, status=r.status, health=r.health, ready=ready, traffic=r.traffic,
        traffic_ratio=r.traffic_ratio, address=r.address, pid=r.pid, failed=r.failed, detail=r.detail,
        devices=devices_out(r.devices), node=r.node, created_at=r.created_at, status_updated_at=r.status_updated_at,
    )


def devices_out(devices: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    return {name: list(idx) for name, idx in devices.items()}


def capacity_out(nodes: Sequence[NodeUsage]) -> CapacityOut:
    return CapacityOut(nodes=[
        NodeOut(
            name=n.name, total=n.total, held=n.held, free=n.free,
            routes=[
                HolderOut(id=r.id, deployment=name, revision=r.revision, status=r.status, holds=dict(r.holds),
                          devices=devices_out(r.devices))
                for r, name in n.routes
            ],
        )
        for n in nodes
    ])


def deployment_out(
    dep: DeploymentRecord, routes: Sequence[RouteRecord], revisions: Sequence[RevisionRecord], *, now: datetime,
    with_routes: bool = True,
) -> DeploymentOut:
    """`with_routes=False`: `routes` left empty (the list's summary form leaves the field out); every other
    field, `ready_replicas` and the condition included, still comes from the routes given."""
    by_number = {rev.number: rev for rev in revisions}
    live = [r for r in routes if r.status is not RouteStatus.TERMINATED]
    shown = [route_out(r, by_number) for r in live] if with_routes else []
    condition = compute_condition(
        dep, routes, {(dep.id, rev.number): rev.has_health_check for rev in revisions}, now
    )
    return DeploymentOut(
        name=dep.name, lifecycle=dep.lifecycle, sub_step=dep.sub_step, replicas=dep.replicas,
        ready_replicas=sum(1 for r in live if r.revision == dep.current_revision and route_ready(r, by_number)),
        current_revision=dep.current_revision, deploying_revision=dep.deploying_revision, mode=dep.mode,
        paused=dep.paused, abort_requested=dep.abort_requested, promote_requested=dep.promote_requested,
        rollback_reason=dep.rollback_reason, rollout_started_at=dep.rollout_started_at,
        last_progress_at=dep.last_progress_at, last_error=dep.last_error, fail_open=condition.fail_open,
        degraded=condition.degraded, next_restart_at=condition.next_restart_at,
        canary_step=dep.canary_step, step_started_at=dep.step_started_at,
        weights=None if dep.traffic_weights is None else {f"r{k}": v for k, v in sorted(dep.traffic_weights.items())},
        policy=dep.policy.to_json() if dep.policy is not None else None,
        policy_error=dep.policy_error, routes=shown, version=dep.version,
        created_at=dep.created_at, updated_at=dep.updated_at,
    )


def revision_out(rev: RevisionRecord) -> RevisionOut:
    return RevisionOut(
        number=rev.number, command=list(rev.command), env=dict(rev.env),
        health_check=HealthCheck.model_validate(rev.health_check) if rev.health_check is not None else None,
        startup_timeout_seconds=rev.startup_timeout_seconds, drain_seconds=rev.drain_seconds,
        stop_grace_seconds=rev.stop_grace_seconds, label=rev.label, ports=list(rev.ports),
        resources=dict(rev.resources), created_at=rev.created_at,
    )


def history_out(h: HistoryRecord) -> HistoryOut:
    return HistoryOut(
        id=h.id, created_at=h.created_at, updated_at=h.updated_at, lifecycle_from=h.lifecycle_from,
        lifecycle_to=h.lifecycle_to, sub_step=h.sub_step, result=h.result, message=h.message,
        strategy=h.strategy, from_revision=h.from_revision, to_revision=h.to_revision,
        attempts=h.attempts, error=h.error,
    )


def measurement_out(m: MeasurementRecord) -> MeasurementOut:
    return MeasurementOut(
        id=m.id, metric=m.metric, verdict=m.verdict, value=m.value, words=m.words, revision=m.revision,
        rollout_started_at=m.rollout_started_at, window_start=m.window_start, window_end=m.window_end,
        created_at=m.created_at,
    )


def analysis_out(dep: DeploymentRecord, measurements: Sequence[MeasurementRecord], tally: AnalysisTally) -> AnalysisOut:
    current = [m for m in measurements if m.rollout_started_at == dep.rollout_started_at]
    revision = current[-1].revision if current else dep.deploying_revision
    return AnalysisOut(
        rollout_started_at=dep.rollout_started_at, revision=revision,
        counts=AnalysisCountsOut(failed=tally.failed, passed=tally.passed, inconclusive=tally.inconclusive),
        measurements=[measurement_out(m) for m in measurements],
    )


# ------------------------------------------------------------------------------------ rollout timeline

RolloutOutcome = Literal["in_progress", "completed", "rolled_back", "aborted"]
EventKind = Literal["started", "wave", "step", "paused", "promoted", "rollback", "completed", "aborted", "error"]


class RolloutOut(BaseModel):
    """One rollout of a deployment (docs/api.md, "Rollout timeline")."""

    id: int = Field(..., description="Stable id of the rollout (GET …/rollouts/{id}/timeline)")
    from_revision: int | None = Field(..., description="The revision serving when it started")
    to_revision: int
    strategy: str = Field(..., description='The policy\'s strategy when it started ("rolling", "blue_green", …)')
    started_at: datetime
    ended_at: datetime | None = Field(..., description="null while it runs")
    outcome: RolloutOutcome = Field(..., description="in_progress, completed, rolled_back or aborted (by an operator, "
                                                     "superseded by another rollout, or destroyed)")


class TimelineSampleOut(BaseModel):
    """What the rollout looked like at one moment (recorded when it changed, and at its start and end)."""

    at: datetime
    ready: dict[str, int] = Field(..., description="Revision number (as a string) -> ready routes")
    weights: dict[str, int] = Field(
        ..., description="Revision number (as a string) -> percent of the requests; sums to 100, {} when nothing serves"
    )


class TimelineEventOut(BaseModel):
    """One history row of the rollout, as a mark on its chart."""

    at: datetime
    kind: EventKind
    message: str = Field(..., description="One line in words (the history row's message)")


class TimelineOut(RolloutOut):
    """A rollout with its samples and events, oldest first."""

    samples: list[TimelineSampleOut] = Field(..., description="Oldest first; at most 500 (thinned evenly)")
    events: list[TimelineEventOut] = Field(..., description="Oldest first; the rollout's history rows")


def rollout_out(r: RolloutRecord) -> RolloutOut:
    return RolloutOut(id=r.id, from_revision=r.from_revision, to_revision=r.to_revision, strategy=r.strategy,
                      started_at=r.started_at, ended_at=r.ended_at, outcome=cast(RolloutOutcome, r.outcome))


def timeline_out(t: Timeline) -> TimelineOut:
    return TimelineOut(
        **rollout_out(t.rollout).model_dump(),
        samples=[
            TimelineSampleOut(at=s.at, ready={str(k): v for k, v in sorted(s.ready.items())},
                              weights={str(k): v for k, v in sorted(s.weights.items())})
            for s in t.samples
        ],
        events=[TimelineEventOut(at=e.at, kind=cast(EventKind, e.kind), message=e.message) for e in t.events],
    )
