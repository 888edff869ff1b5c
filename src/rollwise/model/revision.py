"""A revision as users write it (command, env, health check, timings), validated with Pydantic v2.

Revisions are immutable once stored. Called by the operations layer (control), the API and the CLI's
`apply`; the store keeps the validated values.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rollwise.model.errors import ValidationFailed
from rollwise.model.policy import format_validation_error


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

    command: list[str] = Field(..., min_length=1, description='argv; "{port}" is replaced by the port')
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables")
    health_check: HealthCheck | None = Field(None, description="HTTP health check; none = ready when running")
    startup_timeout_seconds: float = Field(60.0, gt=0, le=3600, description="Time to start listening")
    drain_seconds: float = Field(1.0, ge=0, le=3600, description="In-flight wait after leaving the proxy")
    stop_grace_seconds: float = Field(5.0, ge=0, le=3600, description="SIGTERM to SIGKILL grace period")
    label: str | None = Field(None, max_length=63, description='A name for people, e.g. "v2"')

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if any(not part for part in v[:1]):
            raise ValueError("the program (first element) must not be empty")
        if any("\0" in part for part in v):
            raise ValueError("an argument contains a NUL character")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not key or "=" in key or "\0" in key:
                raise ValueError(f"{key!r} is not an environment variable name")
            if "\0" in value:
                raise ValueError(f"the value of {key} contains a NUL character")
        return v


def parse_revision(data: Any, *, prefix: str = "revision") -> RevisionInput:
    """Validate a revision mapping; raises ValidationFailed with one line naming the field."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{prefix}: is not an object")
    try:
        return RevisionInput.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(format_validation_error(e, prefix)) from e
