"""Fixtures of the control-plane scenario tests (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from .harness import Scenario

OpenScenario = Callable[..., Awaitable[Scenario]]


@pytest.fixture
async def open_scenario(tmp_path: Path) -> AsyncIterator[OpenScenario]:
    """`await open_scenario(jitter=0.3, seed=1, ...)`: a scenario on a fresh SQLite file, closed after
    the test. Revisions start in 1 s unless a behaviour says otherwise."""
    opened: list[Scenario] = []

    async def open_(**kwargs: Any) -> Scenario:
        scenario = await Scenario.open(tmp_path / f"s{len(opened)}", **kwargs)
        opened.append(scenario)
        return scenario

    try:
        yield open_
    finally:
        for scenario in opened:
            await scenario.close()


@pytest.fixture
async def sc(open_scenario: OpenScenario) -> Scenario:
    """The default scenario: no startup jitter."""
    return await open_scenario()
