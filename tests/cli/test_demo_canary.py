"""`rollwise demo --canary`, offline: how its load generator counts answers by the version that gave them
(against a real example model server with --error-rate, no proxy), how the failures are split into the
bad canary's own answers and every other one, its summary line and exit conditions, and its options.
The demo itself runs end to end in tests/e2e/test_demo.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import click
import pytest
import typer
from click.testing import CliRunner

import rollwise.cli.demo  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app
from rollwise.cli.demo import free_port
from rollwise.cli.demo_run import (
    CANARY_POLICY,
    CanaryReport,
    CanaryRollout,
    Result,
    canary_revision,
)
from rollwise.cli.loadgen import LoadGenerator, VersionTally
from rollwise.model import parse_policy

COMMAND: click.Command = typer.main.get_group(app)


def rollout(label: str, outcome: str, reason: str | None = None, words: str | None = None) -> CanaryRollout:
    expected = "completed" if label == "v2" else "rolled_back"
    return CanaryRollout(Result(label, "canary", expected, outcome, 5.0, 500, 0), rollback_reason=reason,
                         last_failure=words)


def good_report(**changes: object) -> CanaryReport:
    report = CanaryReport(
        rollouts=[rollout("v2", "completed"), rollout("v3", "rolled_back", "analysis", "errors = 0.21 > 0.05")],
        requests=2310, failed=41, errors={"HTTP 500 from v3": 41},
        by_version={"v1": VersionTally(900), "v2": VersionTally(1300), "v3": VersionTally(200, 41)},
    )
    for key, value in changes.items():
        setattr(report, key, value)
    return report


def test_the_summary_line_of_a_run_as_planned() -> None:
    report = good_report()
    assert report.line() == ("demo --canary: 2 rollouts (completed, rolled back by analysis: errors = 0.21 > 0.05), "
                             "2310 requests, 41 canary errors before the rollback, 0 other failures")
    assert (report.canary_errors, report.other_failures, report.problems(), report.ok) == (41, 0, [], True)


def test_any_failure_but_the_bad_canarys_own_answers_fails_the_demo() -> None:
    report = good_report(failed=44, errors={"HTTP 500 from v3": 41, "HTTP 502": 2, "HTTP 500 from v2": 1})
    assert (report.canary_errors, report.other_failures) == (41, 3)
    assert report.problems() == ["3 request(s) failed other than the bad canary's own answers: "
                                 "{'HTTP 502': 2, 'HTTP 500 from v2': 1}"]
    assert report.line().endswith("41 canary errors before the rollback, 3 other failures")


def test_rollouts_that_did_not_end_as_planned_fail_the_demo() -> None:
    by_threshold = good_report(rollouts=[rollout("v2", "completed"),
                                         rollout("v3", "rolled_back", "failure_threshold")])
    assert by_threshold.problems() == ["the v3 rollout: rolled back (failure_threshold), expected rolled_back by "
                                       "analysis"]
    assert "(completed, rolled back (failure_threshold))" in by_threshold.line()
    good_rolled_back = good_report(rollouts=[rollout("v2", "rolled_back", "analysis", "errors = 0.1 > 0.05")])
    assert good_rolled_back.problems() == [
        "the v2 rollout: rolled back by analysis: errors = 0.1 > 0.05, expected completed",
        "the v3 rollout did not end"]
    timed_out = good_report(rollouts=[rollout("v2", "completed")], error="v3: canary: no result within 60s")
    assert timed_out.problems() == ["v3: canary: no result within 60s", "the v3 rollout did not end"]
    assert not timed_out.ok


def test_the_policy_and_the_revisions() -> None:
    policy = parse_policy(CANARY_POLICY)
    assert policy.analysis is not None and policy.analysis.failure_limit == 2
    assert [s.set_weight for s in policy.steps if s.set_weight] == [20, 50]
    assert "--error-rate" not in canary_revision("v2")["command"]
    bad = canary_revision("v3", "0.2")["command"]
    assert bad[bad.index("--error-rate") + 1] == "0.2" and bad[bad.index("--version") + 1] == "v3"


def test_canary_and_gpus_together_are_refused() -> None:
    result = CliRunner().invoke(COMMAND, ["demo", "--canary", "--gpus", "2"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --canary and --gpus: choose one demo"


# ------------------------------------------------------------------------- the load generator, for real


@pytest.fixture
def bad_server() -> Iterator[str]:
    """An example model server answering 1 prediction in 5 with a 500 (no proxy); killed after the test."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rollwise.examples.model_server", "--port", str(port),
                             "--version", "v3", "--error-rate", "0.2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, f"the model server exited {proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the model server does not listen"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def load_until(url: str, sent: int) -> LoadGenerator:
    """Send at 200/s until `sent` requests went out; every one is answered when this returns."""
    load = LoadGenerator(url, rate=200)
    async with load:
        deadline = time.monotonic() + 30
        while load.stats.sent < sent:
            assert time.monotonic() < deadline, load.stats
            await asyncio.sleep(0.02)
    return load


def test_the_load_counts_each_versions_own_500s(bad_server: str) -> None:
    load = asyncio.run(load_until(f"{bad_server}/predict", 100))
    stats, tally = load.stats, load.by_version["v3"]
    assert set(load.by_version) == {"v3"} and tally.answers == stats.sent
    assert tally.errors == stats.sent // 5 == stats.failed  # the server's schedule is exact
    assert dict(stats.errors) == {"HTTP 500 from v3": tally.errors}
    assert stats.ok == stats.versions["v3"] == stats.sent - tally.errors
    assert tally.first is not None and tally.last is not None and tally.first <= tally.last


def test_an_answer_naming_no_version_belongs_to_no_version(bad_server: str) -> None:
    load = asyncio.run(load_until(f"{bad_server}/nope", 20))
    assert load.by_version == {} and load.stats.failed == load.stats.sent
    assert dict(load.stats.errors) == {"HTTP 404": load.stats.sent}
