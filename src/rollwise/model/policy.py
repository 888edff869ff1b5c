"""The rollout policy of a deployment and its validation (Pydantic v2).

One flat policy holds the settings of every strategy (as the `rollwise plan` format does); settings of
strategies other than the chosen one are validated for type but otherwise ignored. Validation errors are
turned into one line that names the field: `policy.max_surge: "oops" is not an integer or a percentage
like "25%"`.

`Policy` is the one declaration of the settings: their defaults, checks, bounds (durations at most a
year, counts at most a database INTEGER, no NaN or infinity) and descriptions. Each setting's type
carries its checks and bounds, so the API's request models generated from it (api.schemas: `PolicyBody`,
and `PolicyPatch` with every field optional) validate a value exactly as the policy does.

The canary's settings are nested models (`CanaryStep` with `PauseSpec`, `AnalysisSpec` with
`MetricSpec`): their JSON is exactly docs/strategies.md's (`{"set_weight": 10}`, `{"pause": {"seconds":
60}}`, `{"pause": {}}`), unknown keys inside them are refused (a misspelt `seconds` would otherwise turn
a timed pause into a wait for promote), and a check that spans several of them (weights not decreasing,
metric names unique, a canary needs a set_weight step) names the exact field: `policy.steps[2].set_weight:
5 is below the weight before it (10)`. Lists are tuples, so a policy stays immutable and hashable.

Called by: the plan reader (strategy.planio), the store (row <-> model), the control layer and the API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

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


def _check_positive_seconds(v: Any) -> float:
    seconds = _check_seconds(v)
    if seconds == 0:
        raise PydanticCustomError("number", "{shown} must be more than 0", {"shown": _show(seconds)})
    return seconds


def _check_count(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PydanticCustomError("int", "{shown} is not an integer", {"shown": _show(v)})
    if v < 0:
        raise PydanticCustomError("int", "{shown} is negative", {"shown": _show(v)})
    return v


def _check_limit(v: Any) -> int:
    count = _check_count(v)
    if count < 1:
        raise PydanticCustomError("int", "{shown} must be at least 1", {"shown": _show(count)})
    return count


def _check_weight(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise PydanticCustomError("weight", "{shown} is not an integer percentage", {"shown": _show(v)})
    if not 1 <= v <= 99:
        raise PydanticCustomError("weight", "{shown} is not between 1 and 99", {"shown": _show(v)})
    return v


def _check_bound(v: Any) -> float:
    """A metric's bound: a number >= 0 (an error rate, milliseconds, a difference of rates)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PydanticCustomError("number", "{shown} is not a number", {"shown": _show(v)})
    if v < 0:
        raise PydanticCustomError("number", "{shown} is negative", {"shown": _show(v)})
    return v


def _check_name(v: Any) -> str:
    if not isinstance(v, str):
        raise PydanticCustomError("name", "{shown} is not a string", {"shown": _show(v)})
    if not v.strip():
        raise PydanticCustomError("name", "{shown} is empty", {"shown": _show(v)})
    return v


BUILTIN_METRICS = ("error_rate", "latency_p99_ms")
"""The measurements the control layer makes itself (docs/strategies.md, "Canary")."""


def _check_builtin(v: Any) -> Any:
    if v not in BUILTIN_METRICS:
        raise PydanticCustomError(
            "builtin", "{shown} is not one of {allowed}", {"shown": _show(v), "allowed": ", ".join(BUILTIN_METRICS)}
        )
    return v


def _check_command(v: Any) -> Any:
    if not isinstance(v, (list, tuple)) or not v:
        raise PydanticCustomError("command", "{shown} is not a non-empty list of strings", {"shown": _show(v)})
    for item in v:
        if not isinstance(item, str) or not item:
            raise PydanticCustomError("command", "{shown} is not a non-empty list of strings", {"shown": _show(v)})
    return tuple(v)


def _check_object(v: Any) -> Any:
    if v is not None and not isinstance(v, (dict, BaseModel)):
        raise PydanticCustomError("object", "{shown} is not an object", {"shown": _show(v)})
    return v


def _check_list(v: Any) -> Any:
    if not isinstance(v, (list, tuple)):
        raise PydanticCustomError("list", "{shown} is not a list", {"shown": _show(v)})
    return v


