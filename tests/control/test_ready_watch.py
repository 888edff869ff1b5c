"""The READY cycle reads only the deployments that may need a decision (control.coordinator.ReadyWatch)."""

from __future__ import annotations

from pathlib import Path

from rollwise.control.coordinator import Intervals, ReadyWatch, StepReport
from rollwise.control.cycles import CycleKind, CycleReport

from .harness import Scenario, is_alive


def ready_reads(step: StepReport) -> list[int]:
    """How many deployments each READY cycle of the round read."""
    return [c.deployments for c in step.cycles if c.kind is CycleKind.CHECK_REPLICAS]


def test_what_the_watch_asks_for() -> None:
    watch = ReadyWatch()
    assert watch.to_read(None, 0.0, full=False) is None  # nothing known yet: every one
    report = CycleReport(CycleKind.CHECK_REPLICAS, unsettled={3}, requeue={4: 10.0})
    assert watch.read(None, report, 0.0) == 10.0
    assert watch.to_read({1}, 1.0, full=False) == {1, 3}  # written, unsettled; 4 not due yet
    assert watch.read({1, 3}, CycleReport(CycleKind.CHECK_REPLICAS), 1.0) == 10.0  # 3 settled now
    assert watch.to_read(set(), 10.0, full=False) == {4}  # due
    watch.read({4}, CycleReport(CycleKind.CHECK_REPLICAS), 10.0)
    assert watch.to_read(set(), 11.0, full=False) == set()
    assert watch.to_read({7}, 12.0, full=True) is None  # a sweep reads every one
    assert watch.to_read(None, 13.0, full=False) is None  # the feed lost track: every one


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
