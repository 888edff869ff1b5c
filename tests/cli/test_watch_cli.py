"""`rollwise apply -f FILE && rollwise rollout status NAME --watch` waits for a new deployment to be ready,
and `--timeout` ends the wait on one that never is, against the assembly of `rollwise server --runtime
local --no-proxy` run in the test process (cli_server.InProcessServer: real route processes, free port,
tmp data dir) and the installed `rollwise` script.

A route that becomes ready only when the test says so (its process waits for a gate file before it
listens) makes "the watch saw the deployment not ready, then ready" certain on a busy machine; a route
whose process exits at once never becomes ready. Every wait is on a condition; every process started
here is stopped when the module ends (the server stops its route processes itself, and the sweep of
tests/conftest.py any that a failure left). The watches and the
timeout run the installed script; the other commands run in-process through the same Typer app.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from click.testing import CliRunner, Result

import rollwise.cli.apply
import rollwise.cli.rollout  # noqa: F401  (the imports register the commands, as rollwise.cli.main does)
from rollwise.cli.app import app
from cli_server import ROLLWISE, InProcessServer, clean_env


GATED_SERVER = """
import http.server, os, sys, time
port, gate = int(sys.argv[1]), sys.argv[2]
while not os.path.exists(gate):
    time.sleep(0.05)
http.server.ThreadingHTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
"""A route that listens (is ready: no health check) once the file `gate` exists."""

CRASHING = "import sys; print('model weights not found: /models/m.bin', flush=True); sys.exit(3)"


class Server(InProcessServer):
    def deployment(self, name: str) -> dict[str, Any]:
        answer = self.api(f"/v1/deployments/{name}")
        answer.raise_for_status()
        return dict(answer.json())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(tmp_path_factory.mktemp("watch-server"), runtime="local") as running:
        yield running


def script(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    """The installed `rollwise` script in a subprocess, with no ROLLWISE_* variables."""
    result = subprocess.run([ROLLWISE, *args], capture_output=True, text=True, env=clean_env(), timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def run(*args: str, check: int = 0) -> Result:
    """The command in-process (same Typer app, real HTTP), with no ROLLWISE_* variables; exited with `check`."""
    runner = CliRunner(env={"ROLLWISE_TOKEN": None, "ROLLWISE_SERVER": None, "ROLLWISE_DATA_DIR": None})
    result = runner.invoke(typer.main.get_group(app), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exit_code == check, (result.exit_code, result.stdout, result.stderr)
    return result


def deployment_file(path: Path, name: str, replicas: int, command: list[str]) -> Path:
    quoted = ", ".join('"' + part.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
                       for part in command)
    path.write_text(f"name: {name}\nreplicas: {replicas}\nrevision:\n  command: [{quoted}]\n"
                    "  startup_timeout_seconds: 120\n  stop_grace_seconds: 1\n  drain_seconds: 0\n")
    return path


def test_watch_waits_for_a_new_deployment_to_be_ready(server: Server, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    spec = deployment_file(tmp_path / "gated.yaml", "gated", 2, [sys.executable, "-c", GATED_SERVER, "{port}", str(gate)])
    assert run("apply", "-f", str(spec), *server.args()).stdout.startswith("gated: created with revision 1")

    errors = tmp_path / "watch.err"
    with errors.open("w") as stderr:
        watch = subprocess.Popen([ROLLWISE, "rollout", "status", "gated", "--watch", "--interval", "0.1",
                                  *server.args()], stdout=subprocess.PIPE, stderr=stderr, text=True, env=clean_env())
    try:
        assert watch.stdout is not None
        readable, _, _ = select.select([watch.stdout], [], [], 90)
        assert readable, "the watch printed nothing"
        first = watch.stdout.readline()
        # Right after apply the deployment is pending or scaling: nothing serves yet.
        assert first.split()[:2] in (["gated", "pending"], ["gated", "scaling"]), first
        assert watch.poll() is None, "the watch ended while no replica was ready"
        assert server.deployment("gated")["ready_replicas"] == 0

        gate.touch()
        out = first + watch.stdout.read()  # to the end: the watch exits once the deployment is ready
        watch.wait(timeout=90)
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()
        watch.stdout.close()
    err = errors.read_text()
    assert "Traceback" not in err, err
    assert watch.returncode == 0, (out, err)
    assert out.splitlines()[-1] == "gated: ready, 2/2 replicas of revision 1 ready", out
    row = next(line.split() for line in out.splitlines() if line.startswith("1 "))
    assert row[:2] == ["1", "serving"] and row[-2] == "0/2", out  # the view while nothing was ready
    dep = server.deployment("gated")
    assert dep["lifecycle"] == "ready" and dep["ready_replicas"] == 2

    # Settled: the watch ends at once, saying so (exit 0).
    again = run("rollout", "status", "gated", "--watch", *server.args())
    assert "gated: no rollout in progress (ready, 2/2 replicas ready); revision 1 serving" in again.stdout


def test_watch_timeout_on_a_deployment_that_never_becomes_ready(server: Server, tmp_path: Path) -> None:
    spec = deployment_file(tmp_path / "crash.yaml", "crash", 2, [sys.executable, "-c", CRASHING])
    run("apply", "-f", str(spec), *server.args())
    server.wait("crash", lambda d: any(r.get("failed") for r in d["routes"]) or bool(d.get("last_error")))

    started = time.monotonic()
    result = script("rollout", "status", "crash", "--watch", "--timeout", "1", "--interval", "0.2", *server.args(),
                    check=1)
    assert time.monotonic() - started >= 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    line = result.stderr
    assert "crash: timed out after 1s waiting for the deployment to be ready: 0/2 replicas ready" in line, line
    assert "; last error: " in line, line
    # The server's last_error (exit code and log lines) when it has one, else why the last route failed.
    assert "exit" in line or "exited" in line, line
    assert server.deployment("crash")["ready_replicas"] == 0

    # Without --watch: the view once, exit 0, with the last error.
    shown = run("rollout", "status", "crash", *server.args())
    assert shown.stdout.split()[:2] == ["crash", "scaling"], shown.stdout
    assert "Last error: " in shown.stdout and "FAILED" in shown.stdout
    run("delete", "crash", *server.args())
