"""`rollwise describe NAME`, and the Rich renderings of API answers that `get`, `history` and `rollout
status` share (a deployment's summary, its routes, its revisions, its last events, the traffic split,
the node capacity of `get capacity`, a canary's analysis).

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
    from rich.text import Text

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
    elif strategy == "canary":
        words = "canary, steps " + " -> ".join(step_words(s) for s in policy.get("steps") or ()) + " -> 100%"
    else:
        words = str(strategy)
    if policy.get("min_ready_seconds"):
        words += f", min ready {policy['min_ready_seconds']:g}s"
    deadline = policy.get("progress_deadline_seconds")
    if deadline is not None:
        words += f", progress deadline {deadline:g}s ({policy.get('on_deadline')})"
    return words


def canary_words(dep: Mapping[str, Any]) -> str:
    """"step 2 of 4: pause 60s (since 12s)" for a canary rollout in progress, else ""."""
    policy = dep.get("policy") or {}
    if policy.get("strategy") != "canary" or dep.get("lifecycle") != "deploying":
        return ""
    steps = policy.get("steps") or []
    index = int(dep.get("canary_step") or 0)
    what = step_words(steps[index]) if index < len(steps) else "final: 100%"
    since = f" (since {age(dep['step_started_at'])})" if dep.get("step_started_at") else ""
    return f"step {min(index + 1, len(steps) + 1)} of {len(steps) + 1}: {what}{since}"


def step_words(step: Mapping[str, Any]) -> str:
    """{"set_weight": 10} -> "10%"; {"pause": {"seconds": 60}} -> "pause 60s"; {"pause": {}} -> "pause"."""
    if "set_weight" in step:
        return f"{step['set_weight']}%"
    seconds = (step.get("pause") or {}).get("seconds")
    return "pause" if seconds is None else f"pause {seconds:g}s"


def receives_traffic(route: Mapping[str, Any]) -> bool:
    return bool(route.get("ready")) and route.get("traffic") == "active" and float(route.get("traffic_ratio", 0)) > 0


def traffic_split(routes: Iterable[Mapping[str, Any]], canary: Mapping[str, Any] | None = None) -> dict[int, float]:
    """Revision number -> share of the traffic (0..1): a canary's `weights` ({"r1": 80, "r2": 20}) over
    the revisions that have a ready route (the proxy gives an empty revision's share to the others), or
    else over the routes that receive traffic, by their ratio."""
    routes = list(routes)
    if canary:
        ready = {int(r["revision"]) for r in routes if r.get("ready")}
        shares = {int(k.lstrip("r")): float(v) for k, v in canary.items() if int(k.lstrip("r")) in ready and v}
        total = sum(shares.values())
        return {rev: w / total for rev, w in sorted(shares.items())} if total > 0 else {}
    weights: dict[int, float] = {}
    for r in routes:
        if receives_traffic(r):
            weights[int(r["revision"])] = weights.get(int(r["revision"]), 0.0) + float(r["traffic_ratio"])
    total = sum(weights.values())
    return {rev: w / total for rev, w in sorted(weights.items())} if total > 0 else {}


def index_words(indices: Iterable[int]) -> str:
    """Device indices as people read them: "0", "0,1", runs of three or more as "0-3" ("0-3,6")."""
    ordered = sorted(set(int(i) for i in indices))
    runs: list[list[int]] = []
    for i in ordered:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) >= 3 else ",".join(map(str, r)) for r in runs)


def devices_words(devices: Mapping[str, Iterable[int]] | None) -> str:
    """A route's device indices per resource, e.g. "gpu 0" or "gpu 0,1; fpga 2"; "-" when it holds none."""
    words = [f"{name} {index_words(idx)}" for name, idx in sorted((devices or {}).items()) if idx]
    return "; ".join(words) or "-"


def amounts_words(amounts: Mapping[str, int] | None) -> str:
    """Counts per resource, e.g. "gpu 1" or "gpu 2, mem_gb 40" (what a revision's route needs); "-" for none."""
    words = [f"{name} {count}" for name, count in sorted((amounts or {}).items()) if count]
    return ", ".join(words) or "-"


def uses_devices(dep: Dep, revisions: Sequence[Mapping[str, Any]] = ()) -> bool:
    """Whether a deployment's revisions need slots or its routes hold devices (describe then shows them)."""
    return any(r.get("resources") for r in revisions) or any(r.get("devices") for r in dep.get("routes", []))


# ---------------------------------------------------------------------------------------------- renderers


def deployments_table(deps: Sequence[Dep]) -> Text:
    """One line per deployment in aligned columns, the header bold (print with `print_lines`)."""
    now = datetime.now(UTC)
    return aligned(
        ("NAME", "LIFECYCLE", "REVISION", "READY", "STRATEGY", "AGE"),
        [(d["name"], state_label(d), revisions_label(d), f"{d['ready_replicas']}/{d['replicas']}",
          strategy_of(d), age(d.get("created_at"), now)) for d in deps],
    )


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Text:
    """Plain-text columns, two spaces apart, the header bold: what a Rich `Table(box=None)` prints, in a
    small fraction of its time (a Table measures and renders every cell: ~6 s for 10,000 rows)."""
    from rich.text import Text

    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in (header, *rows)]
    text = Text("\n".join(lines), no_wrap=True, overflow="ignore")
    text.stylize("bold", 0, len(lines[0]))
    return text


