"""Finding and stopping the processes a test left behind (used by tests/conftest.py's safety net).

A process belongs to a test's directory when its ROLLWISE_DATA_DIR marker or its command line points
into it: route processes and Traefik carry the marker, `rollwise server` names `--data-dir`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

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
