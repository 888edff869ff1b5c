"""Exit reports of the local runtime: exit status, signal, last lines of the route's own output."""

from __future__ import annotations

import dataclasses
import os
import signal
import textwrap
from pathlib import Path

import pytest

from rollwise.runtime import _logs
from rollwise.runtime.base import ExitReport, RouteHandle
from rollwise.runtime.local import LocalRuntime

from .support import PY, has_stopped, is_gone, route_of_a_killed_server, spec, wait_for, wait_ready


async def ended(runtime: LocalRuntime, route_id: str, script: str) -> RouteHandle:
    """Start a route running `script` and wait until its process is gone (as the controller sees it)."""
    handle = await runtime.start(spec(route_id, (PY, "-c", textwrap.dedent(script))))
    await wait_for(lambda: has_stopped(runtime, handle))
    return handle


def test_describe() -> None:
    assert ExitReport(0).describe() == "exit code 0"
    assert ExitReport(1).describe() == "exit code 1"
    assert ExitReport(-9).describe() == "killed by signal 9 (SIGKILL)"
    assert ExitReport(-15).describe() == "killed by signal 15 (SIGTERM)"
    assert ExitReport(-99).describe() == "killed by signal 99"
    assert ExitReport(None).describe() == "exit code unknown"
    assert ExitReport(None).log_tail == ()


async def test_exit_code_and_the_last_lines(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await ended(
        runtime,
        "r-1",
        """
        import sys
        print("loading model", flush=True)
        print("error: no GPU found", file=sys.stderr, flush=True)
        raise SystemExit(3)
        """,
    )
    pids.append(handle.pid or 0)
    report = await runtime.exit_report(handle)
    assert report == ExitReport(3, ("loading model", "error: no GPU found"))
    assert report.describe() == "exit code 3"


async def test_killed_by_a_signal(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await ended(
        runtime, "r-1", "import os, signal\nprint('about to be killed', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    pids.append(handle.pid or 0)
    report = await runtime.exit_report(handle)
    assert (report.code, report.log_tail) == (-signal.SIGKILL, ("about to be killed",))
    assert report.describe() == "killed by signal 9 (SIGKILL)"


async def test_the_tail_is_the_routes_own_lines_cut_short(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await ended(
        runtime,
        "r-1",
        r"""
        import sys
        for n in range(10):
            print(f"step {n}")
        print()
        print("\x1b[31mred\x1b[0m\tcolumn")
        print("progress 10%\rprogress 100%")
        print("w" * 500)
        print("", flush=True)
        raise SystemExit(1)
        """,
    )
    pids.append(handle.pid or 0)
    report = await runtime.exit_report(handle, lines=4)
    assert report.code == 1
    assert report.log_tail[:3] == ("step 9", "red column", "progress 100%")
    assert report.log_tail[3] == "w" * 199 + "…"
    assert all(len(line) <= _logs.LINE_CHARS for line in report.log_tail)
    assert (await runtime.exit_report(handle, lines=1)).log_tail == ("w" * 199 + "…",)
    assert (await runtime.exit_report(handle, lines=0)).log_tail == ()


async def test_rollwise_lines_and_earlier_runs_are_not_in_the_tail(runtime: LocalRuntime, pids: list[int]) -> None:
    first = await ended(runtime, "r-1", "print('first run', flush=True)")
    pids.append(first.pid or 0)
    assert (await runtime.exit_report(first)).log_tail == ("first run",)
    second = await runtime.start(spec("r-1", (PY, "-c", "print('ready second run', flush=True)\nimport time; time.sleep(60)")))
    pids.append(second.pid or 0)
    await wait_ready(runtime, "r-1")
    await runtime.stop(second, grace_seconds=1)
    log = runtime.log_path("r-1").read_text()
    assert log.count("--- rollwise ") == 3 and "stopped (exit code -15)" in log  # two starts, one stop
    report = await runtime.exit_report(second)
    assert report == ExitReport(-signal.SIGTERM, ("ready second run",))


async def test_a_just_rotated_log_gives_its_tail_from_the_backup(tmp_path: Path, pids: list[int]) -> None:
    runtime = LocalRuntime(tmp_path, max_log_bytes=64, resources={})
    handle = await ended(runtime, "r-1", "for n in range(20): print(f'output line {n}')\nraise SystemExit(2)")
    pids.append(handle.pid or 0)
    await runtime.maintain()
    assert runtime.log_path("r-1").stat().st_size == 0
    assert await runtime.exit_report(handle, lines=2) == ExitReport(2, ("output line 18", "output line 19"))


async def test_only_the_last_16_kib_are_read(tmp_path: Path) -> None:
    runtime = LocalRuntime(tmp_path, resources={})
    log = runtime.log_path("big")
    log.write_bytes(b"".join(b"line %07d\n" % n for n in range(200_000)))  # 2.6 MB
    report = await runtime.exit_report(RouteHandle("big", ""), lines=5000)
    assert report.code is None and report.log_tail[-1] == "line 0199999"
    assert 1000 < len(report.log_tail) <= _logs.TAIL_BYTES // len("line 0000000\n")


async def test_missing_files_and_unknown_routes_never_raise(runtime: LocalRuntime) -> None:
    assert await runtime.exit_report(RouteHandle("never-started", "")) == ExitReport(None)
    assert await runtime.exit_report(RouteHandle("gone", "127.0.0.1:1", 999_999, "proc1:x:1")) == ExitReport(None)
    assert await runtime.exit_report(RouteHandle("../../etc/passwd", "")) == ExitReport(None)


async def test_a_route_that_is_not_our_child_has_an_unknown_exit_code(tmp_path: Path, pids: list[int]) -> None:
    # A route started by another server process (killed with -9): its exit status goes to its new parent.
    handle = route_of_a_killed_server(tmp_path, pids)
    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    try:
        assert await runtime.adopt([handle]) == {"r-1"}
        await wait_ready(runtime, "r-1")
        os.kill(handle.pid or 0, signal.SIGKILL)
        await wait_for(lambda: is_gone(handle.pid or 0))
        report = await runtime.exit_report(handle)
        assert report == ExitReport(None, ("ready",)) and report.describe() == "exit code unknown"
    finally:
        await runtime.close()


@pytest.mark.parametrize("lines", [1, 5])
def test_exit_report_is_a_frozen_value(lines: int) -> None:
    report = ExitReport(1, ("a",) * lines)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.code = 2  # type: ignore[misc]
