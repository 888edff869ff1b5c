"""The strategy registry: `StrategyName` -> that strategy's rules and settings.

The engine looks a policy's strategy up here and never names a strategy module itself. Adding a
strategy means: a `StrategyName` member, one module with `LABEL`, `compute_settings(policy, D)` and a
pure `decide(view, settings) -> Decision`, and one entry below. A strategy may also give
`rollback_check` (a check of its own that starts a rollback, run after the failure threshold: the
canary's analysis) and `weights` (its traffic split as it stands, for the decisions the engine makes
itself, paused ones: the canary's).

Must not: hold state, do I/O, or import anything but `rollwise.model` and this package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from rollwise.model import Decision, Policy, RollbackReason, StrategyName, ValidationFailed
from rollwise.strategy import blue_green, canary, recreate, rolling
from rollwise.strategy.cycle import CycleView

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True, slots=True)
class StrategyRules(Generic[SettingsT]):
    """One strategy: its label in reasons, how its settings resolve against D, and its cycle rules."""

    name: StrategyName
    label: str
    compute_settings: Callable[[Policy, int], SettingsT]
    decide: Callable[[CycleView, SettingsT], Decision]
    rollback_check: Callable[[CycleView, SettingsT], tuple[RollbackReason, str] | None] | None = None
    """A check of the strategy's own that starts a rollback: (reason, the words of why), or None."""
    weights: Callable[[CycleView, SettingsT], Mapping[str, int]] | None = None
    """The strategy's traffic split as it stands (no rule applied); None: the proxy weighs by routes."""
    has_steps: bool = False
    """The rollout goes through steps (`step_started_at`): a step beginning counts as progress."""


REGISTRY: Mapping[StrategyName, StrategyRules[Any]] = MappingProxyType(
    {
        StrategyName.ROLLING: StrategyRules(
            StrategyName.ROLLING, rolling.LABEL, rolling.compute_settings, rolling.decide
        ),
        StrategyName.BLUE_GREEN: StrategyRules(
            StrategyName.BLUE_GREEN, blue_green.LABEL, blue_green.compute_settings, blue_green.decide
        ),
        StrategyName.RECREATE: StrategyRules(
            StrategyName.RECREATE, recreate.LABEL, recreate.compute_settings, recreate.decide
        ),
        StrategyName.CANARY: StrategyRules(
            StrategyName.CANARY,
            canary.LABEL,
            canary.compute_settings,
            canary.decide,
            rollback_check=canary.analysis_check,
            weights=canary.current_weights,
            has_steps=True,
        ),
    }
)


def rules_for(name: StrategyName) -> StrategyRules[Any]:
    """The rules of strategy `name`; ValidationFailed for a strategy without rules."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(str(n) for n in REGISTRY)
        raise ValidationFailed(f"policy.strategy: {str(name)!r} has no rules (one of {known})") from None
