"""The strategy registry: `StrategyName` -> that strategy's rules and settings.

The engine looks a policy's strategy up here and never names a strategy module itself. Adding a
strategy (canary) means: a `StrategyName` member, one module with `LABEL`, `compute_settings(policy, D)`
and a pure `decide(view, settings) -> Decision`, and one entry below.

Must not: hold state, do I/O, or import anything but `rollwise.model` and this package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from rollwise.model import Decision, Policy, StrategyName, ValidationFailed
from rollwise.strategy import blue_green, recreate, rolling
from rollwise.strategy.cycle import CycleView

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True, slots=True)
class StrategyRules(Generic[SettingsT]):
    """One strategy: its label in reasons, how its settings resolve against D, and its cycle rules."""

    name: StrategyName
    label: str
    compute_settings: Callable[[Policy, int], SettingsT]
    decide: Callable[[CycleView, SettingsT], Decision]


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
    }
)


def rules_for(name: StrategyName) -> StrategyRules[Any]:
    """The rules of strategy `name`; ValidationFailed for a strategy without rules."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(str(n) for n in REGISTRY)
        raise ValidationFailed(f"policy.strategy: {str(name)!r} has no rules (one of {known})") from None
