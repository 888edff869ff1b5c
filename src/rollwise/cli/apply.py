"""`rollwise apply -f FILE` (declarative) and `rollwise delete NAME`, through the API.

A deployment file (YAML) holds `name`, `replicas`, `policy` and `revision` (see examples/; a revision
may say what one route needs of the node's slots, `resources: {gpu: 1}`). `apply`:

- creates the deployment when it does not exist;
- otherwise patches replicas and policy when they differ (the file's policy is the whole policy:
  settings left out take their defaults), then, when the file's revision differs from the revision the
  deployment is moving to (the deploying one, else the serving one), adds it as a new revision and
  starts a rollout to it. A rollout in progress is not replaced unless `--supersede` is given; applying
  the serving revision's content during a rollout (with --supersede) rolls the rollout back.

It prints one line per thing it did (or "unchanged").

Validation. The file's shape is checked here (a mapping, known keys at every level, a string name, an
integer replica count: exit 2 naming the field). The values are validated by the server, with the
model's own rules: its 422 names the field and is shown as `FILE: field: problem`, exit 2. The model
(pydantic) is not imported here: that import was most of the time `apply` took to start. To tell
whether the file changes anything, settings the file leaves out are filled from `POLICY_DEFAULTS`,
`REVISION_DEFAULTS` and `HEALTH_CHECK_DEFAULTS`, copies of the model's defaults
(tests/cli/test_apply_file.py checks that they match `rollwise.model`). Their keys are also the known
fields: a field the model gains and these copies lack is refused loudly ("is not a known field"), never
silently left out of the comparison.

Writes, in order: a new revision (the server validates it; refused, nothing is written), then the
replicas and policy patch, then the rollout. A patch the server refuses after the revision was added
leaves that revision stored but not rolled out, and the error says so.

Called by the `rollwise` Typer app (registered on import). Must not: talk to the store (only the API);
import rollwise.model, rollwise.control or the server's packages.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from rollwise.cli.client import (
    ApiError,
    Client,
    DataDirOption,
    ServerOption,
    TokenOption,
    connect,
    deployment_path,
)
from rollwise.cli.describe import policy_words
from rollwise.cli.errors import CliError, InvalidInput, cli_errors, fail
from rollwise.cli.app import app

FILE_KEYS = ("name", "replicas", "policy", "revision")
REQUIRED_KEYS = ("name", "replicas", "revision")

POLICY_DEFAULTS: dict[str, Any] = {
    "strategy": "rolling", "max_surge": "25%", "max_unavailable": 0, "capacity_fallback": "replace",
    "auto_promote": False,
    "promote_delay_seconds": 0.0, "steps": [], "analysis": None, "min_ready_seconds": 0.0,
    "progress_deadline_seconds": 600.0, "on_deadline": "rollback", "failure_threshold": None,
}
"""rollwise.model.Policy().to_json(): the whole policy of a file that sets nothing."""

REVISION_DEFAULTS: dict[str, Any] = {
    "env": {}, "health_check": None, "startup_timeout_seconds": 60.0, "drain_seconds": 1.0,
    "stop_grace_seconds": 5.0, "label": None, "ports": [], "resources": {},
}
"""rollwise.model.revision.RevisionInput's defaults (`command` is required)."""
REVISION_FIELDS = ("command", *REVISION_DEFAULTS)

HEALTH_CHECK_DEFAULTS: dict[str, Any] = {
    "path": "/healthz", "interval_seconds": 1.0, "timeout_seconds": 1.0, "healthy_threshold": 1,
    "unhealthy_threshold": 3, "initial_delay_seconds": 0.0,
}
"""rollwise.model.revision.HealthCheck's defaults."""


def read_deployment_file(path: str) -> dict[str, Any]:
    """The file's document, its shape checked; raises InvalidInput naming the file and the field."""
    import yaml  # only `apply` reads YAML

    label = file_label(path)
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"{label}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise InvalidInput(f"{label}: not UTF-8 text") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise InvalidInput(f"{label}: invalid YAML{where}: {problem}") from e
    if not isinstance(doc, dict):
        raise InvalidInput(f"{label}: expected a mapping with {', '.join(FILE_KEYS)}")
    problem = shape_problem(doc)
    if problem:
        raise InvalidInput(f"{label}: {problem}")
    return {"name": doc["name"], "replicas": doc["replicas"], "policy": doc.get("policy") or {},
            "revision": doc["revision"]}


def file_label(path: str) -> str:
    return "<stdin>" if path == "-" else path


def shape_problem(doc: Mapping[Any, Any]) -> str | None:
    """What is wrong with the document's shape ("field: problem"), or None. Values are the server's."""
    unknown = _unknown(doc, FILE_KEYS, "")
    if unknown:
        return unknown
    for key in REQUIRED_KEYS:
        if key not in doc:
            return f"{key}: is required"
    if not isinstance(doc["name"], str):
        return f"name: {doc['name']!r} is not a string"
    replicas = doc["replicas"]
    if isinstance(replicas, bool) or not isinstance(replicas, int):
        return f"replicas: {replicas!r} is not an integer"
    policy = doc.get("policy")
    if policy is not None and not isinstance(policy, dict):
        return f"policy: {policy!r} is not an object"
    revision = doc["revision"]
    if not isinstance(revision, dict):
        return "revision: is not an object"
    check = revision.get("health_check")
    return (
        _unknown(policy or {}, tuple(POLICY_DEFAULTS), "policy.")
        or _unknown(revision, REVISION_FIELDS, "revision.")
        or (_unknown(check, tuple(HEALTH_CHECK_DEFAULTS), "revision.health_check.")
            if isinstance(check, dict) else None)
    )


