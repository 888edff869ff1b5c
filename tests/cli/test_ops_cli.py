"""The API commands of the CLI (apply, get, describe, rollout status/verbs, history, plan NAME, delete)
against one server per module: the assembly of `rollwise server --runtime simulated --no-proxy` run in this
process (cli_server.InProcessServer: real HTTP on a free port, a tmp data dir where the CLI finds the
token), whose routes start in 50 ms.

The commands run in-process through the same Typer app as the installed script (`run(...)`, click's
CliRunner), still over real HTTP to the real server. The installed `rollwise` script itself runs as a
subprocess where the process is what is tested (`script(...)`: exit codes and the one red line of a
mistake) and where a command must run beside the test (`Watch`, a `rollout status --watch` in the
background). Either way a mistake must give one red line on stderr and a non-zero exit, never a
traceback. Waiting for a state is done with the API after each coordinator round (scaffolding, not what
is tested).
"""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.apply
import rollwise.cli.describe
import rollwise.cli.get
import rollwise.cli.history
import rollwise.cli.plan
import rollwise.cli.rollout  # noqa: F401  (the imports register the commands, as rollwise.cli.main does)
from rollwise.cli.app import app
from cli_server import ROLLWISE, InProcessServer, clean_env, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

Server = InProcessServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with InProcessServer(tmp_path_factory.mktemp("cli-server")) as running:
        yield running


