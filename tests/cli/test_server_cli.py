"""`rollwise server` as a real subprocess (simulated runtime, no proxy, free ports, a tmp data dir): it
prints where its token is, the token file is private, /healthz answers without a token and /v1 only with
it, SIGTERM stops it cleanly (exit 0), `--token` replaces the file, and a busy port is one red line.

Every `rollwise server` process of the module starts together when the module starts (each pays its own
imports; side by side they share the machine's cores), and each test then checks and stops its own.
"""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cli_server import ROLLWISE, clean_env, wait_until


@dataclass
class Started:
    proc: subprocess.Popen[str]
    url: str
    data: Path
    """Its --data-dir."""


def free_ports(count: int) -> list[int]:
    """Ports free now and distinct from one another (bound all at once, then released)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def launch(data_dir: Path, *extra: str, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [ROLLWISE, "server", "--runtime", "simulated", "--no-proxy", "--api-port", str(port),
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    return proc, f"http://127.0.0.1:{port}"


def role(url: str) -> object:
    try:
        answer = httpx.get(f"{url}/healthz", timeout=1)
    except httpx.HTTPError:
        return None
    return answer.json().get("role") if answer.status_code == 200 else None


def wait_role(server: Started, wanted: str) -> dict[str, object]:
    """/healthz once it reports `wanted` (a server answers "starting" while it adopts, then "active")."""

    def reached() -> bool:
        assert server.proc.poll() is None, server.proc.communicate()
        return role(server.url) == wanted

    wait_until(reached, what=f"role {wanted}")
    health: dict[str, object] = httpx.get(f"{server.url}/healthz", timeout=5).json()
    return health


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    """The processes of the tests below, launched at once; any still running at the end is stopped."""
    started: dict[str, Started] = {}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = free_ports(5)
        try:
            home = tmp_path_factory.mktemp("default")
            proc, url = launch(home / "data", port=ports.pop())
            started["default"] = Started(proc, url, home / "data")

            home = tmp_path_factory.mktemp("given")
            proc, url = launch(home, "--token", "s3cret-token", port=ports.pop())
            started["given"] = Started(proc, url, home)

            home = tmp_path_factory.mktemp("token-file")
            secret = home / "secret"
            secret.write_text("  from-a-file-token\n")
            data = home / "data"
            data.mkdir(mode=0o755)  # an existing, too open data directory is closed
            proc, url = launch(data, "--token-file", str(secret), port=ports.pop())
            started["token-file"] = Started(proc, url, data)

            home = tmp_path_factory.mktemp("refused")
            for name, args in (("missing-token-file", ["--token-file", str(home / "missing")]),
                               ("two-tokens", ["--token", "a", "--token-file", str(home / "t")])):
                proc, url = launch(home / name, *args, port=ports.pop())
                started[name] = Started(proc, url, home / name)

            home = tmp_path_factory.mktemp("busy")
            proc, url = launch(home, port=busy.getsockname()[1])
            started["busy-port"] = Started(proc, url, home)
            yield started
        finally:
            for server in started.values():
                if server.proc.poll() is None:
                    server.proc.kill()
                server.proc.communicate()


def test_server_token_file_auth_and_clean_stop(servers: dict[str, Started]) -> None:
    server = servers["default"]
    data, url = server.data, server.url
    try:
        health = wait_role(server, "active")
        token_file = data / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert health == {"status": "ok", "role": "active", "proxy": None}
        assert httpx.get(f"{url}/v1/deployments").status_code == 401
        answer = httpx.get(f"{url}/v1/deployments", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json() == []
        assert "rollwise_routes" in httpx.get(f"{url}/metrics").text
    finally:
        code, out, err = stop(server.proc)
    assert code == 0, err
    assert f"API token in {data / 'token'}" in out and f"API on {url}" in out
    assert "Traceback" not in err and token not in out + err


def test_given_token_wins_and_no_file_is_written(servers: dict[str, Started]) -> None:
    server = servers["given"]
    try:
        wait_role(server, "active")
        ok = httpx.get(f"{server.url}/v1/deployments", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        wrong = httpx.get(f"{server.url}/v1/deployments", headers={"Authorization": "Bearer other"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    finally:
        code, out, err = stop(server.proc)
    assert code == 0, err
    assert not (server.data / "token").exists() and "API token in" not in out


def test_token_file_and_private_files(servers: dict[str, Started]) -> None:
    server = servers["token-file"]
    data, url = server.data, server.url
    try:
        wait_role(server, "active")
        ok = httpx.get(f"{url}/v1/deployments", headers={"Authorization": "Bearer from-a-file-token"})
        assert ok.status_code == 200
        assert httpx.post(f"{url}/v1/deployments", headers={"Authorization": "Bearer from-a-file-token"},
                          json={"name": "x", "replicas": 1, "revision": {"command": ["x"]}}).status_code == 201
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [data, *data.iterdir()] if p.is_file() or p == data}
        assert modes[data.name] == 0o700
        assert {name: mode for name, mode in modes.items() if name.startswith("rollwise.db")} == {
            "rollwise.db": 0o600, "rollwise.db-wal": 0o600, "rollwise.db-shm": 0o600, "rollwise.db.lock": 0o600}, modes
        assert not (data / "token").exists()
    finally:
        code, out, err = stop(server.proc)
    assert code == 0, err
    assert "from-a-file-token" not in out + err


def test_token_file_problems_are_one_line(servers: dict[str, Started]) -> None:
    for name, words in (("missing-token-file", "--token-file: cannot read"), ("two-tokens", "give one of them")):
        proc = servers[name].proc
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0 and words in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_busy_api_port_is_one_red_line(servers: dict[str, Started]) -> None:
    proc = servers["busy-port"].proc
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.startswith("error: --api-port: cannot listen on") and err.count("\n") == 1
