"""`rollwise simulate` run in-process for the CLI tests of its options (capacity, canary, the plain run)."""

from __future__ import annotations

import json
from typing import Any

import typer
from click.testing import CliRunner

import rollwise.cli.simulate  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app

COMMAND = typer.main.get_group(app)


def simulate(*args: str) -> Any:
    """The command in-process, on a terminal wide enough for the table's and the help's words; the result
    has `exit_code`, `stdout` and `stderr`."""
    result = CliRunner().invoke(COMMAND, ["simulate", *args], env={"COLUMNS": "240"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON document on the last line of the output (`--json`)."""
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result
