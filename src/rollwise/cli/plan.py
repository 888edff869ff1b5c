"""`rollwise plan --input FILE|-` or `rollwise plan NAME`: the decision the next evaluation cycle would
take, as JSON.

Reads one deployment's state (format: docs/strategies.md) from a file or standard input, runs the strategy
engine (`rollwise.strategy.planio`, the same `decide` the controller calls) and prints the decision as
JSON (indent 2) on stdout, exit 0. Bad input prints one line on stderr, `error: <field>: <problem>`,
nothing on stdout, and exits 2 (see `errors.py`). With --input it touches no database, process or
network.

`rollwise plan NAME` asks a running server for the same decision about a live deployment (the API's
dry run, GET /v1/deployments/NAME/plan; `--server`, `--token`, `--data-dir` as for every API command).
Exactly one of NAME and `--input` is required; the absence of both is reported like any other bad input.

Registered on the Typer app when `rollwise.cli.main` imports this module. Must not hold strategy
logic: parsing and rules live in `rollwise.strategy`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from rollwise.cli.client import DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.errors import EXIT_INVALID, cli_errors, fail
from rollwise.cli.app import app
from rollwise.strategy.planio import compute_plan_output

STDIN = "-"


@app.command("plan")
def plan_command(
    name: str | None = typer.Argument(
        None, metavar="[NAME]", help="A live deployment: ask the server (GET /v1/deployments/NAME/plan).",
        show_default=False,
    ),
    input_path: str | None = typer.Option(
        None,
        "--input",
        "-i",
        metavar="FILE|-",
        help="State of one deployment as JSON (format: docs/strategies.md); '-' reads standard input. "
        "Required unless NAME is given.",
        show_default=False,
    ),
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the decision of the next evaluation cycle for a deployment state (or a live deployment), as JSON."""
    with cli_errors():
        if name is not None and input_path is not None:
            fail("plan: give a deployment NAME or --input FILE, not both", code=EXIT_INVALID)
        if name is not None:
            with connect(server, token, data_dir) as client:
                output = client.get(deployment_path(name, "plan"))
        else:
            if input_path is None:
                fail("--input: is required (a state file, or - for standard input)", code=EXIT_INVALID)
            document = _load_json(input_path)
            output = compute_plan_output(document)
    typer.echo(json.dumps(output, indent=2))


def _load_json(input_path: str) -> Any:
    """The parsed JSON document at `input_path` ('-': standard input); exits 2 when it cannot be read."""
    where = "input"
    if input_path == STDIN:
        try:
            data = sys.stdin.buffer.read()
        except (OSError, ValueError, AttributeError) as e:
            fail(f"input: cannot read standard input: {e}", code=EXIT_INVALID)
    else:
        try:
            data = Path(input_path).read_bytes()
        except OSError as e:
            fail(f"--input: cannot read {json.dumps(input_path)}: {e.strerror or e}", code=EXIT_INVALID)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        fail(f"{where}: is not UTF-8 text", code=EXIT_INVALID)
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        fail(f"{where}: is not JSON ({e.msg} at line {e.lineno}, column {e.colno})", code=EXIT_INVALID)
    except ValueError as e:
        fail(f"{where}: is not JSON ({e})", code=EXIT_INVALID)
    except RecursionError:
        fail(f"{where}: is not JSON we can read (nested too deeply)", code=EXIT_INVALID)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN / Infinity; JSON does not.
    raise ValueError(f"{name} is not a JSON value")
