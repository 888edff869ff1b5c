"""GPU device assignment in the local runtime, with real processes: detection, the indices a route gets
(CUDA_VISIBLE_DEVICES, ROLLWISE_RESOURCES), when an index is free again, adoption after a crash."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from rollwise.runtime import _gpus, _proc
from rollwise.runtime.base import DevicesBusy, LaunchSpec, NodeCapacity, RouteHandle, RuntimeFailure
from rollwise.runtime.local import LocalRuntime, RegistryEntry

from .support import PY, is_gone, wait_for

SLEEP = ("sleep", "60")

# What `nvidia-smi -L` prints on a machine with two GPUs, the second one split by MIG.
LISTING = textwrap.dedent(
    """\
    GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-2c5a1b8e-6f0d-3a1e-9c1b-0d5e7f1a2b3c)
    GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-8d1e2f3a-4b5c-6d7e-8f9a-0b1c2d3e4f5a)
      MIG 1g.5gb      Device  0: (UUID: MIG-7a8b9c0d-1e2f-3a4b-5c6d-7e8f9a0b1c2d)
      MIG 1g.5gb      Device  1: (UUID: MIG-1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e)
    """
)


def gpu_spec(route_id: str, gpu: int = 1, command: tuple[str, ...] = SLEEP, **env: str) -> LaunchSpec:
    return LaunchSpec(route_id, "demo", 1, command, env=env, resources={"gpu": gpu} if gpu else {})


def environ_of(pid: int | None) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if entry)


def db_handle(handle: RouteHandle) -> RouteHandle:
    """The handle as the database gives it back: id, address, pid, identity (no devices)."""
    return RouteHandle(handle.route_id, handle.address, handle.pid, handle.identity)


def nothing_spawned(runtime: LocalRuntime, route_id: str) -> bool:
    return (
        not runtime.log_path(route_id).exists()
        and not runtime.registry_path(route_id).exists()
        and not _proc.scan_marked(str(runtime.data_dir), route_id=route_id)
    )


def fake_nvidia_smi(directory: Path, body: str) -> Path:
    """A directory holding an executable `nvidia-smi` shell script with `body`."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return directory


@pytest.fixture
async def node(tmp_path: Path, pids: list[int]) -> AsyncIterator[LocalRuntime]:
    """A runtime on a node with two GPUs."""
    rt = LocalRuntime(tmp_path / "data", grace_seconds=1.0, resources={"gpu": 2})
    yield rt
    await rt.close()


async def start(runtime: LocalRuntime, pids: list[int], spec: LaunchSpec) -> RouteHandle:
    handle = await runtime.start(spec)
    pids.append(handle.pid or 0)
    return handle


# Detection ---------------------------------------------------------------------------------------------


def test_detect_counts_the_gpu_lines_of_nvidia_smi() -> None:
    calls: list[tuple[Sequence[str], float]] = []

    def run(argv: Sequence[str], timeout: float) -> str:
        calls.append((argv, timeout))
        return LISTING

    assert _gpus.detect_gpus(run) == 2  # MIG lines are not GPUs
    assert calls == [(("nvidia-smi", "-L"), _gpus.DEFAULT_TIMEOUT_SECONDS)]
    assert _gpus.count_gpus("") == 0
    assert _gpus.count_gpus("No devices were found\n") == 0
    eight = "".join(f"GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08x})\n" for i in range(8))
    assert _gpus.detect_gpus(lambda argv, timeout: eight) == 8


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(2, "No such file or directory"),
        PermissionError(13, "Permission denied"),
        subprocess.CalledProcessError(9, ["nvidia-smi", "-L"]),
        subprocess.TimeoutExpired(["nvidia-smi", "-L"], 5.0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    ],
)
def test_detect_failures_mean_no_gpu(error: Exception) -> None:
    def run(argv: Sequence[str], timeout: float) -> str:
        raise error

    assert _gpus.detect_gpus(run) == 0


