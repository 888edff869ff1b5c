"""`rollwise plan --input FILE|-` through the Typer app (CliRunner): JSON in, JSON out, exit 0; every
class of bad input gives exit 2, nothing on stdout and exactly one `error: <field>: …` line on stderr.
Real subprocess runs of the installed `rollwise` script live in test_plan_subprocess.py."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import click
import pytest
import typer
from click.testing import CliRunner

import rollwise.cli.plan  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app

# The real app has several commands; build it as a group whatever else is registered in this process.
COMMAND: click.Command = typer.main.get_group(app)


def state(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "now": "2026-03-04T00:01:00Z",
        "deployment": {
            "desired_replicas": 3,
            "current_revision": "r1",
            "deploying_revision": "r2",
            "rollout_started_at": "2026-03-04T00:00:00Z",
            "last_progress_at": "2026-03-04T00:00:30Z",
        },
        "policy": {"strategy": "rolling", "max_surge": 1, "max_unavailable": 1},
        "routes": [
            {"id": f"a{i}", "revision": "r1", "status": "running", "health": "healthy",
             "created_at": f"2026-03-03T23:00:0{i}Z"}
            for i in (1, 2, 3)
        ],
    }
    doc.update(overrides)
    return doc


EXPECTED = {
    "sub_step": "provisioning",
    "create": [{"revision": "r2", "traffic": "active", "traffic_ratio": 1.0}],
    "terminate": ["a1"],
    "traffic": [],
    "mode": "forward",
    "reason": "rolling: created 1, terminating 1 (surge 1, unavailable 1)",
}


def invoke(args: list[str], stdin: str | bytes | None = None) -> Any:
    return CliRunner().invoke(COMMAND, args, input=stdin)


def test_good_input_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state()))
    result = invoke(["plan", "--input", str(path)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED
    assert result.stdout == json.dumps(EXPECTED, indent=2) + "\n"
    assert result.stderr == ""


def test_good_input_from_stdin() -> None:
    result = invoke(["plan", "--input", "-"], json.dumps(state()))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == EXPECTED


def test_short_option_and_bom_are_accepted() -> None:
    result = invoke(["plan", "-i", "-"], b"\xef\xbb\xbf" + json.dumps(state()).encode())
    assert result.exit_code == 0, result.stderr


def test_rollback_output_has_rollback_reason() -> None:
    doc = state()
    doc["deployment"]["abort_requested"] = True
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)
    assert out["mode"] == "rolling_back" and out["rollback_reason"] == "aborted"
    assert out["reason"].startswith("rolling back (aborted): ")


def test_deadline_pause_output_has_set_paused() -> None:
    doc = state(now="2026-03-04T01:00:00Z")
    doc["policy"]["on_deadline"] = "pause"
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)
    assert out["sub_step"] == "paused" and out["set_paused"] is True
    assert out["create"] == [] and out["terminate"] == [] and out["traffic"] == []


def test_capacity_and_fallback() -> None:
    """D=3 at full capacity (nothing placeable), surge 1, unavailable 1: the unavailability budget lets
    one old route go; with unavailable 0, `replace` forces one out and `wait` waits."""
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(state(capacity={"placeable": 0}))).stdout)
    assert (out["create"], out["terminate"]) == ([], ["a1"])
    assert out["reason"].endswith("; waiting for capacity: 0 more routes can be placed")
    doc = state(capacity={"placeable": 0})
    doc["policy"]["max_unavailable"] = 0
    result = invoke(["plan", "--input", "-"], json.dumps(doc))
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout) == {
        "sub_step": "progressing",
        "create": [],
        "terminate": ["a1"],
        "traffic": [],
        "mode": "forward",
        "reason": "rolling: capacity: replacing one r1 route at a time (0 more routes can be placed)",
    }
    doc["policy"]["capacity_fallback"] = "wait"
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)
    assert (out["create"], out["terminate"], out["sub_step"]) == ([], [], "progressing")
    doc["capacity"] = {"placeable": None}
    assert json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)["create"] != []


CANARY = {
    "strategy": "canary",
    "steps": [{"set_weight": 10}, {"pause": {"seconds": 60}}, {"set_weight": 50}, {"pause": {}}],
    "analysis": {"interval_seconds": 30, "failure_limit": 2, "min_requests": 50, "metrics": [
        {"name": "errors", "builtin": "error_rate", "max": 0.01},
        {"name": "eval", "command": ["python", "eval.py"], "timeout_seconds": 120},
    ]},
}


def test_canary_step_weights_and_requeue() -> None:
    """D=3, the first canary route ready: set_weight 10 is done, the 60 s pause began 20 s ago."""
    doc = state(policy=CANARY)
    doc["deployment"].update(canary_step=1, step_started_at="2026-03-04T00:00:40Z", last_progress_at=None)
    doc["routes"].append({"id": "b1", "revision": "r2", "status": "running", "health": "healthy"})
    doc["analysis"] = {"failed": 1, "passed": 3, "inconclusive": 0}
    result = invoke(["plan", "--input", "-"], json.dumps(doc))
    assert (result.exit_code, result.stderr) == (0, "")
    expected = {
        "sub_step": "awaiting_promotion",
        "create": [],
        "terminate": [],
        "traffic": [],
        "mode": "forward",
        "reason": "canary: step 2/4 (pause 60s): r2 routes 1/1 ready, 0 provisioning, 0 unready; 40s left; "
        "traffic r1 90%, r2 10%",
        "weights": {"r1": 90, "r2": 10},
        "requeue_after": 40.0,
    }
    assert result.stdout == json.dumps(expected, indent=2) + "\n"
    doc["deployment"]["promote_requested"] = True  # promote: the pause is done, set_weight 50 (c 2) begins
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)
    assert (out["set_canary_step"], out["weights"], len(out["create"])) == (2, {"r1": 90, "r2": 10}, 1)
    doc["analysis"] = {"failed": 2, "last_failure": "errors = 0.034 > 0.01"}
    out = json.loads(invoke(["plan", "--input", "-"], json.dumps(doc)).stdout)
    assert (out["rollback_reason"], out["terminate"], out["weights"]) == ("analysis", ["b1"], {"r1": 100})


def test_bundled_example() -> None:
    path = resources.files("rollwise.examples").joinpath("plan_rolling.json")
    result = invoke(["plan", "--input", str(path)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["terminate"] == ["a2"]


def _with(path: str, value: Any) -> str:
    doc = state()
    node: Any = doc
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return json.dumps(doc)


_DELETE = object()

BAD = [
    ("not JSON", "{not json", "error: input: is not JSON (Expecting property name enclosed in double quotes"),
    ("empty input", "", "error: input: is not JSON (Expecting value at line 1, column 1)"),
    ("NaN is not JSON", '{"now": NaN}', "error: input: is not JSON (NaN is not a JSON value)"),
    ("not an object", "[1, 2]", "error: input: [1, 2] is not an object"),
    ("missing now", _with("now", _DELETE), "error: now: is required"),
    ("bad now", _with("now", "yesterday"), 'error: now: "yesterday" is not an ISO 8601 timestamp with a zone'),
    ("missing desired_replicas", _with("deployment.desired_replicas", _DELETE),
     "error: deployment.desired_replicas: is required"),
    ("negative desired_replicas", _with("deployment.desired_replicas", -3),
     "error: deployment.desired_replicas: -3 is negative"),
    ("missing deploying_revision", _with("deployment.deploying_revision", _DELETE),
     "error: deployment.deploying_revision: is required"),
    ("missing route id", _with("routes.1.id", _DELETE), "error: routes[1].id: is required"),
    ("unknown status", _with("routes.2.status", "runing"),
     'error: routes[2].status: "runing" is not one of provisioning, running, terminating, terminated, failed_to_start'),
    ("missing policy.strategy", _with("policy.strategy", _DELETE), "error: policy.strategy: is required"),
    ("unknown strategy", _with("policy.strategy", "linear"),
     'error: policy.strategy: "linear" is not a strategy (one of rolling, blue_green, recreate, canary)'),
    ("both surge and unavailable 0", json.dumps(state(policy={"strategy": "rolling", "max_surge": 0,
                                                              "max_unavailable": 0})),
     "error: policy: max_surge and max_unavailable cannot both be 0"),
    ("surge 150%", _with("policy.max_surge", "150%"), 'error: policy.max_surge: "150%" is over 100%'),
    ("negative surge", _with("policy.max_surge", -1), "error: policy.max_surge: -1 is negative"),
    ("negative unavailable percent", _with("policy.max_unavailable", "-5%"),
     'error: policy.max_unavailable: "-5%" is negative'),
    ("negative promote delay", _with("policy.promote_delay_seconds", -1),
     "error: policy.promote_delay_seconds: -1 is negative"),
    ("negative ratio", _with("routes.0.traffic_ratio", -1),
     "error: routes[0].traffic_ratio: -1 is not between 0 and 1"),
    ("capacity not an object", json.dumps(state(capacity="lots")), 'error: capacity: "lots" is not an object'),
    ("negative placeable", json.dumps(state(capacity={"placeable": -1})), "error: capacity.placeable: -1 is negative"),
    ("placeable not an integer", json.dumps(state(capacity={"placeable": 0.5})),
     "error: capacity.placeable: 0.5 is not an integer"),
    ("unknown capacity_fallback", _with("policy.capacity_fallback", "evict"),
     'error: policy.capacity_fallback: "evict" is not "replace" or "wait"'),
    ("canary without a set_weight step", json.dumps(state(policy={"strategy": "canary"})),
     "error: policy.steps: a canary needs at least one set_weight step"),
    ("canary weight 100", json.dumps(state(policy={"strategy": "canary", "steps": [{"set_weight": 100}]})),
     "error: policy.steps[0].set_weight: 100 is not between 1 and 99"),
    ("negative canary_step", _with("deployment.canary_step", -1), "error: deployment.canary_step: -1 is negative"),
    ("analysis counts not an object", json.dumps(state(analysis="none")), 'error: analysis: "none" is not an object'),
]


@pytest.mark.parametrize(("stdin", "line"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line(stdin: str, line: str) -> None:
    result = invoke(["plan", "--input", "-"], stdin)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    assert result.stderr.startswith(line), result.stderr
    assert "Traceback" not in result.stderr


def test_not_utf8() -> None:
    result = invoke(["plan", "--input", "-"], b'{"now": "\xff"}')
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", "error: input: is not UTF-8 text\n")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = invoke(["plan", "--input", str(missing)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f'error: --input: cannot read "{missing}": No such file or directory\n'
    result = invoke(["plan", "--input", str(tmp_path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: --input: cannot read ") and result.stderr.count("\n") == 1


def test_input_is_required() -> None:
    result = invoke(["plan"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: --input: is required (a state file, or - for standard input)\n"


def test_help_lists_the_option() -> None:
    result = invoke(["plan", "--help"])
    assert result.exit_code == 0 and "--input" in result.stdout
