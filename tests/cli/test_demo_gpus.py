"""`rollwise demo --gpus N`, offline: the checks it makes of what the devices did (`DeviceCheck`: the
node's samples, each process's CUDA_VISIBLE_DEVICES, processes alive at once sharing an index), its
summary line and exit status, and its options. The demo itself runs end to end in
tests/e2e/test_demo.py."""

from __future__ import annotations

from typing import Any

import click
import typer
from click.testing import CliRunner

import rollwise.cli.demo  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app
from rollwise.cli.demo_run import DeviceCheck, GpuReport, Result, gpu_revision

COMMAND: click.Command = typer.main.get_group(app)


def capacity(held: int, *holders: tuple[str, list[int]], total: int = 4) -> dict[str, Any]:
    return {"nodes": [{"name": "local", "total": {"gpu": total}, "held": {"gpu": held},
                       "free": {"gpu": max(0, total - held)},
                       "routes": [{"id": rid, "deployment": "sentiment", "revision": 1, "status": "running",
                                   "holds": {"gpu": 1}, "devices": {"gpu": idx} if idx else {}}
                                  for rid, idx in holders]}]}


def route(rid: str, *indices: int) -> dict[str, Any]:
    return {"id": rid, "devices": {"gpu": list(indices)} if indices else {}}


def test_a_full_node_within_its_slots_is_fine() -> None:
    check = DeviceCheck(4)
    check.observe_capacity(capacity(4, ("a", [0]), ("b", [1]), ("c", [2]), ("d", [3])))
    check.observe_capacity(capacity(4, ("a", [0]), ("b", [1]), ("c", [2]), ("e", [])))  # e not started yet
    assert (check.samples, check.max_held, check.problems) == (2, 4, [])


def test_held_over_the_slots_and_a_shared_index_are_problems() -> None:
    check = DeviceCheck(4)
    check.observe_capacity(capacity(5, ("a", [0]), ("b", [0])))
    assert check.max_held == 5
    assert check.problems == ["node local: 5 gpu slots held, over 4", "gpu 0 held by routes a and b at once"]
    check.observe_capacity(capacity(5, ("a", [0]), ("b", [0])))
    assert len(check.problems) == 2  # each problem once
    other = DeviceCheck(4)
    other.observe_capacity(capacity(0, total=2))
    assert other.problems == ["node local: 2 gpu slots, not 4"]


def test_each_process_must_have_the_indices_its_route_holds() -> None:
    check = DeviceCheck(4)
    check.observe_version(route("a", 2), {"version": "v1", "cuda_visible_devices": "2"}, 1.0, 1.1)
    check.observe_version(route("b", 1, 3), {"cuda_visible_devices": "1,3"}, 1.0, 1.1)
    assert check.problems == [] and check.processes == 2
    check.observe_version(route("c", 0), {"cuda_visible_devices": "1"}, 1.0, 1.1)
    check.observe_version(route("d", 0), {"cuda_visible_devices": None}, 1.0, 1.1)
    assert check.problems == [
        "route c: its process has CUDA_VISIBLE_DEVICES='1', the server says it holds gpu [0]",
        "route d: its process has CUDA_VISIBLE_DEVICES=None, the server says it holds gpu [0]",
    ]


def test_two_processes_alive_at_once_must_not_share_an_index() -> None:
    check = DeviceCheck(4)
    for rid, idx, times in (("old", 0, (1.0, 2.0, 3.0)), ("new", 0, (3.5, 4.0)), ("other", 1, (1.0, 4.0))):
        for t in times:
            check.observe_version(route(rid, idx), {"cuda_visible_devices": str(idx)}, t, t + 0.01)
    check.check_processes()
    assert check.problems == []  # old's last answer was asked for before new's first arrived
    check.observe_version(route("new", 0), {"cuda_visible_devices": "0"}, 2.5, 2.51)
    check.check_processes()
    assert check.problems == ["gpu 0 given to the processes of routes new and old while both were alive"]


def test_the_summary_line_and_what_makes_it_fail() -> None:
    check = DeviceCheck(4)
    check.observe_capacity(capacity(4, ("a", [0])))
    check.observe_version(route("a", 0), {"cuda_visible_devices": "0"}, 1.0, 1.1)
    rollout = Result("v2", "rolling", "completed", "completed", 5.0, 300, 0)
    report = GpuReport(4, check, rollout, requests=912, failed=0)
    assert report.line() == "demo --gpus 4: 1 rollout, 912 requests, 0 failed, max 4 of 4 gpu held"
    assert report.ok
    assert not GpuReport(4, check, rollout, requests=912, failed=2).ok
    assert not GpuReport(4, check, Result("v2", "rolling", "completed", "rolled_back", 5.0, 3, 0)).ok
    assert GpuReport(4, check, None, error="v2: no result within 60s").problems()[0] == "v2: no result within 60s"
    assert GpuReport(4, DeviceCheck(4), rollout).problems() == ["GET /v1/capacity never answered",
                                                                "no route process answered /version"]


def test_the_revision_needs_one_gpu() -> None:
    rev = gpu_revision("v2")
    assert rev["resources"] == {"gpu": 1} and rev["label"] == "v2" and "--version" in rev["command"]


def test_gpus_and_replicas_together_are_refused() -> None:
    result = CliRunner().invoke(COMMAND, ["demo", "--gpus", "2", "--replicas", "3"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --replicas and --gpus: --gpus 2 deploys 2 replicas, one per gpu slot"
    assert CliRunner().invoke(COMMAND, ["demo", "--gpus", "0"]).exit_code == 2  # at least 1