def test_detect_without_nvidia_smi_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    assert _gpus.detect_gpus() == 0


def test_detect_runs_the_real_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listing = tmp_path / "listing.txt"
    listing.write_text(LISTING)
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'bin', f'cat {listing}')}:{os.environ['PATH']}")
    assert _gpus.detect_gpus() == 2
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'failing', f'cat {listing}; exit 9')}:/usr/bin:/bin")
    assert _gpus.detect_gpus() == 0
    monkeypatch.setenv("PATH", f"{fake_nvidia_smi(tmp_path / 'hanging', 'exec sleep 30')}:/usr/bin:/bin")
    assert _gpus.detect_gpus(timeout=0.2) == 0


def test_capacity_detected_or_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran = tmp_path / "ran"
    listing = tmp_path / "listing.txt"
    listing.write_text(LISTING)
    bin_dir = fake_nvidia_smi(tmp_path / "bin", f"touch {ran}; cat {listing}")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert LocalRuntime(tmp_path / "d1").capacity() == (NodeCapacity("local", {"gpu": 2}),)
    ran.unlink()
    # An explicit mapping is used as given: no detection at all.
    assert LocalRuntime(tmp_path / "d2", resources={"gpu": 4}).capacity() == (NodeCapacity("local", {"gpu": 4}),)
    assert LocalRuntime(tmp_path / "d3", resources={}).capacity() == (NodeCapacity("local", {}),)
    assert not ran.exists()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert LocalRuntime(tmp_path / "d4").capacity() == (NodeCapacity("local", {}),)
    with pytest.raises(RuntimeFailure, match="'gpu'"):
        LocalRuntime(tmp_path / "d5", resources={"gpu": -1})


# Assignment --------------------------------------------------------------------------------------------


async def test_routes_get_distinct_indices_in_their_environment(node: LocalRuntime, pids: list[int]) -> None:
    # The revision's own values never win over what rollwise assigned.
    first = await start(node, pids, gpu_spec("r-1", CUDA_VISIBLE_DEVICES="0,1", ROLLWISE_RESOURCES="{}"))
    second = await start(node, pids, gpu_spec("r-2", GREETING="hi"))
    assert (first.devices, second.devices) == ({"gpu": (0,)}, {"gpu": (1,)})
    assert first.node == second.node == "local"
    one, two = environ_of(first.pid), environ_of(second.pid)
    assert (one["CUDA_VISIBLE_DEVICES"], two["CUDA_VISIBLE_DEVICES"]) == ("0", "1")
    assert json.loads(one["ROLLWISE_RESOURCES"]) == {"gpu": [0]}
    assert json.loads(two["ROLLWISE_RESOURCES"]) == {"gpu": [1]}
    assert two["GREETING"] == "hi"
    assert node.holders() == {"gpu": {0: "r-1", 1: "r-2"}}
    assert node.peak == {"gpu": 2}
    for handle in (first, second):
        entry = RegistryEntry.from_json(node.registry_path(handle.route_id).read_text())
        assert entry.devices == handle.devices
    assert json.loads(node.registry_path("r-2").read_text())["devices"] == {"gpu": [1]}


async def test_a_route_may_need_several(tmp_path: Path, pids: list[int]) -> None:
    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 4, "fpga": 1})
    try:
        handle = await start(runtime, pids, LaunchSpec("r-1", "demo", 1, SLEEP, resources={"gpu": 3, "fpga": 1}))
        env = environ_of(handle.pid)
        assert env["CUDA_VISIBLE_DEVICES"] == "0,1,2"
        assert json.loads(env["ROLLWISE_RESOURCES"]) == {"fpga": [0], "gpu": [0, 1, 2]}
    finally:
        await runtime.close()


