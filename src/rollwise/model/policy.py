"""The rollout policy of a deployment and its validation (Pydantic v2).

One flat policy holds the settings of every strategy (as the `rollwise plan` format does); settings of
strategies other than the chosen one are validated for type but otherwise ignored. Validation errors are
turned into one line that names the field: `policy.max_surge: "oops" is not an integer or a percentage
like "25%"`.

Called by: the plan reader (strategy.planio), the store (row <-> model), the control layer and the API.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from rollwise.model.enums import OnDeadline, StrategyName
from rollwise.model.errors import ValidationFailed

_PERCENT = re.compile(r"^(\d{1,3})%$")

IntOrPercent = int | str
"""A replica count as written: a non-negative int, or a string "N%" with 0 <= N <= 100."""


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def check_int_or_percent(value: Any) -> IntOrPercent:
    """Validate a surge/unavailable setting as written; returns it unchanged (ints stay ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PydanticCustomError(
            "int_or_percent", '{shown} is not an integer or a percentage like "25%"', {"shown": _show(value)}
        )
    if isinstance(value, int):
        if value < 0:
            raise PydanticCustomError("int_or_percent", "{shown} is negative", {"shown": _show(value)})
        return value
    m = _PERCENT.match(value.strip())
    if m is None:
        if value.strip().startswith("-"):
            raise PydanticCustomError("int_or_percent", "{shown} is negative", {"shown": _show(value)})
        raise PydanticCustomError(
            "int_or_percent", '{shown} is not an integer or a percentage like "25%"', {"shown": _show(value)}
        )
    if int(m.group(1)) > 100:
        raise PydanticCustomError("int_or_percent", "{shown} is over 100%", {"shown": _show(value)})
    return f"{int(m.group(1))}%"


def is_zero_as_written(value: IntOrPercent) -> bool:
    return value == 0 or value == "0%"


class Policy(BaseModel):
    """How a deployment rolls out a new revision. Immutable; defaults from docs/strategies.md."""

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)

    strategy: StrategyName = StrategyName.ROLLING
    # rolling
    max_surge: IntOrPercent = "25%"
    max_unavailable: IntOrPercent = 0
    # blue-green
    auto_promote: bool = False
    promote_delay_seconds: float = 0
    # all strategies
    progress_deadline_seconds: float | None = 600
    on_deadline: OnDeadline = OnDeadline.ROLLBACK
    failure_threshold: int | None = None

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, v: Any) -> Any:
        allowed = [s.value for s in StrategyName]
        if v not in allowed:
            raise PydanticCustomError(
                "strategy", "{shown} is not a strategy (one of {allowed})",
                {"shown": _show(v), "allowed": ", ".join(allowed)},
            )
        return v

    @field_validator("on_deadline", mode="before")
    @classmethod
    def _on_deadline(cls, v: Any) -> Any:
        if v not in ("rollback", "pause"):
            raise PydanticCustomError("on_deadline", '{shown} is not "rollback" or "pause"', {"shown": _show(v)})
        return v

    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _int_or_percent(cls, v: Any) -> IntOrPercent:
        return check_int_or_percent(v)

    @field_validator("auto_promote", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> bool:
        if not isinstance(v, bool):
            raise PydanticCustomError("bool", "{shown} is not true or false", {"shown": _show(v)})
        return v

    @field_validator("promote_delay_seconds", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> float:
        return _non_negative_number(v)

    @field_validator("progress_deadline_seconds", mode="before")
    @classmethod
    def _deadline(cls, v: Any) -> float | None:
        return None if v is None else _non_negative_number(v)

    @field_validator("failure_threshold", mode="before")
    @classmethod
    def _threshold(cls, v: Any) -> int | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise PydanticCustomError("int", "{shown} is not an integer or null", {"shown": _show(v)})
        if v < 1:
            raise PydanticCustomError("int", "{shown} must be at least 1", {"shown": _show(v)})
        return v

    @model_validator(mode="after")
    def _not_both_zero(self) -> Policy:
        if (
            self.strategy is StrategyName.ROLLING
            and is_zero_as_written(self.max_surge)
            and is_zero_as_written(self.max_unavailable)
        ):
            raise PydanticCustomError("both_zero", "max_surge and max_unavailable cannot both be 0")
        return self

    def to_json(self) -> dict[str, Any]:
        """The policy as plain JSON values (the plan format and the REST API use this shape)."""
        return self.model_dump(mode="json")


def _non_negative_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PydanticCustomError("number", "{shown} is not a number of seconds", {"shown": _show(v)})
    if v < 0:
        raise PydanticCustomError("number", "{shown} is negative", {"shown": _show(v)})
    return float(v) if isinstance(v, float) else v


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line for people: the first error's dotted field path, then its message."""
    err = exc.errors(include_url=False)[0]
    parts = [prefix] if prefix else []
    parts += [str(p) for p in err["loc"]]
    path = ".".join(parts)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field"
    if path:
        return f"{path}: {msg}"
    return msg


def parse_policy(data: Any, *, prefix: str = "policy") -> Policy:
    """Validate a policy mapping; raises ValidationFailed with a one-line message naming the field."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{prefix}: {_show(data)} is not an object")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(format_validation_error(e, prefix)) from e
