"""Two real `rollwise server` processes on one PostgreSQL database: one active, one standby. The standby
serves reads and refuses writes; when the active server is killed with SIGKILL mid-rollout, the standby
takes over within 15 seconds, adopts the route processes it can verify, and finishes the rollout.
On SQLite a second server on the same database file refuses to start."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from rollwise.cli.demo import free_port

from .conftest import pg_dsn
from .server_proc import ROLLWISE, BackgroundLoad, ServerProcess, route_processes, traefik_pid
from .test_crash import NAME, check_consistent, revision

pytestmark = pytest.mark.e2e
async def _lost_routes(url: str) -> int:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM routes WHERE detail LIKE '%lost while%'"))
    finally:
        await conn.close()


def test_standby_takes_over_after_kill_9(tmp_path: Path, pg_database: str) -> None:
    data = tmp_path / "data"
    proxy_port = free_port()
    first = ServerProcess(data, api_port=free_port(), proxy_port=proxy_port, database=pg_database, log_name="a.log")
    second = ServerProcess(data, api_port=free_port(), proxy_port=proxy_port, database=pg_database, log_name="b.log")
    first.start()
    second.start(role="standby")
    try:
        with first.client() as a, second.client() as b:
            assert a.post("/v1/deployments", json={
                "name": NAME, "replicas": 2, "policy": {"strategy": "rolling", "max_surge": 1},
                "revision": revision("v1"),
            }).status_code == 201
            check_consistent(first, a, 1, 2)
            # The standby serves reads and refuses writes, naming the reason.
            assert b.get(f"/v1/deployments/{NAME}").json()["current_revision"] == 1
            refused = b.post(f"/v1/deployments/{NAME}/revisions", json=revision("v2"))
            assert refused.status_code == 503 and refused.json()["error"] == "server.standby"
            proxy = traefik_pid(data)
            with BackgroundLoad(f"http://127.0.0.1:{proxy_port}/d/{NAME}/predict") as load:
                number = a.post(f"/v1/deployments/{NAME}/revisions", json=revision("v2")).json()["number"]
                assert a.post(f"/v1/deployments/{NAME}/rollout", json={"revision": number}).status_code == 202
                time.sleep(0.8)
                before = route_processes(data)
                first.kill()
                t0 = time.monotonic()
                second.wait_healthy(timeout=15, role="active")
                assert time.monotonic() - t0 < 15
                check_consistent(second, b, 2, 2)
            # The standby adopted the proxy (same process): no client noticed the takeover.
            assert traefik_pid(data) == proxy
            assert load.stats.sent > 100 and load.stats.failed == 0, dict(load.stats.errors)
            # Every route process was verified and adopted: none was given up as lost.
            assert before
            assert asyncio.run(_lost_routes(pg_database)) == 0
    finally:
        second.stop()
        first.stop()
    deadline = time.monotonic() + 10
    while route_processes(data):
        assert time.monotonic() < deadline, "route processes outlived the servers"
        time.sleep(0.1)


def test_a_standby_with_another_data_dir_refuses_to_start(tmp_path: Path, pg_database: str) -> None:
    first = ServerProcess(tmp_path / "a", api_port=free_port(), proxy_port=free_port(), database=pg_database)
    first.start()
    try:
        other = subprocess.run(
            [ROLLWISE, "server", "--data-dir", str(tmp_path / "b"), "--api-port", str(free_port()),
             "--proxy-port", str(first.proxy_port), "--token", "t", "--database", pg_database],
            capture_output=True, text=True, timeout=60,
        )
        assert other.returncode != 0
        lines = [line for line in other.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "--data-dir" in lines[0] and str(tmp_path / "a") in lines[0], other.stderr
        assert "Traceback" not in other.stderr
        assert httpx.get(f"{first.url}/healthz").json()["role"] == "active"
    finally:
        assert first.stop() == 0


def test_second_server_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServerProcess(data, api_port=free_port(), proxy_port=free_port())
    first.start()
    try:
        other = subprocess.run(
            [ROLLWISE, "server", "--data-dir", str(data), "--api-port", str(free_port()),
             "--proxy-port", str(free_port()), "--token", "t"],
            capture_output=True, text=True, timeout=30,
        )
        assert other.returncode != 0
        lines = [line for line in other.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "in use by another rollwise server" in lines[0], other.stderr
        assert "Traceback" not in other.stderr
        assert httpx.get(f"{first.url}/healthz").json()["role"] == "active"
    finally:
        assert first.stop() == 0


async def _cut_lock_connection(url: str) -> int:
    conn = await asyncpg.connect(pg_dsn(url))
    try:
        pids = await conn.fetch("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        for row in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
        return len(pids)
    finally:
        await conn.close()


def test_server_that_loses_its_database_connection_stops_acting(tmp_path: Path, pg_database: str) -> None:
    data = tmp_path / "data"
    proxy_port = free_port()
    first = ServerProcess(data, api_port=free_port(), proxy_port=proxy_port, database=pg_database, log_name="a.log")
    second = ServerProcess(data, api_port=free_port(), proxy_port=proxy_port, database=pg_database, log_name="b.log")
    first.start()
    second.start(role="standby")
    try:
        assert asyncio.run(_cut_lock_connection(pg_database)) == 1
        assert first.proc is not None
        assert first.proc.wait(timeout=10) == 3  # stopped acting and exited at once
        second.wait_healthy(timeout=15, role="active")
    finally:
        second.stop()
        first.stop()