async def test_no_free_index_is_busy_and_spawns_nothing(node: LocalRuntime, pids: list[int]) -> None:
    await start(node, pids, gpu_spec("r-1"))
    await start(node, pids, gpu_spec("r-2"))
    with pytest.raises(DevicesBusy, match="r-3: needs gpu 1, 0 free") as caught:
        await node.start(gpu_spec("r-3"))
    assert caught.value.transient and caught.value.code == "runtime.devices_busy"
    assert nothing_spawned(node, "r-3")
    assert node.holders() == {"gpu": {0: "r-1", 1: "r-2"}}


async def test_a_stopped_routes_index_goes_to_the_next_route(node: LocalRuntime, pids: list[int]) -> None:
    first = await start(node, pids, gpu_spec("r-1"))
    await start(node, pids, gpu_spec("r-2"))
    await node.stop(first, grace_seconds=1)
    assert is_gone(first.pid or 0)
    assert node.holders() == {"gpu": {1: "r-2"}}
    third = await start(node, pids, gpu_spec("r-3"))
    assert third.devices == {"gpu": (0,)} and environ_of(third.pid)["CUDA_VISIBLE_DEVICES"] == "0"


async def test_a_killed_route_frees_its_index_only_once_seen_gone(node: LocalRuntime, pids: list[int]) -> None:
    first = await start(node, pids, gpu_spec("r-1"))
    await start(node, pids, gpu_spec("r-2"))
    os.kill(first.pid or 0, signal.SIGKILL)
    await wait_for(lambda: is_gone(first.pid or 0))
    # Dead, but nobody has looked yet: the index is still r-1's.
    with pytest.raises(DevicesBusy):
        await node.start(gpu_spec("r-3"))
    assert node.holders()["gpu"][0] == "r-1"
    assert not await node.is_running(first)
    assert node.holders() == {"gpu": {1: "r-2"}}
    third = await start(node, pids, gpu_spec("r-3"))
    assert third.devices == {"gpu": (0,)}


async def test_children_keep_the_index_after_the_leader_exits(node: LocalRuntime, pids: list[int]) -> None:
    # The leader starts a child (same process group, same markers) and exits at once.
    code = "import subprocess; subprocess.Popen(['sleep', '60']); print('spawned', flush=True)"
    handle = await start(node, pids, gpu_spec("r-1", command=(PY, "-c", code)))
    await wait_for(lambda: is_gone(handle.pid or 0))
    assert not await node.is_running(handle)
    (child,) = _proc.scan_marked(str(node.data_dir), route_id="r-1")
    assert node.holders() == {"gpu": {0: "r-1"}}  # the child may be using it
    await node.stop(handle, grace_seconds=1)
    assert is_gone(child.pid) and node.holders() == {"gpu": {}}


async def test_a_route_needing_no_gpu_sees_none(node: LocalRuntime, pids: list[int]) -> None:
    handle = await start(node, pids, gpu_spec("r-1", gpu=0, CUDA_VISIBLE_DEVICES="0"))
    env = environ_of(handle.pid)
    assert env["CUDA_VISIBLE_DEVICES"] == "" and json.loads(env["ROLLWISE_RESOURCES"]) == {}
    assert handle.devices == {} and node.holders() == {"gpu": {}}
    assert not node.registry_path("r-1").read_text().count('"gpu"')


async def test_a_node_without_slots_leaves_the_environment_alone(tmp_path: Path, pids: list[int]) -> None:
    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    try:
        handle = await start(runtime, pids, gpu_spec("r-1", gpu=0, CUDA_VISIBLE_DEVICES="3"))
        env = environ_of(handle.pid)
        assert env["CUDA_VISIBLE_DEVICES"] == "3" and "ROLLWISE_RESOURCES" not in env
        with pytest.raises(RuntimeFailure, match="r-2: needs gpu 1, the node has 0") as caught:
            await runtime.start(gpu_spec("r-2"))
        assert not isinstance(caught.value, DevicesBusy) and not caught.value.transient
        assert nothing_spawned(runtime, "r-2")
    finally:
        await runtime.close()


