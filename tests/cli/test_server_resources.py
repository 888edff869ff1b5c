"""`rollwise server --resources gpu=4[,NAME=N...]`, offline: the parsing (`parse_resources`), its
one-line refusals (exit 2, before any port is bound), and what reaches `ServerConfig.resources` (the
server's run is replaced by a stub that records its config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
import typer
from click.testing import CliRunner
from cli_server import free_port

import rollwise.cli.server  # noqa: F401  (registers the command, as rollwise.cli.main does)
from rollwise.cli.app import app
from rollwise.cli.server import RESOURCE_NAME, parse_resources

COMMAND: click.Command = typer.main.get_group(app)


@pytest.mark.parametrize(("text", "expected"), [
    ("gpu=4", {"gpu": 4}),
    ("gpu=4,mem_gb=80", {"gpu": 4, "mem_gb": 80}),
    (" mem_gb = 80 , gpu=2 ", {"gpu": 2, "mem_gb": 80}),
    ("gpu=0", {}),
    ("gpu=0,fpga=1", {"fpga": 1}),
    ("", {}),
    ("none", {}),
    ("None", {}),
    ("  ", {}),
])
def test_parse_resources(text: str, expected: dict[str, int]) -> None:
    assert parse_resources(text) == expected


@pytest.mark.parametrize(("text", "problem"), [
    ("gpu", "'gpu' is not NAME=COUNT (e.g. gpu=4)"),
    ("gpu:4", "'gpu:4' is not NAME=COUNT"),
    ("GPU=4", "'GPU' is not a resource name"),
    ("9gpu=1", "'9gpu' is not a resource name"),
    ("=4", "'' is not a resource name"),
    ("x" * 31 + "=1", "is not a resource name"),
    ("gpu=-1", "gpu: '-1' is negative"),
    ("gpu=four", "gpu: 'four' is not an integer >= 0"),
    ("gpu=1.5", "gpu: '1.5' is not an integer >= 0"),
    ("gpu=", "gpu: '' is not an integer >= 0"),
    ("gpu=+2", "gpu: '+2' is not an integer >= 0"),
    ("gpu=99999999", "gpu: 99999999 is over 65536"),
    ("gpu=1,gpu=2", "gpu is given twice"),
    ("gpu=4,", "has an empty entry"),
    (",".join(f"r{i}=1" for i in range(17)), "17 resources, at most 16"),
])
def test_bad_resources_name_the_option_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_resources(text)
    message = str(info.value)
    assert message.startswith("--resources: ") and problem in message, message
    assert "\n" not in message


def test_the_name_rule_is_the_models() -> None:
    from rollwise.model.revision import RESOURCE_NAME as MODEL_RULE

    assert RESOURCE_NAME.pattern == MODEL_RULE.pattern


def test_a_bad_value_is_one_line_and_exit_2_before_anything_listens() -> None:
    port = free_port()
    result = CliRunner().invoke(COMMAND, ["server", "--resources", "gpu=lots", "--api-port", str(port)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines == ["error: --resources: gpu: 'lots' is not an integer >= 0"], result.output


@pytest.mark.parametrize(("args", "expected"), [
    ([], None),
    (["--resources", "gpu=4"], {"gpu": 4}),
    (["--resources", "gpu=2,mem_gb=16"], {"gpu": 2, "mem_gb": 16}),
    (["--resources", ""], {}),
    (["--resources", "none"], {}),
])
def test_the_value_reaches_the_server_config(args: list[str], expected: dict[str, int] | None,
                                             monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import rollwise.cli.serve

    seen: list[Any] = []

    async def fake_run_server(config: Any, *, early: Any = None) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(rollwise.cli.serve, "run_server", fake_run_server)
    result = CliRunner().invoke(COMMAND, ["server", "--api-port", str(free_port()), "--data-dir", str(tmp_path),
                                          *args])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and seen[0].resources == expected


@pytest.mark.parametrize(("runtime", "ray_address", "resources", "problem"), [
    ("local", "127.0.0.1:6379", None, "--ray-address: needs --runtime ray"),
    ("ray", None, "gpu=4", "--resources: with --runtime ray the cluster's nodes say what they have"),
    ("local", None, "gpu=4", None),
])
def test_ray_options_that_do_not_fit_are_refused_in_one_line(
    runtime: str, ray_address: str | None, resources: str | None, problem: str | None
) -> None:
    from rollwise.cli.server import RuntimeName, ray_problem

    assert ray_problem(RuntimeName(runtime), ray_address=ray_address, resources=resources) == problem


def test_runtime_ray_without_ray_installed_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from rollwise.cli.server import RuntimeName, ray_problem

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert ray_problem(RuntimeName.ray, ray_address=None, resources=None) == (
        "--runtime ray: Ray is not installed (pip install 'rollwise[ray]')")
