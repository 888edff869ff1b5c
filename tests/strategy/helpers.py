"""Small builders for strategy tests: routes, deployments, policies, and decision summaries.

`route("a1", "r1", "running", "healthy")` reads like the spec's tables; times are seconds after T0.
`summary(decision)` turns a Decision into plain values that a table row can state in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
    parse_policy,
)
from rollwise.strategy import decide

T0 = datetime(2026, 3, 4, tzinfo=UTC)
NOW = T0 + timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def route(
    id: str,
    revision: str,
    status: str = "running",
    health: str = "healthy",
    *,
    traffic: str = "active",
    ratio: float | None = None,
    check: bool = True,
    failed: bool = False,
    created: float = 0,
    updated: float | None = None,
) -> RouteView:
    if ratio is None:
        ratio = 1.0 if traffic == "active" else 0.0
    return RouteView(
        id=id,
        revision=revision,
        status=RouteStatus(status),
        health=Health(health),
        traffic=Traffic(traffic),
        traffic_ratio=ratio,
        has_health_check=check,
        failed=failed,
        created_at=at(created),
        status_updated_at=at(created if updated is None else updated),
    )


def ready(prefix: str, revision: str, n: int, *, start: int = 1, created: float = 0, **kw: Any) -> list[RouteView]:
    """n ready routes `prefix{start}`…, created one second apart (so older ids sort first)."""
    return [route(f"{prefix}{i}", revision, created=created + i, **kw) for i in range(start, start + n)]


def prov(prefix: str, revision: str, n: int, *, start: int = 1, created: float = 30, **kw: Any) -> list[RouteView]:
    return [
        route(f"{prefix}{i}", revision, "provisioning", "not_checked", created=created + i, **kw)
        for i in range(start, start + n)
    ]


def dep(
    d: int,
    current: str | None = "r1",
    deploying: str | None = "r2",
    *,
    mode: str = "forward",
    paused: bool = False,
    abort: bool = False,
    promote: bool = False,
    started: float | None = 0,
    progress: float | None = 50,
    capacity: CapacityView = UNLIMITED,
    step: int = 0,
    step_started: float | None = None,
    promote_full: bool = False,
    analysis: AnalysisCounts = NO_ANALYSIS,
) -> DeploymentView:
    """A deployment; `step` / `step_started` (seconds after T0) / `promote_full` / `analysis` are the
    canary's state."""
    return DeploymentView(
        desired_replicas=d,
        current_revision=current,
        deploying_revision=deploying,
        mode=Mode(mode),
        paused=paused,
        abort_requested=abort,
        promote_requested=promote,
        rollout_started_at=None if started is None else at(started),
        last_progress_at=None if progress is None else at(progress),
        capacity=capacity,
        canary_step=step,
        step_started_at=None if step_started is None else at(step_started),
        promote_full_requested=promote_full,
        analysis=analysis,
    )


