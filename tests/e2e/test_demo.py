"""`rollwise demo` (what `make demo` runs) end to end: three rollouts under real traffic, exit 0, the
exact last line, and no process left behind. `rollwise demo --gpus 4` likewise: one rolling rollout on
a node with no spare gpu slot, its device checks passed (exit 0), and its summary line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_runs_three_rollouts_without_a_failed_request() -> None:
    rollwise = str(Path(sys.executable).with_name("rollwise"))
    done = subprocess.run([rollwise, "demo", "--rate", "60"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo: 3 rollouts, (\d+) requests, (\d+) failed", last)
    assert m, last
    assert int(m.group(1)) > 300 and int(m.group(2)) == 0
    for label, outcome in (("v2", "completed"), ("v3", "completed"), ("v4", "rolled_back")):
        assert re.search(rf"{label}: .* rollout: {outcome}", done.stdout), done.stdout[-3000:]
    assert_nothing_left()


def test_demo_gpus_rolls_out_with_no_spare_slot_and_checks_the_devices() -> None:
    rollwise = str(Path(sys.executable).with_name("rollwise"))
    done = subprocess.run([rollwise, "demo", "--gpus", "4", "--rate", "60"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"demo --gpus 4: 1 rollout, (\d+) requests, (\d+) failed, max (\d+) of 4 gpu held", last)
    assert m, last
    assert int(m.group(1)) > 100 and int(m.group(2)) == 0
    assert int(m.group(3)) == 4  # the node was full all along: the rollout had no spare slot
    assert "check failed" not in done.stdout and re.search(r"v2: .* rollout.*: completed", done.stdout)
    assert_nothing_left()


def assert_nothing_left() -> None:
    # Traefik names its data dir in argv, route processes in their environment: neither may be left.
    leftovers = subprocess.run(["pgrep", "-f", "rollwise-demo-"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout
    marker = f"ROLLWISE_DATA_DIR={Path(tempfile.gettempdir()).resolve()}/rollwise-demo-".encode()
    assert not [pid for pid, env in environments() if marker in env]


def environments() -> list[tuple[int, bytes]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    out.append((int(entry), f.read()))
            except OSError:
                pass
    return out
