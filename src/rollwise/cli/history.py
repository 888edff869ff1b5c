"""`rollwise history NAME`: a deployment's recorded steps (lifecycle changes, rollout progress, operator
requests, errors), oldest first, as a table or JSON; `--rollouts`: its rollouts; `--plot FILE.png
[--rollout ID]`: one rollout's timeline chart as a PNG (cli.plot; matplotlib, the `plot` extra).

Called by the `rollwise` Typer app (registered on import). Must not: change anything on the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollwise.cli.client import Client, DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import Output, OutputOption, clock, events_table, parse_time, print_json, stdout
from rollwise.cli.errors import EXIT_INVALID, cli_errors, fail
from rollwise.cli.app import app

if TYPE_CHECKING:
    from rich.table import Table


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Only the last N rows",
                                              show_default=False)] = None,
    output: OutputOption = Output.table,
    rollouts: Annotated[bool, typer.Option("--rollouts", help="List the deployment's rollouts instead")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE.png", dir_okay=False, show_default=False,
        help="Write a rollout's timeline as a PNG: ready routes and traffic share per revision over time, "
             "with its events (needs matplotlib: pip install 'rollwise[plot]')")] = None,
    rollout: Annotated[int | None, typer.Option(
        "--rollout", metavar="ID", min=1, show_default=False,
        help="With --plot: the rollout to draw (ids: --rollouts; default: the latest)")] = None,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show what happened to a deployment, step by step (repeated steps merged, with a count)."""
    if rollout is not None and plot is None:
        fail("--rollout ID goes with --plot FILE.png", code=EXIT_INVALID)
    if plot is not None and rollouts:
        fail("--plot and --rollouts: give one of them", code=EXIT_INVALID)
    if plot is not None:
        from rollwise.cli.plot import INSTALL_HINT, have_matplotlib

        if not have_matplotlib():
            fail(INSTALL_HINT)
    with cli_errors(), connect(server, token, data_dir) as client:
        if plot is not None:
            plot_timeline(client, name, rollout, plot)
            return
        if rollouts:
            listed = client.get(deployment_path(name, "rollouts"))
            if output is Output.json:
                print_json(listed)
            elif not listed:
                typer.echo(f"no rollouts of {name}")
            else:
                stdout().print(rollouts_table(listed, title=f"Rollouts of {name}"))
            return
        rows = client.get(deployment_path(name, "history"), limit=limit)
        if output is Output.json:
            print_json(rows)
            return
        if not rows:
            typer.echo(f"no history for {name}")
            return
        stdout().print(events_table(rows, title=f"History of {name}", revisions=True))


def rollouts_table(rollouts: Sequence[Mapping[str, Any]], *, title: str) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "REVISIONS", "STRATEGY", "STARTED", "DURATION", "OUTCOME"):
        table.add_column(column, no_wrap=True)
    for r in rollouts:
        start, end = parse_time(r["started_at"]), parse_time(r.get("ended_at"))
        duration = "running" if end is None or start is None else f"{(end - start).total_seconds():.1f}s"
        frm = "-" if r.get("from_revision") is None else r["from_revision"]
        style = {"completed": "green", "rolled_back": "red", "aborted": "yellow"}.get(r["outcome"], "")
        table.add_row(str(r["id"]), f"{frm} -> {r['to_revision']}", r["strategy"], clock(r["started_at"]), duration,
                      Text(r["outcome"], style=style))
    return table


def plot_timeline(client: Client, name: str, rollout: int | None, path: Path) -> None:
    """Fetch one rollout's timeline (the latest without `rollout`) and write its chart to `path`."""
    from rollwise.cli.plot import write_timeline_png

    if rollout is None:
        listed = client.get(deployment_path(name, "rollouts"))
        if not listed:
            fail(f"deployment {name!r} has no rollout to plot yet")
        rollout = int(listed[-1]["id"])
    timeline = client.get(deployment_path(name, "rollouts", str(rollout), "timeline"))
    frm = "-" if timeline.get("from_revision") is None else timeline["from_revision"]
    title = (f"{name}: rollout {timeline['id']}, r{frm} -> r{timeline['to_revision']} "
             f"({timeline['strategy']}, {timeline['outcome'].replace('_', ' ')})")
    try:
        write_timeline_png(timeline, path, title=title)
    except OSError as e:
        fail(f"--plot: cannot write {path}: {e.strerror or e}")
    typer.echo(f"wrote {path}: rollout {timeline['id']} of {name}, {len(timeline['samples'])} samples, "
               f"{len(timeline['events'])} events")
