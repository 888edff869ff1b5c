"""Route logs: copy-truncate rotation by `maintain`, retention of old logs, private file modes."""

from __future__ import annotations

import os
import re
import stat
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rollwise.runtime import _logs
from rollwise.runtime.local import LocalRuntime

from .support import PY, SLEEPER, logged, spec, wait_for, wait_ready, wait_ready_or_exit

LIMIT = 2048

# Says "ready", then for each file <gate>.<n> that appears writes 100 numbered lines and "burst <n> done".
# Quiet between bursts, so the test knows exactly what the file holds when it rotates.
BURSTS = textwrap.dedent(
    """
    import os, sys, time
    gate, n, burst = sys.argv[1], 0, 0
    print("ready", flush=True)
    while True:
        if os.path.exists(f"{gate}.{burst}"):
            for _ in range(100):
                print(f"line {n:06d} " + "x" * 40, flush=True)
                n += 1
            print(f"burst {burst} done", flush=True)
            burst += 1
        else:
            time.sleep(0.01)
    """
)
# Writes numbered lines until stopped (a line every 0.2 ms: chatty, yet kind to a shared machine's disk).
CHATTY = (
    PY,
    "-c",
    "import itertools, time\nfor n in itertools.count():\n    print(f'line {n:08d} ' + 'y' * 40, flush=True)\n"
    "    time.sleep(0.0002)",
)


@pytest.fixture
async def small_logs(tmp_path: Path, pids: list[int]) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(tmp_path / "data", grace_seconds=1.0, max_log_bytes=LIMIT, log_backups=2, resources={})
    yield rt
    await rt.close()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Rotation ----------------------------------------------------------------------------------------------


