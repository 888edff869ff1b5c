"""The canary's policy settings (docs/strategies.md "Canary"): steps, analysis, min_ready_seconds. Every
rule of the spec's Validation paragraph refused with one line naming the exact field, the JSON exactly
the spec's (round trip), canary settings accepted and ignored on other strategies."""

from __future__ import annotations

from typing import Any

import pytest

from rollwise.model import AnalysisSpec, CanaryStep, MetricSpec, PauseSpec, Policy, StrategyName, ValidationFailed, parse_policy
from rollwise.model.policy import MAX_SECONDS

SPEC = {
    "strategy": "canary",
    "steps": [{"set_weight": 10}, {"pause": {"seconds": 60}}, {"set_weight": 50}, {"pause": {"seconds": 120}}],
    "analysis": {
        "interval_seconds": 30,
        "failure_limit": 2,
        "min_requests": 50,
        "metrics": [
            {"name": "errors", "builtin": "error_rate", "max": 0.01},
            {"name": "errors-vs-stable", "builtin": "error_rate", "max_over_stable": 0.005},
            {"name": "latency", "builtin": "latency_p99_ms", "max": 800},
            {"name": "eval", "command": ["python", "eval.py"], "timeout_seconds": 120},
        ],
    },
    "min_ready_seconds": 0,
}


def canary(steps: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"strategy": "canary", "steps": steps, **kw}


