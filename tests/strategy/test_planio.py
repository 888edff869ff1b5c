"""Plan I/O (docs/strategies.md ("rollwise plan")): parsing with defaults, one-line errors naming the field, and the
output object."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rollwise.model import (
    UNLIMITED,
    AnalysisCounts,
    CapacityFallback,
    CapacityView,
    Decision,
    Health,
    Mode,
    RollbackReason,
    RouteCreate,
    RouteStatus,
    StrategyName,
    SubStep,
    Traffic,
    TrafficChange,
    ValidationFailed,
)
from rollwise.strategy.planio import compute_plan_output, decision_to_json, parse_plan_input


def state(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "now": "2026-03-04T00:01:00Z",
        "deployment": {"desired_replicas": 3, "current_revision": "r1", "deploying_revision": "r2"},
        "policy": {"strategy": "rolling"},
        "routes": [
            {"id": "a1", "revision": "r1", "status": "running", "health": "healthy"},
            {"id": "a2", "revision": "r1", "status": "running", "health": "healthy"},
            {"id": "a3", "revision": "r1", "status": "running", "health": "healthy"},
        ],
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        elif value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


DELETE = object()

ERRORS = [
    ("not an object", [1, 2], "input: [1, 2] is not an object"),
    ("now missing", state(now=DELETE), "now: is required"),
    ("now not a timestamp", state(now="yesterday"), 'now: "yesterday" is not an ISO 8601 timestamp with a zone'),
    ("now without a zone", state(now="2026-03-04T00:01:00"),
     'now: "2026-03-04T00:01:00" is not an ISO 8601 timestamp with a zone'),
    ("now a number", state(now=5), "now: 5 is not an ISO 8601 timestamp with a zone"),
    ("deployment missing", state(deployment=DELETE), "deployment: is required"),
    ("deployment not an object", state(deployment=[]), "deployment: [] is not an object"),
    ("desired_replicas missing", state(deployment__desired_replicas=DELETE),
     "deployment.desired_replicas: is required"),
    ("desired_replicas negative", state(deployment__desired_replicas=-1),
     "deployment.desired_replicas: -1 is negative"),
    ("desired_replicas over 1000", state(deployment__desired_replicas=1001),
     "deployment.desired_replicas: 1001 is over 1000"),
    ("desired_replicas a float", state(deployment__desired_replicas=2.5),
     "deployment.desired_replicas: 2.5 is not an integer"),
    ("desired_replicas a bool", state(deployment__desired_replicas=True),
     "deployment.desired_replicas: true is not an integer"),
    ("desired_replicas a string", state(deployment__desired_replicas="3"),
     'deployment.desired_replicas: "3" is not an integer'),
    ("current_revision missing", state(deployment__current_revision=DELETE),
     "deployment.current_revision: is required"),
    ("deploying_revision missing", state(deployment__deploying_revision=DELETE),
     "deployment.deploying_revision: is required"),
    ("deploying_revision a number", state(deployment__deploying_revision=2),
     "deployment.deploying_revision: 2 is not a string or null"),
    ("forward with deploying_revision null", state(deployment__deploying_revision=None),
     "deployment.deploying_revision: is null, but a forward rollout needs a revision to deploy"),
    ("mode unknown", state(deployment__mode="backwards"),
     'deployment.mode: "backwards" is not one of forward, rolling_back'),
    ("paused not a bool", state(deployment__paused="yes"), 'deployment.paused: "yes" is not true or false'),
    ("promote_requested null", state(deployment__promote_requested=None),
     "deployment.promote_requested: null is not true or false"),
    ("rollout_started_at bad", state(deployment__rollout_started_at="soon"),
     'deployment.rollout_started_at: "soon" is not an ISO 8601 timestamp with a zone'),
    ("last_progress_at bad", state(deployment__last_progress_at="2026-13-01T00:00:00Z"),
     'deployment.last_progress_at: "2026-13-01T00:00:00Z" is not an ISO 8601 timestamp with a zone'),
    ("policy missing", state(policy=DELETE), "policy: is required"),
    ("policy not an object", state(policy="rolling"), 'policy: "rolling" is not an object'),
    ("strategy missing", state(policy={"max_surge": 1}), "policy.strategy: is required"),
    ("strategy unknown", state(policy={"strategy": "linear"}),
     'policy.strategy: "linear" is not a strategy (one of rolling, blue_green, recreate, canary)'),
    ("surge 150%", state(policy={"strategy": "rolling", "max_surge": "150%"}), 'policy.max_surge: "150%" is over 100%'),
    ("surge 12.5%", state(policy={"strategy": "rolling", "max_surge": "12.5%"}),
     'policy.max_surge: "12.5%" is not an integer or a percentage like "25%"'),
    ("surge without %", state(policy={"strategy": "rolling", "max_surge": "3"}),
     'policy.max_surge: "3" is not an integer or a percentage like "25%"'),
    ("unavailable negative", state(policy={"strategy": "rolling", "max_unavailable": -1}),
     "policy.max_unavailable: -1 is negative"),
    ("both zero", state(policy={"strategy": "rolling", "max_surge": 0, "max_unavailable": "0%"}),
     "policy: max_surge and max_unavailable cannot both be 0"),
    ("on_deadline unknown", state(policy={"strategy": "rolling", "on_deadline": "panic"}),
     'policy.on_deadline: "panic" is not "rollback" or "pause"'),
    ("routes not a list", state(routes={}), "routes: {} is not a list"),
    ("route not an object", state(routes__1="a2"), 'routes[1]: "a2" is not an object'),
    ("route id missing", state(routes__0__id=DELETE), "routes[0].id: is required"),
    ("route id empty", state(routes__0__id=""), 'routes[0].id: "" is empty'),
    ("route id duplicate", state(routes__2__id="a1"), 'routes[2].id: "a1" is already the id of routes[0]'),
    ("route revision missing", state(routes__1__revision=DELETE), "routes[1].revision: is required"),
    ("route status missing", state(routes__1__status=DELETE), "routes[1].status: is required"),
    ("route status unknown", state(routes__2__status="runing"),
     'routes[2].status: "runing" is not one of provisioning, running, terminating, terminated, failed_to_start'),
    ("route health unknown", state(routes__0__health="fine"),
     'routes[0].health: "fine" is not one of not_checked, healthy, unhealthy, degraded'),
    ("route traffic unknown", state(routes__0__traffic="on"), 'routes[0].traffic: "on" is not one of active, inactive'),
    ("route ratio over 1", state(routes__0__traffic_ratio=1.5), "routes[0].traffic_ratio: 1.5 is not between 0 and 1"),
    ("route ratio negative", state(routes__0__traffic_ratio=-0.5),
     "routes[0].traffic_ratio: -0.5 is not between 0 and 1"),
    ("route failed not a bool", state(routes__0__failed=1), "routes[0].failed: 1 is not true or false"),
    ("route created_at bad", state(routes__0__created_at="2026-03-04"),
     'routes[0].created_at: "2026-03-04" is not an ISO 8601 timestamp with a zone'),
    ("capacity_fallback unknown", state(policy={"strategy": "rolling", "capacity_fallback": "evict"}),
     'policy.capacity_fallback: "evict" is not "replace" or "wait"'),
    ("capacity not an object", state(capacity=3), "capacity: 3 is not an object"),
    ("capacity a list", state(capacity=[{"placeable": 1}]), 'capacity: [{"placeable": 1}] is not an object'),
    ("placeable negative", state(capacity={"placeable": -1}), "capacity.placeable: -1 is negative"),
    ("placeable a float", state(capacity={"placeable": 1.0}), "capacity.placeable: 1.0 is not an integer"),
    ("placeable a bool", state(capacity={"placeable": False}), "capacity.placeable: false is not an integer"),
    ("placeable a string", state(capacity={"placeable": "2"}), 'capacity.placeable: "2" is not an integer'),
    ("placeable huge", state(capacity={"placeable": 2**31}), "capacity.placeable: 2147483648 is over 2147483647"),
    ("a bad route is reported before a bad capacity", state(routes__0__status="x", capacity={"placeable": -1}),
     'routes[0].status: "x" is not one of provisioning, running, terminating, terminated, failed_to_start'),
    ("a bad capacity is reported before a missing deploying_revision",
     state(deployment__deploying_revision=None, capacity={"placeable": -1}), "capacity.placeable: -1 is negative"),
    # -- canary ----------------------------------------------------------------------------------------
    ("canary_step negative", state(deployment__canary_step=-1), "deployment.canary_step: -1 is negative"),
    ("canary_step a float", state(deployment__canary_step=1.0), "deployment.canary_step: 1.0 is not an integer"),
    ("step_started_at bad", state(deployment__step_started_at="soon"),
     'deployment.step_started_at: "soon" is not an ISO 8601 timestamp with a zone'),
    ("promote_full_requested not a bool", state(deployment__promote_full_requested="yes"),
     'deployment.promote_full_requested: "yes" is not true or false'),
    ("canary without a set_weight", state(policy={"strategy": "canary", "steps": [{"pause": {}}]}),
     "policy.steps: a canary needs at least one set_weight step"),
    ("canary weights decreasing", state(policy={"strategy": "canary", "steps": [{"set_weight": 20}, {"set_weight": 10}]}),
     "policy.steps[1].set_weight: 10 is below the weight before it (20)"),
    ("canary step with both", state(policy={"strategy": "canary", "steps": [{"set_weight": 20, "pause": {}}]}),
     "policy.steps[0]: has both set_weight and pause (a step is one of them)"),
    ("analysis not an object", state(analysis=[1]), "analysis: [1] is not an object"),
    ("analysis failed negative", state(analysis={"failed": -1}), "analysis.failed: -1 is negative"),
    ("analysis passed a string", state(analysis={"passed": "3"}), 'analysis.passed: "3" is not an integer'),
    ("analysis inconclusive a bool", state(analysis={"inconclusive": True}),
     "analysis.inconclusive: true is not an integer"),
    ("analysis last_failure a number", state(analysis={"last_failure": 3}),
     "analysis.last_failure: 3 is not a string or null"),
    ("analysis interval_passed not a bool", state(analysis={"interval_passed": 1}),
     "analysis.interval_passed: 1 is not true or false"),
    ("a bad capacity is reported before a bad analysis", state(capacity=3, analysis=3), "capacity: 3 is not an object"),
]


@pytest.mark.parametrize(("doc", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_is_one_line_naming_the_field(doc: Any, message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_plan_input(doc)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_long_values_are_shortened_in_errors() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_plan_input(state(routes__0__status="x" * 500))
    assert len(str(info.value)) < 200


def test_defaults() -> None:
    doc = {
        "now": "2026-03-04T00:01:00+02:00",
        "deployment": {"desired_replicas": 2, "current_revision": "r1", "deploying_revision": "r2"},
        "policy": {"strategy": "blue_green"},
        "routes": [{"id": "a1", "revision": "r1", "status": "running"}],
    }
    plan = parse_plan_input(doc)
    now = datetime(2026, 3, 4, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert plan.now == now
    d = plan.deployment
    assert (d.mode, d.paused, d.abort_requested, d.promote_requested) == (Mode.FORWARD, False, False, False)
    assert d.rollout_started_at is None and d.last_progress_at == now
    (r,) = plan.routes
    assert (r.health, r.traffic, r.traffic_ratio, r.has_health_check, r.failed) == (
        Health.NOT_CHECKED, Traffic.ACTIVE, 1.0, True, False,
    )
    assert r.created_at == now and r.status_updated_at == now and r.status is RouteStatus.RUNNING
    p = plan.policy
    assert p.strategy is StrategyName.BLUE_GREEN and p.auto_promote is False and p.promote_delay_seconds == 0
    assert (p.max_surge, p.max_unavailable, p.progress_deadline_seconds, p.failure_threshold) == ("25%", 0, 600, None)


def test_canary_input_defaults() -> None:
    plan = parse_plan_input(state())
    d = plan.deployment
    assert (d.canary_step, d.step_started_at, d.promote_full_requested) == (0, plan.now, False)
    assert d.analysis == AnalysisCounts() == AnalysisCounts(failed=0, passed=0, inconclusive=0, last_failure=None,
                                                            interval_passed=True)
    assert parse_plan_input(state(analysis=None)).deployment.analysis == AnalysisCounts()
    assert parse_plan_input(state(deployment__step_started_at=None)).deployment.step_started_at is None


def test_canary_input_is_read() -> None:
    doc = state(
        deployment__canary_step=2,
        deployment__step_started_at="2026-03-04T00:00:30Z",
        deployment__promote_full_requested=True,
        analysis={"failed": 1, "passed": 4, "inconclusive": 2, "last_failure": "errors = 0.034 > 0.01",
                  "interval_passed": False, "colour": "ignored"},
        policy=CANARY_POLICY,
    )
    plan = parse_plan_input(doc)
    d = plan.deployment
    assert (d.canary_step, d.step_started_at, d.promote_full_requested) == (
        2, datetime(2026, 3, 4, 0, 0, 30, tzinfo=UTC), True
    )
    assert d.analysis == AnalysisCounts(failed=1, passed=4, inconclusive=2, last_failure="errors = 0.034 > 0.01",
                                        interval_passed=False)
    assert plan.policy.strategy is StrategyName.CANARY
    assert plan.policy.to_json()["steps"] == CANARY_POLICY["steps"]


CANARY_POLICY: dict[str, Any] = {
    "strategy": "canary",
    "steps": [{"set_weight": 10}, {"pause": {"seconds": 60}}, {"set_weight": 50}, {"pause": {}}],
}


def test_canary_output_has_the_step_weights_and_requeue() -> None:
    """D=3, one ready canary route: set_weight 10 is done, the 60 s pause starts: 90/10, requeue 60."""
    routes = state()["routes"] + [{"id": "b1", "revision": "r2", "status": "running", "health": "healthy"}]
    out = compute_plan_output(state(policy=CANARY_POLICY, routes=routes))
    assert out == {
        "sub_step": "awaiting_promotion",
        "create": [],
        "terminate": [],
        "traffic": [],
        "mode": "forward",
        "reason": "canary: step 1/4 (set_weight 10) done; step 2/4 (pause 60s): r2 routes 1/1 ready, 0 provisioning, "
        "0 unready; 60s left; traffic r1 90%, r2 10%",
        "set_canary_step": 1,
        "weights": {"r1": 90, "r2": 10},
        "requeue_after": 60.0,
    }
    assert list(out)[-3:] == ["set_canary_step", "weights", "requeue_after"]
    # 45 s into the pause: no step change, 15 s to go
    later = compute_plan_output(state(policy=CANARY_POLICY, routes=routes, deployment__canary_step=1,
                                      deployment__step_started_at="2026-03-04T00:00:15Z"))
    assert "set_canary_step" not in later
    assert (later["weights"], later["requeue_after"]) == ({"r1": 90, "r2": 10}, 15.0)


def test_canary_output_of_a_rollback_and_of_the_completion() -> None:
    routes = state()["routes"] + [
        {"id": f"b{i}", "revision": "r2", "status": "running", "health": "healthy"} for i in (1, 2, 3)
    ]
    rolled = compute_plan_output(state(policy={**CANARY_POLICY, "analysis": {"metrics": [
        {"name": "errors", "builtin": "error_rate", "max": 0.01}]}}, routes=routes, deployment__canary_step=3,
        analysis={"failed": 2, "last_failure": "errors = 0.034 > 0.01"}))
    assert (rolled["sub_step"], rolled["mode"], rolled["rollback_reason"]) == ("rolled_back", "rolling_back", "analysis")
    assert rolled["terminate"] == ["b1", "b2", "b3"] and rolled["weights"] == {"r1": 100}
    assert rolled["reason"].startswith("rolling back (analysis: errors = 0.034 > 0.01): canary: rolled back to r1")
    done = compute_plan_output(state(policy=CANARY_POLICY, routes=routes, deployment__canary_step=4))
    assert (done["sub_step"], done["terminate"], done["weights"]) == ("completed", ["a1", "a2", "a3"], {"r2": 100})
    assert "requeue_after" not in done and "set_canary_step" not in done


def test_requeue_after_is_printed_for_canary_decisions_only() -> None:
    rolling = compute_plan_output(state())  # a rolling decision has a requeue (its deadline) but prints none
    assert "requeue_after" not in rolling and "weights" not in rolling and "set_canary_step" not in rolling
    out = compute_plan_output(state(policy=CANARY_POLICY))  # set_weight 10: its deadline is the requeue
    assert out["requeue_after"] == 600.001 and out["weights"] == {"r1": 100, "r2": 0}


def test_routes_default_to_none_and_unknown_keys_are_ignored() -> None:
    doc = state(routes=DELETE, extra={"x": 1}, deployment__colour="blue", policy={"strategy": "recreate", "foo": 1})
    plan = parse_plan_input(doc)
    assert plan.routes == ()
    doc = state(routes__0__weight=3)
    assert parse_plan_input(doc).routes[0].id == "a1"


@pytest.mark.parametrize("capacity", [None, {}, {"placeable": None}, {"need": {"gpu": 1}}])
def test_capacity_is_unlimited_unless_placeable_is_given(capacity: Any) -> None:
    assert parse_plan_input(state()).deployment.capacity == UNLIMITED
    assert parse_plan_input(state(capacity=capacity)).deployment.capacity == UNLIMITED


@pytest.mark.parametrize("placeable", [0, 1, 7, 2**31 - 1])
def test_capacity_placeable(placeable: int) -> None:
    capacity = parse_plan_input(state(capacity={"placeable": placeable, "other": "ignored"})).deployment.capacity
    assert capacity == CapacityView(placeable=placeable)


def test_capacity_fallback_is_read_with_the_policy() -> None:
    assert parse_plan_input(state()).policy.capacity_fallback is CapacityFallback.REPLACE
    doc = state(policy={"strategy": "rolling", "capacity_fallback": "wait"})
    assert parse_plan_input(doc).policy.capacity_fallback is CapacityFallback.WAIT


def test_plan_with_no_room_replaces_one_old_route_or_waits() -> None:
    """D=3, three old ready routes, surge 25% = 1, unavailable 0, nothing placeable."""
    replace = compute_plan_output(state(capacity={"placeable": 0}))
    assert replace == {
        "sub_step": "progressing",
        "create": [],
        "terminate": ["a1"],
        "traffic": [],
        "mode": "forward",
        "reason": "rolling: capacity: replacing one r1 route at a time (0 more routes can be placed)",
    }
    wait = compute_plan_output(state(capacity={"placeable": 0}, policy={"strategy": "rolling", "capacity_fallback": "wait"}))
    assert (wait["sub_step"], wait["create"], wait["terminate"]) == ("progressing", [], [])
    assert wait["reason"] == (
        "rolling: waiting for r2 routes: 0/3 ready, 0 provisioning, 0 unready (surge 1, unavailable 0)"
        "; waiting for capacity: 0 more routes can be placed"
    )
    assert list(wait) == list(replace) == ["sub_step", "create", "terminate", "traffic", "mode", "reason"]


def test_plan_with_partial_room_creates_what_fits() -> None:
    doc = state(capacity={"placeable": 2}, policy={"strategy": "recreate"})
    out = compute_plan_output(doc)
    assert (len(out["create"]), out["terminate"]) == (2, ["a1", "a2", "a3"])
    assert out["reason"].endswith("; waiting for capacity: 0 more routes can be placed")
    assert len(compute_plan_output(state(capacity={"placeable": 3}, policy={"strategy": "recreate"}))["create"]) == 3


def test_nullable_fields() -> None:
    doc = state(deployment__current_revision=None, deployment__rollout_started_at=None,
                deployment__last_progress_at=None)
    d = parse_plan_input(doc).deployment
    assert d.current_revision is None and d.rollout_started_at is None and d.last_progress_at is None
    # rollback mode needs no deploying revision
    assert parse_plan_input(state(deployment__mode="rolling_back", deployment__deploying_revision=None))


def test_other_strategies_settings_are_accepted() -> None:
    doc = state(policy={"strategy": "rolling", "auto_promote": True, "promote_delay_seconds": 30})
    assert parse_plan_input(doc).policy.auto_promote is True


def test_output_format() -> None:
    decision = Decision(
        sub_step=SubStep.PROVISIONING,
        mode=Mode.FORWARD,
        reason="rolling: created 1, terminating 1 (surge 1, unavailable 0)",
        create=(RouteCreate("r2", Traffic.ACTIVE, 1.0),),
        terminate=("a1",),
        traffic=(TrafficChange("g1", Traffic.ACTIVE, 1.0),),
    )
    out = decision_to_json(decision)
    assert out == {
        "sub_step": "provisioning",
        "create": [{"revision": "r2", "traffic": "active", "traffic_ratio": 1.0}],
        "terminate": ["a1"],
        "traffic": [{"id": "g1", "traffic": "active", "traffic_ratio": 1.0}],
        "mode": "forward",
        "reason": "rolling: created 1, terminating 1 (surge 1, unavailable 0)",
    }
    assert list(out) == ["sub_step", "create", "terminate", "traffic", "mode", "reason"]
    json.dumps(out)


def test_output_canary_keys() -> None:
    decision = Decision(SubStep.AWAITING_PROMOTION, Mode.FORWARD, "canary: x", requeue_after=12.34567,
                        set_canary_step=2, weights={"r1": 50, "r2": 50})
    out = decision_to_json(decision)
    assert out["set_canary_step"] == 2 and out["weights"] == {"r1": 50, "r2": 50} and out["requeue_after"] == 12.346
    assert list(out) == ["sub_step", "create", "terminate", "traffic", "mode", "reason", "set_canary_step", "weights",
                         "requeue_after"]
    json.dumps(out)
    step_zero = Decision(SubStep.PROVISIONING, Mode.FORWARD, "canary: x", set_canary_step=0, weights={"r2": 100})
    assert decision_to_json(step_zero)["set_canary_step"] == 0 and "requeue_after" not in decision_to_json(step_zero)


def test_output_extra_keys_when_relevant() -> None:
    rb = Decision(SubStep.ROLLED_BACK, Mode.ROLLING_BACK, "x", rollback_reason=RollbackReason.ABORTED)
    assert decision_to_json(rb)["rollback_reason"] == "aborted"
    assert "set_paused" not in decision_to_json(rb)
    paused = Decision(SubStep.PAUSED, Mode.FORWARD, "x", set_paused=True)
    assert decision_to_json(paused)["set_paused"] is True
    assert "rollback_reason" not in decision_to_json(paused)


def test_bundled_example_is_a_rolling_update_mid_way() -> None:
    doc = json.loads(resources.files("rollwise.examples").joinpath("plan_rolling.json").read_text())
    out = compute_plan_output(doc)
    assert out == {
        "sub_step": "provisioning",
        "create": [{"revision": "r2", "traffic": "active", "traffic_ratio": 1.0}],
        "terminate": ["a2"],
        "traffic": [],
        "mode": "forward",
        "reason": "rolling: created 1, terminating 1 (surge 1, unavailable 1)",
    }


def test_parsing_does_not_change_the_document() -> None:
    doc = state()
    before = copy.deepcopy(doc)
    compute_plan_output(doc)
    assert doc == before


def test_timestamps_with_offsets_compare_correctly() -> None:
    # last progress 10 minutes and 1 second ago, written in another zone
    doc = state(
        now="2026-03-04T00:10:01Z",
        deployment__last_progress_at="2026-03-04T01:00:00+01:00",
    )
    assert parse_plan_input(doc).deployment.last_progress_at == datetime(2026, 3, 4, tzinfo=UTC)
    assert compute_plan_output(doc)["rollback_reason"] == "progress_deadline"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2000) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["25%", "150%", "running", "healthy", "r1", "r2", "2026-03-04T00:00:00Z", "rolling"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [
    "now", "deployment", "policy", "routes", "deployment.desired_replicas", "deployment.current_revision",
    "deployment.deploying_revision", "deployment.mode", "deployment.paused", "deployment.promote_requested",
    "deployment.rollout_started_at", "deployment.last_progress_at", "policy.strategy", "policy.max_surge",
    "policy.max_unavailable", "policy.auto_promote", "policy.promote_delay_seconds",
    "policy.progress_deadline_seconds", "policy.on_deadline", "policy.failure_threshold", "routes.0",
    "routes.0.id", "routes.0.revision", "routes.0.status", "routes.0.health", "routes.0.traffic",
    "routes.0.traffic_ratio", "routes.0.failed", "routes.0.created_at", "routes.1.status",
    "capacity", "capacity.placeable", "policy.capacity_fallback", "deployment.canary_step",
    "deployment.step_started_at", "deployment.promote_full_requested", "analysis", "analysis.failed",
    "analysis.interval_passed", "analysis.last_failure", "policy.steps", "policy.analysis", "policy.min_ready_seconds",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES), max_size=3))
@pytest.mark.parametrize("base", ["rolling", "canary"])
def test_any_document_gives_a_decision_or_one_validation_line(base: str, edits: list[tuple[str, Any]]) -> None:
    """Whatever the input, the only error that leaves the plan reader and the engine is
    ValidationFailed with one line naming a field; nothing foreign leaks."""
    doc = state() if base == "rolling" else state(policy=copy.deepcopy(CANARY_POLICY), analysis={"failed": 0})
    for path, value in edits:
        node: Any = doc
        *parents, last = path.split(".")
        try:
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            if isinstance(node, list):
                node[int(last)] = value
            elif isinstance(node, dict):
                node[last] = value
        except (KeyError, IndexError, TypeError, ValueError):
            continue  # the path does not exist any more after an earlier edit
    try:
        out = compute_plan_output(doc)
    except ValidationFailed as e:
        line = str(e)
        assert line and "\n" not in line and ": " in line
        return
    json.dumps(out)
    assert out["sub_step"] in {s.value for s in SubStep}
