"""Fixtures of the runtime tests: every process a test starts is gone when it ends, pass or fail."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rollwise.runtime.local import LocalRuntime

from .support import is_gone


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Every pid a test registers here must be gone when it ends (nothing left behind)."""
    seen: list[int] = []
    yield seen
    leftovers = [pid for pid in seen if pid and not is_gone(pid)]
    for pid in leftovers:
        os.killpg(pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
async def runtime(tmp_path: Path, pids: list[int]) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(tmp_path / "data", grace_seconds=1.0, resources={})
    yield rt
    await rt.close()
