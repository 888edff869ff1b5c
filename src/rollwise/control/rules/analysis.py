"""The canary analysis' pure rules (docs/control.md, "Analysis"): which deployments are analysed, when a
measurement is due, and the verdict of one metric from what was measured.

    analysed_spec(dep)          the policy's `analysis` when the deployment is analysed now: DEPLOYING,
                                forward, a canary with `analysis`, and the canary has traffic
    is_due(start, now, spec)    an interval has passed since the window started
    measure_builtin(...)        error_rate / latency_p99_ms of the canary's window against `max` and
                                `max_over_stable` (the stable revision's window); min_requests
    measure_command(...)        a command's exit code, timeout and output -> verdict and value

A verdict is "passed", "failed" or "inconclusive" (`store.records.VERDICTS`), with the value (the number
as text, or a command's last line of output) and the words stored with it: "errors = 0.034 > 0.01",
"inconclusive: 12 requests < 50". The words of a failure become the rollback reason
(`analysis: errors = 0.034 > 0.01`).

Called by control.analysis (the runner, which reads the proxy's counters and runs the commands). Must
not: do I/O, read the clock (`now` is passed in), or start processes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from rollwise.model import AnalysisSpec, Lifecycle, MetricSpec, Mode, StrategyName
from rollwise.store.records import DeploymentRecord
from rollwise.traffic.base import RevisionStats
from rollwise.traffic.stats import error_rate, latency_quantile

PASSED: Final = "passed"
FAILED: Final = "failed"
INCONCLUSIVE: Final = "inconclusive"

VALUE_CHARS = 200
"""A command's last line of output is stored up to this many characters."""
WORDS_CHARS = 500
"""A verdict's words are stored up to this many characters."""


@dataclass(frozen=True, slots=True)
class Measured:
    """One metric's verdict with its value and words."""

    verdict: str
    value: str | None
    words: str


# ------------------------------------------------------------------------------------ who, and when


def analysed_spec(dep: DeploymentRecord) -> AnalysisSpec | None:
    """The policy's analysis when `dep` is analysed now, else None.

    Analysed: DEPLOYING in forward mode (a rollback is not measured), a canary policy with `analysis`, a
    deploying revision, and canary traffic (`has_canary_traffic`): the analysis runs from the first
    set_weight step that sent requests to the canary until the rollout ends."""
    policy = dep.policy
    if policy is None or policy.strategy is not StrategyName.CANARY or policy.analysis is None:
        return None
    if dep.lifecycle is not Lifecycle.DEPLOYING or dep.mode is not Mode.FORWARD:
        return None
    if dep.deploying_revision is None or not has_canary_traffic(dep):
        return None
    return policy.analysis


def has_canary_traffic(dep: DeploymentRecord) -> bool:
    """Whether the canary (the deploying revision) gets requests: its share of `traffic_weights` is above
    0; without stored weights (the proxy weighs by routes), once the first step is behind
    (`canary_step >= 1`)."""
    if dep.deploying_revision is None:
        return False
    if dep.traffic_weights is not None:
        return dep.traffic_weights.get(dep.deploying_revision, 0) > 0
    return dep.canary_step >= 1


def stable_revision(dep: DeploymentRecord) -> int | None:
    """The revision the canary is compared with: the serving one, unless there is none (or it is the
    canary itself)."""
    current = dep.current_revision
    return None if current is None or current == dep.deploying_revision else current


def is_due(window_start: datetime, now: datetime, interval_seconds: float) -> bool:
    """A measurement is due once `interval_seconds` have passed since its window started (the end of the
    previous window, or the first look at the canary's counters)."""
    return (now - window_start).total_seconds() >= interval_seconds


# ------------------------------------------------------------------------------------------ builtins


def builtin_value(builtin: str, stats: RevisionStats) -> float | None:
    """error_rate: 5xx / all (0..1); latency_p99_ms: the 99th percentile of response time in ms. None when
    the window has nothing to measure."""
    if builtin == "error_rate":
        return error_rate(stats)
    if builtin == "latency_p99_ms":
        seconds = latency_quantile(stats, 0.99)
        return None if seconds is None else seconds * 1000.0
    raise ValueError(f"unknown builtin metric {builtin!r}")


