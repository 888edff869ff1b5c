"""`rollwise get capacity`, `describe` with devices and `apply` with `revision.resources`, against one
server per module with gpu slots: the assembly of `rollwise server --runtime simulated --no-proxy
--resources gpu=4` in this process (cli_server.InProcessServer, its config given `resources`), whose
routes start in 50 ms and get device indices from the simulated node.

The commands run in-process through the same Typer app as the installed script (click's CliRunner),
over real HTTP to the real server. Waiting for a state is done with the API after each coordinator
round (scaffolding, not what is tested).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.apply
import rollwise.cli.describe
import rollwise.cli.get  # noqa: F401  (the imports register the commands, as rollwise.cli.main does)
import rollwise.cli.serve
from rollwise.cli.app import app
from cli_server import InProcessServer

GPUS = {"gpu": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    # InProcessServer builds its plane with build_plane(config): give that config the node's slots, as
    # `--resources gpu=4` does (the patch is needed only while the server starts).
    build_plane = rollwise.cli.serve.build_plane

    def with_slots(config: rollwise.cli.serve.ServerConfig, **kwargs: Any) -> Any:
        return build_plane(dataclasses.replace(config, resources=GPUS), **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rollwise.cli.serve, "build_plane", with_slots)
        running = InProcessServer(tmp_path_factory.mktemp("capacity-server")).__enter__()
    try:
        yield running
    finally:
        running.__exit__(None, None, None)


def run(*args: str, check: int = 0) -> Result:
    """The command in-process (same Typer app, real HTTP), with no ROLLWISE_* variables; it exited `check`."""
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None,
                            "COLUMNS": "200"})
    result = runner.invoke(typer.main.get_group(app), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == check, (result.exit_code, result.stdout, result.stderr)
    return result


def deployment_file(tmp_path: Path, name: str, *, replicas: int, version: str = "v1",
                    resources: str | None = "{gpu: 1}") -> Path:
    path = tmp_path / f"{name}-{version}.yaml"
    path.write_text(
        f"name: {name}\nreplicas: {replicas}\n"
        "revision:\n"
        f"  label: {version}\n"
        f"  command: [python, -m, rollwise.examples.model_server, --port, '{{port}}', --version, {version}]\n"
        + (f"  resources: {resources}\n" if resources is not None else "")
    )
    return path


def ready(d: dict[str, Any]) -> bool:
    return bool(d["lifecycle"] == "ready" and d["ready_replicas"] == d["replicas"])


def rows(text: str, first: str) -> list[list[str]]:
    """The table rows (cells split on 2+ spaces) after the header line starting with `first`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(re.split(r"\s{2,}", line.strip()))
    return out


def test_get_capacity_shows_the_node_and_who_holds_what(server: InProcessServer, tmp_path: Path) -> None:
    empty = run("get", "capacity", *server.args()).stdout
    assert "Node sim" in empty and "Holders: none" in empty
    assert rows(empty, "RESOURCE") == [["gpu", "4", "0", "4"]]

    run("apply", "-f", str(deployment_file(tmp_path, "chat", replicas=3)), *server.args())
    dep = server.wait("chat", ready)
    out = run("get", "capacity", *server.args()).stdout
    assert rows(out, "RESOURCE") == [["gpu", "4", "3", "1"]]
    holders = rows(out, "ROUTE")
    by_id = {r["id"]: r for r in dep["routes"]}
    assert sorted(h[0] for h in holders) == sorted(by_id)
    for route_id, deployment, revision, status, holds, devices in holders:
        assert (deployment, revision, status, holds) == ("chat", "1", "running", "gpu 1")
        assert devices == "gpu " + ",".join(map(str, by_id[route_id]["devices"]["gpu"]))
    assert sorted(h[5] for h in holders) == ["gpu 0", "gpu 1", "gpu 2"]  # in device order

    as_json = json.loads(run("get", "capacity", "-o", "json", *server.args()).stdout)
    assert as_json == server.api("/v1/capacity").json()
    assert as_json["nodes"][0]["held"] == {"gpu": 3}

    described = run("describe", "chat", *server.args()).stdout
    routes = rows(described, "ID")  # ID REV STATUS HEALTH READY TRAFFIC ADDRESS DEVICES AGE
    assert sorted(r[7] for r in routes) == ["gpu 0", "gpu 1", "gpu 2"]
    for row in routes:
        assert row[7] == f"gpu {by_id[row[0]]['devices']['gpu'][0]}", row
    [revision_row] = rows(described, "REV")
    assert "gpu 1" in revision_row

    run("delete", "chat", *server.args())
    server.wait_gone("chat")
    assert rows(run("get", "capacity", *server.args()).stdout, "RESOURCE") == [["gpu", "4", "0", "4"]]


