"""`rollwise simulate` through the real command: the JSON contract on the last line, the table for
people, and bad options rejected with one line (exit 2). The variants run in-process through the Typer
app (click's CliRunner); the installed script runs once as a subprocess (started with the module, beside
the other tests): exit 0, nothing on stderr, the JSON on stdout's last line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner

import rollwise.cli.simulate  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))


@pytest.fixture(scope="module", autouse=True)
def script_run() -> Iterator[subprocess.Popen[str]]:
    """`rollwise simulate --json --replicas 2` by the installed script, started with the module so it runs
    beside the in-process tests; stopped at the end of the module if still running."""
    proc = subprocess.Popen([ROLLWISE, "simulate", "--json", "--replicas", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def simulate(*args: str) -> Any:
    """The command in-process; the result has `exit_code`, `stdout` and `stderr`."""
    result = CliRunner().invoke(typer.main.get_group(app), ["simulate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def check_json(stdout: str, outcome: str, final: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    assert set(result) == {"outcome", "final_revision", "cycles", "max_alive", "min_serving", "max_held", "requests",
                           "failed_requests", "by_revision", "timeline"}
    assert result["max_held"] is None  # no --capacity: nothing counted (tests/cli/test_simulate_capacity.py)
    assert (result["outcome"], result["final_revision"]) == (outcome, final)
    assert result["cycles"] == max(row["cycle"] for row in result["timeline"]) > 0
    assert result["max_alive"] == max(row["alive"] for row in result["timeline"])
    assert result["min_serving"] == min(row["serving"] for row in result["timeline"])
    return result


@pytest.mark.parametrize(
    ("args", "outcome", "final"),
    [
        ((), "completed", "v2"),
        (("--strategy", "blue_green"), "awaiting_promotion", "v1"),
        (("--strategy", "blue_green", "--auto-promote", "--promote-delay", "3"), "completed", "v2"),
        (("--fail-new", "start", "--max-surge", "1"), "rolled_back", "v1"),
    ],
)
def test_json_result_on_the_last_line(args: tuple[str, ...], outcome: str, final: str) -> None:
    done = simulate("--json", "--replicas", "3", "--startup-seconds", "0.5", *args)
    assert done.exit_code == 0, done.stderr
    check_json(done.stdout, outcome, final)


def test_rolling_limits_hold_over_the_whole_rollout() -> None:
    done = simulate("--json", "--replicas", "10", "--max-surge", "2", "--max-unavailable", "1", "--seed", "7")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "completed"
    assert result["max_alive"] <= 12
    assert result["min_serving"] >= 9


def test_table_for_people() -> None:
    done = simulate("--replicas", "2", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    assert "sub-step" in done.stdout and "outcome: completed" in done.stdout


def test_bad_policy_is_one_line_exit_2() -> None:
    done = simulate("--max-surge", "150%")
    assert done.exit_code == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_surge" in lines[0] and "150%" in lines[0]


def test_the_installed_script_prints_the_json_last(script_run: subprocess.Popen[str]) -> None:
    out, err = script_run.communicate(timeout=120)
    assert (script_run.returncode, err) == (0, "")
    check_json(out, "completed", "v2")
