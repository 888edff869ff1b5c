"""Shared fixtures of the end-to-end tests: a real control plane (SQLite file, local processes, the real
Traefik binary) running in the test's event loop, and helpers to wait for lifecycle states."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rollwise.cli.demo import free_port
from rollwise.cli.serve import Plane, ServerConfig, build_plane, running
from rollwise.control.coordinator import Intervals
from rollwise.store.records import DeploymentRecord

pytestmark = pytest.mark.e2e


def model_revision(label: str, *extra: str, drain: float = 0.3) -> dict[str, Any]:
    return {
        "command": [sys.executable, "-m", "rollwise.examples.model_server", "--port", "{port}", "--version", label,
                    *extra],
        "health_check": {"path": "/healthz", "interval_seconds": 0.3, "timeout_seconds": 1, "unhealthy_threshold": 2},
        "startup_timeout_seconds": 15,
        "drain_seconds": drain,
        "stop_grace_seconds": 3,
        "label": label,
    }


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    config = ServerConfig(
        data_dir=tmp_path / "data",
        proxy_port=free_port(),
        runtime="local",
        intervals=Intervals(short=0.02, long=2.0, routes=0.1),
    )
    async with build_plane(config) as p, running(p):
        yield p


async def wait_until(
    plane: Plane, name: str, pred: Callable[[DeploymentRecord], bool], timeout: float = 40.0
) -> DeploymentRecord:
    deadline = time.monotonic() + timeout
    while True:
        dep = await plane.ops.get(name)
        if pred(dep):
            return dep
        if time.monotonic() > deadline:
            history = [h.message for h in await plane.ops.history(name)]
            raise AssertionError(f"timed out; {dep.lifecycle} {dep.sub_step}; history: {history[-6:]}")
        await asyncio.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# PostgreSQL for the tests of servers that share a database (takeover, Ray standby) ----------------------

PG_URL = os.environ.get("ROLLWISE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def pg_dsn(url: str, database: str | None = None) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    if database is not None:
        dsn = dsn.rsplit("/", 1)[0] + f"/{database}"
    return dsn


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_dsn(PG_URL, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    name = f"rollwise_takeover_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not available: {e}")
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
