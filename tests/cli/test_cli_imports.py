"""The client commands import only what they need (a check on modules, not on time: start-up time is
measured by benchmarks/cli_start.py).

Each command runs in a fresh interpreter against a server (the assembly of `rollwise server --runtime
simulated --no-proxy` run in the test process: cli_server.InProcessServer, free port, tmp data dir), so
every import it makes on its way (the request, the table, the error line) happens; then the interpreter's
`sys.modules` is checked: never the server's packages (fastapi,
sqlalchemy, uvicorn, ...), rollwise.model (pydantic models) or httpx; yaml only for `apply`; rich only for
the commands that print a table. `main` imports only the module of the command being run, and every
command is mapped to its module. `apply` runs first (it creates the deployment the others read); the
other interpreters run side by side.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_server import InProcessServer, clean_env

from rollwise.cli import main as cli_main


NEVER = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "prometheus_client",
         "httpx", "rollwise.model", "rollwise.api", "rollwise.control", "rollwise.store", "rollwise.runtime",
         "rollwise.strategy", "rollwise.traffic", "matplotlib")
"""Never imported by a client command (matplotlib: only by `history --plot`, tests/cli/test_plot_cli.py)."""

PROBE = """
import json, sys
report = sys.argv.pop(1)
sys.argv[0] = "rollwise"
from rollwise.cli.main import main
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
with open(report, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""
"""Runs `rollwise ARGS...` as the script does, then writes its exit code and sys.modules to a file."""

DEPLOYMENT = """\
name: imports
replicas: 1
revision:
  command: [python, -m, rollwise.examples.model_server, --port, "{port}"]
"""

# (arguments, exit code, imports rich, imports yaml)
COMMANDS: list[tuple[list[str], int, bool, bool]] = [
    (["apply", "-f", "FILE"], 0, False, True),
    (["get"], 0, True, False),
    (["get", "-o", "json"], 0, False, False),
    (["get", "imports"], 0, True, False),
    (["get", "capacity"], 0, True, False),
    (["get", "capacity", "-o", "json"], 0, False, False),
    (["describe", "imports"], 0, True, False),
    (["describe", "imports", "-o", "json"], 0, False, False),
    (["history", "imports"], 0, True, False),
    (["history", "imports", "-o", "json"], 0, False, False),
    (["history", "imports", "--rollouts"], 0, False, False),
    (["history", "imports", "--rollouts", "-o", "json"], 0, False, False),
    (["rollout", "status", "imports"], 0, True, False),
    (["rollout", "status", "imports", "--watch"], 0, True, False),
    (["rollout", "pause", "imports"], 1, False, False),
    (["rollout", "undo", "imports"], 1, False, False),
    (["delete", "nope"], 1, False, False),
    (["describe", "nope"], 1, False, False),
]


@pytest.fixture(scope="module")
def api_args(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    with InProcessServer(tmp_path_factory.mktemp("imports-server")) as server:
        yield server.args()


def imported(commands: list[list[str]], tmp_path: Path) -> list[tuple[int, set[str]]]:
    """Run each command in its own interpreter, all at once; (exit code, modules) of each, in order."""
    runs = []
    try:
        for i, args in enumerate(commands):
            report = tmp_path / f"modules-{i}.json"
            proc = subprocess.Popen([sys.executable, "-c", PROBE, str(report), *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=clean_env())
            runs.append((proc, report))
        out = []
        for proc, report in runs:
            _, err = proc.communicate(timeout=120)
            assert "Traceback" not in err, err
            result = json.loads(report.read_text())
            out.append((int(result["code"] or 0), set(result["modules"])))
        return out
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_client_commands_import_only_what_they_need(api_args: list[str], tmp_path: Path) -> None:
    spec = tmp_path / "imports.yaml"
    spec.write_text(DEPLOYMENT)
    argvs = [[str(spec) if a == "FILE" else a for a in args] + api_args for args, _, _, _ in COMMANDS]
    assert COMMANDS[0][0][0] == "apply"
    results = imported(argvs[:1], tmp_path) + imported(argvs[1:], tmp_path)
    for (args, code, rich, yaml), (exit_code, modules) in zip(COMMANDS, results, strict=True):
        assert exit_code == code, (args, exit_code)
        assert not [p for p in NEVER if loaded(modules, p)], (args, [p for p in NEVER if loaded(modules, p)])
        assert loaded(modules, "rich") is rich, (args, "rich")
        assert loaded(modules, "yaml") is yaml, (args, "yaml")
        others = {m.removeprefix("rollwise.cli.") for m in modules if m.startswith("rollwise.cli.")}
        assert not others & {"server", "serve", "simulate", "demo", "demo_run", "plan"}, (args, others)


def test_main_imports_the_module_of_the_command_only() -> None:
    assert cli_main.modules_for(["apply", "-f", "x.yaml"]) == ("apply",)
    assert cli_main.modules_for(["delete", "x"]) == ("apply",)
    assert cli_main.modules_for(["rollout", "status", "x", "--watch"]) == ("rollout",)
    for everything in ([], ["--help"], ["nope"]):
        assert cli_main.modules_for(everything) == cli_main.ALL_MODULES


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    for module in cli_main.ALL_MODULES:
        importlib.import_module(f"rollwise.cli.{module}")
    found: dict[str, str] = {}
    for info in cli_main.app.registered_commands:
        assert info.callback is not None
        found[info.name or info.callback.__name__] = info.callback.__module__
    for group in cli_main.app.registered_groups:
        assert group.name is not None and group.typer_instance is not None
        callback = group.typer_instance.registered_commands[0].callback
        assert callback is not None
        found[group.name] = callback.__module__
    assert found == {name: f"rollwise.cli.{module}" for name, module in cli_main.COMMAND_MODULES.items()}
    assert set(cli_main.COMMAND_MODULES.values()) == set(cli_main.ALL_MODULES)
