"""THE deployment-name rule, and the replica limit. A name is a DNS label, because a name is a URL path segment (`/d/NAME/`), part of
Traefik's object names (which use ":" as their separator) and a unique database column.

    DEPLOYMENT_NAME_MAX      63, also the size of the store's `deployments.name` column
    DEPLOYMENT_NAME_PATTERN  the regex as text (the OpenAPI schema shows it)
    deployment_name_problem  why a value is not a deployment name, or None
    check_deployment_name    the value, or ValidationFailed "FIELD: problem"
    MAX_REPLICAS             1000: the most routes one deployment may ask for (API, operations, plan)

Called by the operations (create), the API's request model, the store (insert) and the traffic layer
(it routes only names that pass). Must not: do I/O.
"""

from __future__ import annotations

import re

from rollwise.model.errors import ValidationFailed

MAX_REPLICAS = 1000
DEPLOYMENT_NAME_MAX = 63
DEPLOYMENT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DEPLOYMENT_NAME = re.compile(DEPLOYMENT_NAME_PATTERN)


def deployment_name_problem(name: object) -> str | None:
    """None when `name` may name a deployment, otherwise the problem in words (without the field)."""
    if not isinstance(name, str):
        return f"{name!r} is not a string"
    # fullmatch: `$` alone would also accept a name followed by a newline
    if len(name) > DEPLOYMENT_NAME_MAX or not _DEPLOYMENT_NAME.fullmatch(name):
        return (
            f"{name[:80]!r} is not a DNS label (lower-case letters, digits and '-', at most "
            f"{DEPLOYMENT_NAME_MAX}, starting and ending with a letter or digit)"
        )
    return None


def check_deployment_name(name: object, *, field: str = "name") -> str:
    """`name` when it may name a deployment; otherwise ValidationFailed("FIELD: problem")."""
    problem = deployment_name_problem(name)
    if problem is not None:
        raise ValidationFailed(f"{field}: {problem}")
    assert isinstance(name, str)
    return name
