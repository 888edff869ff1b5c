"""`rollwise simulate`: a rollout from v1 to v2 on the real control plane with the simulated runtime
and a simulated proxy (see control.simulation), printed cycle by cycle for people, or as JSON with
`--json` (the last line is one JSON object: outcome, final_revision, cycles, max_alive, min_serving,
max_held, requests, failed_requests, by_revision, timeline; each timeline row has `weights`).

GPU capacity:

    --capacity N             gpu slots of the simulated node (default: none, nothing is counted)
    --gpus-per-route N       gpu slots each route of v1 and v2 needs (default 1 with --capacity; 0 = none)
    --capacity-fallback X    the policy's capacity_fallback: replace (default) or wait

`--capacity` must hold the v1 routes (N >= replicas x gpus per route). Bad values (not an integer, negative,
`--gpus-per-route` over `--capacity` or without it, an unknown fallback) print one line naming the
option and exit 2. With `--capacity` the table gains a "gpu held" column and a line with the most gpu
units held at once (`max_held` in the JSON; null without `--capacity`).

Traffic, canaries and min_ready_seconds:

    --rate N                 requests per second through the simulated proxy (default 50)
    --min-ready-seconds S    the policy's min_ready_seconds (every strategy; default 0)
    --strategy canary        with --steps "10,pause:5,50,pause:5" (the default): N = set_weight N,
                             pause:N = a timed pause, pause = until promote (the run ends there,
                             awaiting_promotion)
    --analysis/--no-analysis the canary's analysis (error_rate max 0.05, failure_limit 2, min_requests
                             10); default: on with --fail-new errors
    --analysis-interval S    seconds per analysis window (default 5)
    --fail-new errors        v2 answers 5xx to --error-share of its requests (default 0.2)
    --fail-new unhealthy     v2 fails its health checks --unhealthy-after S after it listens (default 1)

Bad values print one line naming the option and exit 2 (`--steps: 'x' is not a weight or pause:N`,
`--steps: step 3: 5 is below the weight before it (10)`); canary options need `--strategy canary`,
`--error-share` needs `--fail-new errors`, `--unhealthy-after` needs `--fail-new unhealthy`. A canary
table gains a "weights" column; every table ends with a line counting the requests.
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
    errors = "errors"


class StrategyOpt(str, Enum):
    rolling = "rolling"
    blue_green = "blue_green"
    recreate = "recreate"
    canary = "canary"


def _int_or_percent(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


OPTION_OF = {
    "capacity": "--capacity",
    "gpus_per_route": "--gpus-per-route",
    "fail_new": "--fail-new",
    "rate": "--rate",
    "error_share": "--error-share",
    "unhealthy_after": "--unhealthy-after",
    "analysis_interval": "--analysis-interval",
}
"""control.simulation's option fields -> the options that set them."""
POLICY_OPTION_OF = {"policy.min_ready_seconds": "--min-ready-seconds", "policy.analysis": "--analysis-interval"}
"""Policy fields the simulation's options set -> the options (`policy.steps` is `--steps`, by step)."""


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


def _number_option(option: str, value: str | None) -> float | None:
    """A number option read by hand, so a bad value is one line naming the option (exit 2); its range
    is checked by control.simulation.option_problem or the policy."""
    from rollwise.cli.errors import fail

    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)", text) is None:
        fail(f'{option}: "{value}" is not a number', code=2)
    number = float(text)
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def _policy_error(message: str) -> str:
    """The policy's one-line message about a value an option set, naming the option:
    `policy.steps[2].set_weight: 5 is below ...` -> `--steps: step 3: 5 is below ...`."""
    m = re.match(r"policy\.steps(?:\[(\d+)\][^:]*)?: (.*)", message)
    if m is not None:
        where = f"step {int(m[1]) + 1}: " if m[1] is not None else ""
        return f"--steps: {where}{m[2]}"
    for field, option in POLICY_OPTION_OF.items():
        if message.startswith(field):
            return f"{option}: {message.split(': ', 1)[1]}"
    return message


