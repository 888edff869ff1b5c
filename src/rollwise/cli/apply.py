"""`rollwise apply -f FILE` (declarative) and `rollwise delete NAME`, through the API.

A deployment file (YAML) holds `name`, `replicas`, `policy` and `revision` (see examples/). `apply`:

- creates the deployment when it does not exist;
- otherwise patches replicas and policy when they differ (the file's policy is the whole policy:
  settings left out take their defaults), then, when the file's revision differs from the revision the
  deployment is moving to (the deploying one, else the serving one), adds it as a new revision and
  starts a rollout to it. A rollout in progress is not replaced unless `--supersede` is given; applying
  the serving revision's content during a rollout (with --supersede) rolls the rollout back.

It prints one line per thing it did (or "unchanged"). The file is validated locally first with the
model's own rules, so a typo is reported (exit 2) before anything is sent.

Called by the `rollwise` Typer app (registered on import). Must not: talk to the store (only the API).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from rollwise.cli.client import Client, DataDirOption, ServerOption, TokenOption, connect, deployment_path
from rollwise.cli.describe import policy_words
from rollwise.cli.errors import cli_errors, fail
from rollwise.cli.main import app
from rollwise.model import ValidationFailed, parse_policy
from rollwise.model.revision import RevisionInput, parse_revision

FILE_KEYS = ("name", "replicas", "policy", "revision")
REVISION_FIELDS = tuple(RevisionInput.model_fields)


def read_deployment_file(path: str) -> dict[str, Any]:
    """The file's document, validated; raises ValidationFailed naming the file and the field."""
    from rollwise.control.operations import check_name, check_replicas  # the server's own rules

    label = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValidationFailed(f"{label}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ValidationFailed(f"{label}: not UTF-8 text") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ValidationFailed(f"{label}: invalid YAML{where}: {problem}") from e
    if not isinstance(doc, dict):
        raise ValidationFailed(f"{label}: expected a mapping with {', '.join(FILE_KEYS)}")
    try:
        unknown = sorted(str(k) for k in doc if k not in FILE_KEYS)
        if unknown:
            raise ValidationFailed(f"{unknown[0]}: is not a known field (expected {', '.join(FILE_KEYS)})")
        for key in ("name", "replicas", "revision"):
            if key not in doc:
                raise ValidationFailed(f"{key}: is required")
        check_name(doc["name"])
        check_replicas(doc["replicas"])
        policy = parse_policy(doc.get("policy") or {})
        revision = parse_revision(doc["revision"])
    except ValidationFailed as e:
        raise ValidationFailed(f"{label}: {e.message}") from e
    return {
        "name": doc["name"],
        "replicas": doc["replicas"],
        "policy": policy.to_json(),
        "revision": revision.model_dump(mode="json"),
    }


def revision_content(revision: dict[str, Any]) -> dict[str, Any]:
    """The fields that make two revisions the same (an API RevisionOut or a validated file revision)."""
    return {k: revision.get(k) for k in REVISION_FIELDS}


@app.command()
def apply(
    file: Annotated[str, typer.Option("--file", "-f", help="Deployment file (YAML), or - for stdin")],
    supersede: Annotated[bool, typer.Option("--supersede", help="Replace a rollout in progress")] = False,
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create or update a deployment from a file; a changed revision starts a rollout."""
    with cli_errors():
        doc = read_deployment_file(file)
        with connect(server, token, data_dir) as client:
            for line in apply_document(client, doc, supersede=supersede):
                typer.echo(line)


def apply_document(client: Client, doc: dict[str, Any], *, supersede: bool = False) -> list[str]:
    """Make the deployment match `doc`; returns what was done, one line each."""
    name = doc["name"]
    dep = client.get_or_none(deployment_path(name))
    if dep is None:
        dep = client.post("/v1/deployments", doc)
        return [f"{name}: created with revision {dep['current_revision']}, {dep['replicas']} replicas "
                f"({policy_words(dep['policy'])})"]
    done: list[str] = []
    if dep["lifecycle"] == "destroying":
        fail(f"{name}: the deployment is being destroyed; apply again once it is gone")

    # What changes in the revision, decided before anything is written (a refusal writes nothing).
    revisions = {r["number"]: r for r in client.get(deployment_path(name, "revisions"))}
    wanted = revision_content(doc["revision"])
    moving_to = dep["deploying_revision"] or dep["current_revision"]
    new_revision = moving_to is None or revision_content(revisions[moving_to]) != wanted
    back_to_current = (
        new_revision and dep["deploying_revision"] is not None
        and revision_content(revisions[dep["current_revision"]]) == wanted
    )
    if new_revision:
        if dep["lifecycle"] in ("pending", "scaling"):
            fail(f"{name}: the deployment is still {dep['lifecycle']}; apply the new revision once it is ready")
        if dep["lifecycle"] == "deploying" and not supersede:
            fail(f"{name}: a rollout of revision {dep['deploying_revision']} is in progress; wait for it, "
                 f"abort it, or apply with --supersede")

    changes: dict[str, Any] = {}
    if doc["replicas"] != dep["replicas"]:
        changes["replicas"] = doc["replicas"]
        done.append(f"{name}: replicas {dep['replicas']} -> {doc['replicas']}")
    if doc["policy"] != dep.get("policy"):
        changes["policy"] = doc["policy"]
        done.append(f"{name}: policy changed ({policy_words(doc['policy'])})")
    if changes:
        dep = client.patch(deployment_path(name), changes)

    if back_to_current:
        dep = client.post(deployment_path(name, "rollout"),
                          {"revision": dep["current_revision"], "supersede": True})
        done.append(f"{name}: revision {dep['current_revision']} is the file's revision: rolling back the rollout")
    elif new_revision:
        rev = client.post(deployment_path(name, "revisions"), doc["revision"])
        dep = client.post(deployment_path(name, "rollout"), {"revision": rev["number"], "supersede": supersede})
        done.append(f"{name}: revision {rev['number']} added; rollout started ({policy_words(dep['policy'])})")
    return done or [f"{name}: unchanged"]


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    server: ServerOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Destroy a deployment: its routes leave the proxy, drain and stop; then it is gone."""
    with cli_errors(), connect(server, token, data_dir) as client:
        client.delete(deployment_path(name))
    typer.echo(f"{name}: destroying (routes drain, then stop)")

