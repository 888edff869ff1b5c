"""RayRuntime on a real two-node local Ray cluster with fake GPUs (2 per node): placement across nodes,
CUDA_VISIBLE_DEVICES as Ray assigned, capacity, a route that does not fit, stop freeing its GPU,
adoption by name after a "restart" and exit reports. Skipped when Ray (the `ray` extra) is not installed.

The cluster is started once for the module with the environment that keeps Ray on 127.0.0.1 and quick
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, RAY_AUTH_MODE=disabled, a short RAY_TMPDIR for its sockets), and is
shut down at the end even when a test fails; every test stops its actors (and their processes) in
`finally`, each in its own namespace.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from ray_cluster import start_cluster  # noqa: E402  (sets the variables Ray reads on import)

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'rollwise[ray]')")

import httpx  # noqa: E402

from rollwise.runtime.base import DevicesBusy, LaunchSpec, RouteHandle, RuntimeFailure  # noqa: E402
from rollwise.runtime.ray import RayRuntime, actor_name, actor_options, node_totals  # noqa: E402

from .support import MODEL_SERVER, is_gone  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]



@pytest.fixture(scope="module")
def cluster_address() -> Iterator[str]:
    with start_cluster() as address:
        yield address


def gpu_spec(route_id: str, gpus: int = 1) -> LaunchSpec:
    return LaunchSpec(route_id=route_id, deployment="demo", revision=1, command=(*MODEL_SERVER, "--port", "{port}"),
                      resources={"gpu": gpus})


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.1)


async def version(address: str) -> dict[str, object] | None:
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            answer = await client.get(f"http://{address}/version")
        return dict(answer.json()) if answer.status_code == 200 else None
    except httpx.HTTPError:
        return None


async def answers(address: str) -> bool:
    return await version(address) is not None


def kill_namespace(namespace: str) -> None:
    """Last-resort clean-up: kill every actor left in the namespace (a child still running is SIGKILLed
    by its test through the pids it recorded)."""
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace:
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
            except ValueError:
                pass


def kill_pids(pids: list[int]) -> list[int]:
    left = [pid for pid in pids if not is_gone(pid)]
    for pid in left:
        os.killpg(pid, signal.SIGKILL)
    return left


def test_ray_resources_map_to_slots_and_back() -> None:
    ray_node = {"CPU": 8.0, "GPU": 2.0, "memory": 1e10, "object_store_memory": 1e9, "node:127.0.0.1": 1.0,
                "node:__internal_head__": 1.0, "accelerator_type:A100": 1.0, "ssd": 3.0, "bundle_group_0_ab": 1.0}
    assert node_totals(ray_node) == {"gpu": 2, "ssd": 3}
    options = actor_options("route-x", "ns", {"gpu": 1, "ssd": 2})
    assert options["num_gpus"] == 1 and options["resources"] == {"ssd": 2.0} and options["num_cpus"] == 0.1
    assert (options["name"], options["namespace"], options["lifetime"], options["max_restarts"]) == (
        "route-x", "ns", "detached", 0)


def test_capacity_lists_every_node_with_its_gpus(cluster_address: str) -> None:
    nodes = RayRuntime(cluster_address).capacity()
    assert len(nodes) == 2
    assert [dict(n.total) for n in nodes] == [{"gpu": 2}, {"gpu": 2}]
    assert len({n.name for n in nodes}) == 2


async def test_routes_spread_over_the_nodes_and_stop_frees_the_gpu(cluster_address: str) -> None:
    namespace = "rw-spread"
    rt = RayRuntime(cluster_address, namespace, place_timeout=30)
    pids: list[int] = []
    try:
        handles = list(await asyncio.gather(*(rt.start(gpu_spec(f"a{i}")) for i in range(4))))
        pids += [h.pid for h in handles if h.pid]
        by_node: dict[str | None, list[RouteHandle]] = {}
        for h in handles:
            by_node.setdefault(h.node, []).append(h)
        assert sorted(by_node) == sorted(n.name for n in rt.capacity())  # both nodes
        for on_node in by_node.values():
            assert sorted(dict(h.devices)["gpu"] for h in on_node) == [(0,), (1,)]
        for h in handles:
            assert h.address.startswith("127.0.0.1:")
            assert h.identity.startswith(actor_name(h.route_id) + ":")
            await wait_for(lambda h=h: answers(h.address), f"{h.route_id} answers")
            facts = await version(h.address)
            assert facts is not None
            assert facts["cuda_visible_devices"] == str(h.devices["gpu"][0])
            assert facts["resources"] == {"gpu": list(h.devices["gpu"])}
            assert await rt.is_running(h)

        # More GPUs than any node has: refused at once, nothing created.
        with pytest.raises(RuntimeFailure, match="no node of the Ray cluster has that much"):
            await rt.start(gpu_spec("big", gpus=3))
        # A fifth route does not fit: refused after the placement timeout, its actor not left pending.
        impatient = RayRuntime(cluster_address, namespace, place_timeout=2)
        with pytest.raises(DevicesBusy, match="not placed within 2s"):
            await impatient.start(gpu_spec("a4"))
        assert actor_name("a4") not in {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)}

        # Stopping one frees its GPU: the fifth is then placed on that node, on that index.
        first = handles[0]
        await rt.stop(first, grace_seconds=5)
        assert not await rt.is_running(first)
        assert is_gone(first.pid or 0)
        fifth = await rt.start(gpu_spec("a4"))
        pids += [fifth.pid or 0]
        assert (fifth.node, dict(fifth.devices)) == (first.node, dict(first.devices))
        await wait_for(lambda: answers(fifth.address), "the fifth route answers")
        await rt.stop(first, grace_seconds=5)  # idempotent
    finally:
        await rt.close()
        kill_namespace(namespace)
        assert not kill_pids(pids), "processes left behind"


async def test_adoption_by_name_and_exit_report(cluster_address: str) -> None:
    namespace = "rw-adopt"
    before = RayRuntime(cluster_address, namespace, place_timeout=30)
    after: RayRuntime | None = None
    pids: list[int] = []
    try:
        kept, stray = await asyncio.gather(before.start(gpu_spec("k")), before.start(gpu_spec("s")))
        pids += [kept.pid or 0, stray.pid or 0]
        await wait_for(lambda: answers(kept.address), "the kept route answers")
        await wait_for(lambda: answers(stray.address), "the stray route answers")

        # The server "restarts" (the first runtime is dropped without close): a new runtime finds the
        # actor of the handle it is given by name, and stops the one no handle names.
        after = RayRuntime(cluster_address, namespace)
        assert await after.adopt([kept]) == {"k"}
        names = {e["name"] for e in ray.util.list_named_actors(all_namespaces=True) if e["namespace"] == namespace}
        assert names == {actor_name("k")}
        assert is_gone(stray.pid or 0)
        assert await after.is_running(kept) and await answers(kept.address)
        # A handle from another start under the same name is not this actor.
        assert not await after.is_running(RouteHandle("k", kept.address, kept.pid, identity="route-k:other"))

        # The route's process is killed behind the runtime's back: reported gone, with how it ended.
        os.kill(kept.pid or 0, signal.SIGKILL)

        async def gone() -> bool:
            assert after is not None
            return not await after.is_running(kept)

        await wait_for(gone, "the killed route is reported gone")
        report = await after.exit_report(kept)
        assert report.code == -signal.SIGKILL
        assert report.describe() == "killed by signal 9 (SIGKILL)"
        await after.stop(kept, grace_seconds=1)
        assert not {e["name"] for e in ray.util.list_named_actors(all_namespaces=True) if e["namespace"] == namespace}
        gone_report = await after.exit_report(kept)
        assert gone_report.code is None and "actor is gone" in gone_report.log_tail[0]
    finally:
        if after is not None:
            await after.close()
        await before.close()
        kill_namespace(namespace)
        assert not kill_pids(pids), "processes left behind"
