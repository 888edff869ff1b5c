"""`rollwise apply`'s reading of a deployment file, without a server: the shape checks it makes itself
(one line naming the field, exit 2) and the copies of the model's defaults it uses to tell whether a file
changes anything, which must equal `rollwise.model`'s (the CLI does not import the model: start-up time).
Values are the server's to validate (tests/cli/test_ops_cli.py runs those against a real server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rollwise.cli import apply
from rollwise.cli.errors import InvalidInput, exit_code_for
from rollwise.model.policy import Policy
from rollwise.model.revision import HealthCheck, RevisionInput


def test_the_defaults_are_the_models() -> None:
    assert apply.POLICY_DEFAULTS == Policy().to_json()
    assert tuple(apply.POLICY_DEFAULTS) == tuple(Policy.model_fields)
    revision = RevisionInput(command=["x"]).model_dump(mode="json")
    assert {"command": ["x"], **apply.REVISION_DEFAULTS} == revision
    assert apply.REVISION_FIELDS == tuple(RevisionInput.model_fields)
    assert apply.HEALTH_CHECK_DEFAULTS == HealthCheck().model_dump(mode="json")
    assert tuple(apply.HEALTH_CHECK_DEFAULTS) == tuple(HealthCheck.model_fields)


REVISION = {"command": ["x"]}


@pytest.mark.parametrize(("doc", "problem"), [
    ({"name": "a", "replicas": 1, "revision": REVISION, "colour": 1}, "colour: is not a known field"),
    ({"replicas": 1, "revision": REVISION}, "name: is required"),
    ({"name": "a", "revision": REVISION}, "replicas: is required"),
    ({"name": "a", "replicas": 1}, "revision: is required"),
    ({"name": 5, "replicas": 1, "revision": REVISION}, "name: 5 is not a string"),
    ({"name": "a", "replicas": "3", "revision": REVISION}, "replicas: '3' is not an integer"),
    ({"name": "a", "replicas": True, "revision": REVISION}, "replicas: True is not an integer"),
    ({"name": "a", "replicas": 1, "policy": [1], "revision": REVISION}, "policy: [1] is not an object"),
    ({"name": "a", "replicas": 1, "revision": "run it"}, "revision: is not an object"),
    ({"name": "a", "replicas": 1, "policy": {"max_surg": 1}, "revision": REVISION},
     "policy.max_surg: is not a known field"),
    ({"name": "a", "replicas": 1, "revision": {"command": ["x"], "helth_check": {}}},
     "revision.helth_check: is not a known field"),
    ({"name": "a", "replicas": 1, "revision": {"command": ["x"], "health_check": {"pth": "/"}}},
     "revision.health_check.pth: is not a known field"),
])
def test_shape_problems_name_the_field(doc: dict[str, Any], problem: str) -> None:
    found = apply.shape_problem(doc)
    assert found is not None and found.startswith(problem), found


def test_a_good_shape_is_left_to_the_server() -> None:
    # Values are not checked here: the server's 422 names the field.
    doc = {"name": "Bad_Name", "replicas": 5000, "policy": {"max_surge": "lots"},
           "revision": {"command": [], "health_check": {"path": "x"}}}
    assert apply.shape_problem(doc) is None


def test_read_deployment_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("name: a\nreplicas: 2\nrevision:\n  command: [x]\n")
    assert apply.read_deployment_file(str(good)) == {"name": "a", "replicas": 2, "policy": {},
                                                     "revision": {"command": ["x"]}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nreplicas: 2\nrevision:\n  command: [x]\n  label: [v1\n")
    with pytest.raises(InvalidInput) as info:
        apply.read_deployment_file(str(bad))
    assert info.value.message.startswith(f"{bad}: invalid YAML at line") and exit_code_for(info.value) == 2


def test_revision_content_fills_the_defaults() -> None:
    stored = {"number": 1, "command": ["x"], "env": {}, "health_check": {**apply.HEALTH_CHECK_DEFAULTS},
              "startup_timeout_seconds": 60.0, "drain_seconds": 1.0, "stop_grace_seconds": 5.0, "label": None,
              "created_at": "2026-01-01T00:00:00Z"}
    assert apply.revision_content(stored) == apply.revision_content({"command": ["x"], "health_check": {}})
    assert apply.revision_content(stored) != apply.revision_content({"command": ["x"]})
    assert apply.revision_content(stored) != apply.revision_content({"command": ["x"], "health_check": {"path": "/"}})