def _field_error(loc: tuple[str | int, ...], kind: str, message: str, value: Any) -> ValidationError:
    """A validation error at `loc` below the model being validated, so the one-line message names the
    exact field (`policy.steps[2].set_weight: ...`) although the check needs several fields."""
    return ValidationError.from_exception_data(
        "Policy", [InitErrorDetails(type=PydanticCustomError(kind, message), loc=loc, input=value)]
    )


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
_PositiveSeconds = Annotated[float, Field(le=MAX_SECONDS), BeforeValidator(_check_positive_seconds)]
_Count = Annotated[int, Field(le=MAX_COUNT), BeforeValidator(_check_count)]
_Limit = Annotated[int, Field(le=MAX_COUNT), BeforeValidator(_check_limit)]
_Weight = Annotated[int, BeforeValidator(_check_weight)]
_Bound = Annotated[float, Field(le=1e12), BeforeValidator(_check_bound)]
_MetricName = Annotated[str, Field(max_length=100), BeforeValidator(_check_name)]
_Builtin = Annotated[Literal["error_rate", "latency_p99_ms"], BeforeValidator(_check_builtin)]
_Command = Annotated[tuple[str, ...], BeforeValidator(_check_command)]

_NESTED = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
"""The canary's nested models: immutable, unknown keys refused (a typo there changes what a step does)."""


