"""Suite-wide safety net: no test leaves a process behind, even when it fails.

Every process rollwise starts for a data directory carries it: route processes and Traefik have
`ROLLWISE_DATA_DIR=<dir>` in their environment, `rollwise server` has `--data-dir <dir>` on its command
line. After each test that used `tmp_path`, the processes whose marker or command line points into that
directory are stopped (SIGTERM, then SIGKILL); at the end of the session, the same for the whole pytest
base directory (module-scoped fixtures). Tests still stop what they start; this only catches a test
that failed before its own clean-up ran.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GRACE_SECONDS = 3.0


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def processes_under(root: Path) -> list[int]:
    """Live processes whose ROLLWISE_DATA_DIR marker or command line points into `root`."""
    needle = str(root.resolve()).encode()
    marker = b"ROLLWISE_DATA_DIR=" + needle
    skip = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if state == "Z":
            continue
        in_env = any(v.startswith(marker) for v in environ.split(b"\0"))
        if in_env or needle in cmdline:
            found.append(int(entry))
    return found


def stop_processes_under(root: Path) -> list[int]:
    """Stop (SIGTERM, then SIGKILL) every process `processes_under(root)` finds; returns their pids."""
    pids = processes_under(root)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and processes_under(root):
            time.sleep(0.05)
        if not processes_under(root):
            break
    return pids


@pytest.fixture(autouse=True)
def _stop_what_the_test_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp, Path):
        stop_processes_under(tmp)


@pytest.fixture(scope="session", autouse=True)
def _stop_what_the_session_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    stop_processes_under(tmp_path_factory.getbasetemp())
