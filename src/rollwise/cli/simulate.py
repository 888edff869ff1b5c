"""`rollwise simulate`: a rollout from v1 to v2 on the real control plane with the simulated runtime
(see control.simulation), printed cycle by cycle for people, or as JSON with `--json` (the last line is
one JSON object: outcome, final_revision, cycles, max_alive, min_serving, max_held, timeline).

GPU capacity:

    --capacity N             gpu slots of the simulated node (default: none, nothing is counted)
    --gpus-per-route N       gpu slots each route of v1 and v2 needs (default 1 with --capacity; 0 = none)
    --capacity-fallback X    the policy's capacity_fallback: replace (default) or wait

`--capacity` must hold the v1 routes (N >= replicas x gpus per route). Bad values (not an integer, negative,
`--gpus-per-route` over `--capacity` or without it, an unknown fallback) print one line naming the
option and exit 2. With `--capacity` the table gains a "gpu held" column and a line with the most gpu
units held at once (`max_held` in the JSON; null without `--capacity`).
"""

from __future__ import annotations

import asyncio
import json
import re
from enum import Enum
from typing import Any

import typer

from rollwise.cli.app import app


class FailNew(str, Enum):
    none = "none"
    start = "start"
    unhealthy = "unhealthy"


class StrategyOpt(str, Enum):
    rolling = "rolling"
    blue_green = "blue_green"
    recreate = "recreate"


def _int_or_percent(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


OPTION_OF = {"capacity": "--capacity", "gpus_per_route": "--gpus-per-route"}
"""control.simulation's option fields -> the options that set them."""


def _count_option(option: str, value: str | None) -> int | None:
    """An integer option read by hand, so a bad value is one line naming the option (exit 2)."""
    from rollwise.cli.errors import fail

    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"-?[0-9]+", text) is None:
        fail(f'{option}: "{value}" is not an integer', code=2)
    number = int(text)
    if number < 0:
        fail(f"{option}: {number} is negative", code=2)
    if number > 1_000_000:
        fail(f"{option}: {number} is over 1000000", code=2)
    return number


@app.command("simulate")
def simulate(
    strategy: StrategyOpt = typer.Option(StrategyOpt.rolling, help="Rollout strategy"),
    replicas: int = typer.Option(3, min=0, max=1000, help="Desired replicas"),
    max_surge: str = typer.Option("25%", help='Rolling: extra routes, integer or "N%"'),
    max_unavailable: str = typer.Option("0", help='Rolling: routes that may be unavailable, integer or "N%"'),
    auto_promote: bool = typer.Option(False, help="Blue-green: promote once green is ready"),
    promote_delay: float = typer.Option(0.0, "--promote-delay", min=0, help="Blue-green: seconds before auto-promotion"),
    startup_seconds: float = typer.Option(2.0, min=0, help="Seconds a route takes to become ready"),
    fail_new: FailNew = typer.Option(FailNew.none, help="How v2 misbehaves: none, start, unhealthy"),
    seed: int = typer.Option(0, help="Seed of the startup-time jitter"),
    tick: float = typer.Option(0.5, min=0.01, help="Simulated seconds per cycle"),
    capacity: str | None = typer.Option(None, "--capacity", metavar="N",
                                 help="GPU slots of the simulated node (default: no capacity counted)"),
    gpus_per_route: str | None = typer.Option(None, "--gpus-per-route", metavar="N",
                                       help="GPU slots each route needs (default 1 with --capacity; 0 = none)"),
    capacity_fallback: str = typer.Option("replace", "--capacity-fallback", metavar="replace|wait",
                                          help="Rolling: replace one old route at a time, or wait, when no new route fits"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Simulate a rollout from v1 to v2 (no processes, simulated time) and show every cycle."""
    from rollwise.cli.errors import fail
    from rollwise.control.simulation import SimulationOptions, capacity_problem, run_simulation
    from rollwise.model import RollwiseError
    from rollwise.model.policy import parse_policy

    if capacity_fallback not in ("replace", "wait"):
        fail(f'--capacity-fallback: "{capacity_fallback}" is not "replace" or "wait"', code=2)
    opts = SimulationOptions(
        strategy=strategy.value,
        replicas=replicas,
        max_surge=_int_or_percent(max_surge),
        max_unavailable=_int_or_percent(max_unavailable),
        auto_promote=auto_promote,
        promote_delay_seconds=promote_delay,
        startup_seconds=startup_seconds,
        fail_new=fail_new.value,
        seed=seed,
        tick=tick,
        capacity=_count_option("--capacity", capacity),
        gpus_per_route=_count_option("--gpus-per-route", gpus_per_route),
        capacity_fallback=capacity_fallback,
    )
    problem = capacity_problem(opts)
    if problem is not None:
        fail(f"{OPTION_OF[problem[0]]}: {problem[1]}", code=2)
    try:
        parse_policy(opts.policy())
        result = asyncio.run(run_simulation(opts))
    except RollwiseError as e:
        fail(str(e), code=2)
    if as_json:
        print(json.dumps(result.to_json()))
        return
    _print_table(result, opts)


def _print_table(result: Any, opts: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    gpus = opts.capacity is not None
    title = f"simulated {opts.strategy.replace('_', '-')} rollout v1 -> v2, {opts.replicas} replicas"
    if gpus:
        title += f", {opts.capacity} gpu ({opts.route_gpus} per route, {opts.capacity_fallback})"
    table = Table(title=title)
    columns = ["cycle", "t (s)", "sub-step", "v1 ready/prov/other", "v2 ready/prov/other", "alive", "serving"]
    for col in (*columns, *(["gpu held"] if gpus else []), "events"):
        table.add_column(col)
    last = None
    for row in result.timeline:
        key = (row["sub_step"], json.dumps(row["routes"], sort_keys=True), row["alive"], row["serving"], row["held"])
        if key == last and not row["events"]:
            continue  # nothing changed this cycle: keep the table short
        last = key

        def cell(label: str) -> str:
            c = row["routes"].get(label)
            if not c:
                return "-"
            return f"{c['ready']}/{c['provisioning']}/{c['unready'] + c['terminating']}" + (
                f" [red]{c['failed']} failed[/]" if c["failed"] else ""
            )

        held = [f"{row['held']}/{opts.capacity}"] if gpus else []
        table.add_row(
            str(row["cycle"]), f"{row['t']:.1f}", row["sub_step"] or "-", cell("v1"), cell("v2"),
            str(row["alive"]), str(row["serving"]), *held, "; ".join(row["events"])[:120],
        )
    console.print(table)
    console.print(
        f"outcome: [bold]{result.outcome}[/], serving {result.final_revision}, {result.cycles} cycles, "
        f"max alive {result.max_alive}, min serving {result.min_serving}"
    )
    if gpus:
        console.print(f"gpu: max held {result.max_held} of {opts.capacity} at once, {opts.route_gpus} per route")
