"""Table tests of the pure Traefik configuration builders and readers (`_traefik_config`); no process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rollwise.model.errors import ValidationFailed
from rollwise.traffic import _traefik_config as cfg
from rollwise.traffic.base import Backend


def backends(*weights: float) -> list[Backend]:
    return [Backend(f"127.0.0.1:{9000 + i}", w) for i, w in enumerate(weights)]


def build(services: dict[str, list[Backend]]) -> dict[str, Any]:
    return cfg.compute_dynamic_config(services)


def static(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "proxy_address": "127.0.0.1:8080",
        "api_address": "127.0.0.1:8081",
        "dynamic_file": "/data/traefik/dynamic.yml",
        "throttle": "50ms",
        "idle_timeout": "1000ms",
        "access_log": None,
    }
    return cfg.compute_static_config(**{**args, **overrides})


def keys_anywhere(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj).union(*(keys_anywhere(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(keys_anywhere(v) for v in obj))
    return set()


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        pytest.param((0.9, 0.1), [900, 100], id="ratio-90-10"),
        pytest.param((90, 10), [900, 100], id="any-scale"),
        pytest.param((1, 1, 1), [333, 333, 333], id="thirds"),
        pytest.param((0.9, 0.1, 0.0), [900, 100, 0], id="zero-stays-zero"),
        pytest.param((0.0001, 1.0), [1, 1000], id="tiny-positive-never-zero"),
        pytest.param((0.0, 0.0), [0, 0], id="all-zero"),
        pytest.param((), [], id="none"),
    ],
)
def test_compute_weights(weights: tuple[float, ...], expected: list[int]) -> None:
    assert cfg.compute_weights(backends(*weights)) == expected


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_compute_weights_refuses_bad_weights(weight: float) -> None:
    with pytest.raises(ValidationFailed, match="weight"):
        cfg.compute_weights(backends(weight))


@pytest.mark.parametrize("name", ["demo", "llama-3-1-8b", "a", "0", "x" * 63])
def test_valid_deployment_names(name: str) -> None:
    cfg.validate_deployment_name(name)


# The traffic layer routes what the model's deployment-name rule accepts (a DNS label), nothing wider.
@pytest.mark.parametrize("name", ["", "-x", "x-", "a b", "a:b", "a/b", "a`b", "a@file", "A", "a.b", "a_b",
                                  "demo\n", "x" * 64])
def test_invalid_deployment_names(name: str) -> None:
    with pytest.raises(ValidationFailed, match="deployment name"):
        cfg.validate_deployment_name(name)


def test_dynamic_config_shape() -> None:
    http = build({"demo": backends(0.9, 0.1)})["http"]
    assert http["routers"] == {
        "demo": {
            "entryPoints": ["web"],
            "rule": "PathPrefix(`/d/demo/`) || Path(`/d/demo`)",
            "middlewares": ["demo:strip", "demo:retry"],
            "service": "demo",
        }
    }
    assert http["middlewares"]["demo:strip"] == {"stripPrefix": {"prefixes": ["/d/demo"]}}
    assert http["middlewares"]["demo:retry"]["retry"]["attempts"] == 3
    assert http["services"]["demo"] == {
        "weighted": {
            "services": [
                {"name": "demo:127.0.0.1:9000", "weight": 900},
                {"name": "demo:127.0.0.1:9001", "weight": 100},
            ]
        }
    }
    assert http["services"]["demo:127.0.0.1:9000"] == {
        "loadBalancer": {"servers": [{"url": "http://127.0.0.1:9000"}]}
    }


@pytest.mark.parametrize(
    "services",
    [
        pytest.param({}, id="empty"),
        pytest.param({"demo": backends(0.9, 0.1), "idle": [], "zero": backends(0)}, id="mixed"),
        pytest.param({f"d{i}": backends(1, 2, 3) for i in range(20)}, id="many"),
    ],
)
def test_no_health_check_in_any_generated_config(services: dict[str, list[Backend]]) -> None:
    """rollwise's prober is the only authority on a route's health: Traefik must never drop a backend
    on its own (its one-strike 1 s check emptied busy deployments, 503 "no available server")."""
    text, _ = cfg.render_dynamic_config(build(services))
    assert "healthcheck" not in text.lower()
    assert not {k.lower() for k in keys_anywhere(json.loads(text))} & {"healthcheck"}
    assert "healthcheck" not in json.dumps(static()).lower()


def test_retry_covers_network_errors_and_502_of_idempotent_requests() -> None:
    retry = build({"demo": backends(1)})["http"]["middlewares"]["demo:retry"]["retry"]
    assert retry == {"attempts": 3, "initialInterval": "10ms", "status": ["502"]}
    # Never retried on a status for POST (Traefik's rule), and never told to: a model call may not be
    # idempotent.
    assert "retryNonIdempotentMethod" not in retry


def test_duplicate_addresses_are_merged() -> None:
    dup = [Backend("127.0.0.1:9000", 0.5), Backend("127.0.0.1:9001", 0.25), Backend("127.0.0.1:9000", 0.25)]
    weighted = build({"demo": dup})["http"]["services"]["demo"]["weighted"]["services"]
    assert weighted == [
        {"name": "demo:127.0.0.1:9000", "weight": 750},
        {"name": "demo:127.0.0.1:9001", "weight": 250},
    ]


def test_empty_table_has_no_empty_sections() -> None:
    text, digest = cfg.render_dynamic_config(build({}))
    http = json.loads(text)["http"]
    assert set(http) == {"middlewares"}
    assert http["middlewares"][cfg.MARKER_MIDDLEWARE]["headers"]["customRequestHeaders"] == {
        cfg.MARKER_HEADER: digest
    }


def test_render_is_deterministic_and_digest_follows_content() -> None:
    one = cfg.render_dynamic_config(build({"b": backends(1), "a": backends(1, 2)}))
    same = cfg.render_dynamic_config(build({"a": backends(1, 2), "b": backends(1)}))
    other = cfg.render_dynamic_config(build({"a": backends(1, 3), "b": backends(1)}))
    assert one == same
    assert other[1] != one[1]


def test_parse_rawdata_reads_digest_servers_and_errors() -> None:
    text, digest = cfg.render_dynamic_config(build({"demo": backends(1, 1), "empty": []}))
    http = json.loads(text)["http"]
    raw: dict[str, Any] = {
        "routers": {f"{k}@file": v for k, v in http["routers"].items()},
        "middlewares": {f"{k}@file": v for k, v in http["middlewares"].items()},
        "services": {f"{k}@file": v for k, v in http["services"].items()},
    }
    raw["services"]["api@internal"] = {"status": "enabled"}
    raw["routers"]["empty@file"]["error"] = ["boom"]
    data = cfg.parse_rawdata(raw)
    assert data.digest == digest
    assert data.servers["demo"] == {"http://127.0.0.1:9000", "http://127.0.0.1:9001"}
    assert data.servers["empty"] == frozenset()
    assert "api" not in data.servers
    assert data.errors == {"empty": ("boom",)}


def test_parse_rawdata_without_rollwise_file() -> None:
    data = cfg.parse_rawdata({"routers": {"api@internal": {}}, "services": {"api@internal": {}}})
    assert data.digest is None and data.servers == {} and data.errors == {}


def test_parse_request_counts() -> None:
    text = "\n".join(
        [
            "# HELP traefik_service_requests_total How many HTTP requests processed on a service.",
            "# TYPE traefik_service_requests_total counter",
            'traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:127.0.0.1:1@file"} 5',
            'traefik_service_requests_total{code="200",method="POST",protocol="http",service="demo:127.0.0.1:2@file"} 2',
            'traefik_service_requests_total{code="502",method="GET",protocol="http",service="demo:127.0.0.1:2@file"} 1',
            'traefik_service_requests_total{code="200",method="GET",protocol="http",service="api@internal"} 9',
            "",
        ]
    )
    assert cfg.parse_request_counts(text) == {"demo": {200: 7, 502: 1}}


def test_static_config_shape() -> None:
    config = static()
    assert config["entryPoints"]["web"]["address"] == "127.0.0.1:8080"
    assert config["entryPoints"]["traefik"]["address"] == "127.0.0.1:8081"
    assert config["providers"] == {
        "providersThrottleDuration": "50ms",
        "file": {"filename": "/data/traefik/dynamic.yml", "watch": True},
    }
    assert config["api"] == {"insecure": True, "dashboard": False}
    assert config["metrics"]["prometheus"]["entryPoint"] == "traefik"
    assert config["serversTransport"] == {
        "forwardingTimeouts": {"dialTimeout": "30s", "idleConnTimeout": "1000ms"}
    }
    assert "accessLog" not in config


@pytest.mark.parametrize(
    ("seconds", "text"), [(1.0, "1000ms"), (0.5, "500ms"), (1.9, "1900ms"), (90, "90000ms")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert cfg.format_duration(seconds) == text


def test_api_port_read_back_from_a_static_config() -> None:
    assert cfg.api_port_of(static(api_address="127.0.0.1:4321")) == 4321
    assert cfg.api_port_of(static(api_address="[::1]:4322")) == 4322
    assert cfg.api_port_of({}) is None
    assert cfg.api_port_of({"entryPoints": {"traefik": {"address": "nonsense"}}}) is None


def test_static_differences_name_what_differs() -> None:
    assert cfg.static_differences(static(), static()) == []
    running = static(proxy_address="127.0.0.1:9999", idle_timeout="90000ms")
    assert cfg.static_differences(running, static()) == [
        "entryPoints.web.address",
        "serversTransport.forwardingTimeouts.idleConnTimeout",
    ]
    older = {k: v for k, v in static().items() if k != "serversTransport"}  # an older rollwise's file
    assert cfg.static_differences(older, static()) == ["serversTransport"]
    assert cfg.static_differences([1], static()) == ["(whole file)"]
