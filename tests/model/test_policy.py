"""The policy is declared once (`rollwise.model.Policy`): defaults, checks, bounds and descriptions. The
API's models are generated from it (tests/api/test_schemas_generated.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rollwise.model import CapacityFallback, Policy, ValidationFailed, parse_policy
from rollwise.model.policy import MAX_COUNT, MAX_SECONDS


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_policy(data)
    return info.value.message


def test_every_field_is_described() -> None:
    assert all(info.description for info in Policy.model_fields.values())


def test_defaults() -> None:
    assert Policy().to_json() == {
        "strategy": "rolling", "max_surge": "25%", "max_unavailable": 0, "capacity_fallback": "replace",
        "auto_promote": False,
        "promote_delay_seconds": 0, "steps": [], "analysis": None, "min_ready_seconds": 0,
        "progress_deadline_seconds": 600, "on_deadline": "rollback", "failure_threshold": None,
    }


@pytest.mark.parametrize(("data", "message"), [
    ({"max_surge": "150%"}, 'policy.max_surge: "150%" is over 100%'),
    ({"max_unavailable": "abc"}, 'policy.max_unavailable: "abc" is not an integer or a percentage like "25%"'),
    ({"strategy": "linear"}, 'policy.strategy: "linear" is not a strategy (one of rolling, blue_green, recreate, canary)'),
    ({"auto_promote": "yes"}, 'policy.auto_promote: "yes" is not true or false'),
    ({"promote_delay_seconds": -1}, "policy.promote_delay_seconds: -1 is negative"),
    ({"progress_deadline_seconds": "10"}, 'policy.progress_deadline_seconds: "10" is not a number of seconds'),
    ({"on_deadline": "stop"}, 'policy.on_deadline: "stop" is not "rollback" or "pause"'),
    ({"capacity_fallback": "evict"}, 'policy.capacity_fallback: "evict" is not "replace" or "wait"'),
    ({"capacity_fallback": None}, 'policy.capacity_fallback: null is not "replace" or "wait"'),
    ({"capacity_fallback": "Wait"}, 'policy.capacity_fallback: "Wait" is not "replace" or "wait"'),
    ({"failure_threshold": 0}, "policy.failure_threshold: 0 must be at least 1"),
    ({"failure_threshold": 1.5}, "policy.failure_threshold: 1.5 is not an integer or null"),
    ({"max_surge": 0, "max_unavailable": "0%"}, "policy: max_surge and max_unavailable cannot both be 0"),
])
def test_checks_name_the_field(data: dict[str, Any], message: str) -> None:
    assert refused(data) == message


@pytest.mark.parametrize("field", ["promote_delay_seconds", "progress_deadline_seconds", "min_ready_seconds"])
def test_durations_are_bounded_and_finite(field: str) -> None:
    assert getattr(parse_policy({field: MAX_SECONDS}), field) == MAX_SECONDS
    assert refused({field: MAX_SECONDS + 1}).startswith(f"policy.{field}: ")
    for value in (float("nan"), float("inf")):
        assert refused({field: value}) == f"policy.{field}: Input should be a finite number"


def test_the_failure_threshold_is_bounded() -> None:
    assert parse_policy({"failure_threshold": MAX_COUNT}).failure_threshold == MAX_COUNT
    assert refused({"failure_threshold": MAX_COUNT + 1}).startswith("policy.failure_threshold: ")


@pytest.mark.parametrize("value", ["replace", "wait"])
def test_capacity_fallback_values(value: str) -> None:
    policy = parse_policy({"capacity_fallback": value})
    assert policy.capacity_fallback is CapacityFallback(value)
    assert policy.to_json()["capacity_fallback"] == value


def test_capacity_fallback_applies_to_every_strategy_as_written() -> None:
    """Only the rolling update reads it, but it is checked whatever the strategy (like max_surge)."""
    assert parse_policy({"strategy": "blue_green", "capacity_fallback": "wait"}).capacity_fallback is CapacityFallback.WAIT
    assert refused({"strategy": "recreate", "capacity_fallback": 1}).startswith("policy.capacity_fallback: 1 ")


def test_nulls_and_unknown_keys() -> None:
    policy = parse_policy({"progress_deadline_seconds": None, "failure_threshold": None, "colour": "blue"})
    assert policy.progress_deadline_seconds is None and policy.failure_threshold is None
    assert refused({"strategy": None}).startswith("policy.strategy: null is not a strategy")
