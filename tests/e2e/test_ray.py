"""`rollwise server --runtime ray` end to end: a real server process on a two-node local Ray cluster with
fake GPUs (2 per node), Traefik in front. A 4-replica deployment needing one GPU per route spreads over
both nodes (the node is full), a rolling update with the default surge and no spare GPU completes with 0
failed requests through the proxy, and each route process's CUDA_VISIBLE_DEVICES is the one Ray gave it.
Then the server is killed (kill -9) and restarted: it adopts every actor by name. A second test removes a
worker node mid-rollout: its routes are terminated as lost (not failed: no rollback), their processes die
with their actors, and the rollout completes on the nodes left. Skipped without the `ray` extra."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray_cluster import start_cluster, start_worker_cluster  # sets the variables Ray reads on import

pytest.importorskip("ray", reason="Ray is not installed (pip install 'rollwise[ray]')")

from rollwise.cli.demo import free_port  # noqa: E402

from .conftest import model_revision, pid_alive  # noqa: E402
from .server_proc import BackgroundLoad, ServerProcess, environment_of, traefik_pid, wait_for  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.timeout(300)]


def ray_server(data_dir: Path, address: str, **kw: Any) -> ServerProcess:
    """`rollwise server --runtime ray --ray-address ADDRESS`."""
    return ServerProcess(data_dir, api_port=free_port(), proxy_port=free_port(),
                         extra_args=("--runtime", "ray", "--ray-address", address), **kw)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with start_cluster() as address:
        yield address


def settled(client: Any, revision: int, replicas: int = 4) -> dict[str, Any] | None:
    dep = client.get("/v1/deployments/chat").json()
    alive = [r for r in dep["routes"] if r["status"] in ("provisioning", "running", "terminating")]
    ready = dep["lifecycle"] == "ready" and dep["current_revision"] == revision
    return dep if ready and len(alive) == replicas and all(r["ready"] for r in alive) else None


def gpus_of(dep: dict[str, Any]) -> list[tuple[str, str]]:
    """(node, CUDA_VISIBLE_DEVICES of the route's own process) of every route."""
    return sorted((r["node"], environment_of(r["pid"]).get("CUDA_VISIBLE_DEVICES", "?")) for r in dep["routes"])


def test_a_full_gpu_cluster_rolls_out_and_a_restarted_server_adopts_every_actor(
    tmp_path: Path, cluster: str
) -> None:
    server = ray_server(tmp_path / "data", cluster)
    try:
        server.start(wait=False)
        server.wait_healthy(timeout=60, role="active")  # joining the cluster comes first
        with server.client() as client:
            nodes = client.get("/v1/capacity").json()["nodes"]
            assert sorted(n["total"].get("gpu", 0) for n in nodes) == [2, 2]
            revision = {**model_revision("v1"), "resources": {"gpu": 1}, "startup_timeout_seconds": 60}
            created = client.post("/v1/deployments", json={"name": "chat", "replicas": 4, "revision": revision})
            assert created.status_code == 201, created.text
            dep = wait_for("4 ready routes of v1", lambda: settled(client, 1), server, 90)
            placed = gpus_of(dep)
            assert len({node for node, _ in placed}) == 2  # spread over both nodes
            assert sorted(gpu for _, gpu in placed) == ["0", "0", "1", "1"]  # as Ray gave them, per node
            assert len(set(placed)) == 4
            with BackgroundLoad(f"http://127.0.0.1:{server.proxy_port}/d/chat/predict", rate=40) as load:
                v2 = client.post("/v1/deployments/chat/revisions",
                                 json={**revision, "command": model_revision("v2")["command"], "label": "v2"})
                assert v2.status_code == 201, v2.text
                assert client.post("/v1/deployments/chat/rollout", json={"revision": 2}).status_code == 202
                dep = wait_for("v2 rolled out", lambda: settled(client, 2), server, 180)
            assert load.stats.sent > 0 and load.stats.failed == 0, dict(load.stats.errors)
            assert len(set(gpus_of(dep))) == 4
            history = [h["message"] for h in client.get("/v1/deployments/chat/history").json()]
            assert any("capacity: replacing one r1 route at a time" in m for m in history), history
            before = {r["id"]: r["pid"] for r in dep["routes"]}
        server.kill()
        server.start(wait=False)
        server.wait_healthy(timeout=60, role="active")
        with server.client() as client:
            dep = wait_for("adopted", lambda: settled(client, 2), server, 90)
            assert {r["id"]: r["pid"] for r in dep["routes"]} == before  # the same processes, adopted
    finally:
        server.stop()


def test_a_standby_with_its_own_data_dir_takes_over_and_adopts_the_actors(
    tmp_path: Path, cluster: str, pg_database: str
) -> None:
    """The HA story across machines: the standby shares only the database and the Ray cluster (its own
    data directory, as on another machine: no pid file, registry or proxy of the first is visible to it)."""
    first = ray_server(tmp_path / "a-data", cluster, database=pg_database, log_name="a.log")
    second = ray_server(tmp_path / "b-data", cluster, database=pg_database, log_name="b.log")
    try:
        first.start(wait=False)
        first.wait_healthy(timeout=60, role="active")
        second.start(wait=False)
        second.wait_healthy(timeout=60, role="standby")
        with first.client() as a:
            revision = {**model_revision("v1"), "resources": {"gpu": 1}, "startup_timeout_seconds": 60}
            assert a.post("/v1/deployments", json={"name": "chat", "replicas": 2, "revision": revision}).status_code == 201
            dep = wait_for("2 ready routes", lambda: settled(a, 1, 2), first, 90)
            before = {r["id"]: r["pid"] for r in dep["routes"]}
        first.kill()
        second.wait_healthy(timeout=60, role="active")
        with second.client() as b:
            dep = wait_for("adopted by the standby", lambda: settled(b, 1, 2), second, 60)
            assert {r["id"]: r["pid"] for r in dep["routes"] if r["status"] == "running"} == before
            history = [h["message"] for h in b.get("/v1/deployments/chat/history").json()]
            assert not any("lost" in m for m in history), history
        # Its own proxy serves the adopted routes.
        answer = wait_for("served through the standby's proxy", lambda: _served(second), second, 30)
        assert answer.status_code == 200
    finally:
        second.stop()
        first.stop()
        orphan = traefik_pid(tmp_path / "a-data")  # the killed server's proxy (its machine would be gone)
        if orphan is not None:
            os.kill(orphan, signal.SIGKILL)


def _served(server: ServerProcess) -> Any:
    try:
        r = httpx.post(f"http://127.0.0.1:{server.proxy_port}/d/chat/predict", json={"text": "fine"}, timeout=5)
    except httpx.HTTPError:
        return None
    return r if r.status_code == 200 else None


def test_a_node_lost_mid_rollout_has_its_routes_replaced_on_the_nodes_left(tmp_path: Path) -> None:
    with start_worker_cluster(3) as cluster:  # a head without GPUs and 3 workers of 2 GPUs
        server = ray_server(tmp_path / "data", str(cluster.address))
        try:
            server.start(wait=False)
            server.wait_healthy(timeout=60, role="active")
            with server.client() as client:
                revision = {**model_revision("v1"), "resources": {"gpu": 1}, "startup_timeout_seconds": 60}
                created = client.post("/v1/deployments", json={"name": "chat", "replicas": 4, "revision": revision})
                assert created.status_code == 201, created.text
                wait_for("4 ready routes of v1", lambda: settled(client, 1), server, 90)
                v2 = client.post("/v1/deployments/chat/revisions",
                                 json={**revision, "command": model_revision("v2")["command"], "label": "v2"})
                assert v2.status_code == 201, v2.text
                assert client.post("/v1/deployments/chat/rollout", json={"revision": 2}).status_code == 202

                def mid_rollout() -> dict[str, Any] | None:
                    dep = client.get("/v1/deployments/chat").json()
                    running = [r for r in dep["routes"] if r["status"] == "running" and r["node"]]
                    return dep if any(r["revision"] == 2 for r in running) and dep["lifecycle"] == "deploying" else None

                dep = wait_for("a v2 route running", mid_rollout, server, 90)
                workers = {node.node_id: node for node in cluster.list_all_nodes() if not node.head}
                alive = [r for r in dep["routes"] if r["status"] in ("provisioning", "running") and r["node"] in workers]
                victim = max(workers, key=lambda n: sum(r["node"] == n for r in alive))
                doomed = {r["id"]: r["pid"] for r in alive if r["node"] == victim}
                assert doomed, alive
                cluster.remove_node(workers[victim], allow_graceful=False)

                dep = wait_for("v2 rolled out on the nodes left", lambda: settled(client, 2), server, 180)
                assert victim not in {r["node"] for r in dep["routes"] if r["status"] == "running"}
                ended = {r["id"]: r for r in dep["routes"] if r["id"] in doomed}
                for r in ended.values():  # those not purged yet say why
                    assert r["status"] == "terminated" and "lost with its node" in (r["detail"] or ""), r
                for pid in doomed.values():  # gone with its actor's worker (no orphan holding the port and GPU)
                    wait_for(f"process {pid} gone", lambda: not pid_alive(pid), server, 30)
                history = [h["message"] for h in client.get("/v1/deployments/chat/history").json()]
                assert any(m.startswith("node lost:") for m in history), history
                assert not any("rolling back" in m or "rolled back" in m for m in history), history
                nodes = client.get("/v1/capacity").json()["nodes"]
                assert sorted(n["total"].get("gpu", 0) for n in nodes) == [0, 2, 2]
        finally:
            server.stop()

