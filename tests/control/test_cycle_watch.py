"""Cycles read only the deployments that may need a decision (control.coordinator.CycleWatch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollwise.control import coordinator

from rollwise.control.coordinator import Intervals, CycleWatch, StepReport
from rollwise.control.cycles import CycleKind, CycleReport

from .harness import Scenario, is_alive, revision


def ready_reads(step: StepReport) -> list[int]:
    """How many deployments each READY cycle of the round read."""
    return [c.deployments for c in step.cycles if c.kind is CycleKind.CHECK_REPLICAS]


def test_what_the_watch_asks_for() -> None:
    watch = CycleWatch()

    def to_read(written: set[int] | None, mono: float, *, full: bool = False) -> set[int] | None:
        watch.written(written)
        return watch.to_read(mono, full=full)

    assert to_read(set(), 0.0) is None  # nothing known yet: every one
    report = CycleReport(CycleKind.CHECK_REPLICAS, unsettled={3}, requeue={4: 10.0})
    assert watch.read(None, report, 0.0) == 10.0
    assert to_read({1}, 1.0) == {1, 3}  # written, unsettled; 4 not due yet
    assert watch.read({1, 3}, CycleReport(CycleKind.CHECK_REPLICAS), 1.0) == 10.0  # 3 settled now
    assert to_read(set(), 10.0) == {4}  # due
    watch.read({4}, CycleReport(CycleKind.CHECK_REPLICAS), 10.0)
    assert to_read(set(), 11.0) == set()
    assert to_read({7}, 12.0, full=True) is None  # a sweep reads every one
    assert to_read(None, 13.0) is None  # the feed lost track: every one


async def test_a_crash_is_repaired_reading_only_its_deployment(tmp_path: Path) -> None:
    sc = await Scenario.open(tmp_path, intervals=Intervals(sweep=30.0))
    try:
        for i in range(4):
            await sc.ready(f"svc{i}", replicas=2)
        sweep = await sc.coord.run_once(force=True)
        assert ready_reads(sweep) and max(ready_reads(sweep)) == 4
        sc.clock.advance(0.5)
        quiet = await sc.coord.run_once()
        assert max(ready_reads(quiet), default=0) == 0  # nothing written: nothing read

        dep = await sc.store.get_deployment("svc2")
        assert dep is not None
        victim = next(r for r in await sc.store.list_routes([dep.id]) if is_alive(r))
        sc.runtime.crash(victim.id)
        reads: list[int] = []
        for _ in range(20):
            sc.clock.advance(0.5)
            reads += ready_reads(await sc.coord.run_once())
            routes = await sc.store.list_routes([dep.id])
            if sum(1 for r in routes if is_alive(r) and r.id != victim.id) == 2 and all(
                r.status.value == "running" for r in routes if is_alive(r)
            ):
                break
        else:
            raise AssertionError("the crashed route was not replaced")
        assert reads and max(reads) == 1  # only svc2 was read

        sc.clock.advance(30.0)
        swept = await sc.coord.run_once()
        assert max(ready_reads(swept)) == 4  # the sweep reads every READY deployment
    finally:
        await sc.close()


async def unforced(sc: Scenario, rounds: int) -> list[StepReport]:
    """Rounds as a server runs them (nothing forced), the clock moving by half a second each."""
    steps = []
    for _ in range(rounds):
        steps.append(await sc.coord.run_once())
        sc.clock.advance(0.5)
    return steps


NO_SWEEP = Intervals(long=10_000.0, sweep=10_000.0)
"""No sweep within a test: what happens is what the watches asked for."""


async def test_a_rollout_completes_reading_only_the_deployments_it_concerns(tmp_path: Path) -> None:
    sc = await Scenario.open(tmp_path, intervals=NO_SWEEP)
    try:
        for name in ("moving", "paused", "idle"):
            await sc.ready(name, replicas=2)
        await sc.start_rollout("paused")
        await sc.ops.pause("paused")
        await sc.steps(2)
        await sc.start_rollout("moving")
        steps = await unforced(sc, 60)
        moving = await sc.store.get_deployment("moving")
        assert moving is not None and moving.current_revision == 2 and moving.deploying_revision is None
        deploying = [c.deployments for s in steps for c in s.cycles if c.kind is CycleKind.DEPLOYING]
        assert deploying and max(deploying) == 1  # "paused", settled and never written, is not read
        paused = await sc.store.get_deployment("paused")
        assert paused is not None and paused.deploying_revision == 2 and paused.paused
    finally:
        await sc.close()


async def test_a_deployment_waiting_for_room_gets_it_when_another_frees_it(tmp_path: Path) -> None:
    """Waiting for capacity is not settled: the cycle reads it every time until room frees up, although
    nothing is written about it."""
    sc = await Scenario.open(tmp_path, intervals=NO_SWEEP, resources={"gpu": 3})
    try:
        gpu = revision("v1", resources={"gpu": 1})
        await sc.create("first", replicas=1, rev=gpu)
        await sc.create("second", replicas=1, rev=gpu)
        await sc.run_until("first", lambda d: d.lifecycle.value == "ready")
        await sc.run_until("second", lambda d: d.lifecycle.value == "ready")
        await sc.ops.patch("second", replicas=2)
        await sc.ops.patch("first", replicas=2)
        await unforced(sc, 6)
        assert (len(await sc.alive("first")), len(await sc.alive("second"))) == (2, 1)  # no room for the second
        await sc.ops.patch("first", replicas=1)
        for _ in range(40):
            await unforced(sc, 1)
            if len([r for r in await sc.alive("second") if r.status.value == "running"]) == 2:
                break
        else:
            raise AssertionError("the waiting deployment did not get the room freed")
    finally:
        await sc.close()


async def test_a_sweep_goes_over_every_deployment_a_page_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator, "SWEEP_PAGE", 2)
    sc = await Scenario.open(tmp_path, intervals=NO_SWEEP)
    try:
        for i in range(5):
            await sc.ready(f"svc{i}", replicas=1)
        pages: list[tuple[int, int]] = []
        real = coordinator.run_cycle

        async def paged(*args: Any, **kwargs: Any) -> CycleReport:
            report = await real(*args, **kwargs)
            if args[1] is CycleKind.CHECK_REPLICAS and kwargs.get("limit"):
                routes = await sc.store.list_routes(report.evaluated)
                pages.append((report.deployments, len({r.deployment_id for r in routes if is_alive(r)})))
            return report

        monkeypatch.setattr(coordinator, "run_cycle", paged)
        step = await sc.coord.run_once(force=True)
        assert ready_reads(step)[0] == 5
        assert pages[:3] == [(2, 2), (2, 2), (1, 1)]  # 5 deployments in pages of 2, each with its routes
        # A deployment whose replica went missing is repaired whichever page it is on.
        dep = await sc.store.get_deployment("svc4")
        assert dep is not None
        (victim,) = [r for r in await sc.store.list_routes([dep.id]) if is_alive(r)]
        sc.runtime.crash(victim.id)
        for _ in range(20):
            await sc.step()
            alive = [r for r in await sc.store.list_routes([dep.id]) if is_alive(r)]
            if alive and alive[0].id != victim.id:
                break
        else:
            raise AssertionError("svc4's replica was not replaced")
    finally:
        await sc.close()


async def test_a_long_sweep_comes_less_often(tmp_path: Path) -> None:
    """Sweeps take at most 1/SWEEP_SHARE of the time: after a 10-s sweep the next one is 50 s away."""
    sc = await Scenario.open(tmp_path, intervals=Intervals(long=1.0, sweep=1.0))
    try:
        await sc.ready("a", replicas=1)
        sc.clock.advance(1.0)
        assert ready_reads(await sc.coord.run_once()) == [1]  # a sweep (1 s since the last)
        for watch in sc.coord._watches.values():
            watch.sweep_seconds = 10.0  # as if that sweep had taken 10 s
        reads = [ready_reads(s) for s in await unforced(sc, 96)]  # 48 s
        assert not any(r and max(r) for r in reads)
        reads = [ready_reads(s) for s in await unforced(sc, 8)]  # 52 s
        assert any(r and max(r) == 1 for r in reads)
    finally:
        await sc.close()
