"""The shared pieces: int-or-percent arithmetic (Kubernetes-style), the termination order, surplus
picking, and the per-cycle classification of routes (spec/strategies.md "Words")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollwise.model import Mode
from rollwise.strategy.cycle import (
    RollingLimits,
    build_view,
    in_termination_order,
    pick_surplus,
    resolve_int_or_percent,
    resolve_rolling_limits,
)

from .helpers import NOW, dep, prov, ready, route

LIMITS = [
    # (D, max_surge, max_unavailable) -> (surge, unavailable)
    (10, "25%", "25%", 3, 2),
    (1, "25%", "25%", 1, 0),
    (3, "0%", "10%", 0, 1),
    (3, 1, 5, 1, 3),
    (3, "25%", 0, 1, 0),
    (4, "25%", "25%", 1, 1),
    (3, 1, "25%", 1, 0),
    (5, "30%", "30%", 2, 1),
    (7, "100%", "100%", 7, 7),
    (0, "25%", 0, 0, 0),
    (0, 0, "25%", 0, 0),
    (0, 2, 3, 2, 0),
    (1000, "1%", "1%", 10, 10),
    (3, "0%", "0%", 0, 1),
    (2, 0, "49%", 0, 1),
    (100, "33%", "67%", 33, 67),
    (3, 0, 0, 0, 1),
]


@pytest.mark.parametrize(
    ("d", "surge", "unavailable", "want_surge", "want_unavailable"),
    LIMITS,
    ids=[f"D={d} surge {s!r} unavailable {u!r} -> ({ws}, {wu})" for d, s, u, ws, wu in LIMITS],
)
def test_resolve_rolling_limits(
    d: int, surge: int | str, unavailable: int | str, want_surge: int, want_unavailable: int
) -> None:
    assert resolve_rolling_limits(surge, unavailable, d) == RollingLimits(want_surge, want_unavailable)


@given(st.integers(0, 1000), st.integers(0, 100))
def test_percent_is_exact_ceil_and_floor(d: int, p: int) -> None:
    exact = d * p / 100
    up = resolve_int_or_percent(f"{p}%", d, round_up=True)
    down = resolve_int_or_percent(f"{p}%", d, round_up=False)
    assert down <= exact <= up and up - down <= 1
    assert (up == down) == (d * p % 100 == 0)


INT_OR_PERCENT = st.one_of(st.integers(0, 2000), st.integers(0, 100).map(lambda p: f"{p}%"))


@given(st.integers(0, 1000), INT_OR_PERCENT, INT_OR_PERCENT)
def test_limits_invariants(d: int, surge: int | str, unavailable: int | str) -> None:
    lim = resolve_rolling_limits(surge, unavailable, d)
    assert 0 <= lim.unavailable <= d
    assert lim.surge >= 0
    if d > 0:
        assert lim.surge + lim.unavailable >= 1  # a rolling update can always move


def test_termination_order() -> None:
    routes = [
        route("r-old", "r1", created=1),
        route("r-new", "r1", created=9),
        route("nc", "r1", "running", "not_checked", created=0),
        route("dg", "r1", "running", "degraded", created=0),
        route("uh-b", "r1", "running", "unhealthy", created=5),
        route("uh-a", "r1", "running", "unhealthy", created=5),
        route("pv", "r1", "provisioning", "not_checked", created=99),
        route("no-check", "r1", "running", "unhealthy", check=False, created=5),
    ]
    order = [r.id for r in in_termination_order(routes)]
    # degraded is ready (spec, changed 2026-12-01): after every not-ready route, before healthy ones.
    assert order == ["pv", "uh-a", "uh-b", "nc", "dg", "r-old", "no-check", "r-new"]


def test_pick_surplus_not_ready_first_then_newest_ready() -> None:
    alive = in_termination_order(
        [
            route("r1", "r2", created=1),
            route("r2", "r2", created=2),
            route("r3", "r2", created=3),
            route("u1", "r2", "running", "unhealthy", created=9),
            route("p1", "r2", "provisioning", "not_checked", created=9),
        ]
    )
    assert [r.id for r in pick_surplus(alive, 3)] == ["p1", "u1", "r3"]
    assert pick_surplus(alive, 0) == () and pick_surplus(alive, -2) == ()
    assert len(pick_surplus(alive, 99)) == 5


def test_pick_surplus_degraded_before_healthy_each_newest_first() -> None:
    alive = in_termination_order(
        [
            route("h1", "r2", created=1),
            route("h2", "r2", created=2),
            route("d1", "r2", "running", "degraded", created=3),
            route("d2", "r2", "running", "degraded", created=4),
            route("n1", "r2", "running", "not_checked", created=0),
        ]
    )
    assert [r.id for r in pick_surplus(alive, 4)] == ["n1", "d2", "d1", "h2"]


def test_classification_counts() -> None:
    routes = [
        *ready("a", "r1", 2),
        route("a3", "r1", "running", "degraded"),
        route("a4", "r1", "provisioning", "not_checked"),
        route("a5", "r1", "terminating"),
        route("a6", "r1", "failed_to_start", failed=True),
        *ready("b", "r2", 1),
        route("b2", "r2", "running", "not_checked"),
        *prov("b", "r2", 2, start=3),
        route("b5", "r2", "terminated"),
        route("b6", "r2", "failed_to_start", failed=True, created=10),
        route("b7", "r2", "terminated", failed=True, created=10),
        route("b8", "r2", "failed_to_start", failed=True, created=-10),
        route("b9", "r2", "running", failed=True, created=10),
    ]
    v = build_view(dep(3, started=0), routes, now=NOW)
    counts = (v.t_prov, v.t_ready, v.t_unready, v.t_alive, v.t_failed, v.o_ready, v.o_unready, v.o_alive)
    # a3 (degraded) is ready: it serves and counts.
    assert counts == (2, 1, 1, 4, 3, 3, 1, 4)
    back = v.for_mode(Mode.ROLLING_BACK)
    assert back.target == "r1"
    assert (back.t_ready, back.t_unready, back.t_prov, back.o_alive, back.t_failed) == (3, 0, 1, 4, 1)