def measure_builtin(
    metric: MetricSpec, canary: RevisionStats, stable: RevisionStats | None, *, min_requests: int
) -> Measured:
    """The verdict of a builtin metric over one window.

    `canary`, `stable`: the two revisions' counts in the same window (`traffic.stats.window`); `stable`
    None when the deployment has no stable revision (the `max_over_stable` comparison is then skipped).
    Fewer than `min_requests` canary requests (or none): inconclusive. Failed when the canary's value is
    above `max`, or above the stable value plus `max_over_stable`; inconclusive when the stable revision
    had nothing to compare with; else passed."""
    builtin = metric.builtin
    if builtin is None:
        raise ValueError(f"metric {metric.name!r} is not a builtin")
    n = canary.requests
    if n <= 0 and min_requests <= 0:
        return Measured(INCONCLUSIVE, None, "inconclusive: no requests")
    if n < min_requests:
        return Measured(INCONCLUSIVE, None, f"inconclusive: {_requests(n)} < {min_requests}")
    value = builtin_value(builtin, canary)
    if value is None:
        return Measured(INCONCLUSIVE, None, "inconclusive: no response times counted")
    shown = show_number(value)
    failed: list[str] = []
    checks: list[str] = []
    unknown: str | None = None
    if metric.max is not None:
        above = is_above(value, metric.max)
        checks.append(f"{'>' if above else '<='} {show_number(metric.max)}")
        if above:
            failed.append(checks[-1])
    if metric.max_over_stable is not None:
        if stable is None:
            checks.append("no stable revision to compare with")
        else:
            base = builtin_value(builtin, stable)
            if base is None:
                unknown = f"inconclusive: {metric.name} = {shown}, no requests to the stable revision"
            else:
                above = is_above(value - base, metric.max_over_stable)
                sign = ">" if above else "<="
                checks.append(f"{sign} stable {show_number(base)} + {show_number(metric.max_over_stable)}")
                if above:
                    failed.append(checks[-1])
    value_text = store_number(value)
    if failed:
        return Measured(FAILED, value_text, _bounded(f"{metric.name} = {shown} {', '.join(failed)}"))
    if unknown is not None:
        return Measured(INCONCLUSIVE, value_text, _bounded(unknown))
    return Measured(PASSED, value_text, _bounded(f"{metric.name} = {shown} {', '.join(checks)}"))


def is_above(value: float, bound: float) -> bool:
    """value > bound, with equality up to float rounding counted as not above (0.035 - 0.005 is 0.03)."""
    return value > bound and not math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)


def show_number(x: float) -> str:
    """A number in words: 4 significant digits (0.034, 0.03333, 812.5), whole from 1000 on (1235)."""
    if abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.4g}"


def store_number(x: float) -> str:
    """A number as stored in `value`: 6 significant digits, whole from 1,000,000 on (parses as a float)."""
    if abs(x) >= 1_000_000:
        return f"{x:.0f}"
    return f"{x:.6g}"


def _requests(n: int) -> str:
    return f"{n} request" if n == 1 else f"{n} requests"


# ------------------------------------------------------------------------------------------ commands


def last_line(output: str) -> str | None:
    """The last non-blank line of a command's output, stripped and cut to VALUE_CHARS; None when blank."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line:
            return line if len(line) <= VALUE_CHARS else line[: VALUE_CHARS - 3] + "..."
    return None


def measure_command(
    metric: MetricSpec, *, exit_code: int | None, timed_out: bool = False, output: str = "", error: str | None = None
) -> Measured:
    """The verdict of a command metric: exit 0 passed, 1 failed, anything else inconclusive, as is a
    timeout (`timed_out`) or a command that could not be started (`error`, e.g. the program is missing).
    The value is the last line of its output."""
    line = last_line(output)
    if error is not None:
        return Measured(INCONCLUSIVE, None, _bounded(f"inconclusive: cannot run {_argv0(metric)}: {error}"))
    if timed_out or exit_code is None:
        return Measured(INCONCLUSIVE, line, f"inconclusive: timed out after {show_number(metric.timeout_seconds)} s")
    if exit_code == 0:
        return Measured(PASSED, line, _bounded(f"{metric.name} = {line} (exit 0)" if line else f"{metric.name} passed (exit 0)"))
    if exit_code == 1:
        return Measured(FAILED, line, _bounded(f"{metric.name} = {line} (exit 1)" if line else f"{metric.name} failed (exit 1)"))
    if exit_code < 0:
        return Measured(INCONCLUSIVE, line, f"inconclusive: killed by signal {-exit_code}")
    return Measured(INCONCLUSIVE, line, _bounded(f"inconclusive: exit {exit_code}" + (f": {line}" if line else "")))


def _argv0(metric: MetricSpec) -> str:
    return metric.command[0] if metric.command else "the command"


def _bounded(words: str) -> str:
    return words if len(words) <= WORDS_CHARS else words[: WORDS_CHARS - 3] + "..."