async def test_more_than_the_node_has_is_a_failure_not_busy(node: LocalRuntime) -> None:
    for resources, message in (({"gpu": 3}, "needs gpu 3, the node has 2"), ({"tpu": 1}, "needs tpu 1, the node has 0")):
        with pytest.raises(RuntimeFailure, match=message) as caught:
            await node.start(LaunchSpec("r-1", "demo", 1, SLEEP, resources=resources))
        assert not isinstance(caught.value, DevicesBusy)
    assert nothing_spawned(node, "r-1") and node.holders() == {"gpu": {}}


async def test_a_failed_launch_gives_the_index_back(node: LocalRuntime, pids: list[int]) -> None:
    with pytest.raises(RuntimeFailure, match="not found"):
        await node.start(gpu_spec("r-1", command=("no-such-program-rollwise",)))
    with pytest.raises(RuntimeFailure, match="names no declared port"):
        await node.start(gpu_spec("r-2", command=("sleep", "{port.grpc}")))
    assert node.holders() == {"gpu": {}}
    handle = await start(node, pids, gpu_spec("r-3"))
    assert handle.devices == {"gpu": (0,)}


async def test_a_stop_that_leaves_processes_keeps_the_index(
    node: LocalRuntime, pids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that survives SIGKILL (stuck in the driver) cannot be made on purpose: the check that
    # the route's processes are gone is made to say "not yet".
    first = await start(node, pids, gpu_spec("r-1"))
    await start(node, pids, gpu_spec("r-2"))
    monkeypatch.setattr(LocalRuntime, "_gone", lambda self, route_id, candidates: False)
    await node.stop(first, grace_seconds=1)
    assert node.holders()["gpu"][0] == "r-1" and node.registry_path("r-1").exists()
    with pytest.raises(DevicesBusy):
        await node.start(gpu_spec("r-3"))
    monkeypatch.undo()
    third = await start(node, pids, gpu_spec("r-3"))  # the busy start looks again
    assert third.devices == {"gpu": (0,)} and not node.registry_path("r-1").exists()


async def test_close_frees_everything(node: LocalRuntime, pids: list[int]) -> None:
    await start(node, pids, gpu_spec("r-1"))
    await start(node, pids, gpu_spec("r-2"))
    await node.close()
    assert node.holders() == {"gpu": {}}


# Adoption ----------------------------------------------------------------------------------------------


async def test_after_a_crash_a_new_route_never_gets_an_adopted_index(tmp_path: Path, pids: list[int]) -> None:
    crashed = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 3})
    first = await start(crashed, pids, gpu_spec("r-1"))
    second = await start(crashed, pids, gpu_spec("r-2"))
    del crashed  # the server dies without closing: its routes run on

    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 3})
    try:
        assert await runtime.adopt([db_handle(first), db_handle(second)]) == {"r-1", "r-2"}
        assert runtime.holders() == {"gpu": {0: "r-1", 1: "r-2"}}
        third = await start(runtime, pids, gpu_spec("r-3"))
        assert third.devices == {"gpu": (2,)} and environ_of(third.pid)["CUDA_VISIBLE_DEVICES"] == "2"
        with pytest.raises(DevicesBusy):
            await runtime.start(gpu_spec("r-4"))
        await runtime.stop(db_handle(first), grace_seconds=1)
        fourth = await start(runtime, pids, gpu_spec("r-4"))
        assert fourth.devices == {"gpu": (0,)}
    finally:
        await runtime.close()
    assert runtime.holders() == {"gpu": {}}


async def test_adoption_stops_unknown_routes_and_they_hold_nothing(tmp_path: Path, pids: list[int]) -> None:
    crashed = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 2})
    first = await start(crashed, pids, gpu_spec("r-1"))
    second = await start(crashed, pids, gpu_spec("r-2"))
    del crashed

    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 2})
    try:
        assert await runtime.adopt([db_handle(first)]) == {"r-1"}  # the database does not know r-2
        assert is_gone(second.pid or 0)
        assert runtime.holders() == {"gpu": {0: "r-1"}}
        third = await start(runtime, pids, gpu_spec("r-3"))
        assert third.devices == {"gpu": (1,)}
    finally:
        await runtime.close()


