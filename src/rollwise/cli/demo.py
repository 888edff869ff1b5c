"""`rollwise demo` (what `make demo` runs): deploy the example model and roll out v2 (rolling), v3
(blue-green), then a broken v4 that is rolled back, under real traffic. The work is in cli.demo_run,
imported when the command runs so that every other command starts fast.
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


@app.command("demo")
def demo(
    rate: float = typer.Option(100.0, min=1, max=1000, help="Requests per second sent through the proxy"),
    replicas: int = typer.Option(3, min=1, max=20, help="Replicas of the example model"),
) -> None:
    """Deploy the example model and roll out v2 (rolling), v3 (blue-green), a broken v4 (rolled back)."""
    from rich.console import Console

    from rollwise.cli.demo_run import run

    raise typer.Exit(run(Console(), rate=rate, replicas=replicas))
