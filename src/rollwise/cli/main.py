"""The `rollwise` command: a Typer app; each command group lives in its own module of this package.

Every command turns rollwise errors into one red line on stderr and an exit code (see `errors.py`).

A command module registers its commands on `app` (cli.app) when it is imported. `main` imports only the module of
the command being run (`COMMAND_MODULES`), so `rollwise apply` does not pay for the imports of
`rollwise server` or `rollwise simulate` (start-up time is mostly imports: benchmarks/cli_start.py);
with no command, `--help` or a name it does not know, it imports them all so that help and "No such
command" are complete. Must not: import anything but typer and cli.app at module level.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from rollwise.cli.app import app

COMMAND_MODULES: dict[str, str] = {
    "server": "server",
    "apply": "apply",
    "delete": "apply",
    "get": "get",
    "describe": "describe",
    "history": "history",
    "rollout": "rollout",
    "plan": "plan",
    "simulate": "simulate",
    "demo": "demo",
}
"""Command name -> the module of `rollwise.cli` that registers it."""

ALL_MODULES = ("demo", "plan", "simulate", "apply", "describe", "get", "history", "rollout", "server")
"""Every command module, in the order that sets the order of `rollwise --help`."""


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The command modules to import for these arguments (without the program name)."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    module = COMMAND_MODULES.get(command or "")
    return (module,) if module is not None else ALL_MODULES


def _register(argv: Sequence[str] | None = None) -> None:
    for module in modules_for(sys.argv[1:] if argv is None else argv):
        importlib.import_module(f"rollwise.cli.{module}")


def main() -> None:
    _register()
    app()