async def test_rotation_keeps_the_limit_and_the_backups_and_the_route_writes_on(
    small_logs: LocalRuntime, pids: list[int], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    handle = await small_logs.start(spec("r-1", (PY, "-c", BURSTS, str(gate))))
    pids.append(handle.pid or 0)
    await wait_ready_or_exit(small_logs, handle)
    live = small_logs.log_path("r-1")
    logs_dir = live.parent
    for burst in range(4):
        Path(f"{gate}.{burst}").touch()
        await wait_for(logged(small_logs, "r-1", f"burst {burst} done"))
        assert live.stat().st_size > LIMIT
        await small_logs.maintain()
        assert live.stat().st_size == 0  # the route is quiet between bursts: truncated, nothing lost
        backup = live.with_name("r-1.log.1").read_text().splitlines()
        assert backup[-1] == f"burst {burst} done" and backup[-2].startswith(f"line {burst * 100 + 99:06d} ")
        assert backup[0].startswith("--- rollwise ") and "log rotation dropped the first" in backup[0]
        assert live.with_name("r-1.log.1").stat().st_size <= LIMIT + len(backup[0]) + 1
        expected = ["r-1.log", "r-1.log.1", "r-1.log.2"][: min(burst, 1) + 2]
        assert names(logs_dir) == expected
    assert "burst 2 done" in live.with_name("r-1.log.2").read_text()
    assert await small_logs.is_running(handle)
    # The route's descriptor is O_APPEND: after the truncation it writes at the start of the live file.
    Path(f"{gate}.4").touch()
    await wait_for(logged(small_logs, "r-1", "burst 4 done"))
    content = live.read_bytes()
    assert content.startswith(b"line 000400 ") and b"\0" not in content
    await small_logs.maintain()
    assert names(logs_dir) == ["r-1.log", "r-1.log.1", "r-1.log.2"]


async def test_rotation_under_a_route_that_never_stops_writing(small_logs: LocalRuntime, pids: list[int]) -> None:
    handle = await small_logs.start(spec("r-1", CHATTY))
    pids.append(handle.pid or 0)
    live = small_logs.log_path("r-1")
    for _ in range(3):
        await wait_for(lambda: live.stat().st_size > LIMIT)
        await small_logs.maintain()
    size_after = live.stat().st_size
    await wait_for(lambda: live.stat().st_size > size_after)  # still writing into the live file
    await small_logs.stop(handle, grace_seconds=1)
    numbers = []
    for name in ("r-1.log.2", "r-1.log.1", "r-1.log"):
        data = live.with_name(name).read_bytes()
        assert b"\0" not in data  # no hole: writes never landed past the end after a truncation
        for line in data.decode().splitlines():
            if line.startswith("--- rollwise "):
                continue
            assert re.fullmatch(r"line \d{8} y{40}", line), line
            numbers.append(int(line.split()[1]))
    # Oldest to newest across the backups: increasing (lines written in the copy window may be missing).
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


async def test_leftover_logs_are_rotated_and_surplus_backups_removed(tmp_path: Path, pids: list[int]) -> None:
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    (logs_dir / "gone.log").write_bytes(b"".join(b"old line %05d\n" % n for n in range(1000)))
    for number in (1, 2, 5):  # .5: left from a time log_backups was larger
        (logs_dir / f"gone.log.{number}").write_text(f"backup {number}\n")
    (logs_dir / "small.log").write_text("under the limit\n")
    (logs_dir / "notes.txt").write_text("x" * 10_000)
    rt = LocalRuntime(tmp_path, max_log_bytes=LIMIT, log_backups=2, resources={})
    await rt.maintain()
    assert names(logs_dir) == ["gone.log", "gone.log.1", "gone.log.2", "notes.txt", "small.log"]
    assert (logs_dir / "gone.log").stat().st_size == 0
    assert (logs_dir / "gone.log.1").read_text().endswith("old line 00999\n")
    assert (logs_dir / "gone.log.2").read_text() == "backup 1\n"
    assert (logs_dir / "small.log").read_text() == "under the limit\n"
    assert (logs_dir / "notes.txt").stat().st_size == 10_000


async def test_no_backups_means_the_content_is_dropped(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path, max_log_bytes=100, log_backups=0, resources={})
    (tmp_path / "logs" / "x.log").write_text("z" * 500)
    await rt.maintain()
    assert names(tmp_path / "logs") == ["x.log"] and (tmp_path / "logs" / "x.log").stat().st_size == 0


# Retention ---------------------------------------------------------------------------------------------


async def test_old_logs_of_routes_no_longer_here_are_removed(tmp_path: Path, pids: list[int]) -> None:
    rt = LocalRuntime(tmp_path, grace_seconds=1, log_retention_seconds=3600, resources={})
    handle = await rt.start(spec("running", SLEEPER))
    pids.append(handle.pid or 0)
    logs_dir, routes_dir = tmp_path / "logs", tmp_path / "routes"
    two_hours_ago = time.time() - 7200
    for name in ("gone.log", "gone.log.1", "gone.log.2", "orphan-backup.log.1", "registered.log", "mixed.log"):
        (logs_dir / name).write_text("x\n")
    (logs_dir / "mixed.log.1").write_text("recent\n")
    (logs_dir / "recent.log").write_text("recent\n")
    (logs_dir / "notes.txt").write_text("not a route log\n")
    (routes_dir / "registered.json").write_text("{}")  # a route of a previous server, maybe still running
    for name in [*names(logs_dir)]:
        if name not in ("mixed.log.1", "recent.log"):
            os.utime(logs_dir / name, (two_hours_ago, two_hours_ago))
    await rt.maintain()
    assert names(logs_dir) == ["mixed.log", "mixed.log.1", "notes.txt", "recent.log", "registered.log", "running.log"]
    await rt.stop(handle, grace_seconds=1)


async def test_no_retention_keeps_every_log(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path, log_retention_seconds=None, resources={})
    old = tmp_path / "logs" / "gone.log"
    old.write_text("x\n")
    os.utime(old, (0, 0))
    await rt.maintain()
    assert old.exists()


# File modes --------------------------------------------------------------------------------------------


async def test_directories_and_files_are_private(small_logs: LocalRuntime, pids: list[int]) -> None:
    old_umask = os.umask(0o022)
    try:
        handle = await small_logs.start(spec("r-1", (PY, "-c", "print('ready' + 'x' * 5000, flush=True)\nimport time; time.sleep(60)")))
    finally:
        os.umask(old_umask)
    pids.append(handle.pid or 0)
    await wait_ready(small_logs, "r-1")
    await small_logs.maintain()
    data = small_logs.data_dir
    assert mode(data / "logs") == 0o700 and mode(data / "routes") == 0o700
    for path in (small_logs.log_path("r-1"), data / "logs" / "r-1.log.1", small_logs.registry_path("r-1")):
        assert mode(path) == 0o600, path


async def test_modes_left_by_an_older_version_are_fixed(tmp_path: Path) -> None:
    logs_dir, routes_dir = tmp_path / "logs", tmp_path / "routes"
    logs_dir.mkdir(mode=0o755)
    routes_dir.mkdir(mode=0o755)
    files = [logs_dir / "old.log", logs_dir / "old.log.1", routes_dir / "old.json"]
    for path in files:
        path.write_text("{}")
        path.chmod(0o644)
    (logs_dir / "notes.txt").write_text("")
    (logs_dir / "notes.txt").chmod(0o644)
    rt = LocalRuntime(tmp_path, resources={})
    assert mode(logs_dir) == 0o700 and mode(routes_dir) == 0o700
    assert [mode(path) for path in files] == [0o600] * 3
    assert mode(logs_dir / "notes.txt") == 0o644  # not ours
    # A log that appears later with a wider mode (e.g. copied in by hand) is fixed by the next upkeep.
    late = logs_dir / "late.log"
    late.write_text("")
    late.chmod(0o644)
    await rt.maintain()
    assert mode(late) == 0o600


# The rotation primitive, without processes ----------------------------------------------------------------


def test_rotate_copies_the_tail_from_a_line_start(tmp_path: Path) -> None:
    live = tmp_path / "a.log"
    live.write_bytes(b"".join(b"%04d\n" % n for n in range(100)))  # 500 bytes
    _logs.rotate(live, backups=3, keep_bytes=52)
    backup = (tmp_path / "a.log.1").read_text().splitlines()
    assert backup[1:] == [f"{n:04d}" for n in range(90, 100)]
    assert backup[0].startswith("--- rollwise ") and "dropped the first 450 bytes" in backup[0]
    assert live.read_bytes() == b""
