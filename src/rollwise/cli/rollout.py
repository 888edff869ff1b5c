"""`rollwise rollout ...`: follow and steer a deployment's rollout through the API.

    rollout status NAME [--watch]   the deployment's state: revisions, routes per status, ready/desired
                                    replicas, traffic split, sub-step, why it is degraded, last error,
                                    a canary's analysis, last events. Without --watch: print once, exit 0.
                                    With --watch it
                                    waits for the deployment to settle, like `kubectl rollout status`:
                                    - pending or scaling (a new deployment): until it is ready, exit 0;
                                    - deploying: until the rollout ends, exit 0 when it completed, 1
                                      when it rolled back (like `kubectl argo rollouts status`);
                                    - ready: at once, exit 0 (1 when the last rollout rolled back);
                                    exit 1 when the deployment is being destroyed or --timeout passes
                                    (the line says how far it got: ready/desired and the last error).
    rollout promote|pause|resume|abort|undo NAME
                                    the operator verbs; a refusal (409) says why, exit 1.

In a terminal, --watch redraws a Rich live view; otherwise (a pipe, CI) it prints the view once, then
each new event, each change of the ready count and each new analysis measurement as one line, so logs
stay readable.

Called by the `rollwise` Typer app (registered on import). Must not: decide anything about the rollout;
import rich for the verbs (it is imported by the views that print tables).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rollwise.cli.client import Client, DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import (
    analysis_table,
    clock,
    has_analysis,
    measurement_line,
    event_line,
    events_table,
    revisions_label,
    state_label,
    stdout,
    strategy_of,
    traffic_split,
)
from rollwise.cli.errors import EXIT_ERROR, cli_errors, fail
from rollwise.cli.app import app

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

rollout_app = typer.Typer(help="Follow and steer rollouts.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

EVENTS_SHOWN = 5
ROUTE_STATUSES = {"provisioning": "STARTING", "running": "RUNNING", "terminating": "STOPPING",
                  "failed_to_start": "FAILED"}
"""Route status -> its column in the status view."""
STARTING = ("pending", "scaling")
"""Lifecycles of a deployment on its way to its first ready state: --watch waits for `ready`."""
FOLLOWED = (*STARTING, "deploying")
"""Lifecycles --watch waits on."""
ERROR_CHARS = 400
"""How much of an error an outcome line quotes (a crash's last error holds log lines)."""

NameArg = Annotated[str, typer.Argument(help="Deployment name")]
Dep = Mapping[str, Any]
History = Sequence[Mapping[str, Any]]

# -------------------------------------------------------------------------------------------- the view


def status_view(dep: Dep, history: History, analysis: Mapping[str, Any] | None = None) -> RenderableType:
    """One screen: the header line, one row per revision involved, the last error, a canary's analysis,
    the last events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text.assemble(
        (dep["name"], "bold"), f"  {state_label(dep)}  strategy {strategy_of(dep)}  revision {revisions_label(dep)}",
    )
    routes = dep.get("routes", [])
    split = traffic_split(routes, dep.get("weights"))
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
    notes = [Text(f"Degraded: {dep['degraded']}", style="yellow")] if dep.get("degraded") else []
    error = last_error(dep)
    if error:
        notes.append(Text(f"Last error: {error}", style="red"))
    if notes:
        parts += [Text(""), *notes]
    if analysis is not None:
        parts += [Text(""), analysis_table(analysis)]
    if history:
        parts += [Text(""), events_table(history[-EVENTS_SHOWN:], title="Last events")]
    return Group(*parts)


def last_error(dep: Dep) -> str | None:
    """The deployment's last error, else why its latest failed route failed (None when neither)."""
    if dep.get("last_error"):
        return str(dep["last_error"]).strip()
    failed = [r for r in dep.get("routes") or [] if r.get("failed") and r.get("detail")]
    if not failed:
        return None
    latest = max(failed, key=lambda r: str(r.get("status_updated_at") or ""))
    return f"route {latest.get('id')} of revision {latest.get('revision')}: {latest['detail']}"


def progress_words(dep: Dep, target: int | None = None) -> str:
    """"2/3 replicas ready (scaling: 1 starting, 4 failed)": how far the deployment got (the routes of
    `target` when a rollout moves to it)."""
    routes = [r for r in dep.get("routes") or [] if target is None or int(r["revision"]) == target]
    ready = sum(1 for r in routes if r.get("ready")) if target is not None else dep.get("ready_replicas", 0)
    counts = [f"{n} {word}" for status, word in (("provisioning", "starting"), ("failed_to_start", "failed"))
              if (n := sum(1 for r in routes if r["status"] == status))]
    of = f" of revision {target}" if target is not None else ""
    return f"{ready}/{dep['replicas']} replicas{of} ready ({dep['lifecycle']}{': ' if counts else ''}" \
           f"{', '.join(counts)})"


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ERROR_CHARS else line[:ERROR_CHARS - 3] + "..."


# ------------------------------------------------------------------------------------------- status


@rollout_app.command()
def status(
    name: NameArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Wait until the deployment is ready or its rollout "
                                                            "ends; exit 0 ready or completed, 1 rolled back")] = False,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="Seconds between polls")] = 0.5,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Give up after this many seconds "
                                                                  "(0: never), exit 1")] = 0,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Show the rollout of a deployment (with --watch: wait until it is ready or its rollout ends)."""
    with cli_errors(), connect(server, token, data_dir) as client:
        console = stdout()
        dep, history = _read(client, name)
        if not watch:
            console.print(status_view(dep, history, _read_analysis(client, name, dep)))
            return
        code, line = watch_deployment(client, name, dep, history, console, interval=interval, timeout=timeout)
    if code != 0:
        fail(line, code=code)
    typer.secho(line, fg=typer.colors.GREEN)


def _read(client: Client, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    dep = client.get(deployment_path(name))
    history = client.get(deployment_path(name, "history"), limit=EVENTS_SHOWN * 4)
    return dep, history


def _read_analysis(client: Client, name: str, dep: Dep) -> dict[str, Any] | None:
    """The canary's analysis when the policy has one (None otherwise, or from a server without it)."""
    return client.get_or_none(deployment_path(name, "analysis")) if has_analysis(dep) else None


