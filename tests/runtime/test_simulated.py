"""SimulatedRuntime's upkeep and exit reports: deterministic, driven by its own clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rollwise.runtime.base import ExitReport, LaunchSpec, RouteHandle, Runtime
from rollwise.runtime.simulated import SimBehaviour, SimFailure, SimulatedRuntime


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make() -> tuple[Clock, SimulatedRuntime]:
    clock = Clock()
    runtime = SimulatedRuntime(
        lambda: clock.now,
        {2: SimBehaviour(startup_seconds=3, failure=SimFailure.START)},
        default=SimBehaviour(startup_seconds=1),
    )
    return clock, runtime


def launch(route_id: str, revision: int = 1, ports: tuple[str, ...] = ()) -> LaunchSpec:
    return LaunchSpec(route_id, "demo", revision, ("serve", "{port}", "{port.grpc}"), {"GRPC": "{port.grpc}"}, ports)


async def test_is_a_runtime_and_maintain_does_nothing() -> None:
    _, runtime = make()
    assert isinstance(runtime, Runtime)
    handle = await runtime.start(launch("r-1"))
    await runtime.maintain()
    assert await runtime.is_running(handle) and runtime.running_route_ids() == {"r-1"}


async def test_extra_ports_are_accepted() -> None:
    clock, runtime = make()
    handle = await runtime.start(launch("r-1", ports=("grpc", "metrics")))
    clock.advance(1)
    assert await runtime.listening(handle.address, timeout=1)


async def test_a_start_failure_reports_exit_code_1_once_it_has_exited() -> None:
    clock, runtime = make()
    handle = await runtime.start(launch("r-1", revision=2))
    assert await runtime.exit_report(handle) == ExitReport(None)  # still starting
    clock.advance(3)
    assert not await runtime.is_running(handle)
    report = await runtime.exit_report(handle)
    assert report == ExitReport(1, ("simulated: exited before listening",))
    assert report.describe() == "exit code 1"
    assert (await runtime.exit_report(handle, lines=0)).log_tail == ()
    await runtime.stop(handle, grace_seconds=1)  # stopping what had already exited changes nothing
    assert await runtime.exit_report(handle) == report


async def test_a_crash_is_a_sigkill() -> None:
    clock, runtime = make()
    handle = await runtime.start(launch("r-1"))
    clock.advance(5)
    runtime.crash("r-1")
    report = await runtime.exit_report(handle)
    assert report == ExitReport(-9, ("simulated: crashed",)) and report.describe() == "killed by signal 9 (SIGKILL)"


async def test_routes_stopped_by_rollwise_or_unknown_report_no_code() -> None:
    clock, runtime = make()
    running = await runtime.start(launch("r-1"))
    failing = await runtime.start(launch("r-2", revision=2))
    clock.advance(1)
    await runtime.stop(running, grace_seconds=1)
    await runtime.stop(failing, grace_seconds=1)  # stopped before it would have exited by itself
    clock.advance(10)
    assert await runtime.exit_report(running) == ExitReport(None)
    assert await runtime.exit_report(failing) == ExitReport(None)
    assert await runtime.exit_report(RouteHandle("unknown", "sim:1", 1, "sim-unknown")) == ExitReport(None)


async def test_exit_reports_are_deterministic() -> None:
    reports = []
    for _ in range(2):
        clock, runtime = make()
        handles = [await runtime.start(launch(f"r-{i}", revision=1 + i % 2)) for i in range(4)]
        clock.advance(4)
        runtime.crash("r-0")
        reports.append([await runtime.exit_report(h) for h in handles])
    assert reports[0] == reports[1]
    assert [r.code for r in reports[0]] == [-9, 1, None, 1]
