"""Time as a seam: every time reading and every wait of the coordinator, the route controller and the
proxy supervisor goes through a `Clock`. `SystemClock` is real time (servers, the demo, end-to-end tests);
`ManualClock` is fake time that moves only when told (`rollwise simulate`, the control and API tests).

Called by the coordinator, the route controller, the proxy supervisor, `Operations` and the simulated
runtime (through `now`). Strategies and the control rules never read a clock: `now` is passed to them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall-clock time, timezone-aware (UTC): stored timestamps, deadlines, probe ages."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals between rounds, purges, requeues)."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Return when `event` is set (True) or after `timeout` seconds of this clock (False)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout)
        except TimeoutError:
            pass
        return event.is_set()


@dataclass(eq=False)
class _Timer:
    deadline: datetime
    fired: asyncio.Future[None]
    task: asyncio.Task[Any] | None


class ManualClock:
    """Fake time: it moves only by `advance`. A `wait` returns when its event is set or once the clock has
    been advanced past its timeout, never because real time passed. Tests that run the coordinator loop
    in the background use `waiting(task)` to advance only once that loop is idle on the clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._now = self._start
        self._timers: list[_Timer] = []
        self._timer_added: asyncio.Event | None = None

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        """Seconds since the clock's start (fake)."""
        return (self._now - self._start) / timedelta(seconds=1)

    def advance(self, seconds: float) -> None:
        """Move time forward; the waits whose timeout has passed return."""
        self._now += timedelta(seconds=seconds)
        due = [t for t in self._timers if t.deadline <= self._now]
        self._timers = [t for t in self._timers if t.deadline > self._now]
        for timer in due:
            if not timer.fired.done():
                timer.fired.set_result(None)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        if timeout <= 0:
            await asyncio.sleep(0)  # still a point where other tasks run, as a real wait would be
            return event.is_set()
        loop = asyncio.get_running_loop()
        timer = _Timer(self._now + timedelta(seconds=timeout), loop.create_future(), asyncio.current_task())
        self._timers.append(timer)
        if self._timer_added is not None:
            self._timer_added.set()
        woken = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((woken, timer.fired), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            timer.fired.cancel()
            if timer in self._timers:
                self._timers.remove(timer)
        return event.is_set()

    async def waiting(self, task: asyncio.Task[Any]) -> float:
        """Return once `task` waits on this clock (it is idle until time moves or it is woken); the fake
        seconds left until that wait times out."""
        while True:
            for timer in self._timers:
                if timer.task is task and not timer.fired.done():
                    return max(0.0, (timer.deadline - self._now) / timedelta(seconds=1))
            if task.done():
                task.result()  # its exception, if it failed
                raise RuntimeError("the task ended without waiting on the clock")
            self._timer_added = self._timer_added or asyncio.Event()
            self._timer_added.clear()
            ended = asyncio.ensure_future(asyncio.wait((task,)))
            added = asyncio.ensure_future(self._timer_added.wait())
            try:
                await asyncio.wait((ended, added), return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                added.cancel()