def gpus(free: int, *, per_route: int = 1) -> CapacityView:
    """`free` GPUs, each route of the target revision needing `per_route`: P = free // per_route."""
    return CapacityView(placeable=free // per_route, need={"gpu": per_route}, free={"gpu": free})


def slots(placeable: int) -> CapacityView:
    """Only the number of placeable routes is known (as in `rollwise plan`'s input)."""
    return CapacityView(placeable=placeable)


def policy(strategy: str = "rolling", **settings: Any) -> Policy:
    return parse_policy({"strategy": strategy, **settings})


def rolling(surge: int | str = "25%", unavailable: int | str = 0, **kw: Any) -> Policy:
    return policy("rolling", max_surge=surge, max_unavailable=unavailable, **kw)


def canary(*steps: int | float | None, **kw: Any) -> Policy:
    """A canary policy from shorthand steps: an int is `set_weight`, a float `pause` of that many
    seconds, None `pause: {}` (wait for promote). canary(10, 60.0, 50, None)."""
    written: list[dict[str, Any]] = []
    for step in steps:
        if isinstance(step, int):
            written.append({"set_weight": step})
        elif step is None:
            written.append({"pause": {}})
        else:
            written.append({"pause": {"seconds": step}})
    return policy("canary", steps=written, **kw)


@dataclass(frozen=True)
class Expect:
    """What a table row states about a decision; `None` fields are not checked."""

    sub_step: str
    create: int = 0
    terminate: Sequence[str] = ()
    traffic: Sequence[str] | None = ()
    mode: str = "forward"
    rollback_reason: str | None = None
    set_paused: bool = False
    reason_has: Sequence[str] = field(default_factory=tuple)
    weights: dict[str, int] | None = None
    """The canary's split; None (every other strategy) means the decision has none."""
    set_step: int | None = None
    requeue: float | None = None
    """When given, `requeue_after` must be this (to the millisecond)."""


def summary(decision: Decision) -> dict[str, Any]:
    return {
        "sub_step": decision.sub_step.value,
        "create": len(decision.create),
        "terminate": list(decision.terminate),
        "traffic": [t.id for t in decision.traffic],
        "mode": decision.mode.value,
        "rollback_reason": None if decision.rollback_reason is None else decision.rollback_reason.value,
        "set_paused": decision.set_paused,
        "weights": None if decision.weights is None else dict(decision.weights),
        "set_step": decision.set_canary_step,
    }


def check(decision: Decision, expect: Expect) -> None:
    got = summary(decision)
    want = {
        "sub_step": expect.sub_step,
        "create": expect.create,
        "terminate": list(expect.terminate),
        "traffic": got["traffic"] if expect.traffic is None else list(expect.traffic),
        "mode": expect.mode,
        "rollback_reason": expect.rollback_reason,
        "set_paused": expect.set_paused,
        "weights": expect.weights,
        "set_step": expect.set_step,
    }
    assert got == want, decision.reason
    for words in expect.reason_has:
        assert words in decision.reason, decision.reason
    if expect.requeue is not None:
        assert decision.requeue_after is not None, decision.reason
        assert abs(decision.requeue_after - expect.requeue) < 0.002, (decision.requeue_after, decision.reason)


def run(deployment: DeploymentView, routes: Sequence[RouteView], pol: Policy, now: datetime = NOW) -> Decision:
    return decide(deployment, routes, pol, now)


def check_invariants(decision: Decision, deployment: DeploymentView, routes: Sequence[RouteView]) -> None:
    """What every decision must satisfy, whatever the rule that made it."""
    from rollwise.strategy.cycle import is_alive

    by_id = {r.id: r for r in routes}
    reason = decision.reason
    assert reason and "\n" not in reason and reason == reason.strip()
    labels = ("rolling: ", "blue-green: ", "recreate: ", "canary: ", "rolling back (", "rolling back: ")
    assert reason.startswith(labels), reason
    assert len(set(decision.terminate)) == len(decision.terminate), "a route terminated twice"
    for rid in decision.terminate:
        assert rid in by_id and is_alive(by_id[rid]), f"{rid} is not an alive route"
    for change in decision.traffic:
        assert change.id in by_id and is_alive(by_id[change.id]), f"traffic change for {change.id}"
        assert change.id not in decision.terminate, f"traffic change for terminated {change.id}"
    target = deployment.deploying_revision if decision.mode is Mode.FORWARD else deployment.current_revision
    for c in decision.create:
        assert c.revision == target
    if decision.sub_step.value == "paused":
        assert not decision.changes_routes
    if decision.rollback_reason is not None:
        assert decision.mode is Mode.ROLLING_BACK
        assert reason.startswith("rolling back (")
    if deployment.mode is Mode.ROLLING_BACK:
        assert decision.mode is Mode.ROLLING_BACK and decision.rollback_reason is None
    if decision.sub_step.value == "completed":
        assert decision.mode is Mode.FORWARD
    if decision.sub_step.value in ("rolled_back", "rolling_back"):
        assert decision.mode is Mode.ROLLING_BACK
    if decision.weights is not None:
        assert sum(decision.weights.values()) == 100, decision.weights
        assert all(0 <= w <= 100 for w in decision.weights.values()), decision.weights
        assert set(decision.weights) <= {deployment.current_revision, deployment.deploying_revision}
    if decision.requeue_after is not None:
        assert decision.requeue_after >= 0


@dataclass(frozen=True)
class Row:
    """One table row: a state, and what the decision must be."""

    deployment: DeploymentView
    routes: Sequence[RouteView]
    policy: Policy
    expect: Expect
    now: datetime = NOW


def row(name: str, deployment: DeploymentView, routes: Sequence[RouteView], pol: Policy, expect: Expect,
        *, now: datetime = NOW) -> Any:
    import pytest

    return pytest.param(Row(deployment, list(routes), pol, expect, now), id=name)


def check_row(r: Row) -> Decision:
    decision = run(r.deployment, r.routes, r.policy, r.now)
    check(decision, r.expect)
    check_invariants(decision, r.deployment, r.routes)
    return decision