async def test_adoption_falls_back_to_the_handle_for_an_old_registry_file(tmp_path: Path, pids: list[int]) -> None:
    crashed = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 2})
    first = await start(crashed, pids, gpu_spec("r-1", gpu=0))
    second = await start(crashed, pids, gpu_spec("r-2"))
    del crashed
    path = tmp_path / "routes" / "r-2.json"
    data = json.loads(path.read_text())
    del data["devices"]  # as an older version wrote it
    path.write_text(json.dumps(data))

    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 2})
    try:
        assert await runtime.adopt([db_handle(first), second]) == {"r-1", "r-2"}
        assert runtime.holders() == {"gpu": {0: "r-2"}}
        assert json.loads(path.read_text())["devices"] == {"gpu": [0]}  # written back for the next crash
        third = await start(runtime, pids, gpu_spec("r-3"))
        assert third.devices == {"gpu": (1,)}
    finally:
        await runtime.close()


async def test_adopted_routes_claiming_one_index_never_let_a_new_route_have_it(
    tmp_path: Path, pids: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    crashed = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 3})
    first = await start(crashed, pids, gpu_spec("r-1"))
    second = await start(crashed, pids, gpu_spec("r-2"))
    del crashed
    path = tmp_path / "routes" / "r-2.json"
    data = json.loads(path.read_text())
    data["devices"] = {"gpu": [0, 1]}  # should never happen: r-1 holds 0
    path.write_text(json.dumps(data))

    runtime = LocalRuntime(tmp_path, grace_seconds=1, resources={"gpu": 3})
    try:
        with caplog.at_level(logging.WARNING, logger="rollwise.runtime.local"):
            assert await runtime.adopt([db_handle(first), db_handle(second)]) == {"r-1", "r-2"}
        assert "route r-2: gpu [0] also held by ['r-1']" in caplog.text
        assert await runtime.is_running(second)  # it keeps running
        assert runtime.holders() == {"gpu": {0: "r-1", 1: "r-2"}}
        third = await start(runtime, pids, gpu_spec("r-3"))
        assert third.devices == {"gpu": (2,)}
        await runtime.stop(db_handle(first), grace_seconds=1)
        assert runtime.holders() == {"gpu": {0: "r-2", 1: "r-2", 2: "r-3"}}  # r-2 takes it at once
        with pytest.raises(DevicesBusy):
            await runtime.start(gpu_spec("r-4"))
        await runtime.stop(db_handle(second), grace_seconds=1)
        fourth = await start(runtime, pids, gpu_spec("r-4"))
        assert fourth.devices == {"gpu": (0,)}
    finally:
        await runtime.close()


# Registry ----------------------------------------------------------------------------------------------


def test_registry_entry_round_trip_with_and_without_devices() -> None:
    entry = RegistryEntry("r-1", 10, 10, "proc1:b:1", 8000, "127.0.0.1:8000", devices={"gpu": (0, 1)})
    text = entry.to_json()
    assert json.loads(text)["devices"] == {"gpu": [0, 1]}
    assert RegistryEntry.from_json(text) == entry
    assert entry.handle().devices == {"gpu": (0, 1)} and entry.handle().node == "local"
    none = RegistryEntry("r-2", 11, 11, "proc1:b:2", 8001, "127.0.0.1:8001")
    assert json.loads(none.to_json())["devices"] == {}
    assert RegistryEntry.from_json(none.to_json()) == none
    old = json.loads(none.to_json())
    del old["devices"]
    assert RegistryEntry.from_json(json.dumps(old)).devices == {}
    with pytest.raises(ValueError):
        RegistryEntry.from_json(json.dumps({**old, "devices": {"gpu": 0}}))