def print_lines(text: Text) -> None:
    """Print long aligned lines as they are: never wrapped or cut at the terminal's width."""
    stdout().print(text, crop=False, soft_wrap=True)


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
    split = traffic_split(dep.get("routes", []), dep.get("weights"))
    grid.add_row("Traffic", ", ".join(f"revision {rev}: {share:.0%}" for rev, share in split.items()) or "none")
    if canary_words(dep):
        grid.add_row("Canary", canary_words(dep))
    if dep.get("rollout_started_at"):
        grid.add_row("Last rollout", f"started {age(dep['rollout_started_at'])} ago, last progress "
                               f"{age(dep.get('last_progress_at'))} ago")
    if dep.get("degraded"):
        grid.add_row("Degraded", Text(str(dep["degraded"]), style="yellow"))
    if dep.get("last_error"):
        grid.add_row("Last error", Text(str(dep["last_error"]), style="red"))
    grid.add_row("Created", f"{dep.get('created_at')} ({age(dep.get('created_at'))} ago)")
    return grid


def routes_table(routes: Sequence[Mapping[str, Any]], *, devices: bool = False) -> Table:
    """One row per route; with `devices`, a DEVICES column (the indices each route was given, "-" for
    none or not started yet)."""
    from rich.table import Table

    table = Table(title="Routes", title_justify="left", box=None, pad_edge=False, header_style="bold")
    columns = ["ID", "REV", "STATUS", "HEALTH", "READY", "TRAFFIC", "ADDRESS"] + (["DEVICES"] if devices else [])
    for column in [*columns, "AGE"]:
        table.add_column(column, no_wrap=True)
    for r in sorted(routes, key=lambda r: (r["revision"], r["created_at"])):
        status = r["status"] + (" (failed)" if r.get("failed") else "")
        traffic = f"{r['traffic']} {float(r['traffic_ratio']):g}"
        cells = [r["id"], str(r["revision"]), status, r["health"], "yes" if r.get("ready") else "no",
                 traffic, r.get("address") or "-"] + ([devices_words(r.get("devices"))] if devices else [])
        table.add_row(*cells, age(r.get("created_at")))
    return table


def revisions_table(revisions: Sequence[Mapping[str, Any]], dep: Dep, *, resources: bool = False) -> Table:
    """One row per revision; with `resources`, a RESOURCES column (what one route of it needs)."""
    from rich.table import Table

    table = Table(title="Revisions", title_justify="left", box=None, pad_edge=False, header_style="bold")
    columns = ["REV", "LABEL", "COMMAND", "HEALTH CHECK"] + (["RESOURCES"] if resources else []) + ["AGE", ""]
    for column in columns:
        table.add_column(column, no_wrap=column != "COMMAND")
    for rev in revisions:
        mark = ""
        if rev["number"] == dep.get("current_revision"):
            mark = "serving"
        if rev["number"] == dep.get("deploying_revision"):
            mark = "deploying"
        check = rev.get("health_check")
        cells = [str(rev["number"]), rev.get("label") or "-", " ".join(rev["command"]),
                 check["path"] if check else "none"] + ([amounts_words(rev.get("resources"))] if resources else [])
        table.add_row(*cells, age(rev.get("created_at")), mark)
    return table


def capacity_view(capacity: Mapping[str, Any]) -> Group:
    """`GET /v1/capacity` for people: per node, a table of its slots (total, held, free per resource) and
    the routes that hold them (deployment, revision, status, what each holds and its device indices)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    for node in capacity.get("nodes", []):
        if parts:
            parts.append(Text(""))
        total, held, free = node.get("total") or {}, node.get("held") or {}, node.get("free") or {}
        names = sorted(set(total) | set(held) | set(free))
        holders = node.get("routes") or []
        if not names:
            parts.append(Text(f"Node {node['name']}: no slots (start the server with --resources gpu=N, or on a "
                              "machine where nvidia-smi lists GPUs)"))
        else:
            slots = Table(title=f"Node {node['name']}", title_justify="left", box=None, pad_edge=False,
                          header_style="bold")
            for column in ("RESOURCE", "TOTAL", "HELD", "FREE"):
                slots.add_column(column, no_wrap=True, justify="left" if column == "RESOURCE" else "right")
            for name in names:
                slots.add_row(name, str(total.get(name, 0)), str(held.get(name, 0)), str(free.get(name, 0)))
            parts.append(slots)
        if not holders:
            if names:
                parts += [Text(""), Text("Holders: none")]
            continue
        table = Table(title="Holders", title_justify="left", box=None, pad_edge=False, header_style="bold")
        for column in ("ROUTE", "DEPLOYMENT", "REV", "STATUS", "HOLDS", "DEVICES"):
            table.add_column(column, no_wrap=True)

        def first_index(route: Mapping[str, Any]) -> tuple[int, str, int, str]:
            # In device order (gpu first), so the table reads like a map of the node; unplaced routes last.
            devices = route.get("devices") or {}
            indices = list(devices.get("gpu") or []) or [i for idx in devices.values() for i in idx]
            return (min(indices) if indices else 1 << 30, str(route.get("deployment")),
                    int(route.get("revision") or 0), str(route.get("id")))

        for r in sorted(holders, key=first_index):
            table.add_row(str(r.get("id")), str(r.get("deployment")), str(r.get("revision")), str(r.get("status")),
                          amounts_words(r.get("holds")),
                          devices_words(r.get("devices")) if r.get("devices") or not r.get("holds")
                          else "- (not started yet)")
        parts += [Text(""), table]
    return Group(*(parts or [Text("no nodes")]))


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


def has_analysis(dep: Dep) -> bool:
    """Whether the deployment's policy has a canary analysis (describe and rollout status then show it)."""
    return bool((dep.get("policy") or {}).get("analysis"))


