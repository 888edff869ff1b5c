"""Crash loops are bounded: a route that fails to start or exits is replaced with an exponential back-off
(1 s doubling to 5 min), the deployment says why (`last_error`: exit code and last output), and history
holds one merged row naming the cause instead of one row per attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rollwise.control.rules.restarts import BACKOFF_MAX, compute_restart_backoff, hold_creates
from rollwise.model import Decision, Health, Lifecycle, Mode, RouteCreate, RouteStatus, SubStep, Traffic
from rollwise.runtime.simulated import SimBehaviour, SimFailure
from rollwise.store.records import RouteRecord

from .conftest import OpenScenario
from .harness import TICK, Scenario

BROKEN = {1: SimBehaviour(startup_seconds=0.5, failure=SimFailure.START)}


def start_gaps(routes: list[Any]) -> list[float]:
    times = sorted(r.created_at for r in routes)
    return [(b - a) / timedelta(seconds=1) for a, b in zip(times, times[1:])]


async def test_a_revision_that_never_starts_backs_off_and_says_why(open_scenario: OpenScenario) -> None:
    sc: Scenario = await open_scenario(behaviours=BROKEN)
    await sc.create(replicas=1)
    await sc.steps(int(200 / TICK))  # 200 simulated seconds

    routes = await sc.routes()
    # Without back-off a route fails every ~2 rounds: ~200 of them. With it: 1, 2, 4, ... 128 s apart.
    assert 6 <= len(routes) <= 10, [r.created_at for r in routes]
    gaps = start_gaps(routes)
    assert all(later >= 1.8 * earlier for earlier, later in zip(gaps[1:], gaps[2:])), gaps
    dep = await sc.dep()
    assert dep.lifecycle is Lifecycle.SCALING  # never ready, still trying
    assert dep.last_error is not None
    assert "exit code 1" in dep.last_error and "simulated: exited before listening" in dep.last_error
    rows = [h for h in await sc.history() if "replacing failed routes" in h.message]
    assert len(rows) == 1, [h.message for h in await sc.history()]
    assert rows[0].attempts == len(routes) - 1 and "exit code 1" in rows[0].message


def failed_route(route_id: str, ended_at: datetime, revision: int = 1) -> RouteRecord:
    return RouteRecord(
        id=route_id, deployment_id=1, revision=revision, status=RouteStatus.FAILED_TO_START, health=Health.NOT_CHECKED,
        traffic=Traffic.INACTIVE, traffic_ratio=0.0, failed=True, address=None, pid=None, identity=None,
        health_failures=0, health_successes=0, created_at=ended_at, status_updated_at=ended_at, drain_until=None,
        detail=f"failed {route_id}",
    )


def test_the_back_off_doubles_caps_at_five_minutes_and_resets_after_ten() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in (0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 811)]
    routes = [failed_route(f"f{i}", when) for i, when in enumerate(at)]
    now = at[-1] + timedelta(seconds=1)
    backoff = compute_restart_backoff(routes, 1, now)
    assert backoff.failures == 11 and backoff.latest is not None and backoff.latest.id == "f10"
    assert backoff.not_before == at[-1] + timedelta(seconds=BACKOFF_MAX)  # 2 ** 10 s, capped
    assert [compute_restart_backoff(routes[:n], 1, at[n - 1]).remaining(at[n - 1]) for n in (1, 2, 3, 4)] == [
        1.0, 2.0, 4.0, 8.0]
    # Another revision's failures do not count; ten quiet minutes reset; a ten-minute gap ends a streak.
    assert compute_restart_backoff(routes, 2, now).failures == 0
    assert compute_restart_backoff(routes, 1, at[-1] + timedelta(seconds=600)).failures == 0
    late = failed_route("late", at[-1] + timedelta(seconds=700))
    assert compute_restart_backoff([*routes, late], 1, late.status_updated_at).failures == 1


def test_hold_creates_keeps_terminations_and_asks_to_look_again() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    backoff = compute_restart_backoff([failed_route("f", t0)], 1, t0)
    decision = Decision(sub_step=SubStep.PROVISIONING, mode=Mode.ROLLING_BACK, reason="r",
                        create=(RouteCreate("r1", Traffic.ACTIVE, 1.0),), terminate=("x",))
    held = hold_creates(decision, backoff, t0 + timedelta(seconds=0.25))
    assert held.create == () and held.terminate == ("x",) and held.requeue_after == 0.75
    assert hold_creates(decision, backoff, t0 + timedelta(seconds=1)) is decision


async def test_a_crash_in_ready_is_replaced_after_a_second_and_clears_later(sc: Scenario) -> None:
    await sc.ready(replicas=2)
    victim = (await sc.alive())[0]
    sc.runtime.crash(victim.id)
    await sc.run_until_sample("svc", lambda s: victim.id not in s.route_ids and s.serving == 2)
    dep = await sc.dep()
    assert dep.lifecycle is Lifecycle.READY
    assert dep.last_error is not None and "killed by signal 9" in dep.last_error
    replacement = max(await sc.routes(), key=lambda r: r.created_at)
    crashed = next(r for r in await sc.routes() if r.id == victim.id)
    waited = (replacement.created_at - crashed.status_updated_at) / timedelta(seconds=1)
    assert 1.0 <= waited <= 1.0 + 2 * TICK, waited

    sc.clock.advance(600)  # ten minutes without a failure: the error is history
    await sc.steps(2)
    assert (await sc.dep()).last_error is None