def analysis(*metrics: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return canary([{"set_weight": 10}], analysis={"metrics": list(metrics), **kw})


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_policy(data)
    return info.value.message


def test_the_spec_example_is_read_and_round_trips() -> None:
    policy = parse_policy(SPEC)
    assert policy.strategy is StrategyName.CANARY
    assert policy.steps == (
        CanaryStep(set_weight=10), CanaryStep(pause=PauseSpec(seconds=60)), CanaryStep(set_weight=50),
        CanaryStep(pause=PauseSpec(seconds=120)),
    )
    assert isinstance(policy.analysis, AnalysisSpec) and policy.analysis.failure_limit == 2
    assert policy.analysis.metrics[3] == MetricSpec(name="eval", command=("python", "eval.py"), timeout_seconds=120)
    out = policy.to_json()
    assert out["steps"] == SPEC["steps"]
    assert out["analysis"]["metrics"][0] == {"name": "errors", "builtin": "error_rate", "max": 0.01, "timeout_seconds": 60}
    assert out["analysis"]["metrics"][3] == {"name": "eval", "command": ["python", "eval.py"], "timeout_seconds": 120}
    assert parse_policy(out) == policy
    hash(policy)  # immutable: tuples all the way down


def test_pause_for_promote_is_written_as_an_empty_object() -> None:
    policy = parse_policy(canary([{"set_weight": 10}, {"pause": {}}, {"pause": {"seconds": None}}]))
    assert policy.to_json()["steps"] == [{"set_weight": 10}, {"pause": {}}, {"pause": {}}]
    assert policy.steps[1].pause == PauseSpec(seconds=None)


def test_defaults() -> None:
    policy = Policy()
    assert (policy.steps, policy.analysis, policy.min_ready_seconds) == ((), None, 0)
    spec = parse_policy(analysis({"name": "e", "builtin": "error_rate", "max": 0.01})).analysis
    assert spec is not None
    assert (spec.interval_seconds, spec.failure_limit, spec.min_requests) == (30, 2, 50)
    assert spec.metrics[0].timeout_seconds == 60


def test_canary_settings_are_accepted_and_ignored_on_other_strategies() -> None:
    policy = parse_policy({"strategy": "rolling", "steps": [{"pause": {}}], "analysis": SPEC["analysis"]})
    assert policy.strategy is StrategyName.ROLLING and policy.steps[0].pause is not None
    # still checked for shape, like every setting
    assert refused({"strategy": "blue_green", "steps": [{"set_weight": 0}]}) == (
        "policy.steps[0].set_weight: 0 is not between 1 and 99"
    )


@pytest.mark.parametrize(("data", "message"), [
    # at least one set_weight step
    (canary([]), "policy.steps: a canary needs at least one set_weight step"),
    ({"strategy": "canary"}, "policy.steps: a canary needs at least one set_weight step"),
    (canary([{"pause": {}}, {"pause": {"seconds": 5}}]), "policy.steps: a canary needs at least one set_weight step"),
    # weights 1..99, not decreasing
    (canary([{"set_weight": 0}]), "policy.steps[0].set_weight: 0 is not between 1 and 99"),
    (canary([{"set_weight": 100}]), "policy.steps[0].set_weight: 100 is not between 1 and 99"),
    (canary([{"set_weight": 10.5}]), "policy.steps[0].set_weight: 10.5 is not an integer percentage"),
    (canary([{"set_weight": "10"}]), 'policy.steps[0].set_weight: "10" is not an integer percentage'),
    (canary([{"set_weight": True}]), "policy.steps[0].set_weight: true is not an integer percentage"),
    (canary([{"set_weight": 50}, {"pause": {}}, {"set_weight": 20}]),
     "policy.steps[2].set_weight: 20 is below the weight before it (50)"),
    # exactly one of set_weight and pause
    (canary([{"set_weight": 10, "pause": {}}]), "policy.steps[0]: has both set_weight and pause (a step is one of them)"),
    (canary([{"set_weight": 10}, {}]), "policy.steps[1]: has neither set_weight nor pause"),
    (canary([{"set_weight": 10}, {"pause": None}]), "policy.steps[1]: has neither set_weight nor pause"),
    (canary([{"set_weight": 10}, {"wait": 5}]), "policy.steps[1].wait: is not a known field"),
    # pause.seconds >= 0
    (canary([{"set_weight": 10}, {"pause": {"seconds": -1}}]), "policy.steps[1].pause.seconds: -1 is negative"),
    (canary([{"set_weight": 10}, {"pause": {"seconds": "60"}}]),
     'policy.steps[1].pause.seconds: "60" is not a number of seconds'),
    (canary([{"set_weight": 10}, {"pause": {"second": 60}}]), "policy.steps[1].pause.second: is not a known field"),
    (canary([{"set_weight": 10}, {"pause": 60}]), "policy.steps[1].pause: 60 is not an object"),
    (canary({"set_weight": 10}), 'policy.steps: {"set_weight": 10} is not a list'),
    # metric names unique
    (analysis({"name": "e", "builtin": "error_rate", "max": 0.01}, {"name": "x", "command": ["x"]},
              {"name": "e", "builtin": "latency_p99_ms", "max": 800}),
     'policy.analysis.metrics[2].name: "e" is already the name of metrics[0]'),
    # exactly one of builtin and command
    (analysis({"name": "e", "builtin": "error_rate", "max": 1, "command": ["x"]}),
     "policy.analysis.metrics[0]: has both builtin and command (a metric is one of them)"),
    (analysis({"name": "e", "max": 1}), "policy.analysis.metrics[0]: has neither builtin nor command"),
    # a builtin has max, max_over_stable or both
    (analysis({"name": "e", "builtin": "error_rate"}),
     "policy.analysis.metrics[0]: a builtin metric needs max, max_over_stable or both"),
    # the fields' own checks
    (analysis({"name": "e", "builtin": "p50", "max": 1}),
     'policy.analysis.metrics[0].builtin: "p50" is not one of error_rate, latency_p99_ms'),
    (analysis({"name": "", "command": ["x"]}), 'policy.analysis.metrics[0].name: "" is empty'),
    (analysis({"builtin": "error_rate", "max": 1}), "policy.analysis.metrics[0].name: is required"),
    (analysis({"name": "e", "builtin": "error_rate", "max": -0.1}), "policy.analysis.metrics[0].max: -0.1 is negative"),
    (analysis({"name": "e", "command": []}), "policy.analysis.metrics[0].command: [] is not a non-empty list of strings"),
    (analysis({"name": "e", "command": "eval.py"}),
     'policy.analysis.metrics[0].command: "eval.py" is not a non-empty list of strings'),
    (analysis({"name": "e", "command": ["x"], "timeout_seconds": 0}),
     "policy.analysis.metrics[0].timeout_seconds: 0 must be more than 0"),
    (analysis({"name": "e", "command": ["x"]}, interval_seconds=0), "policy.analysis.interval_seconds: 0 must be more than 0"),
    (analysis({"name": "e", "command": ["x"]}, failure_limit=0), "policy.analysis.failure_limit: 0 must be at least 1"),
    (analysis({"name": "e", "command": ["x"]}, min_requests=-1), "policy.analysis.min_requests: -1 is negative"),
    (analysis(), "policy.analysis.metrics: needs at least one metric"),
    (canary([{"set_weight": 10}], analysis={}), "policy.analysis.metrics: is required"),
    (canary([{"set_weight": 10}], analysis=[]), "policy.analysis: [] is not an object"),
    (analysis({"name": "e", "command": ["x"]}, intervall_seconds=5), "policy.analysis.intervall_seconds: is not a known field"),
    ({"min_ready_seconds": -1}, "policy.min_ready_seconds: -1 is negative"),
    ({"min_ready_seconds": "5"}, 'policy.min_ready_seconds: "5" is not a number of seconds'),
])
def test_validation_names_the_field(data: dict[str, Any], message: str) -> None:
    assert refused(data) == message


def test_bounds() -> None:
    assert parse_policy({"min_ready_seconds": MAX_SECONDS}).min_ready_seconds == MAX_SECONDS
    assert refused({"min_ready_seconds": MAX_SECONDS + 1}).startswith("policy.min_ready_seconds: ")
    assert refused(canary([{"set_weight": 1}, {"pause": {"seconds": MAX_SECONDS + 1}}])).startswith(
        "policy.steps[1].pause.seconds: "
    )
    assert refused(analysis({"name": "e", "builtin": "error_rate", "max": float("nan")})) == (
        "policy.analysis.metrics[0].max: Input should be a finite number"
    )


def test_equal_weights_and_pauses_anywhere_are_fine() -> None:
    policy = parse_policy(canary([{"pause": {}}, {"set_weight": 20}, {"set_weight": 20}, {"pause": {"seconds": 0}}]))
    assert [s.set_weight for s in policy.steps] == [None, 20, 20, None]
