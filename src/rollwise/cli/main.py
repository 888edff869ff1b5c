"""The `rollwise` command: a Typer app; each command group lives in its own module of this package.

Every command turns rollwise errors into one red line on stderr and an exit code (see `errors.py`).
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rollwise",
    help="Zero-downtime rollouts for model-serving deployments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Command modules register themselves on `app` when imported.
    from rollwise.cli import demo, plan, simulate  # noqa: F401
    from rollwise.cli import apply, describe, get, history, rollout, server  # noqa: F401


def main() -> None:
    _register()
    app()
