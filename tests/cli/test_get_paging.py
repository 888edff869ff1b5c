"""`rollwise get` reads every page of `GET /v1/deployments` (the summary form for the table, the full form
for `-o json`), against one in-process server per module (cli_server.InProcessServer: real HTTP). The
page size is made small here so that five deployments take three pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.get
from rollwise.cli.app import app
from rollwise.cli.client import Client, resolve_target
from cli_server import InProcessServer

NAMES = ["p-one", "p-two", "p-three", "p-four", "p-five"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    with InProcessServer(tmp_path_factory.mktemp("cli-paging")) as running:
        headers = {"Authorization": f"Bearer {running.token}"}
        for name in NAMES:
            body = {"name": name, "replicas": 1, "revision": {"command": ["serve", "--port", "{port}"]}}
            assert httpx.post(f"{running.url}/v1/deployments", json=body, headers=headers).status_code == 201
        yield running


def run_get(server: InProcessServer, *args: str) -> Result:
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None,
                            "COLUMNS": "200"})
    result = runner.invoke(typer.main.get_group(app), ["get", *args, *server.args()])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def test_get_all_follows_every_cursor(server: InProcessServer) -> None:
    client = Client(resolve_target(server.url, server.token, None))
    pages: list[str] = []
    original = client._exchange

    def exchange(method: str, path: str, body: object = None) -> tuple[object, object]:
        pages.append(path)
        return original(method, path, body)

    client._exchange = exchange  # type: ignore[method-assign]  # a spy: the real request still goes out
    got = client.get_all("/v1/deployments", limit=2, summary="true")
    assert [d["name"] for d in got] == NAMES
    assert len(pages) == 3 and "cursor=" not in pages[0] and all("cursor=" in p for p in pages[1:])
    assert all("routes" not in d for d in got)


def test_get_table_and_json_show_every_page(server: InProcessServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollwise.cli.get, "PAGE_SIZE", 2)
    table = run_get(server).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "LIFECYCLE", "REVISION"]
    assert [line.split()[0] for line in table[1:]] == NAMES
    listed = json.loads(run_get(server, "-o", "json").stdout)
    assert [d["name"] for d in listed] == NAMES and all("routes" in d for d in listed)


def test_the_table_is_aligned_and_long_lines_are_not_cut(server: InProcessServer) -> None:
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None,
                            "COLUMNS": "30"})
    result = runner.invoke(typer.main.get_group(app), ["get", *server.args()])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == NAMES  # one line each, although wider than 30
    starts = {column: lines[0].index(column) for column in ("LIFECYCLE", "REVISION", "READY", "AGE")}
    for line in lines[1:]:
        for column, at in starts.items():
            assert line[at - 2 : at] == "  " and line[at] != " ", (column, line)


def test_ten_thousand_rows_are_one_text_with_one_style() -> None:
    """The table is plain aligned strings with the header bold, not a Rich Table measuring every cell
    (~6 s for 10,000 rows); its time is measured by benchmarks/scale.py (`rollwise get`)."""
    from rollwise.cli.describe import deployments_table

    deps = [{"name": f"m{i}", "lifecycle": "ready", "current_revision": 1, "replicas": 2, "ready_replicas": 2,
             "policy": {"strategy": "rolling"}, "created_at": None} for i in range(10_000)]
    text = deployments_table(deps)
    assert len(text.plain.splitlines()) == 10_001 and len(text.spans) == 1  # the bold header only