def watch_deployment(client: Client, name: str, dep: dict[str, Any], history: list[dict[str, Any]],
                     console: Console, *, interval: float, timeout: float) -> tuple[int, str]:
    """Follow the deployment while it is pending, scaling or deploying; (exit code, last line)."""
    if dep["lifecycle"] not in FOLLOWED:
        # Nothing to wait for: report how the last rollout ended (a rollback stays a failure until the
        # next rollout, so `apply && rollout status --watch` is right even for a rollout that ended
        # before the watch began).
        console.print(status_view(dep, history))
        return _settled(name, dep)
    deadline = time.monotonic() + timeout if timeout else None
    target: int | None = None  # the revision a rollout moves to, once one was seen
    with (LiveDisplay(console) if console.is_terminal else LineDisplay(console)) as display:
        display.show(dep, history, _read_analysis(client, name, dep))
        while dep["lifecycle"] in FOLLOWED:
            if dep["lifecycle"] == "deploying" and dep.get("deploying_revision") is not None:
                target = int(dep["deploying_revision"])
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return EXIT_ERROR, _timed_out(name, dep, timeout, target)
            time.sleep(interval if left is None else min(interval, left))
            dep, history = _read(client, name)
            display.show(dep, history, _read_analysis(client, name, dep))
    if target is not None:
        return _outcome(name, dep, history, target)
    return _started(name, dep)


