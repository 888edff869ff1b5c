"""Operator requests that do not apply are refused with a typed error and a one-line message that names
what is wrong (the field, for bad input); a refused request writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from rollwise.control.errors import AlreadyExists, NotApplicable, NotFound, RolloutInProgress
from rollwise.model import Lifecycle, SubStep, ValidationFailed

from .harness import Scenario, revision, sub_step_is


async def test_promote_when_nothing_awaits_promotion(sc: Scenario) -> None:
    await sc.ready(replicas=1, policy={"strategy": "blue_green"})
    with pytest.raises(NotApplicable, match="no rollout in progress"):
        await sc.ops.promote("svc")
    await sc.start_rollout()
    with pytest.raises(NotApplicable, match="nothing awaits promotion"):
        await sc.ops.promote("svc")  # green routes not ready yet
    await sc.run_until("svc", sub_step_is(SubStep.AWAITING_PROMOTION))
    await sc.ops.promote("svc")


async def test_promote_applies_to_blue_green_only(sc: Scenario) -> None:
    await sc.ready(replicas=1, policy={"strategy": "rolling"})
    await sc.start_rollout()
    with pytest.raises(NotApplicable, match="blue-green"):
        await sc.ops.promote("svc")


async def test_activate_refusals(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    history = await sc.history()
    with pytest.raises(NotFound, match="no revision 7"):
        await sc.ops.activate("svc", 7)
    with pytest.raises(NotFound):
        await sc.ops.activate("nope", 1)
    with pytest.raises(ValidationFailed, match="^revision: "):
        await sc.ops.activate("svc", "2")  # type: ignore[arg-type]
    dep = (await sc.ops.activate("svc", 1)).deployment  # the serving revision: nothing to do
    assert (dep.lifecycle, dep.deploying_revision) == (Lifecycle.READY, None)
    assert await sc.history() == history


async def test_activate_while_pending_is_refused(sc: Scenario) -> None:
    await sc.create(replicas=1)
    with pytest.raises(NotApplicable, match="pending"):
        await sc.ops.activate("svc", 1)


async def test_activating_the_deploying_revision_again_is_a_no_op(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    number = await sc.start_rollout()
    before = await sc.dep()
    after = (await sc.ops.activate("svc", number)).deployment
    assert after.version == before.version


async def test_duplicate_create(sc: Scenario) -> None:
    await sc.create(replicas=1)
    with pytest.raises(AlreadyExists, match="'svc'"):
        await sc.create(replicas=2)
    assert (await sc.dep()).replicas == 1


async def test_undo_while_deploying_and_verbs_without_a_rollout(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    for verb in (sc.ops.pause, sc.ops.abort, sc.ops.resume):
        with pytest.raises(NotApplicable):
            await verb("svc")
    await sc.start_rollout()
    with pytest.raises(RolloutInProgress):
        await sc.ops.undo("svc")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"name": "Bad_Name"}, "name:", id="name-not-a-dns-label"),
        pytest.param({"name": "x" * 64}, "name:", id="name-too-long"),
        pytest.param({"name": ""}, "name:", id="name-empty"),
        pytest.param({"replicas": -1}, "replicas:", id="replicas-negative"),
        pytest.param({"replicas": 1001}, "replicas:", id="replicas-too-many"),
        pytest.param({"replicas": "3"}, "replicas:", id="replicas-not-int"),
        pytest.param({"replicas": True}, "replicas:", id="replicas-bool"),
        pytest.param({"policy": {"strategy": "linear"}}, "policy.strategy:", id="policy-unknown-strategy"),
        pytest.param({"policy": {"max_surge": "oops"}}, "policy.max_surge:", id="policy-bad-surge"),
        pytest.param({"policy": {"max_surge": 0, "max_unavailable": 0}}, "max_surge and max_unavailable",
                     id="policy-both-zero"),
        pytest.param({"policy": {"max_unavailable": "150%"}}, "policy.max_unavailable:", id="policy-over-100"),
        pytest.param({"policy": {"on_deadline": "explode"}}, "policy.on_deadline:", id="policy-on-deadline"),
        pytest.param({"revision": {"command": []}}, "revision.command:", id="revision-empty-command"),
        pytest.param({"revision": {"command": ["x"], "health_check": {"path": "healthz"}}},
                     "revision.health_check.path:", id="revision-bad-check-path"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(sc: Scenario, kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"name": "svc", "replicas": 2, "policy": None, "revision": revision("v1")}
    args.update(kwargs)
    with pytest.raises(ValidationFailed) as info:
        await sc.ops.create(**args)
    assert field in str(info.value)
    assert "\n" not in str(info.value)
    assert await sc.ops.list() == []


async def test_bad_patch_is_refused_and_writes_nothing(sc: Scenario) -> None:
    await sc.ready(replicas=1)
    before = await sc.dep()
    with pytest.raises(ValidationFailed, match="^replicas:"):
        await sc.ops.patch("svc", replicas=-2)
    with pytest.raises(ValidationFailed, match="^policy.max_surge:"):
        await sc.ops.patch("svc", policy={"max_surge": -1})
    assert await sc.dep() == before