@app.command("simulate")
def simulate(
    strategy: StrategyOpt = typer.Option(StrategyOpt.rolling, help="Rollout strategy"),
    replicas: int = typer.Option(3, min=0, max=1000, help="Desired replicas"),
    max_surge: str = typer.Option("25%", help='Rolling: extra routes, integer or "N%"'),
    max_unavailable: str = typer.Option("0", help='Rolling: routes that may be unavailable, integer or "N%"'),
    auto_promote: bool = typer.Option(False, help="Blue-green: promote once green is ready"),
    promote_delay: float = typer.Option(0.0, "--promote-delay", min=0, help="Blue-green: seconds before auto-promotion"),
    startup_seconds: float = typer.Option(2.0, min=0, help="Seconds a route takes to become ready"),
    fail_new: FailNew = typer.Option(FailNew.none, help="How v2 misbehaves: none, start, unhealthy, errors (5xx answers)"),
    seed: int = typer.Option(0, help="Seed of the startup-time jitter"),
    tick: float = typer.Option(0.5, min=0.01, help="Simulated seconds per cycle"),
    capacity: str | None = typer.Option(None, "--capacity", metavar="N",
                                 help="GPU slots of the simulated node (default: no capacity counted)"),
    gpus_per_route: str | None = typer.Option(None, "--gpus-per-route", metavar="N",
                                       help="GPU slots each route needs (default 1 with --capacity; 0 = none)"),
    capacity_fallback: str = typer.Option("replace", "--capacity-fallback", metavar="replace|wait",
                                          help="Rolling: replace one old route at a time, or wait, when no new route fits"),
    min_ready_seconds: str | None = typer.Option(None, "--min-ready-seconds", metavar="S",
                                                 help="Seconds a route must stay healthy to count as ready (default 0)"),
    steps: str | None = typer.Option(None, "--steps", metavar="STEPS",
                                     help='Canary steps: N = set_weight N, pause:N = timed pause, pause = until '
                                          'promote (default "10,pause:5,50,pause:5")'),
    analysis: bool | None = typer.Option(None, "--analysis/--no-analysis",
                                         help="Canary analysis: error_rate max 0.05, failure_limit 2, min_requests 10 "
                                              "(default: on with --fail-new errors)"),
    analysis_interval: str | None = typer.Option(None, "--analysis-interval", metavar="S",
                                                 help="Seconds per canary analysis window (default 5)"),
    error_share: str | None = typer.Option(None, "--error-share", metavar="X",
                                           help="With --fail-new errors: share of v2's requests answered 5xx (default 0.2)"),
    unhealthy_after: str | None = typer.Option(None, "--unhealthy-after", metavar="S",
                                               help="With --fail-new unhealthy: seconds v2 stays healthy once it "
                                                    "listens (default 1)"),
    rate: str | None = typer.Option(None, "--rate", metavar="N",
                                    help="Requests per second through the simulated proxy (default 50)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Simulate a rollout from v1 to v2 (no processes, simulated time, simulated requests) and show every cycle."""
    from rollwise.cli.errors import fail
    from rollwise.control.simulation import SimulationOptions, option_problem, parse_steps, run_simulation
    from rollwise.model import RollwiseError
    from rollwise.model.policy import parse_policy

    if capacity_fallback not in ("replace", "wait"):
        fail(f'--capacity-fallback: "{capacity_fallback}" is not "replace" or "wait"', code=2)
    canary = strategy is StrategyOpt.canary
    for option, given in (("--steps", steps is not None), ("--analysis", analysis is not None),
                          ("--analysis-interval", analysis_interval is not None)):
        if given and not canary:
            fail(f"{option}: only with --strategy canary", code=2)
    if error_share is not None and fail_new is not FailNew.errors:
        fail("--error-share: only with --fail-new errors", code=2)
    if unhealthy_after is not None and fail_new is not FailNew.unhealthy:
        fail("--unhealthy-after: only with --fail-new unhealthy", code=2)
    parsed_steps = None
    if steps is not None:
        try:
            parsed_steps = tuple(parse_steps(steps))
        except ValueError as e:
            fail(f"--steps: {e}", code=2)
    defaults = SimulationOptions()

    def number(option: str, value: str | None, default: float) -> float:
        got = _number_option(option, value)
        return default if got is None else got

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
        steps=parsed_steps,
        analysis=analysis,
        min_ready_seconds=number("--min-ready-seconds", min_ready_seconds, defaults.min_ready_seconds),
        analysis_interval=number("--analysis-interval", analysis_interval, defaults.analysis_interval),
        error_share=number("--error-share", error_share, defaults.error_share),
        unhealthy_after=number("--unhealthy-after", unhealthy_after, defaults.unhealthy_after),
        rate=number("--rate", rate, defaults.rate),
    )
    problem = option_problem(opts)
    if problem is not None:
        fail(f"{OPTION_OF[problem[0]]}: {problem[1]}", code=2)
    try:
        parse_policy(opts.policy())
    except RollwiseError as e:
        fail(_policy_error(str(e)), code=2)
    try:
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
    canary = opts.strategy == "canary"
    table = Table(title=title)
    columns = ["cycle", "t (s)", "sub-step", "v1 ready/prov/other", "v2 ready/prov/other", "alive", "serving"]
    for col in (*columns, *(["gpu held"] if gpus else []), *(["weights"] if canary else []), "events"):
        table.add_column(col)
    last = None
    for row in result.timeline:
        key = (row["sub_step"], json.dumps(row["routes"], sort_keys=True), row["alive"], row["serving"], row["held"],
               json.dumps(row["weights"], sort_keys=True))
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
        weights = [", ".join(f"{k} {v}%" for k, v in row["weights"].items()) if row["weights"] else "-"] if canary else []
        table.add_row(
            str(row["cycle"]), f"{row['t']:.1f}", row["sub_step"] or "-", cell("v1"), cell("v2"),
            str(row["alive"]), str(row["serving"]), *held, *weights, "; ".join(row["events"])[:120],
        )
    console.print(table)
    console.print(
        f"outcome: [bold]{result.outcome}[/], serving {result.final_revision}, {result.cycles} cycles, "
        f"max alive {result.max_alive}, min serving {result.min_serving}"
    )
    if gpus:
        console.print(f"gpu: max held {result.max_held} of {opts.capacity} at once, {opts.route_gpus} per route")
    answered = ", ".join(
        f"{rev} {c['requests']} ({c['errors']} 5xx)" for rev, c in result.by_revision.items()
    )
    console.print(
        f"requests: {result.requests} sent at {opts.rate:g}/s, {result.failed_requests} without a backend"
        + (f"; {answered}" if answered else "")
    )