def _unknown(mapping: Mapping[Any, Any], known: tuple[str, ...], prefix: str) -> str | None:
    unknown = sorted(str(k) for k in mapping if k not in known)
    if not unknown:
        return None
    return f"{prefix}{unknown[0]}: is not a known field (expected {', '.join(known)})"


def whole_policy(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The file's policy with the settings it leaves out at their defaults."""
    return POLICY_DEFAULTS | dict(policy)


def revision_content(revision: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that make two revisions the same (an API RevisionOut or a file's revision), with the
    defaults filled in."""
    filled = REVISION_DEFAULTS | dict(revision)
    if isinstance(filled.get("health_check"), dict):
        filled["health_check"] = HEALTH_CHECK_DEFAULTS | filled["health_check"]
    if isinstance(filled.get("resources"), dict):
        # The server drops zero counts ({"gpu": 0} is stored as {}); other values are the server's to refuse.
        filled["resources"] = {k: v for k, v in filled["resources"].items()
                               if not (type(v) is int and v == 0)}
    return {k: filled.get(k) for k in REVISION_FIELDS}


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
            try:
                lines = apply_document(client, doc, supersede=supersede)
            except ApiError as e:
                if e.code != "invalid":
                    raise
                # The server refused a value of the file: say which file (the message names the field).
                raise CliError(f"{file_label(file)}: {e.message}", code=e.code) from e
        for line in lines:
            typer.echo(line)


def apply_document(client: Client, doc: dict[str, Any], *, supersede: bool = False) -> list[str]:
    """Make the deployment match `doc` (a document `read_deployment_file` returned); returns what was
    done, one line each."""
    name = doc["name"]
    dep = client.get_or_none(deployment_path(name))
    if dep is None:
        dep = client.post("/v1/deployments", doc)
        return [f"{name}: created with revision {dep['current_revision']}, {dep['replicas']} replicas "
                f"({policy_words(dep.get('policy'))})"]
    done: list[str] = []
    if dep["lifecycle"] == "destroying":
        fail(f"{name}: the deployment is being destroyed; apply again once it is gone")

    # What changes in the revision, decided before anything is written (a refusal writes nothing).
    revisions = {r["number"]: r for r in client.get(deployment_path(name, "revisions"))}
    wanted = revision_content(doc["revision"])
    moving_to = dep.get("deploying_revision") or dep.get("current_revision")
    new_revision = moving_to is None or revision_content(revisions[moving_to]) != wanted
    back_to_current = (
        new_revision and dep.get("deploying_revision") is not None
        and revision_content(revisions[dep["current_revision"]]) == wanted
    )
    if new_revision:
        if dep["lifecycle"] in ("pending", "scaling"):
            fail(f"{name}: the deployment is still {dep['lifecycle']}; apply the new revision once it is ready")
        if dep["lifecycle"] == "deploying" and not supersede:
            fail(f"{name}: a rollout of revision {dep['deploying_revision']} is in progress; wait for it, "
                 f"abort it, or apply with --supersede")

    # The new revision first: the server validates it, and a refused one leaves nothing written.
    added: dict[str, Any] | None = None
    if new_revision and not back_to_current:
        try:
            added = client.post(deployment_path(name, "revisions"), doc["revision"])
        except ApiError as e:
            if e.code == "invalid":
                # The endpoint names the revision's own fields ("health_check.path: ..."); some checks
                # already say "revision." (the node's capacity): the file's field either way.
                field = e.message if e.message.startswith("revision.") else f"revision.{e.message}"
                raise ApiError(e.code, field, status=e.status) from e
            raise

    changes: dict[str, Any] = {}
    if doc["replicas"] != dep["replicas"]:
        changes["replicas"] = doc["replicas"]
        done.append(f"{name}: replicas {dep['replicas']} -> {doc['replicas']}")
    policy = whole_policy(doc["policy"])
    if policy != dep.get("policy"):
        changes["policy"] = policy
        done.append(f"{name}: policy changed ({policy_words(policy)})")
    if changes:
        try:
            dep = client.patch(deployment_path(name), changes)
        except ApiError as e:
            if added is not None:
                raise ApiError(e.code, f"{e.message} (revision {added['number']} was added, not rolled out)",
                               status=e.status) from e
            raise

    if back_to_current:
        dep = client.post(deployment_path(name, "rollout"),
                          {"revision": dep["current_revision"], "supersede": True})
        done.append(f"{name}: revision {dep['current_revision']} is the file's revision: rolling back the rollout")
    elif added is not None:
        dep = client.post(deployment_path(name, "rollout"), {"revision": added["number"], "supersede": supersede})
        done.append(f"{name}: revision {added['number']} added; rollout started ({policy_words(dep.get('policy'))})")
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

