"""The suite's safety net (tests/conftest.py) finds and stops what a failed test left: processes marked
with the test's data directory (route processes, Traefik) and processes naming it on their command line
(`rollwise server --data-dir ...`); nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sweep import processes_under, stop_processes_under


def test_marked_and_named_processes_are_stopped_others_are_not(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    marked = subprocess.Popen(sleeper, env={**os.environ, "ROLLWISE_DATA_DIR": str(data)})
    named = subprocess.Popen([*sleeper, "--data-dir", str(data)])
    other = subprocess.Popen(sleeper, env={**os.environ, "ROLLWISE_DATA_DIR": "/elsewhere"})
    try:
        assert set(processes_under(tmp_path)) == {marked.pid, named.pid}
        assert set(stop_processes_under(tmp_path)) == {marked.pid, named.pid}
        assert marked.wait(timeout=10) is not None and named.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for process in (marked, named, other):
            process.kill()
            process.wait()
