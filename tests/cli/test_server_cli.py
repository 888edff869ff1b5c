"""`rollwise server` as a real subprocess (simulated runtime, no proxy, free ports, a tmp data dir): it
prints where its token is, the token file is private, /healthz answers without a token and /v1 only with
it, SIGTERM stops it cleanly (exit 0), `--token` replaces the file, and a busy port is one red line.
"""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
from cli_server import ROLLWISE, clean_env, free_port

START_TIMEOUT = 60.0


def start(data_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [ROLLWISE, "server", "--runtime", "simulated", "--no-proxy", "--api-port", str(port),
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if (h := httpx.get(f"{url}/healthz", timeout=1)).status_code == 200 and h.json().get("role") != "starting":
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"server did not start: {proc.communicate()}")


def wait_role(url: str, role: str) -> dict[str, object]:
    """/healthz once it reports `role` (a server answers "starting" while it adopts, then "active")."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        health: dict[str, object] = httpx.get(f"{url}/healthz", timeout=5).json()
        if health["role"] == role or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def stop(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_server_token_file_auth_and_clean_stop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, url = start(data)
    try:
        token_file = data / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        health = wait_role(url, "active")
        assert health == {"status": "ok", "role": "active", "proxy": None}
        assert httpx.get(f"{url}/v1/deployments").status_code == 401
        answer = httpx.get(f"{url}/v1/deployments", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.json() == []
        assert "rollwise_routes" in httpx.get(f"{url}/metrics").text
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert f"API token in {data / 'token'}" in out and f"API on {url}" in out
    assert "Traceback" not in err and token not in out + err


def test_given_token_wins_and_no_file_is_written(tmp_path: Path) -> None:
    proc, url = start(tmp_path, "--token", "s3cret-token")
    try:
        ok = httpx.get(f"{url}/v1/deployments", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        wrong = httpx.get(f"{url}/v1/deployments", headers={"Authorization": "Bearer other"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorized"
    finally:
        code, out, err = stop(proc)
    assert code == 0, err
    assert not (tmp_path / "token").exists() and "API token in" not in out


def test_token_file_and_private_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  from-a-file-token\n")
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # an existing, too open data directory is closed
    proc, url = start(data, "--token-file", str(secret))
    try:
        wait_role(url, "active")
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
        code, out, err = stop(proc)
    assert code == 0, err
    assert "from-a-file-token" not in out + err


def test_token_file_problems_are_one_line(tmp_path: Path) -> None:
    for args, words in ((["--token-file", str(tmp_path / "missing")], "--token-file: cannot read"),
                        (["--token", "a", "--token-file", str(tmp_path / "t")], "give one of them")):
        result = subprocess.run(
            [ROLLWISE, "server", "--runtime", "simulated", "--no-proxy", "--api-port", str(free_port()),
             "--data-dir", str(tmp_path / "data"), *args],
            capture_output=True, text=True, env=clean_env(), timeout=60,
        )
        assert result.returncode != 0 and words in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_busy_api_port_is_one_red_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [ROLLWISE, "server", "--runtime", "simulated", "--no-proxy", "--api-port", str(port),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, env=clean_env(), timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith("error: --api-port: cannot listen on") and result.stderr.count("\n") == 1
