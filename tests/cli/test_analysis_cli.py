"""A canary's analysis in the CLI: `describe NAME` shows one line per metric (last verdict, value,
counts), `rollout status NAME` the same table, and `rollout status --watch` (off a terminal) prints a line
for each new measurement.

Against one server per module (cli_server.InProcessServer: `rollwise server --runtime simulated
--no-proxy` in this process, real clock): a canary rolls out revision 2 with a command metric, a real
Python process that prints "accuracy 0.71" and exits 1, measured every 0.3 s. The failure limit is high
and the canary stops at a pause until promote, so the rollout keeps running and measuring while the
commands look at it. The renderers are also checked alone, on a fixed API answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.describe
import rollwise.cli.rollout  # noqa: F401  (the imports register the commands, as rollwise.cli.main does)
from rollwise.cli.app import app
from rollwise.cli.describe import analysis_heading, analysis_summary, measurement_line
from cli_server import InProcessServer

EVAL = [sys.executable, "-c", "print('evaluating'); print('accuracy 0.71'); raise SystemExit(1)"]
POLICY = {
    "strategy": "canary",
    "steps": [{"set_weight": 50}, {"pause": {}}],
    "analysis": {"interval_seconds": 0.3, "failure_limit": 100000, "min_requests": 0,
                 "metrics": [{"name": "eval", "command": EVAL, "timeout_seconds": 20}]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with InProcessServer(tmp_path_factory.mktemp("analysis-server")) as running:
        yield running


def post(server: InProcessServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {server.token}"},
                        timeout=10)
    assert answer.status_code in (201, 202), answer.text
    return dict(answer.json())


def run(*args: str, check: int = 0) -> Result:
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None})
    result = runner.invoke(typer.main.get_group(app), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == check, (result.exit_code, result.stdout, result.stderr)
    return result


def measured(server: InProcessServer, name: str) -> list[dict[str, Any]]:
    answer = server.api(f"/v1/deployments/{name}/analysis")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["measurements"])


@pytest.fixture(scope="module")
def canary(server: InProcessServer) -> str:
    """A canary rolling out revision 2, measured at least twice."""
    body = {"name": "chat", "replicas": 2, "policy": POLICY,
            "revision": {"command": ["model-server", "--port", "{port}"]}}
    post(server, "/v1/deployments", body)
    server.wait("chat", lambda d: d["lifecycle"] == "ready")
    post(server, "/v1/deployments/chat/revisions", {"command": ["model-server", "--port", "{port}", "v2"]})
    post(server, "/v1/deployments/chat/rollout", {"revision": 2})
    server.after_rounds(lambda: len(measured(server, "chat")) >= 2, what=lambda: "no measurements",
                        timeout=60)
    return "chat"


def test_describe_shows_each_metrics_last_verdict_value_and_counts(server: InProcessServer, canary: str) -> None:
    out = run("describe", canary, *server.args()).stdout
    heading = next(line for line in out.splitlines() if line.startswith("Analysis of revision 2: ")).strip()
    assert heading.endswith(" failed, 0 passed, 0 inconclusive"), heading
    row = next(line for line in out.splitlines() if line.startswith("eval "))
    assert "failed" in row and "accuracy 0.71" in row and "eval = accuracy 0.71 (exit 1)" in row

    as_json = json.loads(run("describe", canary, "-o", "json", *server.args()).stdout)
    assert as_json["analysis"]["revision"] == 2
    assert {m["verdict"] for m in as_json["analysis"]["measurements"]} == {"failed"}


def test_rollout_status_shows_the_analysis(server: InProcessServer, canary: str) -> None:
    out = run("rollout", "status", canary, *server.args()).stdout
    assert "Analysis of revision 2: " in out and "eval = accuracy 0.71 (exit 1)" in out


def test_watch_prints_a_line_per_new_measurement(server: InProcessServer, canary: str) -> None:
    before = {m["id"] for m in measured(server, canary)}
    # The rollout waits for promote: the watch ends at its timeout (exit 1), having printed what came.
    out = run("rollout", "status", canary, "--watch", "--interval", "0.1", "--timeout", "2", *server.args(),
              check=1).stdout
    lines = [line for line in out.splitlines() if " analysis eval " in line]
    assert lines, out
    assert all(line.endswith("analysis eval failed: eval = accuracy 0.71 (exit 1)") for line in lines), lines
    new = [m for m in measured(server, canary) if m["id"] not in before]
    assert 1 <= len(lines) <= len(new)


def test_not_a_canary_has_no_analysis_section(server: InProcessServer) -> None:
    post(server, "/v1/deployments", {"name": "plain", "replicas": 1,
                                     "revision": {"command": ["model-server", "--port", "{port}"]}})
    out = run("describe", "plain", *server.args()).stdout
    assert "Analysis" not in out


# ---------------------------------------------------------------------------------- the renderers

ANSWER = {
    "rollout_started_at": "2026-03-04T12:00:00+00:00", "revision": 2,
    "counts": {"failed": 1, "passed": 2, "inconclusive": 1},
    "measurements": [
        {"id": 1, "metric": "errors", "verdict": "passed", "value": "0.002", "words": "errors = 0.002 <= 0.01",
         "created_at": "2026-03-04T12:00:30+00:00"},
        {"id": 2, "metric": "eval", "verdict": "inconclusive", "value": None, "words": "inconclusive: exit 2",
         "created_at": "2026-03-04T12:00:31+00:00"},
        {"id": 3, "metric": "errors", "verdict": "failed", "value": "0.034", "words": "errors = 0.034 > 0.01",
         "created_at": "2026-03-04T12:01:00+00:00"},
        {"id": 4, "metric": "eval", "verdict": "passed", "value": "accuracy 0.93",
         "words": "eval = accuracy 0.93 (exit 0)", "created_at": "2026-03-04T12:01:01+00:00"},
    ],
}


def test_summary_per_metric_and_heading() -> None:
    summary = analysis_summary(ANSWER)
    assert [(s["metric"], s["last"]["verdict"], s["counts"]) for s in summary] == [
        ("errors", "failed", {"passed": 1, "failed": 1}),
        ("eval", "passed", {"inconclusive": 1, "passed": 1}),
    ]
    assert analysis_heading(ANSWER) == "Analysis of revision 2: 1 failed, 2 passed, 1 inconclusive"
    assert measurement_line(ANSWER["measurements"][2]).endswith(  # type: ignore[index]
        " analysis errors failed: errors = 0.034 > 0.01")
