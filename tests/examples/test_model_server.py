"""The example model server as a real process, in both HTTP modes (stdlib and uvicorn): predictions,
endpoints, keep-alive, misbehaviour, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sentiment_training
from model_server_process import (
    HTTP_MODES,
    Server,
    catches_sigterm,
    is_listening,
    raw_request,
    read_responses,
    wait_until,
)

from rollwise.examples.model_server import SentimentModel, tokenize

WEIGHTS = Path(__file__).resolve().parents[2] / "src/rollwise/examples/sentiment_weights.json"


@pytest.fixture(scope="module", params=HTTP_MODES)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """One server per mode shared by the module's read-only tests."""
    s = Server("--version", "v7", "--http", request.param)
    try:
        s.wait_listening()
        yield s
    finally:
        s.kill()


# The model ---------------------------------------------------------------------------------------------


def test_shipped_weights_are_reproducible_from_the_training_script() -> None:
    shipped = json.loads(WEIGHTS.read_text())
    retrained = sentiment_training.train()
    assert shipped["bias"] == pytest.approx(retrained["bias"], abs=1e-4)
    retrained_weights = retrained["weights"]
    assert isinstance(retrained_weights, dict)
    assert shipped["weights"].keys() == retrained_weights.keys()
    for word, weight in shipped["weights"].items():
        assert weight == pytest.approx(retrained_weights[word], abs=1e-4), word


def test_model_fits_its_training_corpus_and_tokenizes_like_training() -> None:
    model = SentimentModel.load_packaged()
    assert len(model.weights) >= 100
    for text in sentiment_training.POSITIVE:
        assert model.predict(text)[0] == "positive", text
    for text in sentiment_training.NEGATIVE:
        assert model.predict(text)[0] == "negative", text
    assert tokenize("It DIDN'T work, sadly!") == ["it", "didn't", "work", "sadly"]


def test_scores_are_probabilities_of_the_label() -> None:
    model = SentimentModel.load_packaged()
    for text in ("great great great", "awful", "", "zzz qqq"):
        label, score = model.predict(text)
        assert 0.5 <= score <= 1.0
        p = model.probability_positive(text)
        assert score == pytest.approx(p if label == "positive" else 1 - p)


# Endpoints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this, excellent and fast", "positive"),
        ("Great support and a wonderful, reliable product", "positive"),
        ("Terrible and slow, I hate it", "negative"),
        ("The update broke everything, what a waste of money", "negative"),
    ],
)
def test_predict(server: Server, text: str, label: str) -> None:
    response = httpx.post(f"{server.url}/predict", json={"text": text})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == label
    assert body["version"] == "v7"
    assert 0.5 <= body["score"] <= 1.0
    assert response.headers["content-type"] == "application/json"


def test_version_and_healthz(server: Server) -> None:
    assert httpx.get(f"{server.url}/version").json() == {"version": "v7", "cuda_visible_devices": None,
                                                         "resources": None}
    health = httpx.get(f"{server.url}/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"txt": "hi"}', b'{"text": 3}', b"\xff\xfe", b""],
    ids=["not-json", "not-object", "no-text", "text-not-string", "not-utf8", "empty"],
)
def test_bad_bodies_get_400_and_the_connection_survives(server: Server, body: bytes) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400
        assert "error" in response.json()
        assert client.post("/predict", json={"text": "great"}).status_code == 200


