"""GPU-aware rollouts as a tested fact: real `rollwise server` processes with `--resources gpu=N`, real
model-server routes behind the real Traefik, and a sampler that reads, all the time, what every live route
process of the data directory was really given (`CUDA_VISIBLE_DEVICES` in `/proc/PID/environ`) and what
`GET /v1/capacity` says is held. On a full node two live processes never share a device index, no more
indices than the node has are ever in use, rollouts still complete one route at a time (the
capacity-forced replacement), a server killed with SIGKILL mid-rollout hands out no index twice after
adopting its routes, and a revision needing a slot the node lacks is refused before anything is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from rollwise.cli.demo import free_port

from .conftest import model_revision
from .server_proc import BackgroundLoad, ServerProcess, route_processes, traefik_pid, wait_for

pytestmark = pytest.mark.e2e
HOLDING = ("provisioning", "running", "terminating")


class RequestsFailed(AssertionError):
    """Requests through the proxy failed."""


# --------------------------------------------------------------------------------------------- helpers


class ResourceServer(ServerProcess):
    """`ServerProcess` with the node's slots: `rollwise server ... --resources SPEC` (None: no option)."""

    def __init__(self, data_dir: Path, *, resources: str | None, **kwargs: Any) -> None:
        extra = ("--resources", resources) if resources is not None else ()
        super().__init__(data_dir, api_port=free_port(), proxy_port=free_port(), extra_args=extra, **kwargs)
        self.resources = resources


def gpu_revision(label: str, *extra: str) -> dict[str, Any]:
    """The example model server (`extra`: more of its options) needing one GPU; short drain and grace."""
    return model_revision(label, *extra, drain=0.2) | {"resources": {"gpu": 1}, "stop_grace_seconds": 2}




def settled(client: httpx.Client, name: str) -> dict[str, Any] | None:
    """The deployment once it is READY with no rollout and no route in motion, else None."""
    dep = client.get(f"/v1/deployments/{name}").json()
    if dep["lifecycle"] != "ready" or dep["deploying_revision"] is not None:
        return None
    if any(r["status"] in ("provisioning", "terminating") for r in dep["routes"]):
        return None
    return dep  # type: ignore[no-any-return]


def start_rollout(client: httpx.Client, name: str, label: str, *extra: str) -> int:
    number = client.post(f"/v1/deployments/{name}/revisions", json=gpu_revision(label, *extra))
    assert number.status_code == 201, number.text
    return int(number.json()["number"])


def activate(client: httpx.Client, name: str, number: int) -> None:
    r = client.post(f"/v1/deployments/{name}/rollout", json={"revision": number})
    assert r.status_code == 202, r.text
    assert r.json()["deploying_revision"] == number, r.text


def _starttime(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _route_env(pid: int) -> dict[str, str] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if item)


@dataclass(frozen=True)
class LiveRoute:
    pid: int
    route_id: str
    cuda: str | None  # CUDA_VISIBLE_DEVICES as the process received it (None: not set)


def live_route_processes(data_dir: Path, extra_pids: set[int]) -> list[LiveRoute]:
    """Every route process of `data_dir` (its markers) plus `extra_pids` (the API's), with what it was given.
    Only processes still alive, as the same process, after the whole scan are returned: any two of them
    were alive at the same moment (the end of the scan), whatever started or exited during it."""
    marker = str(Path(data_dir).resolve())
    seen: dict[int, tuple[str, LiveRoute]] = {}
    for pid in route_processes(data_dir) | extra_pids:
        start = _starttime(pid)
        env = _route_env(pid)
        if start is None or env is None or "ROLLWISE_ROUTE_ID" not in env or env.get("ROLLWISE_DATA_DIR") != marker:
            continue
        seen[pid] = (start, LiveRoute(pid, env["ROLLWISE_ROUTE_ID"], env.get("CUDA_VISIBLE_DEVICES")))
    return [route for pid, (start, route) in seen.items() if _starttime(pid) == start]


