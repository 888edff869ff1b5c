"""`RayRuntime`: routes on a Ray cluster, one detached named actor per route (docs/runtime.md, "Ray runtime").

Built by the CLI only for `rollwise server --runtime ray` (the optional extra `rollwise[ray]`); nothing
else in rollwise imports this module, so the core install never needs Ray. Like every runtime it never
imports the store, the traffic layer or the control layer.

A route is the actor `route-<route id>` in the namespace (default `rollwise`), created with
`lifetime="detached"` (it outlives the server), `max_restarts=0`, `num_cpus=0.1`, `num_gpus` = the
revision's `gpu` and every other resource as a Ray custom resource of the same name. The actor
(`_ray_actor.RouteProcess`) starts the command as a child process on its node, on free ports of the
node's IP. The handle: address `<node ip>:<port>`, pid = the child's pid on its node, identity
`<actor name>:<start token>` (a fresh token per start, so an actor created again under the same name is
not the one a handle names), node = the Ray node id, devices = {"gpu": the indices Ray gave the actor}.

Placement: `start` refuses at once (RuntimeFailure) what no alive node could ever hold, and gives up on an
actor not placed within `place_timeout` seconds (it kills it and raises DevicesBusy, transient): an actor
is never left pending. Capacity: one NodeCapacity per alive node, `GPU` as "gpu" plus the node's custom
resources (not Ray's own: CPU, memory, object store, `node:<ip>`, `accelerator_type:...`).

Ray calls that block (connecting, looking an actor up, listing named actors, killing) run in a worker
thread; actor method results are awaited, so the event loop never waits on the cluster. `capacity()` is
synchronous by protocol: it answers from a cache that `maintain()` refreshes, and reads the cluster
itself (a quick call to the local GCS client) only when the cache is older than `CAPACITY_TTL` or a
route's actor was found gone (its node may have died: the cycles that replace the route must not count
that node's slots as free, or they would create an actor no node can take).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from rollwise.runtime._ray_actor import RouteProcess
from rollwise.runtime.base import DevicesBusy, ExitReport, LaunchSpec, NodeCapacity, RouteHandle, RuntimeFailure
from rollwise.runtime.devices import GPU

log = logging.getLogger(__name__)

ACTOR_PREFIX = "route-"
"""Actor names are ACTOR_PREFIX + route id."""
ROUTE_CPUS = 0.1
"""The CPU share each route actor reserves, so many fit on a node."""
CAPACITY_TTL = 2.0
"""How long `capacity()` answers from its cache (seconds)."""
CALL_TIMEOUT = 15.0
"""How long a status call to an actor may take before the runtime gives up on it."""
KILL_MARGIN = 10.0
"""How much longer than its grace period a stop call may take (the actor's SIGKILL wait included)."""
_RAY_OWN = ("CPU", "memory", "object_store_memory")
_RAY_OWN_PREFIXES = ("node:", "accelerator_type:")

_RemoteRouteProcess: Any = ray.remote(RouteProcess)
_ray: Any = ray
"""Ray for the calls its stubs leave untyped (typed or not, mypy passes with and without Ray installed)."""
ActorHandle = Any
"""A `ray.actor.ActorHandle` of a route actor."""


def actor_name(route_id: str) -> str:
    return ACTOR_PREFIX + route_id


def node_totals(resources: Mapping[str, float]) -> dict[str, int]:
    """A Ray node's resources as rollwise slots: GPU -> gpu, custom resources as they are, Ray's own left out."""
    total: dict[str, int] = {}
    for name, amount in resources.items():
        if name in _RAY_OWN or name.startswith(_RAY_OWN_PREFIXES) or "_group_" in name:
            continue  # "_group_": placement group bundles, not a node's own resource
        units = int(amount)
        if units > 0:
            total[GPU if name == "GPU" else name] = units
    return dict(sorted(total.items()))


def actor_options(name: str, namespace: str, resources: Mapping[str, int]) -> dict[str, Any]:
    """The `.options(...)` of a route's actor (module docstring)."""
    custom = {k: float(v) for k, v in sorted(resources.items()) if k != GPU and v > 0}
    return {
        "name": name, "namespace": namespace, "lifetime": "detached", "max_restarts": 0,
        "max_concurrency": 4, "num_cpus": ROUTE_CPUS, "num_gpus": max(int(resources.get(GPU, 0)), 0),
        "resources": custom,
    }


class RayRuntime:
    """The Runtime protocol over a Ray cluster (module docstring). `address`: the cluster to join
    (`ray.init(address=...)`; None: RAY_ADDRESS or a local cluster, as Ray decides). If Ray is already
    initialised in this process, that connection is used and left open by `close`."""

    def __init__(
        self,
        address: str | None = None,
        namespace: str = "rollwise",
        *,
        place_timeout: float = 60.0,
        grace_seconds: float = 5.0,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.place_timeout = place_timeout
        self.grace_seconds = grace_seconds
        self._actors: dict[str, tuple[ActorHandle, str]] = {}
        """route id -> (actor, identity) of the routes this runtime started or adopted."""
        self._connect_lock = threading.Lock()
        self._owns_connection = False
        self._nodes: tuple[NodeCapacity, ...] = ()
        self._nodes_at = float("-inf")

    # Connection and capacity ---------------------------------------------------------------------

    def _connect_sync(self) -> None:
        with self._connect_lock:
            if ray.is_initialized():
                return
            ray.init(address=self.address, namespace=self.namespace, logging_level=logging.WARNING,
                     log_to_driver=False, configure_logging=False)
            self._owns_connection = True

    async def connect(self) -> None:
        """Join the cluster now (otherwise the first call does); RuntimeFailure when it cannot be reached."""
        try:
            await asyncio.to_thread(self._connect_sync)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise RuntimeFailure(f"cannot join the Ray cluster at {self.address or 'auto'}: {e}") from None
        await asyncio.to_thread(self._read_nodes)

    def _read_nodes(self) -> tuple[NodeCapacity, ...]:
        self._connect_sync()
        alive = [n for n in _ray.nodes() if n.get("Alive")]
        alive.sort(key=lambda n: (str(n.get("NodeManagerAddress", "")), str(n["NodeID"])))
        self._nodes = tuple(NodeCapacity(str(n["NodeID"]), node_totals(n.get("Resources", {}))) for n in alive)
        self._nodes_at = time.monotonic()
        return self._nodes

    def capacity(self) -> tuple[NodeCapacity, ...]:
        if time.monotonic() - self._nodes_at <= CAPACITY_TTL:
            return self._nodes
        try:
            return self._read_nodes()
        except Exception as e:
            log.warning("ray runtime: cannot read the cluster's nodes: %s", e)
            return self._nodes

    # Runtime -------------------------------------------------------------------------------------

    async def start(self, spec: LaunchSpec) -> RouteHandle:
        await self.connect()
        need = {k: int(v) for k, v in spec.resources.items() if v > 0}
        if need and not any(all(node.total.get(k, 0) >= v for k, v in need.items()) for node in self._nodes):
            wanted = ", ".join(f"{k} {v}" for k, v in sorted(need.items()))
            raise RuntimeFailure(f"route {spec.route_id}: needs {wanted}, no node of the Ray cluster has that much")
        name = actor_name(spec.route_id)
        old = await self._lookup(name)
        if old is not None:  # a leftover under this route id (the store says the route is not running)
            await self._stop_actor(name, old, self.grace_seconds)
        token = uuid.uuid4().hex[:16]
        try:
            actor = await asyncio.to_thread(
                lambda: _RemoteRouteProcess.options(**actor_options(name, self.namespace, need)).remote())
        except ValueError as e:  # the name is still taken (the old actor is still going away)
            raise DevicesBusy(f"route {spec.route_id}: actor {name} still exists ({e})") from None
        ref = actor.launch.remote(spec.route_id, token, list(spec.command), dict(spec.env), list(spec.ports),
                                  self.namespace)
        try:
            info = await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.place_timeout)
        except asyncio.TimeoutError:
            await asyncio.to_thread(ray.kill, actor, no_restart=True)
            raise DevicesBusy(
                f"route {spec.route_id}: not placed within {self.place_timeout:g}s (no node has the resources free)"
            ) from None
        except Exception as e:
            await asyncio.to_thread(ray.kill, actor, no_restart=True)
            cause = getattr(e, "cause", None) or e
            raise RuntimeFailure(f"route {spec.route_id}: {str(cause).strip().splitlines()[-1]}") from None
        identity = f"{name}:{token}"
        self._actors[spec.route_id] = (actor, identity)
        return RouteHandle(
            route_id=spec.route_id, address=f"{info['ip']}:{info['port']}", pid=int(info["pid"]), identity=identity,
            devices={k: tuple(v) for k, v in info["devices"].items()}, node=str(info["node"]),
        )

    async def is_running(self, handle: RouteHandle) -> bool:
        status = await self._status(handle)
        return bool(status and status["running"])

    async def exit_report(self, handle: RouteHandle, *, lines: int = 5) -> ExitReport:
        status = await self._status(handle, lines=lines)
        if status is None:
            gone = ("ray: the route's actor is gone (its node was lost, or it was killed)",)
            return ExitReport(None, gone[: max(lines, 0)], lost=True)
        code = status["code"]
        return ExitReport(None if code is None else int(code), tuple(status["tail"]))

    async def stop(self, handle: RouteHandle, *, grace_seconds: float) -> None:
        self._actors.pop(handle.route_id, None)
        actor = await self._lookup(actor_name(handle.route_id))
        if actor is None:
            return
        try:
            status = await self._call(actor.status.remote(0), CALL_TIMEOUT)
        except Exception:
            status = None  # unreachable: it is killed below all the same
        if status is not None and f"{actor_name(handle.route_id)}:{status.get('token')}" != handle.identity:
            return  # another start's actor under the same name: not this handle's to stop
        await self._stop_actor(actor_name(handle.route_id), actor, grace_seconds)

    async def adopt(self, handles: Sequence[RouteHandle]) -> set[str]:
        await self.connect()
        verified: set[str] = set()
        for handle in handles:
            actor = await self._lookup(actor_name(handle.route_id))
            if actor is not None:
                self._actors[handle.route_id] = (actor, handle.identity)
                if await self.is_running(handle):
                    verified.add(handle.route_id)
                    continue
            await self.stop(handle, grace_seconds=self.grace_seconds)
        named = await asyncio.to_thread(ray.util.list_named_actors, all_namespaces=True)
        keep = {actor_name(route_id) for route_id in verified}
        strays = [e["name"] for e in named if e.get("namespace") == self.namespace
                  and str(e.get("name", "")).startswith(ACTOR_PREFIX) and e["name"] not in keep]
        for name in strays:
            actor = await self._lookup(name)
            if actor is not None:
                log.warning("ray runtime: stopping actor %s, which no route names", name)
                await self._stop_actor(name, actor, self.grace_seconds)
        return verified

    async def close(self) -> None:
        actors = list(self._actors.items())
        self._actors.clear()
        await asyncio.gather(*(self._stop_actor(actor_name(route_id), actor, self.grace_seconds)
                               for route_id, (actor, _) in actors))
        if self._owns_connection:
            await asyncio.to_thread(ray.shutdown)
            self._owns_connection = False

    async def maintain(self) -> None:
        """Refresh the capacity cache (the actors keep no files). Never raises."""
        try:
            await asyncio.to_thread(self._read_nodes)
        except Exception as e:
            log.warning("ray runtime: cannot read the cluster's nodes: %s", e)

    # Helpers ---------------------------------------------------------------------------------------

    async def _lookup(self, name: str) -> ActorHandle | None:
        def get() -> ActorHandle | None:
            self._connect_sync()
            try:
                return ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # no alive actor of that name
                return None

        return await asyncio.to_thread(get)

    async def _status(self, handle: RouteHandle, *, lines: int = 0) -> dict[str, Any] | None:
        """The actor's status when it is the one the handle names; None when it is gone or another one."""
        known = self._actors.get(handle.route_id)
        actor = known[0] if known and known[1] == handle.identity else await self._lookup(actor_name(handle.route_id))
        if actor is None:
            self._nodes_at = float("-inf")  # its node may be gone: the next capacity() reads the cluster
            return None
        try:
            status: dict[str, Any] = await self._call(actor.status.remote(lines), CALL_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("ray runtime: route %s: no status within %gs", handle.route_id, CALL_TIMEOUT)
            return {"running": True, "code": None, "tail": []}  # unknown: not declared dead on a slow answer
        except Exception:  # RayActorError: the actor died (its node was lost, or it was killed)
            self._nodes_at = float("-inf")
            return None
        if f"{actor_name(handle.route_id)}:{status.get('token')}" != handle.identity:
            return None
        return status

    @staticmethod
    async def _call(ref: Any, timeout: float) -> Any:
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout)

    async def _stop_actor(self, name: str, actor: ActorHandle, grace_seconds: float) -> None:
        """Stop the actor's child (SIGTERM, SIGKILL after the grace), kill the actor and wait (at most
        KILL_MARGIN) until its name is free, so its resources are too when this returns. Never raises."""
        try:
            await self._call(actor.stop.remote(grace_seconds), grace_seconds + KILL_MARGIN)
        except Exception as e:
            log.debug("ray runtime: stop call failed: %s", e)
        try:
            await asyncio.to_thread(ray.kill, actor, no_restart=True)
        except Exception as e:
            log.debug("ray runtime: kill failed: %s", e)
        deadline = time.monotonic() + KILL_MARGIN
        while time.monotonic() < deadline:
            try:
                if await self._lookup(name) is None:
                    return
            except Exception as e:
                log.debug("ray runtime: lookup failed: %s", e)
                return
            await asyncio.sleep(0.1)
        log.warning("ray runtime: actor %s still exists %gs after it was killed", name, KILL_MARGIN)
