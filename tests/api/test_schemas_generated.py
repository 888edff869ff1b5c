"""The API's policy models are generated from `rollwise.model.Policy`: same fields, defaults, checks,
bounds and descriptions; `PolicyPatch` makes every field optional."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from rollwise.api.errors import describe_validation_errors
from rollwise.api.schemas import DeploymentPatch, PolicyBody, PolicyPatch
from rollwise.model import Policy, ValidationFailed, parse_policy


def test_the_fields_are_the_policys() -> None:
    for model in (PolicyBody, PolicyPatch):
        assert list(model.model_fields) == list(Policy.model_fields)
        for name, info in model.model_fields.items():
            assert info.description == Policy.model_fields[name].description, (model, name)
    assert PolicyBody().to_json() == Policy().to_json()
    assert all(info.default is None for info in PolicyPatch.model_fields.values())


def test_capacity_fallback_is_a_policy_setting_of_the_api() -> None:
    assert "capacity_fallback" in PolicyBody.model_fields and "capacity_fallback" in PolicyPatch.model_fields
    assert PolicyBody().capacity_fallback == Policy().capacity_fallback
    patch = PolicyPatch.model_validate({"capacity_fallback": "wait"})
    assert patch.model_dump(mode="json", exclude_unset=True) == {"capacity_fallback": "wait"}


def test_a_patch_names_only_what_it_sets() -> None:
    patch = PolicyPatch.model_validate({"max_surge": " 2% ", "progress_deadline_seconds": None})
    assert patch.model_dump(mode="json", exclude_unset=True) == {"max_surge": "2%", "progress_deadline_seconds": None}


@pytest.mark.parametrize("field_value", [
    {"max_surge": "150%"}, {"max_unavailable": "abc"}, {"strategy": "linear"}, {"auto_promote": "yes"},
    {"auto_promote": 1}, {"promote_delay_seconds": -1}, {"promote_delay_seconds": 10**9},
    {"progress_deadline_seconds": True}, {"on_deadline": "stop"}, {"failure_threshold": 0},
    {"failure_threshold": "3"}, {"capacity_fallback": "evict"}, {"capacity_fallback": 1},
])
def test_a_patch_checks_each_value_as_the_policy_does(field_value: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed) as policy_error:
        parse_policy(field_value)
    with pytest.raises(ValidationError) as patch_error:
        DeploymentPatch.model_validate({"policy": field_value})
    assert describe_validation_errors(patch_error.value.errors())[1] == policy_error.value.message


def test_unknown_fields_are_refused_by_the_api_models_only() -> None:
    for model in (PolicyBody, PolicyPatch):
        with pytest.raises(ValidationError):
            model.model_validate({"surge": 1})
    assert parse_policy({"surge": 1}) == Policy()
