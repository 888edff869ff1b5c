"""`rollwise history NAME`: a deployment's recorded steps (lifecycle changes, rollout progress, operator
requests, errors), oldest first, as a table or JSON.

Called by the `rollwise` Typer app (registered on import). Must not: change anything on the server.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollwise.cli.client import DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import Output, OutputOption, events_table, print_json, stdout
from rollwise.cli.errors import cli_errors
from rollwise.cli.app import app


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Only the last N rows",
                                              show_default=False)] = None,
    output: OutputOption = Output.table,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show what happened to a deployment, step by step (repeated steps merged, with a count)."""
    with cli_errors(), connect(server, token, data_dir) as client:
        rows = client.get(deployment_path(name, "history"), limit=limit)
        if output is Output.json:
            print_json(rows)
            return
        if not rows:
            typer.echo(f"no history for {name}")
            return
        stdout().print(events_table(rows, title=f"History of {name}", revisions=True))
