"""`Decision.requeue_after`: when nothing but time can change a decision (auto-promotion or the progress
deadline falling due), the decision says how long until it does, so the controller looks again then
instead of on its long interval. It never appears in the plan output."""

from __future__ import annotations

import pytest

from rollwise.strategy import decide
from rollwise.strategy.planio import decision_to_json

from .helpers import NOW, dep, policy, prov, ready, rolling


def test_auto_promotion_requeues_at_its_delay() -> None:
    routes = ready("b", "r1", 2) + ready("g", "r2", 2, updated=58)  # green ready 2 s before NOW
    decision = decide(dep(2), routes, policy("blue_green", auto_promote=True, promote_delay_seconds=5), NOW)
    assert decision.sub_step.value == "awaiting_promotion"
    assert decision.requeue_after == pytest.approx(3.0)
    assert "requeue_after" not in decision_to_json(decision)


def test_manual_promotion_waits_without_requeue() -> None:
    routes = ready("b", "r1", 2) + ready("g", "r2", 2)
    decision = decide(dep(2), routes, policy("blue_green"), NOW)
    assert decision.sub_step.value == "awaiting_promotion" and decision.requeue_after is None


def test_progressing_rollout_requeues_at_its_deadline() -> None:
    routes = ready("a", "r1", 3) + prov("n", "r2", 1)
    decision = decide(dep(3, progress=50), routes, rolling(1, 0, progress_deadline_seconds=30), NOW)
    assert decision.sub_step.value == "provisioning"
    assert decision.requeue_after == pytest.approx(20.0, abs=0.01)  # last progress 10 s ago, deadline 30 s


def test_no_deadline_no_requeue() -> None:
    routes = ready("a", "r1", 3) + prov("n", "r2", 1)
    decision = decide(dep(3), routes, rolling(1, 0, progress_deadline_seconds=None), NOW)
    assert decision.requeue_after is None
