"""The API port of `rollwise server` answers from its first moment (cli.early): /healthz says "starting",
everything else 503 `server.starting`; the hand-over keeps the listening socket, so a connection made in
between waits in the backlog instead of being refused."""

from __future__ import annotations

import socket

import httpx

from rollwise.cli.early import EarlyResponder
from cli_server import free_port


def test_starting_answers_then_hand_over_keeps_connections() -> None:
    port = free_port()
    early = EarlyResponder.listen("127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "role": "starting", "proxy": None}
        refused = httpx.post(f"{url}/v1/deployments", json={"name": "x"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "server.starting"
        sock = early.hand_over()
        client = socket.create_connection(("127.0.0.1", port), timeout=5)  # queued, not refused
        try:
            accepted, _ = sock.accept()
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert accepted.recv(100).startswith(b"GET /healthz")
            accepted.close()
        finally:
            client.close()
    finally:
        early.close()


def test_a_taken_port_is_an_os_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            EarlyResponder.listen("127.0.0.1", busy.getsockname()[1])
        except OSError as e:
            assert e.errno is not None
        else:
            raise AssertionError("a taken port was bound")


