"""`rollwise demo` (what `make demo` runs): deploy the example model and roll out v2 (rolling), v3
(blue-green), then a broken v4 that is rolled back, under real traffic. `rollwise demo --gpus N`: a
rolling rollout of N replicas needing one gpu slot each on a node of N (fake) slots, the devices checked.
`rollwise demo --canary`: a canary (20 → 50 → 100 %) to a good v2, then to a v3 answering 20 % of its
predictions with 500, which the canary analysis rolls back by itself.
The work is in cli.demo_run, imported when the command runs so that every other command starts fast.
"""

from __future__ import annotations

import socket

import typer

from rollwise.cli.app import app


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEFAULT_REPLICAS = 3


@app.command("demo")
def demo(
    rate: float = typer.Option(100.0, min=1, max=1000, help="Requests per second sent through the proxy"),
    replicas: int | None = typer.Option(None, min=1, max=20, show_default=str(DEFAULT_REPLICAS),
                                        help="Replicas of the example model"),
    gpus: int | None = typer.Option(
        None, "--gpus", min=1, max=16, show_default=False,
        help="Instead: a node of N fake gpu slots, N replicas needing 1 each, one rolling rollout with no "
             "spare slot; checks that no slot is over-held or shared"),
    canary: bool = typer.Option(
        False, "--canary",
        help="Instead: canary rollouts (20 -> 50 -> 100 %, with an error-rate analysis) to a good v2, then to a "
             "v3 answering 20 % of its predictions with 500, which the analysis rolls back"),
) -> None:
    """Deploy the example model and roll out v2 (rolling), v3 (blue-green), a broken v4 (rolled back);
    with --gpus N, roll out N gpu replicas on a node of exactly N gpu slots; with --canary, a good and a
    bad canary (the bad one rolled back by the analysis)."""
    from rich.console import Console

    if canary:
        if gpus is not None:
            from rollwise.cli.errors import EXIT_INVALID, fail

            fail("--canary and --gpus: choose one demo", code=EXIT_INVALID)
        from rollwise.cli.demo_run import run_canary

        raise typer.Exit(run_canary(Console(), rate=rate,
                                    replicas=DEFAULT_REPLICAS if replicas is None else replicas))

    if gpus is not None:
        if replicas is not None:
            from rollwise.cli.errors import EXIT_INVALID, fail

            fail(f"--replicas and --gpus: --gpus {gpus} deploys {gpus} replicas, one per gpu slot", code=EXIT_INVALID)
        from rollwise.cli.demo_run import run_gpus

        raise typer.Exit(run_gpus(Console(), rate=rate, gpus=gpus))

    from rollwise.cli.demo_run import run

    raise typer.Exit(run(Console(), rate=rate, replicas=DEFAULT_REPLICAS if replicas is None else replicas))