def script(*args: str, check: int | None = 0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The installed `rollwise` script in a subprocess, with no ROLLWISE_* variables."""
    result = subprocess.run([ROLLWISE, *args], capture_output=True, text=True, env=clean_env(), timeout=90,
                            input=stdin)
    assert "Traceback" not in result.stderr, result.stderr
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def invoke(*args: str, stdin: str | None = None) -> Result:
    """The command in-process (same Typer app, real HTTP), with no ROLLWISE_* variables."""
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None})
    result = runner.invoke(typer.main.get_group(app), list(args), input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run(*args: str, check: int = 0, stdin: str | None = None) -> Result:
    """`invoke`, and the command exited with `check`."""
    result = invoke(*args, stdin=stdin)
    assert result.exit_code == check, (result.exit_code, result.stdout, result.stderr)
    return result


def one_red_line(result: subprocess.CompletedProcess[str] | Result, code: int = 1) -> str:
    """The command failed with `code` and said why in exactly one `error: ...` line on stderr."""
    returncode = result.returncode if isinstance(result, subprocess.CompletedProcess) else result.exit_code
    assert returncode == code, (returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def deployment_file(tmp_path: Path, example: str, *, name: str, version: str, replicas: int | None = None,
                    drain_seconds: float | None = None) -> Path:
    text = (EXAMPLES / example).read_text()
    first = text.split("name: ", 1)[1].split("\n", 1)[0]
    text = text.replace(f"name: {first}", f"name: {name}").replace("v1", version)
    if replicas is not None:
        text = "\n".join(f"replicas: {replicas}" if line.startswith("replicas:") else line for line in text.splitlines())
    if drain_seconds is not None:
        assert "drain_seconds" not in text
        text = text.replace("revision:\n", f"revision:\n  drain_seconds: {drain_seconds}\n")
    path = tmp_path / f"{name}-{version}.yaml"
    path.write_text(text)
    return path


def ready(d: dict[str, Any]) -> bool:
    return d["lifecycle"] == "ready" and d["ready_replicas"] == d["replicas"]


class Watch:
    """`rollwise rollout status NAME --watch` running in the background (a context manager: the process is
    killed at exit if it still runs)."""

    def __init__(self, server: Server, name: str) -> None:
        self.proc = subprocess.Popen([ROLLWISE, "rollout", "status", name, "--watch", "--interval", "0.05",
                                      *server.args()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=clean_env())
        assert self.proc.stdout is not None
        ready_to_read, _, _ = select.select([self.proc.stdout], [], [], 60)
        assert ready_to_read, "the watch printed nothing"
        self.first_line = self.proc.stdout.readline()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def finish(self) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=60)
        assert "Traceback" not in err, err
        return self.proc.returncode, self.first_line + out, err


# ------------------------------------------------------------------------------------------------ tests


def test_apply_get_describe_history_and_a_rolling_rollout(server: Server, tmp_path: Path) -> None:
    v1 = deployment_file(tmp_path, "sentiment.yaml", name="roll", version="v1", replicas=2)
    created = run("apply", "-f", str(v1), *server.args())
    assert created.stdout.startswith("roll: created with revision 1, 2 replicas (rolling")
    server.wait("roll", ready)
    assert run("apply", "-f", str(v1), *server.args()).stdout == "roll: unchanged\n"

    table = run("get", *server.args()).stdout
    assert table.splitlines()[0].split() == ["NAME", "LIFECYCLE", "REVISION", "READY", "STRATEGY", "AGE"]
    assert any(line.split()[:4] == ["roll", "ready", "1", "2/2"] for line in table.splitlines())
    as_json = json.loads(invoke("get", "roll", "-o", "json", *server.args()).stdout)
    assert as_json["name"] == "roll" and as_json["policy"]["max_surge"] == 1

    v2 = deployment_file(tmp_path, "sentiment.yaml", name="roll", version="v2", replicas=3)
    applied = run("apply", "-f", str(v2), *server.args()).stdout.splitlines()
    assert applied == ["roll: replicas 2 -> 3",
                       "roll: revision 2 added; rollout started (rolling, max surge 1, max unavailable 0, "
                       "progress deadline 120s (rollback))"]
    watched = run("rollout", "status", "roll", "--watch", "--interval", "0.05", *server.args())
    assert "roll: rollout of revision 2 completed" in watched.stdout or \
        "the last rollout completed; revision 2 serving" in watched.stdout

    described = run("describe", "roll", *server.args()).stdout
    for part in ("State", "ready", "Routes", "Revisions", "Events", "revision 2: 100%", "--version v2"):
        assert part in described, part
    history = run("history", "roll", *server.args()).stdout
    assert "rolling: rollout of revision 2 started (revision 1 serving)" in history
    assert "completed" in history
    rows = json.loads(invoke("history", "roll", "-n", "2", "-o", "json", *server.args()).stdout)
    assert len(rows) == 2 and rows[-1]["sub_step"] == "completed"


def test_blue_green_watch_exits_0_after_promote_and_1_after_abort(server: Server, tmp_path: Path) -> None:
    run("apply", "-f", str(deployment_file(tmp_path, "sentiment-blue-green.yaml", name="bg", version="v1")),
        *server.args())
    server.wait("bg", ready)

    run("apply", "-f", str(deployment_file(tmp_path, "sentiment-blue-green.yaml", name="bg", version="v2")),
        *server.args())
    with Watch(server, "bg") as watch:
        assert watch.first_line.startswith("bg  deploying")
        server.wait("bg", lambda d: d["sub_step"] == "awaiting_promotion")
        plan = json.loads(run("plan", "bg", *server.args()).stdout)
        assert plan["sub_step"] == "awaiting_promotion" and plan["create"] == [] and plan["mode"] == "forward"
        promoted = run("rollout", "promote", "bg", *server.args())
        assert promoted.stdout.startswith("bg: promotion requested")
        code, out, err = watch.finish()
    assert code == 0, (out, err)
    assert out.splitlines()[-1].startswith("bg: rollout of revision 2 completed")

    run("apply", "-f", str(deployment_file(tmp_path, "sentiment-blue-green.yaml", name="bg", version="v3")),
        *server.args())
    with Watch(server, "bg") as watch:
        server.wait("bg", lambda d: d["sub_step"] == "awaiting_promotion")
        assert run("rollout", "abort", "bg", *server.args()).stdout.startswith("bg: abort requested")
        code, out, err = watch.finish()
    assert code == 1, (out, err)
    assert err.startswith("error: bg: rollout of revision 3 rolled back; revision 2 serving")
    assert err.count("\n") == 1
    # Asked again once it is over, the status still says the last rollout rolled back.
    again = invoke("rollout", "status", "bg", "--watch", *server.args())
    assert "the last one rolled back (aborted)" in one_red_line(again)
    assert invoke("rollout", "status", "bg", *server.args()).exit_code == 0


def test_pause_resume_undo_and_refusals(server: Server, tmp_path: Path) -> None:
    run("apply", "-f", str(deployment_file(tmp_path, "sentiment-blue-green.yaml", name="verbs", version="v1")),
        *server.args())
    server.wait("verbs", ready)
    refused = invoke("rollout", "pause", "verbs", *server.args())
    assert "no rollout in progress to pause" in one_red_line(refused)
    assert "nothing to undo" in one_red_line(invoke("rollout", "undo", "verbs", *server.args()))

    run("apply", "-f", str(deployment_file(tmp_path, "sentiment-blue-green.yaml", name="verbs", version="v2")),
        *server.args())
    assert run("rollout", "pause", "verbs", *server.args()).stdout.startswith("verbs: rollout paused")
    v3 = deployment_file(tmp_path, "sentiment-blue-green.yaml", name="verbs", version="v3")
    busy = one_red_line(invoke("apply", "-f", str(v3), *server.args()))
    assert "rollout of revision 2 is in progress" in busy and "--supersede" in busy
    assert run("rollout", "resume", "verbs", *server.args()).stdout.startswith("verbs: rollout resumed")
    server.wait("verbs", lambda d: d["sub_step"] == "awaiting_promotion")
    invoke("rollout", "promote", "verbs", *server.args())
    server.wait("verbs", lambda d: d["lifecycle"] == "ready" and d["current_revision"] == 2)

    undone = run("rollout", "undo", "verbs", *server.args())
    assert undone.stdout.startswith("verbs: rollout of the previous revision started")
    assert "revision 2 -> 1" in undone.stdout


def test_delete(server: Server, tmp_path: Path) -> None:
    # No drain time (1 s by default): what is tested is the command, not the drain.
    spec = deployment_file(tmp_path, "sentiment-recreate.yaml", name="gone", version="v1", drain_seconds=0)
    invoke("apply", "-f", str(spec), *server.args())
    server.wait("gone", ready)
    assert run("delete", "gone", *server.args()).stdout.startswith("gone: destroying")
    server.wait_gone("gone")
    assert "deployment 'gone' not found" in one_red_line(invoke("get", "gone", *server.args()))


def test_mistakes_are_one_red_line(server: Server, tmp_path: Path) -> None:
    down = one_red_line(script("get", "--server", f"http://127.0.0.1:{free_port()}", check=None))
    assert "cannot reach the rollwise server" in down
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nreplicas: [1\n")
    assert "invalid YAML at line" in one_red_line(script("apply", "-f", str(bad_yaml), *server.args(),
                                                          check=None), code=2)


def test_more_mistakes_in_process(server: Server, tmp_path: Path) -> None:
    assert "cannot reach" in one_red_line(invoke("rollout", "status", "x", "--server", f"http://127.0.0.1:{free_port()}"))
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: typo\nreplicas: 1\nrevison:\n  command: [x]\n")
    assert "revison: is not a known field" in one_red_line(invoke("apply", "-f", str(typo), *server.args()), code=2)
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("name: p\nreplicas: 1\npolicy: {max_surge: lots}\nrevision:\n  command: [x]\n")
    assert "policy.max_surge" in one_red_line(invoke("apply", "-f", str(bad_policy), *server.args()), code=2)
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n")
    assert "expected a mapping" in one_red_line(invoke("apply", "-f", str(not_a_mapping), *server.args()), code=2)
    assert "cannot read" in one_red_line(invoke("apply", "-f", str(tmp_path / "nope.yaml"), *server.args()), code=2)
    from_stdin = invoke("apply", "-f", "-", *server.args(), stdin="name: Bad_Name\nreplicas: 1\nrevision: {command: [x]}\n")
    assert "<stdin>: name: 'Bad_Name' is not a DNS label" in one_red_line(from_stdin, code=2)

    assert "not found" in one_red_line(invoke("describe", "nope", *server.args()))
    assert "not found" in one_red_line(invoke("plan", "nope", *server.args()))
    assert "not found" in one_red_line(invoke("history", "nope", *server.args()))
    assert "not found" in one_red_line(invoke("rollout", "abort", "nope", *server.args()))
    wrong = one_red_line(invoke("get", "--server", server.url, "--token", "wrong"))
    assert "wrong bearer token" in wrong and "--token" in wrong
    no_token = one_red_line(invoke("get", "--server", server.url, "--data-dir", str(tmp_path)))
    assert "missing bearer token" in no_token
    assert "not both" in one_red_line(invoke("plan", "x", "--input", "-"), code=2)
    assert "is not an http:// or https:// URL" in one_red_line(invoke("get", "--server", "localhost:8700"), code=2)
    assert "nonnumeric port" in one_red_line(invoke("get", "--server", "http://localhost:port"), code=2)
    assert "--input: is required" in one_red_line(invoke("plan"), code=2)


def test_apply_values_refused_by_the_server_name_the_field_and_write_nothing(server: Server, tmp_path: Path) -> None:
    def revisions(name: str) -> int:
        return len(server.api(f"/v1/deployments/{name}/revisions").json())

    bad_check = tmp_path / "bad-check.yaml"
    bad_check.write_text("name: valid\nreplicas: 1\nrevision:\n  command: [x]\n  health_check: {path: healthz}\n")
    refused = one_red_line(invoke("apply", "-f", str(bad_check), *server.args()), code=2)
    assert f"{bad_check}: revision.health_check.path: 'healthz' must start with /" in refused
    assert server.api("/v1/deployments/valid").status_code == 404

    v1 = deployment_file(tmp_path, "sentiment.yaml", name="valid", version="v1", replicas=1)
    run("apply", "-f", str(v1), *server.args())
    server.wait("valid", ready)
    assert run("apply", "-f", str(v1), *server.args()).stdout == "valid: unchanged\n"

    # A new revision the server refuses, with a replicas change: nothing is written.
    text = v1.read_text().replace("replicas: 1", "replicas: 2").replace("path: /healthz", "path: healthz")
    assert text != v1.read_text().replace("replicas: 1", "replicas: 2")
    bad_revision = tmp_path / "bad-revision.yaml"
    bad_revision.write_text(text)
    refused = one_red_line(invoke("apply", "-f", str(bad_revision), *server.args()), code=2)
    assert f"{bad_revision}: revision.health_check.path: 'healthz' must start with /" in refused
    dep = server.api("/v1/deployments/valid").json()
    assert dep["replicas"] == 1 and revisions("valid") == 1

    # A policy value the server refuses (with no new revision): nothing is written.
    bad_policy = tmp_path / "bad-policy.yaml"
    bad_policy.write_text(v1.read_text().replace("max_surge: 1", "max_surge: lots"))
    refused = one_red_line(invoke("apply", "-f", str(bad_policy), *server.args()), code=2)
    assert f'{bad_policy}: policy.max_surge: "lots" is not an integer or a percentage like "25%"' in refused
    assert server.api("/v1/deployments/valid").json()["policy"]["max_surge"] == 1

    # A file without a policy is the default policy: applied once it changes it, then it is unchanged.
    no_policy = tmp_path / "no-policy.yaml"
    no_policy.write_text("\n".join(line for line in v1.read_text().splitlines()
                                   if not line.startswith(("policy:", "  strategy:", "  max_", "  progress_"))))
    assert run("apply", "-f", str(no_policy), *server.args()).stdout.startswith("valid: policy changed (rolling, "
                                                                                     "max surge 25%")
    assert run("apply", "-f", str(no_policy), *server.args()).stdout == "valid: unchanged\n"

    # A new revision with a policy the server refuses: the revision is stored, not rolled out, and the
    # error line says so.
    v2 = deployment_file(tmp_path, "sentiment.yaml", name="valid", version="v2", replicas=1)
    half = tmp_path / "half.yaml"
    half.write_text(v2.read_text().replace("max_surge: 1", "max_surge: lots"))
    refused = one_red_line(invoke("apply", "-f", str(half), *server.args()), code=2)
    assert "policy.max_surge" in refused and "(revision 2 was added, not rolled out)" in refused
    dep = server.api("/v1/deployments/valid").json()
    assert dep["lifecycle"] == "ready" and dep["current_revision"] == 1 and dep["deploying_revision"] is None


def test_apply_then_watch_waits_for_the_new_deployment(server: Server, tmp_path: Path) -> None:
    spec = deployment_file(tmp_path, "sentiment.yaml", name="fresh", version="v1", replicas=3)
    run("apply", "-f", str(spec), *server.args())
    watched = run("rollout", "status", "fresh", "--watch", "--interval", "0.05", *server.args())
    dep = server.api("/v1/deployments/fresh").json()
    assert dep["lifecycle"] == "ready" and dep["ready_replicas"] == 3, dep
    last = watched.stdout.splitlines()[-1]
    # Followed from pending/scaling to ready, or (on a slow start) found ready already: exit 0 either way.
    assert last in ("fresh: ready, 3/3 replicas of revision 1 ready",
                    "fresh: no rollout in progress (ready, 3/3 replicas ready); revision 1 serving"), watched.stdout
    assert watched.stdout.split()[:2] in (["fresh", "pending"], ["fresh", "scaling"], ["fresh", "ready"])
