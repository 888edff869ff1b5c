"""`rollwise simulate` through the real command: the JSON contract on the last line, the table for
people, and bad options rejected with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLWISE, "simulate", *args], capture_output=True, text=True, timeout=120)


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
    done = simulate("--json", "--replicas", "3", *args)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"outcome", "final_revision", "cycles", "max_alive", "min_serving", "timeline"}
    assert (result["outcome"], result["final_revision"]) == (outcome, final)
    assert result["cycles"] == max(row["cycle"] for row in result["timeline"]) > 0
    assert result["max_alive"] == max(row["alive"] for row in result["timeline"])
    assert result["min_serving"] == min(row["serving"] for row in result["timeline"])


def test_rolling_limits_hold_over_the_whole_rollout() -> None:
    done = simulate("--json", "--replicas", "10", "--max-surge", "2", "--max-unavailable", "1", "--seed", "7")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "completed"
    assert result["max_alive"] <= 12
    assert result["min_serving"] >= 9


def test_table_for_people() -> None:
    done = simulate("--replicas", "2")
    assert done.returncode == 0, done.stderr
    assert "sub-step" in done.stdout and "outcome: completed" in done.stdout


def test_bad_policy_is_one_line_exit_2() -> None:
    done = simulate("--max-surge", "150%")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_surge" in lines[0] and "150%" in lines[0]
