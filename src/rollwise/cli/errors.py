"""How every `rollwise` command fails: one red line on stderr (`error: …`) and an exit code.

The one place where the CLI maps rollwise errors to exit codes (STYLE.md, "Errors by reaction"):

    exit 1  EXIT_ERROR     an operation failed (default for any RollwiseError code not listed)
    exit 2  EXIT_INVALID   bad input: ValidationFailed ("invalid"), unreadable or malformed files

Commands call `fail(...)` / `fail_with(error)`, or wrap their body in `with cli_errors():`, which
turns a RollwiseError into its line and code, and anything unexpected into one "internal error" line
(no traceback reaches the user). Nothing here decides what a command does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from rollwise.model import RollwiseError

EXIT_ERROR = 1
EXIT_INVALID = 2

EXIT_CODES: dict[str, int] = {"invalid": EXIT_INVALID}
"""RollwiseError.code -> exit code; codes not listed exit with EXIT_ERROR."""


def exit_code_for(error: RollwiseError) -> int:
    return EXIT_CODES.get(error.code, EXIT_ERROR)


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: <message>` as one red line on stderr and exit with `code`."""
    line = " ".join(str(message).split())  # one line, whatever the message holds
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def fail_with(error: RollwiseError) -> NoReturn:
    """`fail` with a rollwise error's message and the exit code of its `code`."""
    fail(error.message, code=exit_code_for(error))


@contextmanager
def cli_errors() -> Iterator[None]:
    """Translate errors at the command boundary: RollwiseError -> its line and exit code; any other
    exception -> `error: internal error: <type>: <message>`, exit 1 (a bug; never a traceback)."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except RollwiseError as e:
        fail_with(e)
    except Exception as e:  # noqa: BLE001 - the last boundary before the user's terminal
        fail(f"internal error: {type(e).__name__}: {e}", code=EXIT_ERROR)