class DeviceSampler:
    """Samples, until stopped, from two threads: every live route process's device indices (/proc, every
    20 ms) and the API (`GET /v1/deployments` for the routes' pids and devices, `GET /v1/capacity`, as
    fast as the server answers). Violations are collected (the test asserts none); measurements and a
    timeline of the routes' states are kept for the report and for failure messages."""

    def __init__(self, server: ResourceServer, *, total: int, need: int = 1) -> None:
        self.server = server
        self.total = total
        self.need = need
        self.samples = 0
        self.api_samples = 0
        self.max_indices_in_use = 0
        self.max_held = 0
        self.max_processes = 0
        self.api_duplicates = 0
        self.violations: list[str] = []
        self.timeline: list[str] = []
        self.t0 = time.monotonic()
        self.watch_ready = False
        self.min_ready: dict[str, int] = {}
        """Fewest ready routes of each deployment while `watch_ready` is set."""
        self._api_routes: dict[str, dict[str, Any]] = {}
        self._last_state: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._proc_loop, daemon=True, name="proc-sampler"),
                         threading.Thread(target=self._api_loop, daemon=True, name="api-sampler")]

    def __enter__(self) -> DeviceSampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(f"{time.monotonic() - self.t0:6.2f}s: {text}")

    def _proc_loop(self) -> None:
        while not self._stop.is_set():
            self.sample_processes()
            self._stop.wait(0.02)

    def _api_loop(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=2,
                          headers={"Authorization": f"Bearer {self.server.token}"}) as client:
            while not self._stop.is_set():
                try:
                    self.sample_api(client)
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    self._stop.wait(0.1)  # the server is down (killed on purpose) or not answering yet

    def sample_api(self, client: httpx.Client) -> None:
        routes: dict[str, dict[str, Any]] = {}
        watch = self.watch_ready
        for dep in client.get("/v1/deployments").json():
            if watch:
                ready = sum(1 for r in dep["routes"] if r["ready"])
                self.min_ready[dep["name"]] = min(ready, self.min_ready.get(dep["name"], ready))
            for r in dep["routes"]:
                if r["status"] in HOLDING:
                    routes[r["id"]] = r
                state = (f"{dep['name']} r{r['revision']} {r['status']} ready={r['ready']} pid={r['pid']} "
                         f"gpu={r['devices'].get('gpu')}")
                if self._last_state.get(r["id"]) != state:
                    self._last_state[r["id"]] = state
                    self.timeline.append(f"{time.monotonic() - self.t0:6.2f}s {r['id']} {state}")
        self._api_routes = routes
        (node,) = client.get("/v1/capacity").json()["nodes"]
        self.api_samples += 1
        held = node["held"].get("gpu", 0)
        self.max_held = max(self.max_held, held)
        if held > self.total or node["total"].get("gpu") != self.total:
            self._violation(f"/v1/capacity: held {node['held']} of {node['total']}")
        named = [i for r in node["routes"] for i in r["devices"].get("gpu", [])]
        if len(named) != len(set(named)):
            self.api_duplicates += 1  # only counted: rows may lag the processes by one route pass

    def sample_processes(self) -> None:
        api_routes = self._api_routes
        live = live_route_processes(self.server.data_dir, {r["pid"] for r in api_routes.values() if r.get("pid")})
        self.samples += 1
        self.max_processes = max(self.max_processes, len(live))
        holder: dict[int, str] = {}
        for proc in live:
            try:
                indices = [int(i) for i in (proc.cuda or "").split(",")]
            except ValueError:
                self._violation(f"route {proc.route_id} (pid {proc.pid}): CUDA_VISIBLE_DEVICES={proc.cuda!r}")
                continue
            if len(indices) != self.need or len(set(indices)) != len(indices):
                self._violation(f"route {proc.route_id} (pid {proc.pid}) was given {indices}, needs {self.need}")
            for i in indices:
                if not 0 <= i < self.total:
                    self._violation(f"route {proc.route_id} (pid {proc.pid}) was given index {i} of {self.total}")
                other = holder.setdefault(i, proc.route_id)
                if other != proc.route_id:
                    self._violation(f"index {i} is held by live routes {other} and {proc.route_id} at once")
            api = api_routes.get(proc.route_id)
            if api is not None and api.get("devices") and sorted(api["devices"].get("gpu", [])) != sorted(indices):
                self._violation(f"route {proc.route_id}: the API says {api['devices']}, its process has {indices}")
        self.max_indices_in_use = max(self.max_indices_in_use, len(holder))
        if len(holder) > self.total:
            self._violation(f"{len(holder)} indices in use on a node of {self.total}: {holder}")

    def report(self) -> str:
        return (f"{self.samples} /proc samples, {self.api_samples} API samples; at most {self.max_processes} route "
                f"processes and {self.max_indices_in_use} indices in use, held gpu <= {self.max_held}; "
                f"{self.api_duplicates} API samples naming an index twice; fewest ready routes {self.min_ready}")