def test_describe_without_resources_has_no_device_columns(server: InProcessServer, tmp_path: Path) -> None:
    run("apply", "-f", str(deployment_file(tmp_path, "plain", replicas=1, resources=None)), *server.args())
    server.wait("plain", ready)
    described = run("describe", "plain", *server.args()).stdout
    assert "DEVICES" not in described and "RESOURCES" not in described
    # {gpu: 0} is no need at all: the server stores {}, so the file changes nothing.
    zero = deployment_file(tmp_path, "plain", replicas=1, resources="{gpu: 0}")
    assert run("apply", "-f", str(zero), *server.args()).stdout.strip() == "plain: unchanged"
    run("delete", "plain", *server.args())
    server.wait_gone("plain")


def test_apply_resources_changes_and_refusals(server: InProcessServer, tmp_path: Path) -> None:
    first = deployment_file(tmp_path, "emb", replicas=1)
    run("apply", "-f", str(first), *server.args())
    server.wait("emb", ready)
    assert run("apply", "-f", str(first), *server.args()).stdout.strip() == "emb: unchanged"

    two = deployment_file(tmp_path, "emb", replicas=1, resources="{gpu: 2}")
    assert "emb: revision 2 added; rollout started" in run("apply", "-f", str(two), *server.args()).stdout
    dep = server.wait("emb", lambda d: ready(d) and d["current_revision"] == 2)
    [route] = [r for r in dep["routes"] if r["status"] == "running"]
    assert len(route["devices"]["gpu"]) == 2

    too_many = deployment_file(tmp_path, "emb", replicas=1, resources="{gpu: 5}")
    refused = run("apply", "-f", str(too_many), *server.args(), check=2)
    assert refused.stderr.strip() == (f"error: {too_many}: revision.resources.gpu: needs 5 per route, the node "
                                      "has 4"), refused.stderr
    not_a_mapping = deployment_file(tmp_path, "emb", replicas=1, resources="gpu")
    refused = run("apply", "-f", str(not_a_mapping), *server.args(), check=2)
    assert refused.stderr.startswith(f"error: {not_a_mapping}: revision.resources"), refused.stderr
    assert [r["number"] for r in server.api("/v1/deployments/emb/revisions").json()] == [1, 2]
    run("delete", "emb", *server.args())
    server.wait_gone("emb")


def test_a_deployment_named_capacity_is_reached_with_describe(server: InProcessServer, tmp_path: Path) -> None:
    run("apply", "-f", str(deployment_file(tmp_path, "capacity", replicas=1)), *server.args())
    server.wait("capacity", ready)
    assert "RESOURCE" in run("get", "capacity", *server.args()).stdout  # the node, not the deployment
    described = run("describe", "capacity", *server.args()).stdout
    assert "Name" in described and "capacity" in described and "ready" in described
    listed = run("get", *server.args()).stdout
    assert re.search(r"^capacity\s+ready", listed, re.MULTILINE), listed
    run("delete", "capacity", *server.args())
    server.wait_gone("capacity")
