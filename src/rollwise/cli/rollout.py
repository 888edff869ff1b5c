"""`rollwise rollout ...`: follow and steer a deployment's rollout through the API.

    rollout status NAME [--watch]   the rollout's state: revisions, routes per status, traffic split,
                                    sub-step, last events. With --watch it follows the rollout until it
                                    ends: exit 0 when it completed, 1 when it rolled back (or the
                                    deployment went away, or --timeout passed), like
                                    `kubectl argo rollouts status`. Without --watch: print once, exit 0.
    rollout promote|pause|resume|abort|undo NAME
                                    the operator verbs; a refusal (409) says why, exit 1.

In a terminal, --watch redraws a Rich live view; otherwise (a pipe, CI) it prints each new event as one
line, so logs stay readable.

Called by the `rollwise` Typer app (registered on import). Must not: decide anything about the rollout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rollwise.cli.client import Client, DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import (
    event_line,
    events_table,
    revisions_label,
    state_label,
    stdout,
    strategy_of,
    traffic_split,
)
from rollwise.cli.errors import EXIT_ERROR, cli_errors, fail
from rollwise.cli.main import app

rollout_app = typer.Typer(help="Follow and steer rollouts.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

EVENTS_SHOWN = 5
ROUTE_STATUSES = {"provisioning": "STARTING", "running": "RUNNING", "terminating": "STOPPING",
                  "failed_to_start": "FAILED"}
"""Route status -> its column in the status view."""

NameArg = Annotated[str, typer.Argument(help="Deployment name")]

# -------------------------------------------------------------------------------------------- the view


def status_view(dep: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> RenderableType:
    """One screen: the header line, one row per revision involved, the last events."""
    header = Text.assemble(
        (dep["name"], "bold"), f"  {state_label(dep)}  strategy {strategy_of(dep)}  revision {revisions_label(dep)}",
    )
    routes = dep.get("routes", [])
    split = traffic_split(routes)
    involved = sorted({int(r["revision"]) for r in routes}
                      | {n for n in (dep.get("current_revision"), dep.get("deploying_revision")) if n is not None})
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("REV", "ROLE", *ROUTE_STATUSES.values(), "READY", "TRAFFIC"):
        table.add_column(column, no_wrap=True)
    for number in involved:
        mine = [r for r in routes if int(r["revision"]) == number]
        role = "deploying" if number == dep.get("deploying_revision") else \
            "serving" if number == dep.get("current_revision") else "old"
        counts = [str(sum(1 for r in mine if r["status"] == s)) for s in ROUTE_STATUSES]
        ready = sum(1 for r in mine if r.get("ready"))
        table.add_row(str(number), role, *counts, f"{ready}/{dep['replicas']}", f"{split.get(number, 0.0):.0%}")
    parts: list[RenderableType] = [header, Text(""), table]
    if history:
        parts += [Text(""), events_table(history[-EVENTS_SHOWN:], title="Last events")]
    return Group(*parts)


# ------------------------------------------------------------------------------------------- status


@rollout_app.command()
def status(
    name: NameArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow until the rollout ends; exit 0 completed, "
                                                            "1 rolled back")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between polls")] = 0.5,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up after this many seconds "
                                                                  "(0: never), exit 1")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show the rollout of a deployment (with --watch: follow it until it ends)."""
    console = stdout()
    with cli_errors(), connect(server, token, data_dir) as client:
        dep, history = _read(client, name)
        if not watch:
            console.print(status_view(dep, history))
            return
        if dep["lifecycle"] != "deploying":
            # Nothing to follow: report how the last rollout ended (a rollback stays a failure until the
            # next rollout, so `apply && rollout status --watch` is right even for a rollout that ended
            # before the watch began).
            console.print(status_view(dep, history))
            code, line = _settled(name, dep)
            if code != 0:
                fail(line, code=code)
            typer.echo(line)
            return
        follow = _follow_live if console.is_terminal else _follow_lines
        dep, history, target = follow(client, name, dep, history, console, interval=interval, timeout=timeout)
        code, line = _outcome(name, dep, history, target)
        if code != 0:
            fail(line, code=code)
        typer.secho(line, fg=typer.colors.GREEN)


