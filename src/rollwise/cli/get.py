"""`rollwise get [NAME]`: deployments as a table (or JSON with `-o json`), read from the server's API.

Called by the `rollwise` Typer app (registered on import). Must not: change anything on the server.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollwise.cli.client import DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import Output, OutputOption, deployments_table, print_json, stdout
from rollwise.cli.errors import cli_errors
from rollwise.cli.app import app


@app.command()
def get(
    name: Annotated[str | None, typer.Argument(help="One deployment (default: all)", show_default=False)] = None,
    output: OutputOption = Output.table,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List deployments: lifecycle, revisions, ready replicas, strategy, age."""
    with cli_errors(), connect(server, token, data_dir) as client:
        deps = [client.get(deployment_path(name))] if name else client.get("/v1/deployments")
        if output is Output.json:
            print_json(deps[0] if name else deps)
            return
        if not deps:
            typer.echo("no deployments")
            return
        stdout().print(deployments_table(deps))