class LiveDisplay:
    """The view redrawn in place (a terminal)."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self._live: Live = Live(console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._live.__exit__(kind, error, trace)

    def show(self, dep: Dep, history: History, analysis: Mapping[str, Any] | None = None) -> None:
        self._live.update(status_view(dep, history, analysis))


class LineDisplay:
    """The view once, then one line per new event, per change of the ready count and per new analysis
    measurement (a pipe, CI)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._seen: set[tuple[Any, Any]] | None = None
        self._progress: tuple[Any, ...] | None = None
        self._measured: set[Any] = set()

    def __enter__(self) -> LineDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, dep: Dep, history: History, analysis: Mapping[str, Any] | None = None) -> None:
        progress = (dep["lifecycle"], dep.get("ready_replicas"), dep["replicas"], last_error(dep))
        measurements = (analysis or {}).get("measurements") or []
        if self._seen is None:
            self._console.print(status_view(dep, history, analysis))
            self._seen = {(h["id"], h.get("attempts")) for h in history}
            self._measured = {m.get("id") for m in measurements}
            self._progress = progress
            return
        for m in measurements:
            if m.get("id") not in self._measured:
                self._measured.add(m.get("id"))
                typer.echo(measurement_line(m))
        for h in history:
            key = (h["id"], h.get("attempts"))
            if key not in self._seen:
                self._seen.add(key)
                typer.echo(event_line(h))
        if progress != self._progress and dep["lifecycle"] in STARTING:
            error = last_error(dep)
            typer.echo(f"{clock(dep.get('updated_at'))} {dep['name']}: {progress_words(dep)}"
                       + (f"; last error: {_short(error)}" if error else ""))
        self._progress = progress


def _timed_out(name: str, dep: Dep, timeout: float, target: int | None) -> str:
    what = f"the rollout of revision {target} to end" if target is not None else "the deployment to be ready"
    error = last_error(dep)
    return (f"{name}: timed out after {timeout:g}s waiting for {what}: {progress_words(dep, target)}"
            + (f"; last error: {_short(error)}" if error else ""))


def _started(name: str, dep: Dep) -> tuple[int, str]:
    """(exit code, line) once a new deployment left PENDING/SCALING without a rollout."""
    if dep["lifecycle"] in ("destroying", "destroyed"):
        return EXIT_ERROR, f"{name}: the deployment is being destroyed"
    return 0, (f"{name}: ready, {dep.get('ready_replicas')}/{dep['replicas']} replicas of revision "
               f"{dep.get('current_revision')} ready")


def _settled(name: str, dep: Dep) -> tuple[int, str]:
    """(exit code, line) for a deployment with no rollout in progress."""
    serving = f"revision {dep.get('current_revision')} serving"
    if dep.get("sub_step") == "rolled_back":
        why = f" ({dep['rollback_reason']})" if dep.get("rollback_reason") else ""
        return EXIT_ERROR, f"{name}: no rollout in progress; the last one rolled back{why}; {serving}"
    if dep["lifecycle"] in ("destroying", "destroyed"):
        return EXIT_ERROR, f"{name}: the deployment is being destroyed"
    last = "; the last rollout completed" if dep.get("sub_step") == "completed" else ""
    return 0, (f"{name}: no rollout in progress ({dep['lifecycle']}, {dep.get('ready_replicas')}/{dep['replicas']} "
               f"replicas ready){last}; {serving}")


def _outcome(name: str, dep: Dep, history: History, target: int) -> tuple[int, str]:
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
        "pause": "Pause the rollout in progress (routes stay as they are).",
        "resume": "Resume a paused rollout.",
        "abort": "Abort the rollout in progress: roll back to the serving revision now.",
        "undo": "Roll out the revision that served before the current one.",
    }[verb]
    rollout_app.command(verb)(command)


@rollout_app.command("promote")
def promote(name: NameArg, full: Annotated[bool, typer.Option("--full", help="Canary: skip to the final step (100 %).")] = False,
            server: ServerOption = None, token: TokenOption = None, data_dir: DataDirOption = None) -> None:
    """Blue-green: switch traffic to the new revision now. Canary: complete the current step (--full: all)."""
    with cli_errors(), connect(server, token, data_dir) as client:
        dep = client.post(deployment_path(name, "promote"), {"full": True} if full else None)
    done = "full promotion requested" if full else "promotion requested"
    typer.echo(f"{name}: {done} ({state_label(dep)}, revision {revisions_label(dep)})")


_verb("pause", "rollout paused")
_verb("resume", "rollout resumed")
_verb("abort", "abort requested, rolling back")
_verb("undo", "rollout of the previous revision started")
