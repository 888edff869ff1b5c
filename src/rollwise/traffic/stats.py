"""Pure arithmetic over the proxy's per-revision counters (`rollwise.traffic.base.RevisionStats`).

Called by the control layer (canary analysis) with two reads of `TrafficLayer.revision_stats()`: the
counters are cumulative, so what happened between two reads is `window(before, after)`, and its error
rate and latency quantile are `error_rate(w)` and `latency_quantile(w, 0.99)`. No I/O, no clock.

    before = await traffic.revision_stats()          # at the start of the step
    ...                                              # traffic flows
    after = await traffic.revision_stats()
    w = window(before.get(key), after[key])
    error_rate(w), latency_quantile(w, 0.99)         # None while the window saw no request

A counter reset between the reads (the proxy restarted, or it dropped the revision's counters when the
revision left the table) shows as a different `started` or as a counter that went down; the window is
then the whole of `after` (what was counted since the reset).
"""

from __future__ import annotations

import math

from rollwise.traffic.base import RevisionStats


def window(before: RevisionStats | None, after: RevisionStats) -> RevisionStats:
    """The counts between two reads of the same revision: `after - before`. The whole of `after` when
    there is no `before`, when the counters were reset in between (different `started`, a count that
    went down, other histogram bounds). The result carries `after.started`."""
    if before is None or was_reset(before, after):
        return after
    by_code = {code: n - before.by_code.get(code, 0) for code, n in after.by_code.items()}
    before_buckets = dict(before.buckets)
    return RevisionStats(
        requests=after.requests - before.requests,
        errors=after.errors - before.errors,
        by_code={code: n for code, n in by_code.items() if n},
        buckets=tuple((bound, n - before_buckets.get(bound, 0)) for bound, n in after.buckets),
        started=after.started,
    )


def was_reset(before: RevisionStats, after: RevisionStats) -> bool:
    """True when `after` cannot be a later read of the same counters as `before`: another `started`,
    a count that went down, or other histogram bounds."""
    if before.started != after.started:
        return True
    if after.requests < before.requests or after.errors < before.errors:
        return True
    if any(after.by_code.get(code, 0) < n for code, n in before.by_code.items()):
        return True
    if before.buckets and [b for b, _ in before.buckets] != [b for b, _ in after.buckets]:
        return True
    return any(a < b for (_, a), (_, b) in zip(after.buckets, before.buckets, strict=False))


def error_rate(stats: RevisionStats) -> float | None:
    """The share of 5xx answers (0.0 to 1.0); None when there was no request."""
    if stats.requests <= 0:
        return None
    return stats.errors / stats.requests


def latency_quantile(stats: RevisionStats, q: float) -> float | None:
    """The q-quantile (0 <= q <= 1) of the request durations in seconds, estimated from the histogram as
    Prometheus's `histogram_quantile` does: the bucket holding rank q * count, linear interpolation
    between its lower bound (0 for the first bucket) and its upper bound. A rank in the +Inf bucket
    answers the largest finite bound. None when the histogram is empty."""
    if not 0.0 <= q <= 1.0 or math.isnan(q):
        raise ValueError(f"quantile must be between 0 and 1, not {q!r}")
    buckets = sorted(stats.buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return None
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0] if len(buckets) > 1 else None
    upper, count = buckets[index]
    lower, below = (0.0, 0) if index == 0 else buckets[index - 1]
    if index == 0 and upper <= 0:
        return upper
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket
