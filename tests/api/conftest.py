"""Fixtures of the REST API tests: a real control plane (simulated runtime, no proxy, a real SQLite file)
behind the FastAPI app, reached in-process with httpx's ASGI transport (helpers.py has the rest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rollwise.cli.serve import Plane

from .helpers import open_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Plane, httpx.AsyncClient]]:
    cm, plane, client = await open_api(tmp_path)
    try:
        yield plane, client
    finally:
        await client.aclose()
        await cm.__aexit__(None, None, None)


@pytest.fixture
def plane(api: tuple[Plane, httpx.AsyncClient]) -> Plane:
    return api[0]


@pytest.fixture
def client(api: tuple[Plane, httpx.AsyncClient]) -> httpx.AsyncClient:
    return api[1]
