"""`rollwise plan` as users run it: the installed `rollwise` script in a real subprocess (no test
harness between the command and the terminal), for good input (file and stdin) and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROLLWISE = Path(sys.executable).with_name("rollwise")

GOOD = {
    "now": "2026-03-04T00:01:00Z",
    "deployment": {"desired_replicas": 2, "current_revision": "r1", "deploying_revision": "r2"},
    "policy": {"strategy": "blue_green", "auto_promote": True},
    "routes": [
        {"id": "a1", "revision": "r1", "status": "running", "health": "healthy"},
        {"id": "a2", "revision": "r1", "status": "running", "health": "healthy"},
        {"id": "g1", "revision": "r2", "status": "running", "health": "healthy", "traffic": "inactive",
         "traffic_ratio": 0.0},
        {"id": "g2", "revision": "r2", "status": "running", "health": "healthy", "traffic": "inactive",
         "traffic_ratio": 0.0},
    ],
}

PROMOTED = {
    "sub_step": "completed",
    "create": [],
    "terminate": ["a1", "a2"],
    "traffic": [
        {"id": "g1", "traffic": "active", "traffic_ratio": 1.0},
        {"id": "g2", "traffic": "active", "traffic_ratio": 1.0},
    ],
    "mode": "forward",
    "reason": "blue-green: promoted 2 green routes, terminating 2 blue routes (auto-promotion after 0s)",
}


def rollwise(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    if not ROLLWISE.exists():
        pytest.skip(f"{ROLLWISE} is not installed")
    return subprocess.run([str(ROLLWISE), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(GOOD))
    done = rollwise("plan", "--input", str(path))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == PROMOTED
    assert done.stdout == json.dumps(PROMOTED, indent=2) + "\n"


def test_stdin() -> None:
    done = rollwise("plan", "--input", "-", stdin=json.dumps(GOOD))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == PROMOTED


@pytest.mark.parametrize(
    ("stdin", "line"),
    [
        ("nope", "error: input: is not JSON (Expecting value at line 1, column 1)\n"),
        (json.dumps({**GOOD, "routes": [{"id": "x", "revision": "r2", "status": "runing"}]}),
         'error: routes[0].status: "runing" is not one of provisioning, running, terminating, terminated, '
         "failed_to_start\n"),
        (json.dumps({**GOOD, "capacity": {"placeable": -2}}), "error: capacity.placeable: -2 is negative\n"),
    ],
    ids=["not JSON", "unknown status", "negative placeable"],
)
def test_bad_input(stdin: str, line: str) -> None:
    done = rollwise("plan", "--input", "-", stdin=stdin)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", line)


def test_capacity() -> None:
    """Green does not fit: one green route can be placed of the two wanted; blue is kept."""
    doc = {**GOOD, "routes": GOOD["routes"][:2], "capacity": {"placeable": 1}}
    done = rollwise("plan", "--input", "-", stdin=json.dumps(doc))
    assert (done.returncode, done.stderr) == (0, "")
    out = json.loads(done.stdout)
    assert out["create"] == [{"revision": "r2", "traffic": "inactive", "traffic_ratio": 0.0}]
    assert out["terminate"] == [] and out["sub_step"] == "provisioning"
    assert out["reason"] == (
        "blue-green: created 1 green (green r2: 0/2 ready); waiting for capacity: 0 more routes can be placed"
        "; green does not fit yet: 1 more route wanted while blue keeps serving"
    )
