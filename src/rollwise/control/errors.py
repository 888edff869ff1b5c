"""Errors of the operations layer, classified by how callers must react.

    RollwiseError (model.errors)
     +-- ValidationFailed        "invalid"               bad input; names the field     (HTTP 422, exit 2)
     +-- NotFound                "not_found"             no such deployment/revision    (HTTP 404, exit 1)
     +-- AlreadyExists           "conflict"              duplicate name                 (HTTP 409, exit 1)
     +-- RolloutInProgress       "rollout.in_progress"   activate while DEPLOYING       (HTTP 409, exit 1)
     +-- NotApplicable           "verb.not_applicable"   verb does not apply right now  (HTTP 409, exit 1)
     +-- NotActive               "server.standby"        write sent to a standby server (HTTP 503, exit 1)

The API maps `code` to a status in one place (api.errors); the CLI maps it to an exit code.
"""

from __future__ import annotations

from rollwise.model.errors import Conflict, NotFound, RollwiseError, ValidationFailed

__all__ = [
    "AlreadyExists",
    "NotActive",
    "NotApplicable",
    "NotFound",
    "RollwiseError",
    "RolloutInProgress",
    "ValidationFailed",
]


AlreadyExists = Conflict
"""A deployment with that name exists already (the model's Conflict, named for operations)."""


class RolloutInProgress(RollwiseError):
    """A revision was activated while another rollout runs, without `supersede`."""

    code = "rollout.in_progress"


class NotApplicable(RollwiseError):
    """An operator verb that does not apply in the deployment's current state (the message says why)."""

    code = "verb.not_applicable"


class NotActive(RollwiseError):
    """This server is a standby: it does not take writes."""

    code = "server.standby"
    transient = True
