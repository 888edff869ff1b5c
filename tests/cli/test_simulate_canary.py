"""`rollwise simulate --strategy canary --steps ... --fail-new errors --min-ready-seconds S --rate N`
through the real command (in-process, click's CliRunner): `weights` on every timeline row, `requests` and
`failed_requests` in the JSON, the issue's min_ready_seconds case, the table's weights column and
requests line, and bad values rejected with one line naming the option (exit 2, nothing on stdout)."""

from __future__ import annotations

import re

import pytest

from simulate_runner import last_json, simulate



def test_canary_json_has_weights_per_row_and_request_counts() -> None:
    done = simulate("--json", "--strategy", "canary", "--steps", "20,pause:2,60,pause:1", "--rate", "40")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert (result["outcome"], result["final_revision"]) == ("completed", "v2")
    assert all("weights" in row for row in result["timeline"])
    shares = [row["weights"]["r2"] for row in result["timeline"][:-1]]
    assert sorted(set(shares)) == [0, 20, 60] and shares == sorted(shares)
    assert all(sum(row["weights"].values()) == 100 for row in result["timeline"][:-1])
    assert 40 * result["timeline"][-1]["t"] - 2 < result["requests"] <= 40 * result["timeline"][-1]["t"]
    assert result["failed_requests"] == 0


def test_canary_with_errors_is_rolled_back_by_the_analysis() -> None:
    done = simulate("--json", "--strategy", "canary", "--fail-new", "errors", "--error-share", "0.5",
                    "--analysis-interval", "3")
    assert done.exit_code == 0, done.stderr
    result = last_json(done.stdout)
    assert (result["outcome"], result["final_revision"]) == ("rolled_back", "v1")
    said = [e for row in result["timeline"] for e in row["events"]]
    # About half of each window's canary requests failed (whole requests: 8 of 15 is 0.5333).
    assert any(re.match(r"rolling back \(analysis: errors = 0\.5\d* > 0\.05\)", e) for e in said), said
    assert result["by_revision"]["r2"]["errors"] > 0 and result["failed_requests"] == 0


def test_the_issues_min_ready_case() -> None:
    """`--strategy rolling --replicas 3 --max-surge 1 --max-unavailable 1 --fail-new unhealthy` drops to 0
    serving routes; with --min-ready-seconds above the time to failure it keeps D - unavailable = 2."""
    args = ("--json", "--strategy", "rolling", "--replicas", "3", "--max-surge", "1", "--max-unavailable", "1",
            "--fail-new", "unhealthy")
    plain, waited = simulate(*args), simulate(*args, "--min-ready-seconds", "5")
    assert plain.exit_code == waited.exit_code == 0, (plain.stderr, waited.stderr)
    hazard, safe = last_json(plain.stdout), last_json(waited.stdout)
    assert hazard["min_serving"] == 0 and hazard["failed_requests"] > 0
    assert (safe["outcome"], safe["min_serving"], safe["failed_requests"]) == ("rolled_back", 2, 0)


def test_table_has_weights_and_a_requests_line() -> None:
    done = simulate("--strategy", "canary", "--steps", "50,pause", "--startup-seconds", "0.5")
    assert done.exit_code == 0, done.stderr
    assert "weights" in done.stdout and "r1 50%, r2 50%" in done.stdout
    assert "outcome: awaiting_promotion" in done.stdout
    assert "requests: " in done.stdout and "0 without a backend" in done.stdout


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("--strategy", "canary", "--steps", "x"), "--steps: 'x' is not a weight or pause:N"),
        (("--strategy", "canary", "--steps", "10,pause:soon"), "--steps: 'pause:soon' is not a weight or pause:N"),
        (("--strategy", "canary", "--steps", "10,pause:5,5"), "--steps: step 3: 5 is below the weight before it (10)"),
        (("--strategy", "canary", "--steps", "100"), "--steps: step 1: 100 is not between 1 and 99"),
        (("--strategy", "canary", "--steps", "pause:5"), "--steps: a canary needs at least one set_weight step"),
        (("--steps", "10"), "--steps: only with --strategy canary"),
        (("--analysis",), "--analysis: only with --strategy canary"),
        (("--strategy", "canary", "--analysis-interval", "0"), "--analysis-interval: 0 must be more than 0"),
        (("--min-ready-seconds", "-1"), "--min-ready-seconds: -1 is negative"),
        (("--min-ready-seconds", "soon"), '--min-ready-seconds: "soon" is not a number'),
        (("--rate", "-5"), "--rate: -5 is negative"),
        (("--fail-new", "errors", "--error-share", "1.5"), "--error-share: 1.5 is over 1"),
        (("--error-share", "0.1"), "--error-share: only with --fail-new errors"),
        (("--unhealthy-after", "2"), "--unhealthy-after: only with --fail-new unhealthy"),
    ],
)
def test_bad_values_are_one_line_exit_2(args: tuple[str, ...], line: str) -> None:
    done = simulate("--json", *args)
    assert done.exit_code == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {line}"), lines
