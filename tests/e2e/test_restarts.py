"""A server restart is invisible to clients, and secrets stay in: `rollwise server` (token in its
environment, another secret beside it) is killed with SIGKILL under load and started again; the proxy it
started keeps serving (the new server adopts it: same pid), no request fails, and neither the route
processes nor Traefik ever saw the server's variables."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from rollwise.cli.demo import free_port
from rollwise.cli.loadgen import LoadGenerator

from .server_proc import ServerProcess, environment_of, route_processes, traefik_pid
from .test_crash import NAME, revision, wait_ready

SECRETS = {"ROLLWISE_TOKEN", "MODEL_REGISTRY_PASSWORD"}


async def test_kill_9_and_restart_under_load_lose_no_request(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port(), token_in_env=True,
                           env={"MODEL_REGISTRY_PASSWORD": "hunter2"})
    await asyncio.to_thread(server.start)
    try:
        with server.client() as client:
            created = client.post("/v1/deployments", json={"name": NAME, "replicas": 2, "revision": revision("v1")})
            assert created.status_code == 201, created.text
            await asyncio.to_thread(wait_ready, client)
        routes = route_processes(server.data_dir)
        proxy = traefik_pid(server.data_dir)
        assert len(routes) == 2 and proxy is not None
        for pid in [*routes, proxy]:
            env = environment_of(pid)
            assert not SECRETS & set(env), (pid, sorted(env))
            assert env["ROLLWISE_DATA_DIR"] == str(server.data_dir.resolve())

        url = f"http://127.0.0.1:{server.proxy_port}/d/{NAME}/predict"
        async with LoadGenerator(url, rate=100) as load:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.kill)
            killed = time.monotonic()
            await asyncio.sleep(0.5)  # nobody manages the routes now: the proxy and routes serve alone
            await asyncio.to_thread(server.start, wait=False)
            health = await asyncio.to_thread(server.wait_healthy, 30.0, "any")
            answered = time.monotonic() - killed - 0.5
            await asyncio.to_thread(server.wait_healthy, 30.0, "active")
            await asyncio.sleep(1.5)
        stats = load.stats
        print(f"restarted server answered /healthz {answered:.2f}s after its start ({health['role']}); "
              f"{stats.sent} requests, {stats.failed} failed")
        assert stats.sent > 200 and stats.failed == 0, dict(stats.errors)
        assert traefik_pid(server.data_dir) == proxy, "the proxy was replaced instead of adopted"
        assert route_processes(server.data_dir) == routes
        with server.client() as client:
            assert client.get(f"/v1/deployments/{NAME}").json()["lifecycle"] == "ready"
    finally:
        status = await asyncio.to_thread(server.stop)
    assert status == 0
    deadline = time.monotonic() + 10
    while route_processes(server.data_dir) or _alive(proxy):
        assert time.monotonic() < deadline, "a clean stop left processes behind"
        await asyncio.sleep(0.1)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_healthz_answers_while_the_server_starts(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", api_port=free_port(), proxy_port=free_port())
    server.start(wait=False)
    try:
        began = time.monotonic()
        body = server.wait_healthy(timeout=30.0, role="any")
        print(f"/healthz answered {time.monotonic() - began:.2f}s after the process started: {body}")
        assert body["role"] in ("starting", "active") and body["status"] == "ok"
        assert server.wait_healthy(timeout=30.0, role="active")["proxy"] == "up"
        assert httpx.get(f"{server.url}/metrics").text.count("rollwise_proxy_up 1.0") == 1
    finally:
        assert server.stop() == 0