def _read(client: Client, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    dep = client.get(deployment_path(name))
    history = client.get(deployment_path(name, "history"), limit=EVENTS_SHOWN * 4)
    return dep, history


Followed = tuple[dict[str, Any], list[dict[str, Any]], int]


def _follow_live(client: Client, name: str, dep: dict[str, Any], history: list[dict[str, Any]],
                 console: Console, *, interval: float, timeout: float) -> Followed:
    """Redraw the view until the deployment leaves DEPLOYING; returns the last state and the revision
    the rollout was moving to (a superseding rollout is followed)."""
    deadline = time.monotonic() + timeout if timeout else None
    target = int(dep["deploying_revision"])
    with Live(status_view(dep, history), console=console, refresh_per_second=8, transient=False) as live:
        while dep["lifecycle"] == "deploying":
            target = int(dep["deploying_revision"] or target)
            _check_deadline(deadline, name)
            time.sleep(interval)
            dep, history = _read(client, name)
            live.update(status_view(dep, history))
    return dep, history, target


def _follow_lines(client: Client, name: str, dep: dict[str, Any], history: list[dict[str, Any]],
                  console: Console, *, interval: float, timeout: float) -> Followed:
    """Like _follow_live, for a pipe: the view once, then each new event as one line."""
    deadline = time.monotonic() + timeout if timeout else None
    target = int(dep["deploying_revision"])
    console.print(status_view(dep, history))
    seen = {(h["id"], h.get("attempts")) for h in history}
    while dep["lifecycle"] == "deploying":
        target = int(dep["deploying_revision"] or target)
        _check_deadline(deadline, name)
        time.sleep(interval)
        dep, history = _read(client, name)
        for h in history:
            key = (h["id"], h.get("attempts"))
            if key not in seen:
                seen.add(key)
                typer.echo(event_line(h))
    return dep, history, target


def _check_deadline(deadline: float | None, name: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        fail(f"{name}: timed out waiting for the rollout to end", code=EXIT_ERROR)


def _settled(name: str, dep: Mapping[str, Any]) -> tuple[int, str]:
    """(exit code, line) for a deployment with no rollout in progress."""
    serving = f"revision {dep.get('current_revision')} serving"
    if dep.get("sub_step") == "rolled_back":
        why = f" ({dep['rollback_reason']})" if dep.get("rollback_reason") else ""
        return EXIT_ERROR, f"{name}: no rollout in progress; the last one rolled back{why}; {serving}"
    if dep["lifecycle"] in ("destroying", "destroyed"):
        return EXIT_ERROR, f"{name}: the deployment is being destroyed"
    last = "; the last rollout completed" if dep.get("sub_step") == "completed" else ""
    return 0, f"{name}: no rollout in progress ({dep['lifecycle']}){last}; {serving}"


def _outcome(name: str, dep: Mapping[str, Any], history: Sequence[Mapping[str, Any]], target: int) -> tuple[int, str]:
    """(exit code, last line) once the deployment left DEPLOYING."""
    if dep["lifecycle"] in ("destroying", "destroyed"):
        return EXIT_ERROR, f"{name}: the deployment is being destroyed; the rollout of revision {target} ended"
    last = history[-1]["message"] if history else ""
    if dep.get("current_revision") == target:
        return 0, f"{name}: rollout of revision {target} completed" + (f" ({last})" if last else "")
    why = next((h["message"] for h in reversed(history) if h.get("sub_step") in ("rolled_back", "rolling_back")),
               last)
    return EXIT_ERROR, (f"{name}: rollout of revision {target} rolled back; revision "
                        f"{dep.get('current_revision')} serving" + (f" ({why})" if why else ""))


# -------------------------------------------------------------------------------------------- verbs


def _verb(verb: str, done: str) -> None:
    def command(name: NameArg, server: ServerOption = None, token: TokenOption = None,
                data_dir: DataDirOption = None) -> None:
        with cli_errors(), connect(server, token, data_dir) as client:
            dep = client.post(deployment_path(name, verb))
        typer.echo(f"{name}: {done} ({state_label(dep)}, revision {revisions_label(dep)})")

    command.__doc__ = {
        "promote": "Blue-green: switch traffic to the new revision now.",
        "pause": "Pause the rollout in progress (routes stay as they are).",
        "resume": "Resume a paused rollout.",
        "abort": "Abort the rollout in progress: roll back to the serving revision now.",
        "undo": "Roll out the revision that served before the current one.",
    }[verb]
    rollout_app.command(verb)(command)


_verb("promote", "promotion requested")
_verb("pause", "rollout paused")
_verb("resume", "rollout resumed")
_verb("abort", "abort requested, rolling back")
_verb("undo", "rollout of the previous revision started")
