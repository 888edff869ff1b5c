"""Writes are never refused for contention: a real `rollwise server` (simulated runtime, no proxy) whose
coordinator runs cycles all along, and 64 requests in flight at once creating 512 deployments, adding
revisions, starting rollouts, pausing, resuming and patching, over three waves. Every answer must be a 2xx or a real 4xx (a name taken,
a rollout already running); a 5xx — e.g. 503 `database is locked` from the server's own writers holding
the SQLite lock, or a PostgreSQL serialization failure — fails the test with its message.
On SQLite (a file in the data directory) and on PostgreSQL (a fresh database).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.cli.demo import free_port

from .server_proc import ServerProcess, wait_for

CLIENTS = 64
"""Requests in flight at once."""
ROUNDS = 4
READERS = 8
"""Clients reading the whole list over and over during waves 2 and 3."""
"""Requests per client in each wave of creates (the waves write CLIENTS x ROUNDS deployments)."""


def body(name: str, version: str = "v1") -> dict[str, Any]:
    return {"name": name, "replicas": 2, "policy": {"strategy": "rolling", "max_surge": 1},
            "revision": {"command": ["model-server", "--port", "{port}", "--version", version], "label": version}}


async def storm(server: ServerProcess) -> tuple[Counter[int], list[str]]:
    """The three waves; (answers by status, the 5xx answers' texts)."""
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    # Idle connections are dropped after 1 s, before the server's keep-alive timeout (5 s) closes them
    # under a request (an httpx.ReadError that would say nothing about the server).
    limits = httpx.Limits(max_connections=CLIENTS + READERS, max_keepalive_connections=CLIENTS + READERS,
                          keepalive_expiry=1.0)
    headers = {"Authorization": f"Bearer {server.token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=60) as client:

        async def call(method: str, path: str, json: Any = None) -> httpx.Response:
            answer = await client.request(method, path, json=json)
            statuses[answer.status_code] += 1
            if answer.status_code >= 500:
                failures.append(f"{method} {path}: {answer.status_code} {answer.text}")
            return answer

        # Wave 1: creates, 64 at a time (and 8 of them twice: a real 409 each).
        names = [f"busy-{i:03d}" for i in range(CLIENTS * ROUNDS)]
        await asyncio.gather(*(call("POST", "/v1/deployments", body(n)) for n in names + names[:8]))

        async def all_ready(number: int) -> bool:
            listed = (await client.get("/v1/deployments", params={"summary": "true", "limit": 1000})).json()
            return len(listed) >= len(names) and all(
                d["lifecycle"] == "ready" and d["current_revision"] == number and d["ready_replicas"] == 2
                for d in listed if d["name"] in names)

        for _ in range(600):
            if await all_ready(1):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"not all READY: {server.log_tail()}")

        # Readers too, as dashboards polling the full list: they keep the server's event loop busy, so a
        # write transaction holds the database longer (what made SQLite writers time out on its lock).
        reading = asyncio.Event()

        async def reader() -> None:
            while not reading.is_set():
                await call("GET", "/v1/deployments?limit=1000")

        readers = [asyncio.create_task(reader()) for _ in range(READERS)]

        # Wave 2: a revision and a rollout on each, and as many more creates, while the cycles run.
        async def revise_and_roll(name: str) -> None:
            rev = await call("POST", f"/v1/deployments/{name}/revisions", body(name, "v2")["revision"])
            if rev.status_code == 201:
                await call("POST", f"/v1/deployments/{name}/rollout", {"revision": rev.json()["number"]})

        await asyncio.gather(*(revise_and_roll(n) for n in names),
                             *(call("POST", "/v1/deployments", body(f"late-{i:03d}")) for i in range(len(names))))

        # Wave 3: while those rollouts run, a patch of each late one and a pause/resume of each busy one.
        async def pause_resume(name: str) -> None:
            await call("POST", f"/v1/deployments/{name}/pause")
            await call("POST", f"/v1/deployments/{name}/resume")

        await asyncio.gather(*(call("PATCH", f"/v1/deployments/late-{i:03d}", {"replicas": 1}) for i in range(len(names))),
                             *(pause_resume(n) for n in names))
        reading.set()
        await asyncio.gather(*readers)
    return statuses, failures


def run_storm(server: ServerProcess) -> None:
    server.start()
    try:
        statuses, failures = asyncio.run(storm(server))
        assert not failures, f"{len(failures)} answers were 5xx, e.g. {failures[:3]}\n{server.log_tail()}"
        assert statuses[201] >= 3 * CLIENTS * ROUNDS and statuses[409] >= 8, statuses  # creates, revisions; 8 taken
        assert set(statuses) <= {200, 201, 202, 409}, statuses
        assert statuses[200] >= READERS, statuses
        # Every rollout started was carried out: the cycles kept up with the requests.
        with server.client() as client:
            wait_for("every rollout done", lambda: all(
                d["current_revision"] == 2 and d["lifecycle"] == "ready"
                for d in client.get("/v1/deployments", params={"limit": 1000, "summary": "true"}).json()
                if d["name"].startswith("busy-")), server, timeout=120)
    finally:
        server.stop()


def test_concurrent_writes_on_sqlite_are_never_refused(tmp_path: Path) -> None:
    run_storm(ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port(),
                            extra_args=("--runtime", "simulated", "--no-proxy")))


def test_concurrent_writes_on_postgresql_are_never_refused(tmp_path: Path, pg_database: str) -> None:
    run_storm(ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port(), database=pg_database,
                            extra_args=("--runtime", "simulated", "--no-proxy")))


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx must talk to 127.0.0.1 directly, whatever proxy the environment names.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
