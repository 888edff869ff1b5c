"""How `describe` and `rollout status` word a canary: its policy, its step, and the traffic split the
proxy applies (the deployment's weights over the revisions that have a ready route)."""

from __future__ import annotations

from rollwise.cli.describe import canary_words, policy_words, traffic_split

ROUTES = [
    {"revision": 1, "ready": True, "traffic": "active", "traffic_ratio": 1.0},
    {"revision": 1, "ready": True, "traffic": "active", "traffic_ratio": 1.0},
    {"revision": 2, "ready": True, "traffic": "active", "traffic_ratio": 1.0},
]
POLICY = {"strategy": "canary", "steps": [{"set_weight": 10}, {"pause": {"seconds": 60}}, {"set_weight": 50},
                                          {"pause": {}}], "min_ready_seconds": 5, "progress_deadline_seconds": None}


def test_the_split_follows_the_canary_weights_not_the_route_counts() -> None:
    assert traffic_split(ROUTES) == {1: 2 / 3, 2: 1 / 3}
    assert traffic_split(ROUTES, {"r1": 90, "r2": 10}) == {1: 0.9, 2: 0.1}
    # A revision without a ready route gets nothing: the proxy gives its share to the others.
    assert traffic_split(ROUTES[:2], {"r1": 90, "r2": 10}) == {1: 1.0}


def test_policy_and_step_words() -> None:
    assert policy_words(POLICY) == "canary, steps 10% -> pause 60s -> 50% -> pause -> 100%, min ready 5s"
    dep = {"policy": POLICY, "lifecycle": "deploying", "canary_step": 1, "step_started_at": None}
    assert canary_words(dep) == "step 2 of 5: pause 60s"
    assert canary_words({**dep, "canary_step": 4}) == "step 5 of 5: final: 100%"
    assert canary_words({**dep, "lifecycle": "ready"}) == ""
