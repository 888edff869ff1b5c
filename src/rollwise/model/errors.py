"""The root of rollwise's error tree and the validation error every layer shares.

    RollwiseError                 code, one-line message
     +-- ValidationFailed         "invalid": bad input, names the field (exit 2 / HTTP 422)
     +-- NotFound                 "not_found": no such deployment or revision (HTTP 404)
     +-- Conflict                 "conflict": the thing exists already, e.g. a name (HTTP 409)

Other packages subclass RollwiseError (control.errors holds the operation errors). Each class carries a
machine `code`; the API and CLI map codes to HTTP statuses and exit codes in one place each.
"""

from __future__ import annotations


class RollwiseError(Exception):
    """Base of every error rollwise raises on purpose."""

    code: str = "error"
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationFailed(RollwiseError):
    """Input that cannot be accepted; the message names the field and the problem."""

    code = "invalid"


class NotFound(RollwiseError):
    """The named deployment or revision does not exist (raised by the store and the operations)."""

    code = "not_found"


class Conflict(RollwiseError):
    """The thing exists already (a unique constraint: a deployment name)."""

    code = "conflict"
