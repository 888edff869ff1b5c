"""`rollwise describe NAME`, and the Rich renderings of API answers that `get`, `history` and `rollout
status` share (a deployment's summary, its routes, its revisions, its last events, the traffic split).

Renderers take the JSON the API returned (plain dicts) and return Rich renderables; they never call the
API. Commands print them, or print the JSON itself with `-o json`. Rich is imported by the renderers
that use it, not with this module: `apply`, the rollout verbs and `-o json` print plain lines and must
not pay for it (start-up time is mostly imports); the text helpers here need nothing but the standard
library.

Called by the API commands of `rollwise.cli`. Must not: decide anything (it only shows); import rich at
module level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollwise.cli.client import DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.errors import cli_errors
from rollwise.cli.app import app

if TYPE_CHECKING:
    from rich.console import Console, Group, RenderableType
    from rich.table import Table

DEFAULT_EVENTS = 10
PIPE_WIDTH = 200

Dep = Mapping[str, Any]


class Output(str, Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table (for people) or json")]


def stdout() -> Console:
    """The console commands print to; off a terminal (pipes, CI) lines are not wrapped at 80 columns."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=PIPE_WIDTH)
    return console


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


# --------------------------------------------------------------------------------------------- small bits


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def age(value: str | None, now: datetime | None = None) -> str:
    """"42s", "3m", "5h", "2d" since an ISO timestamp; "-" when unknown."""
    at = parse_time(value)
    if at is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def clock(value: str | None) -> str:
    at = parse_time(value)
    return at.astimezone().strftime("%H:%M:%S") if at else "-"


def revisions_label(dep: Dep) -> str:
    current, deploying = dep.get("current_revision"), dep.get("deploying_revision")
    if deploying is None:
        return str(current) if current is not None else "-"
    return f"{current if current is not None else '-'} -> {deploying}"


def state_label(dep: Dep) -> str:
    text = str(dep["lifecycle"])
    if dep["lifecycle"] == "deploying":
        step = dep.get("sub_step") or "starting"
        text += f" ({step}{', paused' if dep.get('paused') and step != 'paused' else ''})"
        if dep.get("mode") == "rolling_back":
            text += f", rolling back ({dep.get('rollback_reason') or 'requested'})"
    return text


def strategy_of(dep: Dep) -> str:
    policy = dep.get("policy") or {}
    return str(policy.get("strategy", "?"))


def policy_words(policy: Mapping[str, Any] | None) -> str:
    if not policy:
        return "unreadable"
    strategy = policy.get("strategy")
    if strategy == "rolling":
        words = f"rolling, max surge {policy.get('max_surge')}, max unavailable {policy.get('max_unavailable')}"
        if policy.get("capacity_fallback") == "wait":
            words += ", waits for capacity"
    elif strategy == "blue_green":
        auto = "auto-promote" if policy.get("auto_promote") else "manual promotion"
        delay = policy.get("promote_delay_seconds") or 0
        words = f"blue-green, {auto}" + (f" after {delay:g}s" if policy.get("auto_promote") and delay else "")
    else:
        words = str(strategy)
    deadline = policy.get("progress_deadline_seconds")
    if deadline is not None:
        words += f", progress deadline {deadline:g}s ({policy.get('on_deadline')})"
    return words


def receives_traffic(route: Mapping[str, Any]) -> bool:
    return bool(route.get("ready")) and route.get("traffic") == "active" and float(route.get("traffic_ratio", 0)) > 0


