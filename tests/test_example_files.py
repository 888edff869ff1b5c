"""Every deployment file in examples/ is one `rollwise apply -f` accepts: its shape (the CLI's own
check) and its values (the model's validation, as the server runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rollwise.cli.apply import shape_problem
from rollwise.model.policy import parse_policy
from rollwise.model.revision import parse_revision

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_the_examples_are_found() -> None:
    assert {p.name for p in EXAMPLES} >= {"sentiment.yaml", "sentiment-canary.yaml", "sentiment-blue-green.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_file_is_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert shape_problem(doc) is None
    parse_policy(doc.get("policy") or {})
    parse_revision(doc["revision"])
