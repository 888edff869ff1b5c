"""What a route process is given: a scrubbed environment, its ports, placeholders; launch errors."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from rollwise.runtime import _launch
from rollwise.runtime.base import RuntimeFailure
from rollwise.runtime.local import LocalRuntime, RegistryEntry

from .support import PY, SLEEPER, spec, wait_ready, wait_ready_or_exit

# Writes its argv and environment to argv[1], listens on PORT and every PORT_<NAME>, then says "ready".
# A port that is not free makes bind() fail, the script exit, and the test fail.
REPORTER = textwrap.dedent(
    """
    import json, os, socket, sys, time
    out = sys.argv[1]
    sockets = []
    for name, value in sorted(os.environ.items()):
        if name == "PORT" or name.startswith("PORT_"):
            s = socket.socket()
            s.bind(("127.0.0.1", int(value)))
            s.listen()
            sockets.append(s)
    with open(out + ".tmp", "w") as f:
        json.dump({"argv": sys.argv[1:], "env": dict(os.environ), "listening": len(sockets)}, f)
    os.rename(out + ".tmp", out)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if entry)


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


# Environment -------------------------------------------------------------------------------------------


async def test_route_environment_holds_no_server_secrets(
    runtime: LocalRuntime, pids: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROLLWISE_TOKEN", "s3cret-token-value")
    monkeypatch.setenv("SERVER_ONLY_SETTING", "server-only-value")
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("LANG", "C.UTF-8")
    handle = await runtime.start(spec("r-1", SLEEPER, GREETING="hi"))
    pids.append(handle.pid or 0)
    raw = Path(f"/proc/{handle.pid}/environ").read_bytes()
    environ = environ_of(handle.pid or 0)
    assert b"s3cret-token-value" not in raw and b"server-only-value" not in raw
    assert "ROLLWISE_TOKEN" not in environ and "SERVER_ONLY_SETTING" not in environ
    inherited = {name for name in _launch.INHERITED_VARIABLES if name in os.environ}
    assert {"PATH", "TZ", "LANG"} <= inherited
    assert set(environ) == inherited | {"GREETING", "PORT", "ROLLWISE_ROUTE_ID", "ROLLWISE_DATA_DIR"}
    assert all(environ[name] == os.environ[name] for name in inherited)
    assert environ["GREETING"] == "hi" and environ["PORT"] == str(port_of(handle.address))
    assert environ["ROLLWISE_ROUTE_ID"] == "r-1" and environ["ROLLWISE_DATA_DIR"] == str(runtime.data_dir)


async def test_the_spec_cannot_override_ports_or_markers(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(
        spec(
            "r-1",
            SLEEPER,
            ports=("grpc",),
            PORT="1",
            PORT_GRPC="2",
            ROLLWISE_ROUTE_ID="spoofed",
            ROLLWISE_DATA_DIR="/elsewhere",
            TZ="UTC",
        )
    )
    pids.append(handle.pid or 0)
    environ = environ_of(handle.pid or 0)
    assert environ["PORT"] == str(port_of(handle.address))
    assert environ["PORT_GRPC"] == str(runtime.ports("r-1")["grpc"])
    assert (environ["ROLLWISE_ROUTE_ID"], environ["ROLLWISE_DATA_DIR"]) == ("r-1", str(runtime.data_dir))
    assert environ["TZ"] == "UTC"  # an inherited variable, though, is the revision's to set


async def test_programs_are_looked_up_on_the_routes_path(runtime: LocalRuntime, pids: list[int], tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "my-model-server"
    program.write_text(f"#!{PY}\nimport time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    program.chmod(0o755)
    handle = await runtime.start(spec("r-1", ("my-model-server",), PATH=str(bin_dir)))
    pids.append(handle.pid or 0)
    await wait_ready(runtime, "r-1")
    with pytest.raises(RuntimeFailure, match="command 'my-model-server' not found"):
        await runtime.start(spec("r-2", ("my-model-server",)))  # not on the inherited PATH


# Ports and placeholders --------------------------------------------------------------------------------


async def test_extra_ports_and_placeholders_in_argv_and_env(runtime: LocalRuntime, pids: list[int], tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    command = (PY, "-c", REPORTER, str(seen), "--http={port}", "--grpc={port.grpc}", "{port.metrics}", "{ports}")
    handle = await runtime.start(
        spec(
            "r-1",
            command,
            ports=("grpc", "metrics"),
            MLSERVER_HTTP_PORT="{port}",
            MLSERVER_GRPC_PORT="{port.grpc}",
            MLSERVER_METRICS_PORT="{port.metrics}",
            URL="http://127.0.0.1:{port}/metrics?at={port.metrics}&again={port.metrics}",
            NOT_PLACEHOLDERS="{ports} {port.Grpc} {port.} {PORT}",
        )
    )
    pids.append(handle.pid or 0)
    await wait_ready_or_exit(runtime, handle)
    report = json.loads(seen.read_text())
    main, grpc, metrics = port_of(handle.address), runtime.ports("r-1")["grpc"], runtime.ports("r-1")["metrics"]
    assert len({main, grpc, metrics}) == 3 and report["listening"] == 3
    assert report["argv"] == [str(seen), f"--http={main}", f"--grpc={grpc}", str(metrics), "{ports}"]
    env = report["env"]
    assert (env["PORT"], env["PORT_GRPC"], env["PORT_METRICS"]) == (str(main), str(grpc), str(metrics))
    assert (env["MLSERVER_HTTP_PORT"], env["MLSERVER_GRPC_PORT"], env["MLSERVER_METRICS_PORT"]) == (
        str(main),
        str(grpc),
        str(metrics),
    )
    assert env["URL"] == f"http://127.0.0.1:{main}/metrics?at={metrics}&again={metrics}"
    assert env["NOT_PLACEHOLDERS"] == "{ports} {port.Grpc} {port.} {PORT}"
    # The start line in the log shows the substituted command.
    assert f"--grpc={grpc}" in runtime.log_path("r-1").read_text()


async def test_every_port_of_every_route_is_distinct_and_free(runtime: LocalRuntime, pids: list[int], tmp_path: Path) -> None:
    handles = []
    for i in range(4):
        command = (PY, "-c", REPORTER, str(tmp_path / f"seen-{i}.json"))
        handles.append(await runtime.start(spec(f"r-{i}", command, ports=("grpc", "metrics"))))
        pids.append(handles[-1].pid or 0)
    for handle in handles:
        await wait_ready_or_exit(runtime, handle)  # it bound all three of its ports
    ports = [port_of(h.address) for h in handles] + [p for h in handles for p in runtime.ports(h.route_id).values()]
    assert len(ports) == 12 and len(set(ports)) == 12


async def test_undeclared_or_invalid_ports_are_launch_errors(runtime: LocalRuntime) -> None:
    with pytest.raises(RuntimeFailure, match=r"route r-1: \{port.grpc\} names no declared port \(declared: metrics\)"):
        await runtime.start(spec("r-1", (*SLEEPER, "--grpc={port.grpc}"), ports=("metrics",)))
    with pytest.raises(RuntimeFailure, match=r"route r-2: \{port.admin\} names no declared port \(declared: none\)"):
        await runtime.start(spec("r-2", SLEEPER, ADMIN="{port.admin}"))
    for bad in (("port",), ("grpc", "grpc"), ("Grpc",), ("9lives",), ("x" * 31,)):
        with pytest.raises(RuntimeFailure, match="route r-3: "):
            await runtime.start(spec("r-3", SLEEPER, ports=bad))
    assert not runtime.log_path("r-1").exists() and not runtime.registry_path("r-1").exists()


def test_substitution_is_one_pass() -> None:
    # A port number cannot form a new placeholder, and braces that are no placeholder stay.
    assert _launch.substitute("{{port}}-{port.a}", 80, {"a": 81}) == "{80}-81"
    assert _launch.port_variable("http_admin") == "PORT_HTTP_ADMIN"


# Registry ----------------------------------------------------------------------------------------------


async def test_registry_records_the_extra_ports(runtime: LocalRuntime, pids: list[int]) -> None:
    handle = await runtime.start(spec("r-1", SLEEPER, ports=("grpc", "metrics")))
    pids.append(handle.pid or 0)
    entry = RegistryEntry.from_json(runtime.registry_path("r-1").read_text())
    assert dict(entry.ports) == runtime.ports("r-1") and set(entry.ports) == {"grpc", "metrics"}
    assert entry.port == port_of(handle.address)


async def test_adoption_keeps_the_extra_ports(tmp_path: Path, pids: list[int]) -> None:
    first = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    handle = await first.start(spec("r-1", SLEEPER, ports=("grpc",)))
    pids.append(handle.pid or 0)
    ports = first.ports("r-1")
    second = LocalRuntime(tmp_path, grace_seconds=1, resources={})
    assert await second.adopt([handle]) == {"r-1"}
    assert second.ports("r-1") == ports
    await second.close()


def test_registry_round_trip_and_files_of_older_versions() -> None:
    entry = RegistryEntry(
        route_id="r-1",
        pid=42,
        pgid=42,
        identity="proc1:boot:7",
        port=8000,
        address="127.0.0.1:8000",
        deployment="demo",
        revision=2,
        command=("serve", "--port", "8000"),
        started_at="2024-01-01T00:00:00+00:00",
        ports={"grpc": 8001, "metrics": 8002},
    )
    assert RegistryEntry.from_json(entry.to_json()) == entry
    assert json.loads(entry.to_json())["ports"] == {"grpc": 8001, "metrics": 8002}
    old = {  # written before extra ports existed
        "route_id": "r-1",
        "pid": 42,
        "pgid": 42,
        "identity": "proc1:boot:7",
        "port": 8000,
        "address": "127.0.0.1:8000",
        "deployment": "demo",
        "revision": 2,
        "command": ["serve"],
        "started_at": "2024-01-01T00:00:00+00:00",
    }
    loaded = RegistryEntry.from_json(json.dumps(old))
    assert loaded.ports == {} and loaded.handle().address == "127.0.0.1:8000"
    with pytest.raises(ValueError):
        RegistryEntry.from_json(json.dumps({**old, "ports": ["grpc"]}))


# Launch errors -----------------------------------------------------------------------------------------


async def test_argument_list_too_long_is_a_one_line_runtime_failure(runtime: LocalRuntime) -> None:
    huge = "x" * 300_000  # over Linux's 128 KiB limit for one argument or variable
    for case in (spec("r-argv", (*SLEEPER, huge)), spec("r-env", SLEEPER, HUGE=huge)):
        with pytest.raises(RuntimeFailure) as info:
            await runtime.start(case)
        message = str(info.value)
        assert message.startswith(f"route {case.route_id}: cannot run ")
        assert "argument list too long (E2BIG" in message and "longest single value 300000 bytes" in message
        assert "\n" not in message and len(message) < 400
        assert not runtime.registry_path(case.route_id).exists()
    # The log says a start was attempted, without copying the huge argument into it.
    assert runtime.log_path("r-argv").stat().st_size < 4000
