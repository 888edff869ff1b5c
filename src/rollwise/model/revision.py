"""A revision as users write it (command, env, health check, timings), validated with Pydantic v2.

Revisions are immutable once stored. Called by the operations layer (control), the API and the CLI's
`apply`; the store keeps the validated values.
"""

from __future__ import annotations

import os
import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rollwise.model.errors import ValidationFailed
from rollwise.model.policy import format_validation_error


MAX_ARG_STRLEN = 131072
"""Linux: the longest single argument or environment string ("KEY=value" with its NUL) exec accepts."""
RESERVED_EXEC_BYTES = 16 * 1024
"""Room kept for what the runtime adds at launch: PATH, HOME, LANG, TZ, TMPDIR, PORT, the extra ports,
the route markers, and the digits `{port}` becomes."""
PORT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
PORT_REFERENCE = re.compile(r"\{port\.([^{}]*)\}")
"""`{port.NAME}` in an argument or env value: NAME must be one of the revision's `ports`."""
MAX_PORTS = 8
RESOURCE_NAME = PORT_NAME
"""A resource (slot) name, e.g. "gpu": the same shape as a port name."""
MAX_RESOURCES = 16
MAX_RESOURCE_UNITS = 1024
"""Most units of one resource a route may ask for (a node with more GPUs than this does not exist)."""
LABEL_MAX = 63
"""Longest revision label (also the size of the store's `revisions.label` column)."""


def exec_limit() -> int:
    """The OS limit on a process's arguments plus environment (ARG_MAX), in bytes."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = -1
    return limit if limit > 0 else 2 * 1024 * 1024


def exec_size(command: list[str], env: dict[str, str]) -> int:
    """Bytes exec needs for this argv and environment: each string with its NUL, plus one pointer each."""
    strings = [len(a.encode()) + 1 for a in command] + [len(k.encode()) + len(v.encode()) + 2 for k, v in env.items()]
    return sum(strings) + 8 * (len(strings) + 2)


class HealthCheck(BaseModel):
    """HTTP probe of a route: GET http://route{path} must answer 2xx within timeout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field("/healthz", description="HTTP path probed on the route, starting with /")
    interval_seconds: float = Field(1.0, gt=0, le=3600, description="Seconds between probes")
    timeout_seconds: float = Field(1.0, gt=0, le=600, description="Probe timeout in seconds")
    healthy_threshold: int = Field(1, ge=1, le=100, description="Consecutive successes to become healthy")
    unhealthy_threshold: int = Field(3, ge=1, le=100, description="Consecutive failures to be unhealthy")
    initial_delay_seconds: float = Field(0.0, ge=0, le=3600, description="Wait after start before probing")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must start with /")
        return v


class RevisionInput(BaseModel):
    """What a revision runs: an argv list (never a shell string), its environment and its checks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: list[str] = Field(
        ..., min_length=1, description='argv; "{port}" is replaced by the port ("{port.NAME}" by an extra port)'
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description='The route\'s environment besides PATH, HOME, LANG, TZ, TMPDIR and PORT; "{port}" and '
        '"{port.NAME}" are replaced in values',
    )
    health_check: HealthCheck | None = Field(None, description="HTTP health check; none = ready when running")
    startup_timeout_seconds: float = Field(60.0, gt=0, le=3600, description="Time to start listening")
    drain_seconds: float = Field(1.0, ge=0, le=3600, description="In-flight wait after leaving the proxy")
    stop_grace_seconds: float = Field(5.0, ge=0, le=3600, description="SIGTERM to SIGKILL grace period")
    label: str | None = Field(None, max_length=LABEL_MAX, description='A name for people, e.g. "v2"')
    ports: list[str] = Field(
        default_factory=list,
        max_length=MAX_PORTS,
        description='Extra ports the route gets besides its main one, by name (e.g. ["grpc", "metrics"]): each '
        'is a free port, given as "{port.NAME}" in the command and env values and as PORT_NAME in the environment',
    )

    resources: dict[str, int] = Field(
        default_factory=dict,
        description='What ONE route needs of the node\'s countable slots, e.g. {"gpu": 1}: integers >= 0; '
        "absent or {} = nothing. A gpu route gets its device indices in CUDA_VISIBLE_DEVICES",
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _resources_shape(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name, units in v.items():
                if isinstance(units, bool) or not isinstance(units, int):
                    raise ValueError(f"{name}: {units!r} is not an integer")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, int]) -> dict[str, int]:
        if len(v) > MAX_RESOURCES:
            raise ValueError(f"at most {MAX_RESOURCES} resources")
        for name, units in v.items():
            if not RESOURCE_NAME.match(name):
                raise ValueError(f"{name!r} is not a resource name (a-z first, then a-z, 0-9 or _, at most 30)")
            if units < 0 or units > MAX_RESOURCE_UNITS:
                raise ValueError(f"{name}: {units} is not between 0 and {MAX_RESOURCE_UNITS}")
        return {name: units for name, units in sorted(v.items()) if units > 0}

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if any(not part for part in v[:1]):
            raise ValueError("the program (first element) must not be empty")
        for i, part in enumerate(v):
            if "\0" in part:
                raise ValueError("an argument contains a NUL character")
            if len(part.encode()) >= MAX_ARG_STRLEN:
                raise ValueError(
                    f"argument {i} is {len(part.encode())} bytes; the OS takes at most {MAX_ARG_STRLEN - 1} per argument"
                )
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} is not an environment variable name")
            if "\0" in value:
                raise ValueError(f"the value of {key} contains a NUL character")
            size = len(key.encode()) + len(value.encode()) + 1
            if size >= MAX_ARG_STRLEN:
                raise ValueError(
                    f"{key} is {size} bytes with its value; the OS takes at most {MAX_ARG_STRLEN - 1} per variable"
                )
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[str]) -> list[str]:
        for name in v:
            if not PORT_NAME.match(name):
                raise ValueError(f"{name!r} is not a port name (a-z first, then a-z, 0-9 or _, at most 30)")
        if len(set(v)) != len(v):
            raise ValueError("port names must be distinct")
        return v

    @model_validator(mode="after")
    def _port_references(self) -> Self:
        declared = set(self.ports)
        texts = [("command", part) for part in self.command] + [(f"env.{k}", v) for k, v in self.env.items()]
        for where, text in texts:
            for name in PORT_REFERENCE.findall(text):
                if name not in declared:
                    raise ValueError(f"{where} uses {{port.{name}}} but ports does not name {name!r}")
        return self

    @model_validator(mode="after")
    def _fits_exec(self) -> Self:
        limit = exec_limit() - RESERVED_EXEC_BYTES
        size = exec_size(self.command, self.env)
        if size > limit:
            raise ValueError(
                f"command and env together are {size} bytes; the OS allows {limit} for a process's arguments "
                "and environment (ARG_MAX, less what rollwise adds)"
            )
        return self


def parse_revision(data: Any, *, prefix: str = "revision") -> RevisionInput:
    """Validate a revision mapping; raises ValidationFailed with one line naming the field."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{prefix}: is not an object")
    try:
        return RevisionInput.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(format_validation_error(e, prefix)) from e
