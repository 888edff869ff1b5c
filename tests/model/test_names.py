"""The one deployment-name rule (`rollwise.model.names`): a DNS label, checked by the operations, the API,
the store and the traffic layer alike."""

from __future__ import annotations

import pytest

from rollwise.model import DEPLOYMENT_NAME_MAX, ValidationFailed, check_deployment_name, deployment_name_problem


@pytest.mark.parametrize("name", ["a", "0", "llm", "sentiment-v2", "a-b-c", "x" * DEPLOYMENT_NAME_MAX])
def test_dns_labels_are_names(name: str) -> None:
    assert deployment_name_problem(name) is None
    assert check_deployment_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "my_model", "a.b", "a:b", "a b", "a/b", "model\n",
                                  "x" * (DEPLOYMENT_NAME_MAX + 1)])
def test_other_strings_are_not(name: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_deployment_name(name)
    assert info.value.message == f"name: {name[:80]!r} is not a DNS label (lower-case letters, digits and '-', " \
        f"at most {DEPLOYMENT_NAME_MAX}, starting and ending with a letter or digit)"


@pytest.mark.parametrize("value", [42, None, b"llm", ["llm"]])
def test_non_strings_are_not(value: object) -> None:
    assert deployment_name_problem(value) == f"{value!r} is not a string"


def test_the_field_is_named() -> None:
    with pytest.raises(ValidationFailed, match=r"^deployment name: 'Bad' is not a DNS label"):
        check_deployment_name("Bad", field="deployment name")


def test_long_names_are_shortened_in_the_message() -> None:
    problem = deployment_name_problem("x" * 500)
    assert problem is not None and problem.startswith(repr("x" * 80) + " is not")
