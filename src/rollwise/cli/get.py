"""`rollwise get [NAME]`: deployments as a table (or JSON with `-o json`), read from the server's API;
without NAME, every page of `GET /v1/deployments` (the table reads the summary form, without routes).
`rollwise get capacity`: the node's slots and who holds them (`GET /v1/capacity`); a deployment named
"capacity" is shown by `rollwise describe capacity`.

Called by the `rollwise` Typer app (registered on import). Must not: change anything on the server.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollwise.cli.client import PAGE_SIZE, DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import (
    Output, OutputOption, capacity_view, deployments_table, print_json, print_lines, stdout,
)
from rollwise.cli.errors import cli_errors
from rollwise.cli.app import app

CAPACITY = "capacity"
"""`rollwise get capacity` shows the node's slots, not a deployment of that name."""


@app.command()
def get(
    name: Annotated[str | None, typer.Argument(
        help='One deployment (default: all), or "capacity": the node\'s slots and who holds them',
        show_default=False)] = None,
    output: OutputOption = Output.table,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List deployments: lifecycle, revisions, ready replicas, strategy, age. `get capacity`: the node's
    slots (total, held, free) and the routes holding them (a deployment named "capacity": `describe capacity`)."""
    with cli_errors(), connect(server, token, data_dir) as client:
        if name == CAPACITY:
            capacity = client.get("/v1/capacity")
            if output is Output.json:
                print_json(capacity)
            else:
                stdout().print(capacity_view(capacity))
            return
        if name:
            deps = [client.get(deployment_path(name))]
        else:  # every page; the table needs no routes (the summary form), JSON shows what the API has
            summary = "true" if output is Output.table else None
            deps = client.get_all("/v1/deployments", limit=PAGE_SIZE, summary=summary)
        if output is Output.json:
            print_json(deps[0] if name else deps)
            return
        if not deps:
            typer.echo("no deployments")
            return
        print_lines(deployments_table(deps))
