"""The strategy engine: pure cycle rules, state in, decision out (docs/strategies.md).

Public API:

    decide(deployment, routes, policy, now) -> Decision     one evaluation cycle (engine.py)
    rollwise.strategy.planio                                `rollwise plan` JSON in / out

Called by the control layer's cycles, by `rollwise plan` and by the API's dry run: all through the
same `decide`. Layout: `engine` (the checks every strategy shares, rollback start), `registry`
(StrategyName -> rules), one module per strategy (`rolling`, `blue_green`, `recreate`, `canary`), `cycle` (the
per-cycle view, termination order, surge/unavailable arithmetic), `messages` (reason templates).

Must not: read the clock, sleep, do I/O, or import anything but `rollwise.model` and the standard
library (an import-linter contract in pyproject.toml checks it).
"""

from rollwise.strategy.engine import decide

__all__ = ["decide"]
