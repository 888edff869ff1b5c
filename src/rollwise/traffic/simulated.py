"""A deterministic traffic layer with no proxy process: it keeps the routing table it is given and, when
told that simulated time passed (`advance`), sends requests through it and counts them per revision as
the real proxy would. Used by `rollwise simulate` (control.simulation) and tests; like the simulated
runtime it is a product feature, not a mock of Traefik.

    traffic = SimulatedTraffic(rate=50, started=clock.now().timestamp())
    traffic.set_behaviour("sim", 2, error_share=0.2)     # revision 2 answers 5xx to 20 % of its requests
    await traffic.apply(table)                           # by the route controller
    traffic.advance(0.5)                                 # 25 requests per deployment in the table
    await traffic.revision_stats()                       # cumulative counters (the canary analysis)
    traffic.failed_requests["sim"]                       # requests that found no backend (503)

**The split.** Each deployment in the last applied table gets `rate` requests per second (`set_rate`
changes one deployment's). They are split between revisions in the ratio of the sums of their backends'
weights, as Traefik's weighted service does; a revision whose backends all weigh 0 (pinned-only: blue-green's
green before promotion, a canary at weight 0) gets none. A deployment in the table with no backend, or
only backends of weight 0, answers its requests with 503: they are not counted for any revision (as the
real proxy's counters do not) but in `failed_requests[deployment]`. `sent[deployment]` counts every
request sent, failed or not.

**Determinism.** No random numbers: every count is exact fractional accumulation. What a revision is
owed (`rate × seconds × its share`) is added to a carry kept as an exact fraction, and the whole number
of requests in the carry is sent; the same for a revision's errors (`requests × error_share`). So over
any run the counts are the floor of the exact integral, whatever the length of the steps, and the same
options give the same counts. Rates, shares, durations and weights are read as the numbers they stand for
(`Fraction(x).limit_denominator(10**9)`: 0.2 is 1/5, a route's weight 90/3 is exactly 30).

**Answers.** A revision answers `error_share` of its requests with 500 and the others with 200, each in
`latency_s` seconds (`set_behaviour`; default: no errors, 0.05 s). The latency histogram has Traefik's
bucket bounds (`DURATION_BUCKETS`) and +Inf, cumulative, as `RevisionStats.buckets`.

**Counters.** `revision_stats()` returns, for every revision ever counted and every revision of the
current table (zeros until it gets a request), its cumulative counters since `started` (fixed: the
simulated proxy never restarts). `confirm_removed` is True once none of the addresses is in that
deployment's table; `wait_applied` is always True; `running` is always True and `ensure_running`
never restarts anything.

Called by control.simulation (which owns the clock and calls `advance` once per round) and the route
controller through the TrafficLayer protocol. Must not: read a clock, start processes, or do I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from rollwise.traffic.base import NoTraffic, RevisionStats

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0, 15.0, 30.0)
"""Upper bounds (seconds) of the latency histogram, Traefik's as rollwise configures it; +Inf follows."""
OK_CODE = 200
ERROR_CODE = 500
DEFAULT_LATENCY_S = 0.05


def exact(x: float) -> Fraction:
    """A rate, share, duration or weight as the number it stands for (0.2 -> 1/5, 100/3 of a float
    -> 100/3), exactly: the split of 3 routes at 100/3 each is then exactly 100."""
    return Fraction(x).limit_denominator(10**9)


@dataclass(frozen=True, slots=True)
class RevisionBehaviour:
    """How one revision of one deployment answers: the share of 5xx answers and the response time."""

    error_share: float = 0.0
    latency_s: float = DEFAULT_LATENCY_S


@dataclass(slots=True)
class _Counter:
    """The cumulative counts of one (deployment, revision) and what it is still owed."""

    requests: int = 0
    errors: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    """Requests per bucket (not cumulative); the last is +Inf."""
    owed: Fraction = Fraction(0)
    errors_owed: Fraction = Fraction(0)

    def stats(self, started: float) -> RevisionStats:
        by_code = {code: n for code, n in ((OK_CODE, self.requests - self.errors), (ERROR_CODE, self.errors)) if n}
        cumulative, running = [], 0
        for bound, n in zip((*DURATION_BUCKETS, math.inf), self.histogram, strict=True):
            running += n
            cumulative.append((bound, running))
        return RevisionStats(requests=self.requests, errors=self.errors, by_code=by_code,
                             buckets=tuple(cumulative), started=started)