def stop_everything(server: ResourceServer) -> None:
    """Stop the server cleanly; whatever it leaves (it failed, or timed out) is killed: its route
    processes and its Traefik. Only processes of this test's data directory are touched."""
    try:
        status = server.stop(timeout=30)
    except subprocess.TimeoutExpired:
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        status = -9
    deadline = time.monotonic() + 10
    while True:
        leftovers = route_processes(server.data_dir)
        proxy = traefik_pid(server.data_dir)
        if proxy is not None and _starttime(proxy) is None:
            proxy = None
        if not leftovers and proxy is None:
            break
        if time.monotonic() > deadline:
            for pid in [*leftovers, *([proxy] if proxy else [])]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError(f"the server's stop (status {status}) left processes behind: {leftovers}, "
                                 f"proxy {proxy}")
        time.sleep(0.1)
    assert status == 0, f"server exited with {status}:\n{server.log_tail()}"


def proc_devices(data_dir: Path) -> dict[str, list[int]]:
    """route id -> the gpu indices its live process(es) received."""
    out: dict[str, list[int]] = {}
    for proc in live_route_processes(data_dir, set()):
        assert proc.cuda, proc
        out[proc.route_id] = sorted(int(i) for i in proc.cuda.split(","))
    return out


# ----------------------------------------------------------------------------------------------- tests


