"""The `rollwise` Typer app that every command module registers its commands on.

Command modules import `app` from here and add their commands when imported; `cli.main` decides which
modules to import for the command being run. Keeping the app apart from `main` means no command
module imports the module that imports it. Must not: import anything but typer.
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


@app.callback()
def _root() -> None:
    # Makes `app` a group even when one command module is imported: a Typer app with one command and no
    # callback runs that command directly, and `rollwise get` would read "get" as the NAME argument.
    pass