def _without_nulls(data: Any) -> Any:
    return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class PauseSpec(BaseModel):
    """`pause: {seconds: 60}` waits 60 s; `pause: {}` waits for `promote`."""

    model_config = _NESTED

    seconds: _Seconds | None = Field(None, description="Seconds to wait; absent or null: wait for promote")

    @model_serializer(mode="wrap")
    def _json(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_nulls(handler(self))  # type: ignore[no-any-return]


class CanaryStep(BaseModel):
    """One step of a canary: exactly one of `set_weight` (percent of requests to the new revision,
    1..99) and `pause`. Written as `{"set_weight": 10}` or `{"pause": {"seconds": 60}}` / `{"pause": {}}`."""

    model_config = _NESTED

    set_weight: _Weight | None = Field(None, description="Percent of requests to the new revision, 1..99")
    pause: Annotated[PauseSpec | None, BeforeValidator(_check_object)] = Field(
        None, description="Wait: {seconds: N}, or {} for promote"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        if self.set_weight is not None and self.pause is not None:
            raise PydanticCustomError("step", "has both set_weight and pause (a step is one of them)")
        if self.set_weight is None and self.pause is None:
            raise PydanticCustomError("step", "has neither set_weight nor pause")
        return self

    @model_serializer(mode="wrap")
    def _json(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_nulls(handler(self))  # type: ignore[no-any-return]


def _check_steps(steps: tuple[CanaryStep, ...]) -> tuple[CanaryStep, ...]:
    """Weights may not decrease from one set_weight step to the next."""
    before: int | None = None
    for i, step in enumerate(steps):
        if step.set_weight is None:
            continue
        if before is not None and step.set_weight < before:
            raise _field_error(
                (i, "set_weight"), "weight", f"{step.set_weight} is below the weight before it ({before})",
                step.set_weight,
            )
        before = step.set_weight
    return steps


class MetricSpec(BaseModel):
    """One measurement of the canary's analysis: a builtin (measured by rollwise on the canary's
    requests) with `max` and/or `max_over_stable`, or a `command` (judged by its exit status: 0 passes,
    1 fails, anything else is inconclusive; docs/control.md). `max` / `max_over_stable` on a command
    are accepted and not used."""

    model_config = _NESTED

    name: _MetricName = Field(..., description="Unique name, used in the rollback reason")
    builtin: _Builtin | None = Field(None, description="error_rate (5xx / all) or latency_p99_ms, canary requests")
    max: _Bound | None = Field(None, description="Fails above this value")
    max_over_stable: _Bound | None = Field(None, description="Fails above the stable revision's value plus this")
    command: _Command | None = Field(None, description="argv of a check to run instead of a builtin")
    timeout_seconds: _PositiveSeconds = Field(60, description="Seconds a command may run")

    @model_validator(mode="after")
    def _one_kind(self) -> MetricSpec:
        if self.builtin is not None and self.command is not None:
            raise PydanticCustomError("metric", "has both builtin and command (a metric is one of them)")
        if self.builtin is None and self.command is None:
            raise PydanticCustomError("metric", "has neither builtin nor command")
        if self.builtin is not None and self.max is None and self.max_over_stable is None:
            raise PydanticCustomError("metric", "a builtin metric needs max, max_over_stable or both")
        return self

    @model_serializer(mode="wrap")
    def _json(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_nulls(handler(self))  # type: ignore[no-any-return]


def _check_metrics(metrics: tuple[MetricSpec, ...]) -> tuple[MetricSpec, ...]:
    """At least one metric; names unique."""
    if not metrics:
        raise PydanticCustomError("metrics", "needs at least one metric")
    seen: dict[str, int] = {}
    for i, metric in enumerate(metrics):
        if metric.name in seen:
            raise _field_error(
                (i, "name"), "metrics", f"{_show(metric.name)} is already the name of metrics[{seen[metric.name]}]",
                metric.name,
            )
        seen[metric.name] = i
    return metrics


class AnalysisSpec(BaseModel):
    """The canary's analysis: every metric measured once per interval by the control layer, from the
    first set_weight step until the rollout ends; `failure_limit` failed measurements roll back."""

    model_config = _NESTED

    interval_seconds: _PositiveSeconds = Field(30, description="Seconds between measurements of every metric")
    failure_limit: _Limit = Field(2, description="Failed measurements (any metric, in total) that roll back")
    min_requests: _Count = Field(
        50, description="Fewer canary requests in an interval make a traffic metric inconclusive"
    )
    metrics: Annotated[tuple[MetricSpec, ...], BeforeValidator(_check_list), AfterValidator(_check_metrics)] = Field(
        ..., description="What is measured: builtin metrics or commands"
    )


_Steps = Annotated[tuple[CanaryStep, ...], BeforeValidator(_check_list), AfterValidator(_check_steps)]
_Analysis = Annotated[AnalysisSpec | None, BeforeValidator(_check_object)]


class Policy(BaseModel):
    """How a deployment rolls out a new revision. Immutable; defaults from docs/strategies.md.

    The one declaration of the policy's fields, defaults, bounds and descriptions: the API's request
    models (api.schemas.PolicyBody, PolicyPatch) are generated from it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False, allow_inf_nan=False)

    strategy: _Strategy = Field(StrategyName.ROLLING, description="rolling, blue_green, recreate or canary")
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
    # canary
    steps: _Steps = Field(
        (), description="Canary: steps run in order ({set_weight: 10}, {pause: {seconds: 60}}, {pause: {}}); "
        "an implicit final step promotes to 100%",
    )
    analysis: _Analysis = Field(
        None, description="Canary: metrics measured while the canary runs; failed measurements roll back"
    )
    # all strategies
    min_ready_seconds: _Seconds = Field(
        0, description="Seconds a route must stay healthy before it counts as ready"
    )
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

    @model_validator(mode="after")
    def _canary_has_a_weight(self) -> Policy:
        if self.strategy is StrategyName.CANARY and not any(s.set_weight is not None for s in self.steps):
            raise _field_error(("steps",), "steps", "a canary needs at least one set_weight step", self.to_json()["steps"])
        return self

    def to_json(self) -> dict[str, Any]:
        """The policy as plain JSON values (the plan format and the REST API use this shape)."""
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line for people: the first error's dotted field path, then its message."""
    err = exc.errors(include_url=False)[0]
    path = field_path(err["loc"], prefix)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "is required"
    elif err["type"] == "extra_forbidden":
        msg = "is not a known field"
    if path:
        return f"{path}: {msg}"
    return msg


def field_path(loc: Sequence[str | int], prefix: str = "") -> str:
    """A validation error's location as one dotted path, list indices in brackets, as the plan format
    writes them: ("steps", 2, "set_weight") -> "policy.steps[2].set_weight"."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def parse_policy(data: Any, *, prefix: str = "policy") -> Policy:
    """Validate a policy mapping; raises ValidationFailed with a one-line message naming the field."""
    if not isinstance(data, dict):
        raise ValidationFailed(f"{prefix}: {_show(data)} is not an object")
    try:
        return Policy.model_validate(data)
    except ValidationError as e:
        raise ValidationFailed(format_validation_error(e, prefix)) from e
