"""Time is injected: the clock's waits, and the coordinator loop and the proxy supervisor running on a
ManualClock (fake time moves only when the test moves it; no real time is waited for)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rollwise.cli.serve import ServerConfig, build_plane
from rollwise.control.clock import ManualClock, SystemClock
from rollwise.control.coordinator import CycleKind, Intervals
from rollwise.control.supervisor import ProxySupervisor
from rollwise.traffic.base import NoTraffic


async def idle(clock: ManualClock, task: asyncio.Task[object]) -> float:
    """`clock.waiting(task)`, bounded in real time: a task that waits for real fails the test."""
    return await asyncio.wait_for(clock.waiting(task), timeout=10)


async def settle() -> None:
    """Let every task that can run, run (a few turns of the event loop, no time)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_manual_wait_ends_when_time_is_advanced_past_it_or_its_event_is_set() -> None:
    clock = ManualClock()
    event = asyncio.Event()
    waiter = asyncio.create_task(clock.wait(event, 2.0))
    assert await idle(clock, waiter) == 2.0
    clock.advance(1.5)
    await settle()
    assert not waiter.done()
    assert await idle(clock, waiter) == pytest.approx(0.5)
    clock.advance(0.5)
    assert await waiter is False
    assert clock.monotonic() == 2.0

    waiter = asyncio.create_task(clock.wait(event, 60.0))
    await idle(clock, waiter)
    event.set()
    assert await waiter is True
    assert clock.monotonic() == 2.0  # woken, not timed out: no time passed
    assert await clock.wait(event, 60.0) is True


async def test_the_system_clock_waits_for_real() -> None:
    clock = SystemClock()
    started = clock.monotonic()
    assert await clock.wait(asyncio.Event(), 0.01) is False
    assert clock.monotonic() - started >= 0.01
    event = asyncio.Event()
    event.set()
    assert await clock.wait(event, 60.0) is True


async def test_the_coordinator_loop_runs_on_its_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    intervals = Intervals(short=0.05, long=5.0, routes=0.2)
    config = ServerConfig(data_dir=tmp_path, runtime="simulated", proxy=False, intervals=intervals)
    async with build_plane(config, clock=clock) as plane:
        coordinator = plane.coordinator
        rounds: list[float] = []
        replica_cycles: list[float] = []
        coordinator.route_observers.append(lambda _: rounds.append(clock.monotonic()))
        coordinator.observers.append(
            lambda report, _: replica_cycles.append(clock.monotonic())
            if report.kind is CycleKind.CHECK_REPLICAS else None
        )
        stop = asyncio.Event()
        loop = asyncio.create_task(coordinator.run_forever(stop))
        try:
            # Idle: one round, then a wait of `routes` seconds of the clock, and nothing until it moves.
            assert await idle(clock, loop) == pytest.approx(0.2)
            seen = len(rounds)
            await settle()
            assert len(rounds) == seen
            clock.advance(0.2)
            await idle(clock, loop)
            assert len(rounds) == seen + 1

            # A mark wakes it at once, without time moving; the marked cycle runs in that round.
            at = clock.monotonic()
            coordinator.mark(CycleKind.CHECK_REPLICAS)
            await settle()
            await idle(clock, loop)
            assert rounds[-1] == at and replica_cycles[-1] == at

            # Unmarked, a cycle runs again once `long` seconds of the clock have passed.
            while clock.monotonic() < at + 6.0:
                clock.advance(await idle(clock, loop))
            assert [t for t in replica_cycles if t > at] == [pytest.approx(at + 5.0)]
        finally:
            stop.set()
            coordinator.wake()
            await loop


class DeadProxy(NoTraffic):
    """A traffic layer whose proxy is always down; counts the restarts asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    @property
    def running(self) -> bool:
        return False

    async def ensure_running(self) -> bool:
        self.asked += 1
        return True


async def test_the_proxy_supervisor_checks_on_its_clock() -> None:
    clock = ManualClock()
    proxy = DeadProxy()
    woken: list[float] = []
    supervisor = ProxySupervisor(proxy, clock=clock, interval=0.25, on_restart=lambda: woken.append(clock.monotonic()))
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    assert await idle(clock, task) == 0.25
    assert proxy.asked == 1
    await settle()
    assert proxy.asked == 1
    clock.advance(0.25)
    await idle(clock, task)
    assert proxy.asked == 2 and woken == [0.0, 0.25]
    stop.set()
    await task