def test_two_deployments_share_a_four_gpu_node(tmp_path: Path) -> None:
    """Two deployments of 2 routes needing gpu 1 fill a node of 4 GPUs; rolling both out at once (default
    policy: surge 1, unavailable 0) replaces one route at a time per deployment, under load, with no
    index ever held by two live processes and never more than 4 in use.

    Before the serving floor of the forced replacement (docs/strategies.md, "Capacity", Decisions), beta
    lost every request for 1-3 s: the gpu its forced replacement freed went to alpha (lower id), and it
    then replaced its last ready route too."""
    server = ResourceServer(tmp_path / "data", resources="gpu=4")
    names = ("alpha", "beta")
    try:
        server.start()
        assert "slots gpu=4" in server.log_tail()  # the start-up line says what the node offers
        with server.client() as client, DeviceSampler(server, total=4) as sampler:
            for name in names:
                r = client.post("/v1/deployments", json={"name": name, "replicas": 2, "revision": gpu_revision("v1")})
                assert r.status_code == 201, r.text
            for name in names:
                wait_for(f"{name} ready", partial(settled, client, name), server, 60)
            capacity = client.get("/v1/capacity").json()["nodes"][0]
            assert capacity["total"] == {"gpu": 4} and capacity["held"] == {"gpu": 4}, capacity
            assert sorted(i for r in capacity["routes"] for i in r["devices"]["gpu"]) == [0, 1, 2, 3], capacity

            loads = [BackgroundLoad(f"http://127.0.0.1:{server.proxy_port}/d/{name}/predict", rate=40)
                     for name in names]
            for load in loads:
                load.__enter__()
            try:
                wait_for("load flowing", lambda: all(ld.stats and ld.stats.ok > 40 for ld in loads), server, 30)
                numbers = {name: start_rollout(client, name, "v2") for name in names}
                sampler.watch_ready = True
                began = time.monotonic()
                for name in names:  # back to back: both rollouts run at once on the full node
                    activate(client, name, numbers[name])
                done = {name: wait_for(f"{name} rolled out", partial(settled, client, name), server, 90)
                        for name in names}
                took = time.monotonic() - began
                sampler.watch_ready = False
                wait_for("v2 answering", lambda: all(ld.stats.versions.get("v2", 0) > 20 for ld in loads), server,
                         30)
            finally:
                for load in loads:
                    load.__exit__(None, None, None)

            for name, dep in done.items():
                assert dep["current_revision"] == 2, (name, dep)  # completed, not rolled back
                assert sorted(r["revision"] for r in dep["routes"] if r["status"] == "running") == [2, 2], dep
            on_node = proc_devices(server.data_dir)
            assert sorted(i for idx in on_node.values() for i in idx) == [0, 1, 2, 3], on_node
        stats = dict(zip(names, (ld.stats for ld in loads)))
        print(f"both rollouts took {took:.1f}s; {sampler.report()}; load: "
              + ", ".join(f"{n} {s.sent} sent, {s.failed} failed {dict(s.errors)}" for n, s in stats.items()))
        assert not sampler.violations, (sampler.violations, sampler.timeline)
        assert sampler.samples > 50 and sampler.max_indices_in_use == 4 and sampler.max_held == 4, sampler.report()
        failures = {n: (s.failed, [round(t - sampler.t0, 2) for t in list(s.failure_times)[:: max(1, s.failed // 8)]])
                    for n, s in stats.items()}
        assert all(s.sent > 100 for s in stats.values()), {n: s.sent for n, s in stats.items()}
        if any(s.failed for s in stats.values()) or 0 in sampler.min_ready.values():
            raise RequestsFailed(
                f"failed requests (count, some send times in s): {failures}; rollouts began at "
                f"{began - sampler.t0:.2f}s; {sampler.report()}; routes:\n" + "\n".join(sampler.timeline))
    finally:
        stop_everything(server)


def test_a_server_killed_mid_rollout_on_a_full_node_hands_out_no_device_twice(tmp_path: Path) -> None:
    """A node of 3 GPUs held by 3 routes; mid-rollout, once a new route has started, the server (its
    process only) is killed with SIGKILL and started again on the same data directory. The routes are
    adopted with their devices; the rollout finishes; no index is ever held by two live processes, and at
    the end the 3 routes hold 3 distinct indices, as /v1/capacity says."""
    name = "solo"
    server = ResourceServer(tmp_path / "data", resources="gpu=3")
    try:
        server.start()
        with server.client() as client, DeviceSampler(server, total=3) as sampler:
            r = client.post("/v1/deployments", json={"name": name, "replicas": 3, "revision": gpu_revision("v1")})
            assert r.status_code == 201, r.text
            wait_for("ready", lambda: settled(client, name), server, 60)
            old = {r["id"] for r in client.get(f"/v1/deployments/{name}").json()["routes"]}
            # v2 listens 1 s after it starts: the kill lands while the new route is still provisioning.
            number = start_rollout(client, name, "v2", "--startup-delay", "1")
            activate(client, name, number)

            def new_route_started() -> dict[str, Any] | None:
                routes = client.get(f"/v1/deployments/{name}").json()["routes"]
                return next((r for r in routes if r["revision"] == number and r["pid"]
                             and r["status"] in ("provisioning", "running")), None)

            started = wait_for("a new route to start", new_route_started, server, 60)
            assert started["id"] not in old and started["devices"].get("gpu"), started
            server.kill()  # the server only: routes and Traefik run on
            survivors = route_processes(server.data_dir)
            assert started["pid"] in survivors, (started, survivors)
            server.start()
            dep = wait_for("the rollout to finish", lambda: settled(client, name), server, 90)
            assert dep["current_revision"] == number, dep
            running = [r for r in dep["routes"] if r["status"] == "running"]
            assert [r["revision"] for r in running] == [number] * 3, dep["routes"]

            def agree() -> tuple[dict[str, list[int]], dict[str, Any]] | None:
                on_node = proc_devices(server.data_dir)
                capacity = client.get("/v1/capacity").json()["nodes"][0]
                holders = {r["id"]: sorted(r["devices"]["gpu"]) for r in capacity["routes"]}
                return (on_node, capacity) if on_node == holders else None

            on_node, capacity = wait_for("/proc and /v1/capacity to agree", agree, server, 15)
            assert set(on_node) == {r["id"] for r in running}, (on_node, running)
            assert sorted(i for idx in on_node.values() for i in idx) == [0, 1, 2], on_node
            assert {r["id"]: sorted(r["devices"]["gpu"]) for r in running} == on_node
            assert capacity["held"] == {"gpu": 3} and capacity["free"] == {"gpu": 0}, capacity
        print(f"killed with {started['id']} {started['status']} on gpu {started['devices']['gpu']}; "
              f"{sampler.report()}")
        assert not sampler.violations, (sampler.violations, sampler.timeline)
        assert sampler.samples > 50 and sampler.max_indices_in_use == 3, sampler.report()
    finally:
        stop_everything(server)


def test_a_revision_needing_a_slot_the_node_lacks_is_refused(tmp_path: Path) -> None:
    """Without --resources the node's gpu slots are detected with nvidia-smi; none here, so a deployment
    whose revision needs gpu 1 is refused with 422 naming resources.gpu, and nothing is stored."""
    if subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True).returncode == 0:
        pytest.skip("nvidia-smi is on PATH: this node may have GPUs")
    server = ResourceServer(tmp_path / "data", resources=None)
    try:
        server.start()
        assert "no slots" in server.log_tail()
        with server.client() as client:
            assert client.get("/v1/capacity").json()["nodes"][0]["total"].get("gpu", 0) == 0
            r = client.post("/v1/deployments", json={"name": "needy", "replicas": 1, "revision": gpu_revision("v1")})
            assert r.status_code == 422, r.text
            assert "resources.gpu" in r.json()["message"], r.text
            assert client.get("/v1/deployments/needy").status_code == 404
            assert client.get("/v1/deployments").json() == []
        assert route_processes(server.data_dir) == set()
    finally:
        stop_everything(server)
