"""How every `rollwise` command fails: one red line on stderr (`error: …`) and an exit code.

The one place where the CLI maps rollwise errors to exit codes (docs/architecture.md, "Code habits"):

    exit 1  EXIT_ERROR     an operation failed (default for any error code not listed)
    exit 2  EXIT_INVALID   bad input: code "invalid" (ValidationFailed, the API's 422, a malformed file)

Commands call `fail(...)` / `fail_with(error)`, or wrap their body in `with cli_errors():`, which
turns a rollwise error into its line and code, and anything unexpected into one "internal error" line
(no traceback reaches the user). Nothing here decides what a command does.

Two families of errors carry a `code` and a one-line `message`: `rollwise.model.RollwiseError` (raised
by the model, strategy and control code that `plan`, `simulate` and `server` run in-process) and
`CliError` (raised by the API commands: the HTTP client, the deployment-file reader). The API commands
must start fast, so this module does not import `rollwise.model` (that package imports pydantic): a
RollwiseError can only have been raised once `rollwise.model.errors` was imported, so it is looked up in
`sys.modules` when an error is being translated.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, Protocol

import typer

EXIT_ERROR = 1
EXIT_INVALID = 2

EXIT_CODES: dict[str, int] = {"invalid": EXIT_INVALID}
"""error code -> exit code; codes not listed exit with EXIT_ERROR."""


class CodedError(Protocol):
    """What the CLI needs of an error: a machine code and a one-line message (RollwiseError, CliError)."""

    code: str
    message: str


class CliError(Exception):
    """An error of the API commands (client, file reading): a code, like RollwiseError's, and one line."""

    code: str = "error"
    transient: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(CliError):
    """Input the CLI refuses before sending anything (an unreadable or malformed file): exit 2."""

    code = "invalid"


def exit_code_for(error: CodedError) -> int:
    return EXIT_CODES.get(error.code, EXIT_ERROR)


def fail(message: str, *, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: <message>` as one red line on stderr and exit with `code`."""
    line = " ".join(str(message).split())  # one line, whatever the message holds
    typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def fail_with(error: CodedError) -> NoReturn:
    """`fail` with an error's message and the exit code of its `code`."""
    fail(error.message, code=exit_code_for(error))


def as_coded(error: BaseException) -> CodedError | None:
    """The error as a CliError or a rollwise.model RollwiseError; None for anything else (a bug)."""
    if isinstance(error, CliError):
        return error
    model_errors = sys.modules.get("rollwise.model.errors")
    if model_errors is not None and isinstance(error, model_errors.RollwiseError):
        coded: CodedError = error
        return coded
    return None


@contextmanager
def cli_errors() -> Iterator[None]:
    """Translate errors at the command boundary: a rollwise error -> its line and exit code; any other
    exception -> `error: internal error: <type>: <message>`, exit 1 (a bug; never a traceback)."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the last boundary before the user's terminal
        coded = as_coded(e)
        if coded is not None:
            fail_with(coded)
        fail(f"internal error: {type(e).__name__}: {e}", code=EXIT_ERROR)
