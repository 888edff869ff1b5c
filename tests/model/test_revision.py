"""Revision validation at the OS's exec limits and for extra ports: a revision that could never start is
refused when it is written (422), never discovered by an endless start-failure loop."""

from __future__ import annotations

import pytest

from rollwise.model.errors import ValidationFailed
from rollwise.model.revision import MAX_ARG_STRLEN, RESERVED_EXEC_BYTES, exec_limit, exec_size, parse_revision


def refused(data: dict[str, object]) -> str:
    with pytest.raises(ValidationFailed) as info:
        parse_revision(data)
    message = info.value.message
    assert "\n" not in message
    return message


def test_one_variable_over_the_per_string_limit_is_refused_naming_it() -> None:
    message = refused({"command": ["x"], "env": {"BIG": "v" * MAX_ARG_STRLEN}})
    assert message.startswith("revision.env: BIG is ")


def test_the_largest_accepted_variable_fits() -> None:
    value = "v" * (MAX_ARG_STRLEN - len("BIG") - 2)  # "BIG=" + value: MAX_ARG_STRLEN - 1 bytes, the largest
    assert parse_revision({"command": ["x"], "env": {"BIG": value}}).env["BIG"] == value


def test_command_and_env_together_over_arg_max_are_refused() -> None:
    per = MAX_ARG_STRLEN // 2
    count = exec_limit() // per + 1
    message = refused({"command": ["x"], "env": {f"V{i}": "v" * per for i in range(count)}})
    assert message.startswith("revision: command and env together are ")
    assert "ARG_MAX" in message


def test_exec_size_counts_strings_nuls_and_pointers() -> None:
    # "ab\0" + "K=v\0" = 3 + 4 bytes, plus 8 bytes per pointer for 2 strings and the 2 terminators.
    assert exec_size(["ab"], {"K": "v"}) == 7 + 8 * 4
    assert RESERVED_EXEC_BYTES < exec_limit()


@pytest.mark.parametrize(
    ("ports", "words"),
    [(["Grpc"], "not a port name"), (["grpc", "grpc"], "distinct"), ([f"p{i}" for i in range(9)], "at most 8")],
)
def test_bad_port_lists_are_refused(ports: list[str], words: str) -> None:
    message = refused({"command": ["x"], "ports": ports})
    assert message.startswith("revision.ports") and words in message


def test_port_references_must_be_declared() -> None:
    assert "ports does not name 'grpc'" in refused({"command": ["srv", "--grpc={port.grpc}"]})
    assert "env.METRICS" in refused({"command": ["srv"], "env": {"METRICS": "{port.metrics}"}, "ports": ["grpc"]})
    ok = parse_revision({"command": ["srv", "{port}", "{port.grpc}"], "env": {"M": "{port.metrics}"},
                         "ports": ["grpc", "metrics"]})
    assert ok.ports == ["grpc", "metrics"]