def analysis_summary(analysis: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per metric of `GET .../analysis` (in the order they were first measured): its newest
    measurement (`last`) and its measurements counted by verdict (`counts`)."""
    metrics: dict[str, dict[str, Any]] = {}
    for m in analysis.get("measurements") or []:
        entry = metrics.setdefault(m["metric"], {"metric": m["metric"], "counts": {}, "last": m})
        entry["counts"][m["verdict"]] = entry["counts"].get(m["verdict"], 0) + 1
        entry["last"] = m
    return list(metrics.values())


def analysis_heading(analysis: Mapping[str, Any]) -> str:
    """"Analysis of revision 2: 1 failed, 6 passed, 2 inconclusive" (the current rollout's counts)."""
    counts = analysis.get("counts") or {}
    of = f" of revision {analysis['revision']}" if analysis.get("revision") is not None else ""
    return (f"Analysis{of}: {counts.get('failed', 0)} failed, {counts.get('passed', 0)} passed, "
            f"{counts.get('inconclusive', 0)} inconclusive")


def measurement_line(m: Mapping[str, Any]) -> str:
    """One measurement as a line: "12:00:30 analysis errors failed: errors = 0.034 > 0.01"."""
    return f"{clock(m.get('created_at'))} analysis {m['metric']} {m['verdict']}: {m['words']}"


def analysis_table(analysis: Mapping[str, Any]) -> RenderableType:
    """The current rollout's analysis: one row per metric with its last verdict, value and words, and
    its measurements counted by verdict; "no measurements yet" before the first interval ends."""
    from rich.table import Table
    from rich.text import Text

    rows = analysis_summary(analysis)
    if not rows:
        return Text(f"{analysis_heading(analysis)} (no measurements yet)")
    table = Table(title=analysis_heading(analysis), title_justify="left", box=None, pad_edge=False,
                  header_style="bold")
    for column in ("METRIC", "LAST", "VALUE", "FAILED", "PASSED", "INCONCLUSIVE", "AT", "WORDS"):
        table.add_column(column, no_wrap=column != "WORDS")
    styles = {"failed": "red", "inconclusive": "yellow", "passed": "green"}
    for row in rows:
        last, counts = row["last"], row["counts"]
        table.add_row(
            row["metric"], Text(last["verdict"], style=styles.get(last["verdict"], "")),
            last.get("value") if last.get("value") is not None else "-",
            str(counts.get("failed", 0)), str(counts.get("passed", 0)), str(counts.get("inconclusive", 0)),
            clock(last.get("created_at")), last["words"],
        )
    return table


def describe_view(dep: Dep, revisions: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]],
                  analysis: Mapping[str, Any] | None = None) -> Group:
    from rich.console import Group
    from rich.text import Text

    devices = uses_devices(dep, revisions)
    parts: list[RenderableType] = [summary(dep), Text("")]
    parts += [routes_table(dep.get("routes", []), devices=devices) if dep.get("routes") else Text("Routes: none"),
              Text("")]
    if analysis is not None:
        parts += [analysis_table(analysis), Text("")]
    parts += [revisions_table(revisions, dep, resources=devices), Text("")]
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
    """Show a deployment in detail: state, policy, traffic split, routes (and their devices), a canary's
    analysis (per metric: last verdict, value, counts), revisions (and what their routes need), recent
    events."""
    with cli_errors(), connect(server, token, data_dir) as client:
        dep = client.get(deployment_path(name))
        revisions = client.get(deployment_path(name, "revisions"))
        history = client.get(deployment_path(name, "history"), limit=events)
        analysis = client.get_or_none(deployment_path(name, "analysis")) if has_analysis(dep) else None
        if output is Output.json:
            print_json({"deployment": dep, "revisions": revisions, "history": history, "analysis": analysis})
            return
        stdout().print(describe_view(dep, revisions, history, analysis))