class SimulatedTraffic(NoTraffic):
    """The TrafficLayer protocol (traffic.base) over simulated requests (module docstring): `NoTraffic`'s
    in-memory table, plus the requests sent through it and their per-revision counters."""

    def __init__(self, rate: float = 0.0, *, started: float = 0.0) -> None:
        """`rate`: requests per second each deployment of the table gets (>= 0). `started`: the Unix time
        every revision's counters count from (fixed)."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a number >= 0, not {rate!r}")
        super().__init__()
        self.rate = rate
        self.started = started
        self.sent: dict[str, int] = {}
        """Deployment -> every request sent to it (answered by a revision or failed)."""
        self.failed_requests: dict[str, int] = {}
        """Deployment -> requests that found no backend (the proxy's 503; no revision counts them)."""
        self._rates: dict[str, float] = {}
        self._behaviours: dict[tuple[str, int], RevisionBehaviour] = {}
        self._counters: dict[tuple[str, int], _Counter] = {}
        self._failed_owed: dict[str, Fraction] = {}

    # --- simulation controls ----------------------------------------------------------------------

    def set_rate(self, deployment: str, rate: float) -> None:
        """Requests per second for one deployment (instead of `rate`)."""
        if rate < 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a number >= 0, not {rate!r}")
        self._rates[deployment] = rate

    def set_behaviour(
        self, deployment: str, revision: int, *, error_share: float | None = None, latency_s: float | None = None
    ) -> None:
        """How `revision` of `deployment` answers from now on; an argument left out keeps its value."""
        old = self._behaviours.get((deployment, revision), RevisionBehaviour())
        new = RevisionBehaviour(
            error_share=old.error_share if error_share is None else error_share,
            latency_s=old.latency_s if latency_s is None else latency_s,
        )
        if not 0.0 <= new.error_share <= 1.0:
            raise ValueError(f"error_share must be between 0 and 1, not {new.error_share!r}")
        if new.latency_s < 0 or not math.isfinite(new.latency_s):
            raise ValueError(f"latency_s must be a number >= 0, not {new.latency_s!r}")
        self._behaviours[(deployment, revision)] = new

    def advance(self, seconds: float) -> None:
        """`seconds` of simulated time pass: every deployment of the table gets its requests, split by
        the table's per-revision weights (module docstring)."""
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a number >= 0, not {seconds!r}")
        span = exact(seconds)
        for name, backends in self.services.items():
            due = exact(self._rates.get(name, self.rate)) * span
            if not due:
                continue
            shares: dict[int, Fraction] = {}
            for b in backends:
                if b.weight > 0:
                    shares[b.revision] = shares.get(b.revision, Fraction(0)) + exact(b.weight)
            total = sum(shares.values(), Fraction(0))
            if total <= 0:
                owed = self._failed_owed.get(name, Fraction(0)) + due
                n = math.floor(owed)
                self._failed_owed[name] = owed - n
                self.failed_requests[name] = self.failed_requests.get(name, 0) + n
                self.sent[name] = self.sent.get(name, 0) + n
                continue
            for revision in sorted(shares):
                sent = self._answer(name, revision, due * shares[revision] / total)
                self.sent[name] = self.sent.get(name, 0) + sent

    def _answer(self, name: str, revision: int, owed: Fraction) -> int:
        counter = self._counters.setdefault((name, revision), _Counter())
        counter.owed += owed
        n = math.floor(counter.owed)
        counter.owed -= n
        if not n:
            return 0
        behaviour = self._behaviours.get((name, revision), RevisionBehaviour())
        counter.errors_owed += n * exact(behaviour.error_share)
        errors = min(n, math.floor(counter.errors_owed))
        counter.errors_owed -= errors
        counter.requests += n
        counter.errors += errors
        bucket = next((i for i, bound in enumerate(DURATION_BUCKETS) if behaviour.latency_s <= bound),
                      len(DURATION_BUCKETS))
        counter.histogram[bucket] += n
        return n

    # --- TrafficLayer -----------------------------------------------------------------------------

    async def revision_stats(self) -> dict[tuple[str, int], RevisionStats]:
        keys = set(self._counters) | {(name, b.revision) for name, bs in self.services.items() for b in bs}
        return {key: self._counters.get(key, _Counter()).stats(self.started) for key in sorted(keys)}