def traffic_split(routes: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Revision number -> share of the traffic (0..1), over the routes that receive traffic."""
    weights: dict[int, float] = {}
    for r in routes:
        if receives_traffic(r):
            weights[int(r["revision"])] = weights.get(int(r["revision"]), 0.0) + float(r["traffic_ratio"])
    total = sum(weights.values())
    return {rev: w / total for rev, w in sorted(weights.items())} if total > 0 else {}


# ---------------------------------------------------------------------------------------------- renderers


def deployments_table(deps: Sequence[Dep]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "LIFECYCLE", "REVISION", "READY", "STRATEGY", "AGE"):
        table.add_column(column, no_wrap=True)
    for d in deps:
        table.add_row(
            d["name"], state_label(d), revisions_label(d), f"{d['ready_replicas']}/{d['replicas']}",
            strategy_of(d), age(d.get("created_at")),
        )
    return table


def summary(dep: Dep) -> Table:
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Name", dep["name"])
    grid.add_row("State", state_label(dep))
    grid.add_row("Revision", revisions_label(dep) + ("  (current -> deploying)" if dep.get("deploying_revision") else ""))
    grid.add_row("Replicas", f"{dep['replicas']} desired, {dep['ready_replicas']} ready on the current revision")
    grid.add_row("Policy", policy_words(dep.get("policy")) if dep.get("policy") else f"unreadable: {dep.get('policy_error')}")
    split = traffic_split(dep.get("routes", []))
    grid.add_row("Traffic", ", ".join(f"revision {rev}: {share:.0%}" for rev, share in split.items()) or "none")
    if dep.get("rollout_started_at"):
        grid.add_row("Last rollout", f"started {age(dep['rollout_started_at'])} ago, last progress "
                               f"{age(dep.get('last_progress_at'))} ago")
    if dep.get("degraded"):
        grid.add_row("Degraded", Text(str(dep["degraded"]), style="yellow"))
    if dep.get("last_error"):
        grid.add_row("Last error", Text(str(dep["last_error"]), style="red"))
    grid.add_row("Created", f"{dep.get('created_at')} ({age(dep.get('created_at'))} ago)")
    return grid


def routes_table(routes: Sequence[Mapping[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="Routes", title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "REV", "STATUS", "HEALTH", "READY", "TRAFFIC", "ADDRESS", "AGE"):
        table.add_column(column, no_wrap=True)
    for r in sorted(routes, key=lambda r: (r["revision"], r["created_at"])):
        status = r["status"] + (" (failed)" if r.get("failed") else "")
        traffic = f"{r['traffic']} {float(r['traffic_ratio']):g}"
        table.add_row(r["id"], str(r["revision"]), status, r["health"], "yes" if r.get("ready") else "no",
                      traffic, r.get("address") or "-", age(r.get("created_at")))
    return table


def revisions_table(revisions: Sequence[Mapping[str, Any]], dep: Dep) -> Table:
    from rich.table import Table

    table = Table(title="Revisions", title_justify="left", box=None, pad_edge=False, header_style="bold")
    for column in ("REV", "LABEL", "COMMAND", "HEALTH CHECK", "AGE", ""):
        table.add_column(column, no_wrap=column != "COMMAND")
    for rev in revisions:
        mark = ""
        if rev["number"] == dep.get("current_revision"):
            mark = "serving"
        if rev["number"] == dep.get("deploying_revision"):
            mark = "deploying"
        check = rev.get("health_check")
        table.add_row(str(rev["number"]), rev.get("label") or "-", " ".join(rev["command"]),
                      check["path"] if check else "none", age(rev.get("created_at")), mark)
    return table


def events_table(history: Sequence[Mapping[str, Any]], *, title: str = "Events", revisions: bool = False) -> Table:
    """History rows; with `revisions`, a column "from -> to" revision numbers as well."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
    columns = ["TIME", "LIFECYCLE", "STEP", "RESULT"] + (["REVISIONS"] if revisions else []) + ["MESSAGE"]
    for column in columns:
        table.add_column(column, no_wrap=column != "MESSAGE")
    for h in history:
        lifecycle = h["lifecycle_from"] if h["lifecycle_from"] == h["lifecycle_to"] else \
            f"{h['lifecycle_from']} -> {h['lifecycle_to']}"
        message = h["message"] + (f" (x{h['attempts']})" if h.get("attempts", 1) > 1 else "")
        style = "red" if h["result"] in ("failure", "error") else None
        cells: list[RenderableType] = [clock(h.get("updated_at")), lifecycle, h.get("sub_step") or "-", h["result"]]
        if revisions:
            frm, to = h.get("from_revision"), h.get("to_revision")
            cells.append("-" if to is None else f"{frm} -> {to}" if frm not in (None, to) else str(to))
        table.add_row(*cells, Text(message, style=style or ""))
    return table


def event_line(h: Mapping[str, Any]) -> str:
    attempts = f" (x{h['attempts']})" if h.get("attempts", 1) > 1 else ""
    step = f" [{h['sub_step']}]" if h.get("sub_step") else ""
    return f"{clock(h.get('updated_at'))} {h['lifecycle_to']}{step} {h['result']}: {h['message']}{attempts}"


def describe_view(dep: Dep, revisions: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> Group:
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [summary(dep), Text("")]
    parts += [routes_table(dep.get("routes", [])) if dep.get("routes") else Text("Routes: none"), Text("")]
    parts += [revisions_table(revisions, dep), Text("")]
    parts += [events_table(history, title=f"Events (last {len(history)})") if history else Text("Events: none")]
    return Group(*parts)


# ----------------------------------------------------------------------------------------------- command


@app.command()
def describe(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    events: Annotated[int, typer.Option("--events", min=1, help="How many recent events to show")] = DEFAULT_EVENTS,
    output: OutputOption = Output.table,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show a deployment in detail: state, policy, traffic split, routes, revisions, recent events."""
    with cli_errors(), connect(server, token, data_dir) as client:
        dep = client.get(deployment_path(name))
        revisions = client.get(deployment_path(name, "revisions"))
        history = client.get(deployment_path(name, "history"), limit=events)
        if output is Output.json:
            print_json({"deployment": dep, "revisions": revisions, "history": history})
            return
        stdout().print(describe_view(dep, revisions, history))
