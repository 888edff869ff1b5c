"""The rollout policy of a deployment and its validation (Pydantic v2).

One flat policy holds the settings of every strategy (as the `rollwise plan` format does); settings of
strategies other than the chosen one are validated for type but otherwise ignored. Validation errors are
turned into one line that names the field: `policy.max_surge: "oops" is not an integer or a percentage
like "25%"`.

`Policy` is the one declaration of the settings: their defaults, checks, bounds (durations at most a
year, counts at most a database INTEGER, no NaN or infinity) and descriptions. Each setting's type
carries its checks and bounds, so the API's request models generated from it (api.schemas: `PolicyBody`,
and `PolicyPatch` with every field optional) validate a value exactly as the policy does.

Called by: the plan reader (strategy.planio), the store (row <-> model), the control layer and the API.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from rollwise.model.enums import CapacityFallback, OnDeadline, StrategyName
from rollwise.model.errors import ValidationFailed

_PERCENT = re.compile(r"^(\d{1,3})%$")

IntOrPercent = int | str
"""A replica count as written: a non-negative int, or a string "N%" with 0 <= N <= 100."""
MAX_SECONDS = 31_536_000
"""Upper bound of the policy's durations (a year): larger values overflow date arithmetic."""
MAX_COUNT = 2**31 - 1
"""Upper bound of counts (a database INTEGER)."""


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


def _check_strategy(v: Any) -> Any:
    allowed = [s.value for s in StrategyName]
    if v not in allowed:
        raise PydanticCustomError(
            "strategy", "{shown} is not a strategy (one of {allowed})",
            {"shown": _show(v), "allowed": ", ".join(allowed)},
        )
    return v


def _check_on_deadline(v: Any) -> Any:
    if v not in ("rollback", "pause"):
        raise PydanticCustomError("on_deadline", '{shown} is not "rollback" or "pause"', {"shown": _show(v)})
    return v


def _check_capacity_fallback(v: Any) -> Any:
    if v not in ("replace", "wait"):
        raise PydanticCustomError(
            "capacity_fallback", '{shown} is not "replace" or "wait"', {"shown": _show(v)}
        )
    return v


def _check_bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise PydanticCustomError("bool", "{shown} is not true or false", {"shown": _show(v)})
    return v


def _check_seconds(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PydanticCustomError("number", "{shown} is not a number of seconds", {"shown": _show(v)})
    if v < 0:
        raise PydanticCustomError("number", "{shown} is negative", {"shown": _show(v)})
    return float(v) if isinstance(v, float) else v


def _check_threshold(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PydanticCustomError("int", "{shown} is not an integer or null", {"shown": _show(v)})
    if v < 1:
        raise PydanticCustomError("int", "{shown} must be at least 1", {"shown": _show(v)})
    return v


# The type of each setting carries its whole validation (checks, then bounds), so a model that makes a
# setting optional (`X | None`: the API's PolicyPatch) validates a given value exactly as Policy does.
_Strategy = Annotated[StrategyName, BeforeValidator(_check_strategy)]
_IntOrPercent = Annotated[IntOrPercent, BeforeValidator(check_int_or_percent)]
_Flag = Annotated[bool, BeforeValidator(_check_bool)]
_Seconds = Annotated[float, Field(le=MAX_SECONDS), BeforeValidator(_check_seconds)]
_OnDeadline = Annotated[OnDeadline, BeforeValidator(_check_on_deadline)]
_CapacityFallback = Annotated[CapacityFallback, BeforeValidator(_check_capacity_fallback)]
_Threshold = Annotated[int, Field(le=MAX_COUNT), BeforeValidator(_check_threshold)]


class Policy(BaseModel):
    """How a deployment rolls out a new revision. Immutable; defaults from docs/strategies.md.

    The one declaration of the policy's fields, defaults, bounds and descriptions: the API's request
    models (api.schemas.PolicyBody, PolicyPatch) are generated from it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False, allow_inf_nan=False)

    strategy: _Strategy = Field(StrategyName.ROLLING, description="rolling, blue_green or recreate")
    # rolling
    max_surge: _IntOrPercent = Field("25%", description='Rolling: routes above `replicas` allowed, e.g. 1 or "25%"')
    max_unavailable: _IntOrPercent = Field(
        0, description='Rolling: routes below `replicas` allowed, e.g. 0 or "25%"'
    )
    capacity_fallback: _CapacityFallback = Field(
        CapacityFallback.REPLACE,
        description="Rolling: when no more new routes can be placed, replace one old route at a time "
        "(replace) or wait for capacity (wait)",
    )
    # blue-green
    auto_promote: _Flag = Field(False, description="Blue-green: switch traffic once the new routes are ready")
    promote_delay_seconds: _Seconds = Field(0, description="Blue-green: seconds to wait before auto-promotion")
    # all strategies
    progress_deadline_seconds: _Seconds | None = Field(
        600, description="Seconds a rollout may go without progress (null: no deadline)"
    )
    on_deadline: _OnDeadline = Field(OnDeadline.ROLLBACK, description="rollback or pause when the deadline passes")
    failure_threshold: _Threshold | None = Field(
        None, description="Failed new routes that start a rollback (null: max(1, replicas))"
    )

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
