"""GPU capacity in `run_simulation` (docs/strategies.md, "Capacity"): whole rollouts on the real
coordinator, store and simulated runtime, with a node of C gpu slots and revisions that need g each.

What holds in every round of every rollout (property test, Hypothesis):

- the gpu units the processes hold (the runtime's DeviceTable) never exceed C;
- no device index is listed by two alive routes (the store's `devices` of provisioning / running
  routes), and every index the DeviceTable gives a route is listed by that route's row;
- every rollout ends (completed, rolled back, paused): none is stuck, since every policy has a deadline.

And at the end, per strategy, with a healthy new revision:

- rolling with `capacity_fallback: replace` completes whenever C >= D * g, also with C == D * g (no
  spare slot: the capacity-forced replacement is what makes it complete);
- rolling with `wait` completes unless there is no spare room and the unavailability budget is 0; then
  it never completes, the progress deadline ends it (rolled back, or paused per `on_deadline`) and the
  history says "waiting for capacity";
- recreate completes whenever C >= D * g;
- blue-green completes when green fits beside blue (C >= 2 * D * g); otherwise it never terminates a
  blue route, blue keeps serving D, the history says "green does not fit yet", and the deadline ends it.

A new revision that fails to start never completes; one that turns unhealthy may (it is ready first).
The table tests below pin the scenarios the docs tell.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rollwise.control.simulation import (
    InvariantBroken,
    SimulationOptions,
    SimulationResult,
    device_problems,
    run_simulation,
)
from rollwise.model import Health, RouteStatus, Traffic, ValidationFailed
from rollwise.runtime.devices import GPU
from rollwise.runtime.simulated import SimulatedRuntime
from rollwise.store.records import RouteRecord
from rollwise.strategy.cycle import resolve_rolling_limits

PROPS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
"""Bounded (each example is a whole simulated rollout, ~0.2-1.5 s; with the explicit examples the test
takes ~12 s on an idle 2-core machine) and reproducible (derandomized, no example database)."""

FORCED = "capacity: replacing one r1 route at a time"
WAITING = "waiting for capacity"
NO_FIT = "green does not fit yet"


@dataclass
class Rounds:
    """What the test's own observer saw after every round (independent of the simulation's checks)."""

    capacity: int
    held: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __call__(self, runtime: SimulatedRuntime, routes: list[RouteRecord]) -> None:
        holders = runtime.devices.holders().get(GPU, {})
        self.held.append(len(holders))
        round_ = len(self.held)
        if len(holders) > self.capacity:
            self.problems.append(f"round {round_}: {len(holders)} gpu held, capacity {self.capacity}")
        listed: dict[int, str] = {}
        for r in routes:
            if r.status not in (RouteStatus.PROVISIONING, RouteStatus.RUNNING):
                continue
            for i in r.devices.get(GPU, ()):
                if i in listed:
                    self.problems.append(f"round {round_}: gpu {i} listed by alive routes {listed[i]} and {r.id}")
                listed[i] = r.id
        rows = {r.id: r for r in routes}
        for i, route_id in holders.items():
            row = rows.get(route_id)
            if row is None or i not in row.devices.get(GPU, ()):
                self.problems.append(f"round {round_}: gpu {i} held by {route_id}, not listed by its row")
        # The runtime gives each route exactly what its revision needs, or nothing (not started / gone).
        for route_id, row in rows.items():
            got = len(runtime.devices.held_by(route_id).get(GPU, ()))
            if got not in (0, row.holds.get(GPU, 0)):
                self.problems.append(f"round {round_}: route {route_id} holds {got} gpu, needs {row.holds}")


def simulate(opts: SimulationOptions) -> tuple[SimulationResult, Rounds]:
    assert opts.capacity is not None
    rounds = Rounds(opts.capacity)
    result = asyncio.run(run_simulation(opts, observe=rounds))
    return result, rounds


def events(result: SimulationResult) -> list[str]:
    return [e for row in result.timeline for e in row["events"]]


def check_devices(result: SimulationResult, rounds: Rounds, capacity: int) -> None:
    assert rounds.problems == []
    assert len(rounds.held) == len(result.timeline) > 0
    assert [row["held"] for row in result.timeline] == rounds.held
    assert result.max_held is not None and max(rounds.held) <= result.max_held <= capacity


# -- property ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    strategy: str
    replicas: int
    gpus: int
    slots: int
    """Routes the node holds: capacity = slots * gpus + extra (extra < gpus fits no route)."""
    extra: int = 0
    surge: int | str = 1
    unavailable: int | str = 0
    fallback: str = "replace"
    fail_new: str = "none"
    on_deadline: str = "rollback"
    startup: float = 1.0
    jitter: float = 0.25
    seed: int = 0
    deadline: float = 12.0

    @property
    def capacity(self) -> int:
        return self.slots * self.gpus + self.extra

    def options(self) -> SimulationOptions:
        return SimulationOptions(
            strategy=self.strategy, replicas=self.replicas, max_surge=self.surge, max_unavailable=self.unavailable,
            auto_promote=True, startup_seconds=self.startup, fail_new=self.fail_new, seed=self.seed,
            jitter=self.jitter, progress_deadline_seconds=self.deadline, on_deadline=self.on_deadline,
            capacity=self.capacity, gpus_per_route=self.gpus, capacity_fallback=self.fallback,
        )


int_or_percent = st.one_of(st.integers(0, 2), st.sampled_from(["0%", "25%", "50%", "100%"]))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    d = draw(st.integers(1, 5))
    gpus = draw(st.integers(1, 2))
    surge, unavailable = draw(int_or_percent), draw(int_or_percent)
    if surge in (0, "0%") and unavailable in (0, "0%"):
        unavailable = draw(st.sampled_from([0, 1])) if surge not in (0, "0%") else 1
    return Case(
        strategy=draw(st.sampled_from(["rolling", "rolling", "blue_green", "recreate"])),
        replicas=d,
        gpus=gpus,
        slots=draw(st.integers(d, 2 * d + 1)),
        extra=draw(st.integers(0, gpus - 1)),
        surge=surge,
        unavailable=unavailable,
        fallback=draw(st.sampled_from(["replace", "wait"])),
        fail_new=draw(st.sampled_from(["none", "none", "none", "start", "unhealthy"])),
        on_deadline=draw(st.sampled_from(["rollback", "pause"])),
        startup=draw(st.sampled_from([0.5, 1.0, 2.0, 3.0])),
        jitter=draw(st.sampled_from([0.0, 0.25, 0.5])),
        seed=draw(st.integers(0, 10_000)),
        deadline=draw(st.sampled_from([10.0, 15.0])),
    )


@PROPS
@given(cases())
@example(Case("rolling", replicas=4, gpus=1, slots=4))  # C == D: no spare slot at all
@example(Case("rolling", replicas=3, gpus=2, slots=3, extra=1, startup=2.0, seed=5))  # C == D*g + 1
@example(Case("rolling", replicas=5, gpus=1, slots=5, surge="25%", unavailable="0%", jitter=0.5, seed=9))
@example(Case("rolling", replicas=2, gpus=1, slots=2, fallback="wait", on_deadline="pause"))
@example(Case("blue_green", replicas=2, gpus=2, slots=3))
@example(Case("recreate", replicas=3, gpus=1, slots=3, fail_new="start"))
def test_capacity_is_never_exceeded_and_rollouts_never_deadlock(case: Case) -> None:
    result, rounds = simulate(case.options())
    check_devices(result, rounds, case.capacity)
    ended = events(result)

    # Every rollout ends: none is stuck (every policy here has a deadline).
    assert result.outcome in ("completed", "rolled_back", "paused"), result.outcome
    assert result.final_revision == ("v2" if result.outcome == "completed" else "v1")
    if case.fail_new == "start":
        assert result.outcome != "completed"
    if case.fail_new != "none":
        return

    d, fits_beside = case.replicas, case.slots - case.replicas  # routes of room beside the old ones
    if case.strategy == "rolling":
        limits = resolve_rolling_limits(case.surge, case.unavailable, d)
        stuck = case.fallback == "wait" and limits.unavailable == 0 and (fits_beside == 0 or limits.surge == 0)
        if not stuck:
            assert result.outcome == "completed", ended
        else:
            assert result.outcome == ("paused" if case.on_deadline == "pause" else "rolled_back"), ended
            assert any(WAITING in e for e in ended), ended
            assert any("progress_deadline" in e for e in ended) or result.outcome == "paused", ended
        if case.fallback == "wait":
            assert not any(FORCED in e for e in ended), ended
    elif case.strategy == "recreate":
        assert result.outcome == "completed", ended
    else:  # blue-green
        if fits_beside >= d:
            assert result.outcome == "completed", ended
        else:
            assert result.outcome == ("paused" if case.on_deadline == "pause" else "rolled_back"), ended
            assert any(NO_FIT in e for e in ended), ended
            assert all(row["routes"]["v1"]["terminating"] == 0 for row in result.timeline)
            assert result.min_serving >= d


# -- table tests ---------------------------------------------------------------------------------------


def test_rolling_with_no_spare_slot_completes_one_route_at_a_time() -> None:
    """D = 4 on 4 gpu, the default rolling policy (surge 25%, unavailable 0, replace)."""
    result, rounds = simulate(SimulationOptions(replicas=4, capacity=4))
    check_devices(result, rounds, 4)

    assert (result.outcome, result.final_revision, result.max_held) == ("completed", "v2", 4)
    assert result.min_serving >= 3  # D - 1 at worst
    assert result.max_alive == 4
    forced = [row for row in result.timeline if any(FORCED in e for e in row["events"])]
    assert len(forced) >= 2
    # One forced replacement per old route: the last one needs none (its slot frees by the plain rule)
    # or all four are forced; never more than D.
    assert len(forced) <= 4
    assert all(row["held"] <= 4 for row in result.timeline)


def test_rolling_with_spare_room_never_forces_a_replacement() -> None:
    result, rounds = simulate(SimulationOptions(replicas=4, capacity=5))
    check_devices(result, rounds, 5)
    assert (result.outcome, result.max_held, result.min_serving) == ("completed", 5, 4)
    assert not any(FORCED in e for e in events(result))


def test_two_gpus_per_route_count_units_not_routes() -> None:
    result, rounds = simulate(SimulationOptions(replicas=3, capacity=7, gpus_per_route=2))
    check_devices(result, rounds, 7)
    assert (result.outcome, result.max_held) == ("completed", 6)  # the 7th unit never fits a route
    assert any(FORCED in e and "needs gpu 2" in e for e in events(result))


@pytest.mark.parametrize(("on_deadline", "outcome"), [("rollback", "rolled_back"), ("pause", "paused")])
def test_rolling_wait_with_no_spare_slot_ends_by_the_deadline(on_deadline: str, outcome: str) -> None:
    opts = SimulationOptions(replicas=3, capacity=3, capacity_fallback="wait", progress_deadline_seconds=10,
                             on_deadline=on_deadline)
    result, rounds = simulate(opts)
    check_devices(result, rounds, 3)

    assert (result.outcome, result.final_revision) == (outcome, "v1")
    assert result.min_serving == 3 and result.max_alive == 3  # no route was touched
    said = events(result)
    assert any(WAITING in e for e in said), said
    assert not any(FORCED in e for e in said)
    if on_deadline == "rollback":
        assert any("progress_deadline" in e for e in said), said
    assert result.timeline[-1]["t"] >= 10


def test_blue_green_completes_when_green_fits_beside_blue() -> None:
    result, rounds = simulate(SimulationOptions(strategy="blue_green", replicas=3, capacity=6, auto_promote=True))
    check_devices(result, rounds, 6)
    assert (result.outcome, result.final_revision, result.max_held, result.min_serving) == ("completed", "v2", 6, 3)


def test_blue_green_without_room_waits_and_never_terminates_blue() -> None:
    opts = SimulationOptions(strategy="blue_green", replicas=3, capacity=3, auto_promote=True,
                             progress_deadline_seconds=10)
    result, rounds = simulate(opts)
    check_devices(result, rounds, 3)

    assert (result.outcome, result.final_revision, result.max_held) == ("rolled_back", "v1", 3)
    said = events(result)
    assert any(WAITING in e and NO_FIT in e for e in said), said
    assert all(row["routes"]["v1"] == {"provisioning": 0, "ready": 3, "unready": 0, "terminating": 0, "failed": 0}
               for row in result.timeline)
    assert result.min_serving == 3


def test_without_capacity_nothing_is_counted() -> None:
    result = asyncio.run(run_simulation(SimulationOptions(replicas=2)))
    assert result.max_held is None
    assert {row["held"] for row in result.timeline} == {None}


def test_zero_gpus_per_route_needs_nothing() -> None:
    result, rounds = simulate(SimulationOptions(replicas=3, capacity=2, gpus_per_route=0))
    assert (result.outcome, result.max_held, result.max_alive) == ("completed", 0, 4)
    assert set(rounds.held) == {0} and rounds.problems == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"capacity": -1}, "capacity: -1 is negative"),
        ({"capacity": 4, "gpus_per_route": -1}, "gpus_per_route: -1 is negative"),
        ({"gpus_per_route": 1}, "gpus_per_route: needs a capacity"),
        ({"capacity": 4, "gpus_per_route": 5}, "gpus_per_route: 5 is over the capacity 4"),
        ({"replicas": 3, "capacity": 5, "gpus_per_route": 2}, "capacity: 5 cannot hold the 3 v1 routes"),
    ],
)
def test_options_that_cannot_be_simulated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        asyncio.run(run_simulation(SimulationOptions(**options)))
    assert str(err.value).startswith(message)


def test_device_problems_names_what_is_wrong() -> None:
    """The simulation's own check (`InvariantBroken` when it finds something) on states the control
    layer must never produce."""
    from datetime import UTC, datetime

    now = datetime(2024, 1, 1, tzinfo=UTC)
    runtime = SimulatedRuntime(lambda: now, resources={GPU: 2})
    runtime.devices.allocate("a", {GPU: 1})

    def row(route_id: str, status: RouteStatus, holds: int) -> RouteRecord:
        return RouteRecord(
            id=route_id, deployment_id=1, revision=1, status=status, health=Health.HEALTHY,
            traffic=Traffic.ACTIVE, traffic_ratio=1.0, failed=False, address=None, pid=None, identity=None,
            health_failures=0, health_successes=0, created_at=now, status_updated_at=now, drain_until=None,
            detail=None, holds={GPU: holds}, devices={GPU: (1,)},
        )

    rows = [row("a", RouteStatus.RUNNING, 1), row("b", RouteStatus.PROVISIONING, 2)]
    problems = device_problems(runtime, rows, 2)
    assert problems == [
        "the routes plan to hold 3 gpu, over the capacity 2",
        "gpu 1 is listed by two alive routes, a and b",
        "gpu 0 is held by route a, whose row does not list it",
    ]
    assert issubclass(InvariantBroken, AssertionError)