def test_unknown_path_and_wrong_method(server: Server) -> None:
    missing = httpx.get(f"{server.url}/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = httpx.get(f"{server.url}/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_oversized_body_gets_413(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", json={"text": "x" * 70_000})
    assert response.status_code == 413


def test_keep_alive_and_pipelining_on_one_connection(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw_request("/version"))
        (first,) = read_responses(sock, 1)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
        # Two requests in one write: the second sits in the server's read buffer, not in the socket.
        sock.sendall(raw_request("/healthz") + raw_request("/predict", b'{"text": "awful"}'))
        second, third = read_responses(sock, 2)
        assert b'"ok"' in second and b'"negative"' in third


def test_keep_alive_requests_do_not_stall(server: Server) -> None:
    # Headers and body leave in one write: no Nagle/delayed-ACK stall (~40 ms) per request.
    with httpx.Client(base_url=server.url) as client:
        client.get("/healthz")
        started = time.monotonic()
        for _ in range(20):
            assert client.post("/predict", json={"text": "good"}).status_code == 200
        assert time.monotonic() - started < 0.6


def test_chunked_request_body(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"text": "excellent '
        yield b'and wonderful"}'

    response = httpx.post(f"{server.url}/predict", content=chunks())
    assert response.status_code == 200 and response.json()["label"] == "positive"


async def test_requests_are_served_concurrently(start_server: Callable[..., Server]) -> None:
    server = start_server("--latency", "0.4")
    async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=30)) as client:
        started = time.monotonic()
        responses = await asyncio.gather(*(client.post("/predict", json={"text": "good"}) for _ in range(30)))
        elapsed = time.monotonic() - started
    assert all(r.status_code == 200 for r in responses)
    assert elapsed < 2.0  # 30 x 0.4 s one after the other would take 12 s


# Misbehaviour ------------------------------------------------------------------------------------------


def test_fail_start_exits_1_without_listening(start_server: Callable[..., Server]) -> None:
    server = start_server("--fail-start", wait=False)
    while server.process.poll() is None:
        assert not is_listening(server.port)
        time.sleep(0.02)
    code, err = server.stop()
    assert code == 1
    assert "fail" in err
    assert not is_listening(server.port)


def test_unhealthy_after_turns_healthz_503_but_keeps_predicting(start_server: Callable[..., Server]) -> None:
    started = time.monotonic()
    server = start_server("--unhealthy-after", "1")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 503, timeout=10, what="/healthz is 503")
    assert time.monotonic() - started >= 1.0  # not before the second since it started listening
    health = httpx.get(f"{server.url}/healthz")
    assert (health.status_code, health.json()) == (503, {"status": "unhealthy"})
    assert httpx.post(f"{server.url}/predict", json={"text": "great"}).status_code == 200


def test_startup_delay_postpones_listening(start_server: Callable[..., Server]) -> None:
    started = time.monotonic()
    server = start_server("--startup-delay", "0.6", wait=False)
    server.wait_listening()
    assert time.monotonic() - started >= 0.6


def test_port_in_use_exits_1(start_server: Callable[..., Server]) -> None:
    server = start_server()
    clash = start_server("--port", str(server.port), wait=False)  # the later --port wins
    assert clash.process.wait(timeout=10) == 1
    assert "cannot start" in clash.stop()[1]
    assert httpx.get(f"{server.url}/version").status_code == 200  # the first one is untouched


# Stopping ----------------------------------------------------------------------------------------------


def tcp_queues(local_port: int, remote_port: int) -> tuple[int, int]:
    """(bytes sent but not acknowledged, bytes received but not read) of the TCP socket from
    127.0.0.1:local_port to 127.0.0.1:remote_port (Linux: /proc/net/tcp); AssertionError if there is none."""
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
                tx, rx = queues.split(":")
                return int(tx, 16), int(rx, 16)
    raise AssertionError(f"no TCP socket from port {local_port} to port {remote_port}")


def test_sigterm_finishes_the_request_in_flight_then_exits_0(start_server: Callable[..., Server]) -> None:
    server = start_server("--latency", "2")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw_request("/predict", json.dumps({"text": "nice"}).encode()))
        here = sock.getsockname()[1]
        # The server has read the request once the kernel has it (nothing of ours unacknowledged) and
        # nothing of it waits unread in the server's socket; the answer then takes the 2 s of --latency.
        wait_until(lambda: tcp_queues(here, server.port)[0] == 0 and tcp_queues(server.port, here)[1] == 0,
                   timeout=10, what="the server has read the request")
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not is_listening(server.port), timeout=1.2, what="the listening socket is closed")
        readable, _, _ = select.select([sock], [], [], 0)
        assert not readable  # stopped accepting while the request is still in flight (no answer yet)
        answer = read_responses(sock, 1)[0]
    code, err = server.stop()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert lines[0].split()[1] == "200" and json.loads(body)["label"] == "positive"
    assert headers["connection"] == "close"
    assert code == 0
    assert "1 request(s) were in flight" in err


def test_sigterm_closes_idle_keep_alive_connections_at_once(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(raw_request("/healthz"))
        read_responses(sock, 1)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=5) == 0
        assert time.monotonic() - started < 1.5
        assert sock.recv(100) == b""  # the server closed the idle connection


def test_sigterm_during_startup_delay_exits_0(start_server: Callable[..., Server]) -> None:
    server = start_server("--startup-delay", "30", wait=False)
    wait_until(lambda: catches_sigterm(server.process.pid), timeout=10, what="the server handles SIGTERM")
    code, err = server.stop()
    assert code == 0 and "before listening" in err


def test_logs_one_line_per_start_and_stop_not_per_request(start_server: Callable[..., Server]) -> None:
    server = start_server("--version", "v2")
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            client.post("/predict", json={"text": "fine"})
        client.post("/predict", content=b"junk")
    code, err = server.stop()
    lines = err.strip().splitlines()
    assert code == 0
    assert len(lines) == 2, lines
    assert "listening" in lines[0] and "v2" in lines[0] and "stopped" in lines[1]
