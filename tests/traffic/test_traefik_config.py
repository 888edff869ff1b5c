"""Table tests of the pure Traefik configuration builders and readers (`_traefik_config`); no process."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from rollwise.model.errors import ValidationFailed
from rollwise.traffic import _traefik_config as cfg
from rollwise.traffic import _traefik_plugin as plugin
from rollwise.traffic.base import Backend, RevisionStats


def backends(*weights: float) -> list[Backend]:
    return [Backend(f"127.0.0.1:{9000 + i}", w) for i, w in enumerate(weights)]


def rev(port: int, weight: float, revision: int) -> Backend:
    return Backend(f"127.0.0.1:{port}", weight, revision)


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
        pytest.param((0.9, 0.1), [9, 1], id="ratio-90-10"),
        pytest.param((90, 10), [9, 1], id="any-scale"),
        pytest.param((30, 30, 30, 10), [3, 3, 3, 1], id="percent-per-route"),
        pytest.param((1, 1, 1), [1, 1, 1], id="thirds"),
        pytest.param((1 / 3, 2 / 3), [1, 2], id="float-thirds"),
        pytest.param((90 / 7, 10), [9, 7], id="ninety-over-seven"),
        pytest.param((0.1 + 0.2, 0.7), [3, 7], id="float-noise"),
        pytest.param((0.9, 0.1, 0.0), [9, 1, 0], id="zero-stays-zero"),
        pytest.param((0.0001, 1.0), [1, 10000], id="tiny-positive"),
        pytest.param((1e-9, 1.0), [1, 10000], id="tinier-positive-never-zero"),
        pytest.param((0.0, 0.0), [0, 0], id="all-zero"),
        pytest.param((), [], id="none"),
    ],
)
def test_integer_weights_are_the_exact_ratio(weights: tuple[float, ...], expected: list[int]) -> None:
    assert cfg.integer_weights(weights) == expected


def test_integer_weights_beyond_the_limit_are_rounded_at_its_scale() -> None:
    # 1/9973 and 1/9967 are exact fractions, but their common denominator is about 10^8.
    assert cfg.integer_weights((1.0, 1 / 9973, 1 / 9967)) == [1_000_000, 100, 100]


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf")])
def test_integer_weights_refuse_bad_weights(weight: float) -> None:
    with pytest.raises(ValidationFailed, match="weight"):
        cfg.integer_weights((1.0, weight))
    with pytest.raises(ValidationFailed, match="weight"):
        build({"demo": backends(weight)})


@pytest.mark.parametrize("revision", [-1, True, 1.5])
def test_bad_revisions_are_refused(revision: Any) -> None:
    with pytest.raises(ValidationFailed, match="revision"):
        build({"demo": [Backend("127.0.0.1:9000", 1.0, revision)]})


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
    """Per deployment: a weighted service of per-revision loadBalancers, the deployment's router, one
    router per revision for the revision header, and the 404 router for any other header value."""
    http = build({"demo": [rev(9000, 45, 1), rev(9001, 45, 1), rev(9002, 10, 2)]})["http"]
    rule = "PathPrefix(`/d/demo/`) || Path(`/d/demo`)"
    assert http["routers"] == {
        "demo": {
            "entryPoints": ["web"],
            "rule": rule,
            "priority": 10,
            "middlewares": ["demo:strip", "demo:retry"],
            "service": "demo",
        },
        "demo:r1": {
            "entryPoints": ["web"],
            "rule": f"({rule}) && Header(`X-Rollwise-Revision`, `r1`)",
            "priority": 30,
            "middlewares": ["demo:strip", "demo:retry"],
            "service": "demo:r1",
        },
        "demo:r2": {
            "entryPoints": ["web"],
            "rule": f"({rule}) && Header(`X-Rollwise-Revision`, `r2`)",
            "priority": 30,
            "middlewares": ["demo:strip", "demo:retry"],
            "service": "demo:r2",
        },
        "demo:revision": {
            "entryPoints": ["web"],
            "rule": f"({rule}) && HeaderRegexp(`X-Rollwise-Revision`, `.+`)",
            "priority": 20,
            "middlewares": ["demo:revision"],
            "service": "noop@internal",
        },
    }
    assert http["middlewares"]["demo:strip"] == {"stripPrefix": {"prefixes": ["/d/demo"]}}
    assert http["middlewares"]["demo:retry"]["retry"]["attempts"] == 3
    assert http["middlewares"]["demo:revision"] == {
        "plugin": {
            plugin.PLUGIN_NAME: {"deployment": "demo", "header": "X-Rollwise-Revision", "revisions": ["r1", "r2"]}
        }
    }
    assert http["services"] == {
        "demo": {"weighted": {"services": [{"name": "demo:r1", "weight": 9}, {"name": "demo:r2", "weight": 1}]}},
        "demo:r1": {
            "loadBalancer": {
                "servers": [
                    {"url": "http://127.0.0.1:9000", "weight": 1},
                    {"url": "http://127.0.0.1:9001", "weight": 1},
                ]
            }
        },
        "demo:r2": {"loadBalancer": {"servers": [{"url": "http://127.0.0.1:9002", "weight": 1}]}},
    }


def revision_split(http: dict[str, Any], name: str = "demo") -> dict[str, int]:
    return {c["name"]: c["weight"] for c in http["services"][name]["weighted"]["services"]}


@pytest.mark.parametrize(
    ("table", "split"),
    [
        # The control layer's canary: each route of a revision weighs the revision's percent / its count.
        pytest.param([(30, 1), (30, 1), (30, 1), (10, 2)], {"demo:r1": 9, "demo:r2": 1}, id="canary-10"),
        pytest.param([(90 / 7, 1)] * 7 + [(10, 2)], {"demo:r1": 9, "demo:r2": 1}, id="seven-stable"),
        pytest.param([(25, 1), (25, 1), (50, 2)], {"demo:r1": 1, "demo:r2": 1}, id="canary-50"),
        # Every route weight 1.0 (traffic_ratio): revisions split in proportion to their route count.
        pytest.param([(1, 1), (1, 1), (1, 2)], {"demo:r1": 2, "demo:r2": 1}, id="route-count"),
        pytest.param([(1, 3), (1, 1), (1, 2)], {"demo:r1": 1, "demo:r2": 1, "demo:r3": 1}, id="sorted-revisions"),
        pytest.param([(0, 1), (0, 1), (1, 2)], {"demo:r1": 0, "demo:r2": 1}, id="zero-revision"),
        pytest.param([(1.0, 0)], {"demo:r0": 1}, id="revision-unset"),
    ],
)
def test_revisions_split_in_the_exact_ratio_of_their_summed_weights(
    table: list[tuple[float, int]], split: dict[str, int]
) -> None:
    http = build({"demo": [rev(9000 + i, w, r) for i, (w, r) in enumerate(table)]})["http"]
    assert revision_split(http) == split
    assert set(http["routers"]) == {"demo", "demo:revision"} | set(split)


def test_backends_of_one_revision_split_by_their_weights() -> None:
    http = build({"demo": [rev(9000, 0.3, 1), rev(9001, 0.1, 1), rev(9002, 0.6, 2)]})["http"]
    assert revision_split(http) == {"demo:r1": 2, "demo:r2": 3}
    assert [s["weight"] for s in http["services"]["demo:r1"]["loadBalancer"]["servers"]] == [3, 1]


def test_a_revision_without_share_is_still_served_to_pinned_requests() -> None:
    """Weight 0 for every backend of a revision: no share of the split, but the revision header reaches
    its backends (evenly)."""
    http = build({"demo": [rev(9000, 1, 1), rev(9001, 0, 2), rev(9002, 0, 2)]})["http"]
    assert revision_split(http) == {"demo:r1": 1, "demo:r2": 0}
    assert [s["weight"] for s in http["services"]["demo:r2"]["loadBalancer"]["servers"]] == [1, 1]
    assert http["routers"]["demo:r2"]["service"] == "demo:r2"


def test_deployment_without_backends_has_the_404_router_and_an_empty_split() -> None:
    http = build({"idle": []})["http"]
    assert http["services"] == {"idle": {"weighted": {"services": []}}}
    assert set(http["routers"]) == {"idle", "idle:revision"}
    assert http["middlewares"]["idle:revision"]["plugin"][plugin.PLUGIN_NAME]["revisions"] == []


def test_object_names_never_collide_across_revisions_and_deployments() -> None:
    http = build({"a": [rev(9000, 1, 1), rev(9001, 1, 12)], "a-1": [rev(9002, 1, 1)]})["http"]
    assert set(http["services"]) == {"a", "a:r1", "a:r12", "a-1", "a-1:r1"}
    assert set(http["routers"]) == {"a", "a:r1", "a:r12", "a:revision", "a-1", "a-1:r1", "a-1:revision"}


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
    servers = build({"demo": dup})["http"]["services"]["demo:r0"]["loadBalancer"]["servers"]
    assert servers == [
        {"url": "http://127.0.0.1:9000", "weight": 3},
        {"url": "http://127.0.0.1:9001", "weight": 1},
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
            'traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:r1@file"} 5',
            'traefik_service_requests_total{code="200",method="POST",protocol="http",service="demo:r2@file"} 2',
            'traefik_service_requests_total{code="502",method="GET",protocol="http",service="demo:r2@file"} 1',
            'traefik_service_requests_total{code="200",method="GET",protocol="http",service="api@internal"} 9',
            "",
        ]
    )
    assert cfg.parse_request_counts(text) == {"demo": {200: 7, 502: 1}}


METRICS = """\
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1.7e+09
# TYPE traefik_service_requests_total counter
traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:r1@file"} 90
traefik_service_requests_total{code="200",method="POST",protocol="http",service="demo:r1@file"} 8
traefik_service_requests_total{code="500",method="POST",protocol="http",service="demo:r1@file"} 2
traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:r12@file"} 7
traefik_service_requests_total{code="502",method="GET",protocol="http",service="demo:r12@file"} 3
traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo@file"} 1000
traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:r1@docker"} 1000
traefik_service_requests_total{code="200",method="GET",protocol="http",service="api@internal"} 9
traefik_service_requests_total{code="200",method="GET",protocol="http",service="demo:127.0.0.1:1@file"} 1000
# TYPE traefik_service_request_duration_seconds histogram
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="demo:r1@file",le="0.1"} 80
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="demo:r1@file",le="1"} 90
traefik_service_request_duration_seconds_bucket{code="200",method="GET",protocol="http",service="demo:r1@file",le="+Inf"} 90
traefik_service_request_duration_seconds_sum{code="200",method="GET",protocol="http",service="demo:r1@file"} 9.5
traefik_service_request_duration_seconds_count{code="200",method="GET",protocol="http",service="demo:r1@file"} 90
traefik_service_request_duration_seconds_bucket{code="500",method="POST",protocol="http",service="demo:r1@file",le="0.1"} 0
traefik_service_request_duration_seconds_bucket{code="500",method="POST",protocol="http",service="demo:r1@file",le="1"} 10
traefik_service_request_duration_seconds_bucket{code="500",method="POST",protocol="http",service="demo:r1@file",le="+Inf"} 10
traefik_service_request_duration_seconds_sum{code="500",method="POST",protocol="http",service="demo:r1@file"} 5
traefik_service_request_duration_seconds_count{code="500",method="POST",protocol="http",service="demo:r1@file"} 10
"""


def test_parse_revision_stats() -> None:
    stats = cfg.parse_revision_stats(METRICS, expected=[("demo", 1), ("other", 3)])
    assert set(stats) == {("demo", 1), ("demo", 12), ("other", 3)}
    r1 = stats["demo", 1]
    assert (r1.requests, r1.errors, r1.by_code, r1.started) == (100, 2, {200: 98, 500: 2}, 1.7e9)
    assert r1.buckets == ((0.1, 80), (1.0, 100), (math.inf, 100))
    r12 = stats["demo", 12]
    assert (r12.requests, r12.errors, r12.by_code) == (10, 3, {200: 7, 502: 3})
    # Counted but no histogram sample in the text: the histogram is empty, with the configured bounds.
    assert [b for b, _ in r12.buckets] == [*cfg.DURATION_BUCKETS, math.inf]
    assert {n for _, n in r12.buckets} == {0}
    assert stats["other", 3] == RevisionStats(
        started=1.7e9, buckets=tuple((b, 0) for b in (*cfg.DURATION_BUCKETS, math.inf))
    )
    assert cfg.parse_revision_stats("") == {}


def test_revision_keys_of_a_table() -> None:
    table = {"a": [rev(1, 1, 1), rev(2, 1, 1), rev(3, 1, 2)], "b": [], "c": [rev(4, 0, 7)]}
    assert cfg.revision_keys(table) == {("a", 1), ("a", 2), ("c", 7)}


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


def test_static_config_has_latency_buckets_and_the_revision_plugin() -> None:
    prometheus = static()["metrics"]["prometheus"]
    assert prometheus["addServicesLabels"] is True
    buckets = prometheus["buckets"]
    assert buckets == sorted(buckets) and buckets[0] == 0.005 and buckets[-1] == 30 and 12 <= len(buckets) <= 16
    assert static()["experimental"] == {
        "localPlugins": {plugin.PLUGIN_NAME: {"moduleName": "rollwise.local/revisionnotfound"}}
    }


def test_plugin_files_and_name_follow_the_source() -> None:
    files = plugin.files()
    assert set(files) == {
        "plugins-local/src/rollwise.local/revisionnotfound/revisionnotfound.go",
        "plugins-local/src/rollwise.local/revisionnotfound/go.mod",
        "plugins-local/src/rollwise.local/revisionnotfound/.traefik.yml",
    }
    assert "revision.not_found" in files["plugins-local/src/rollwise.local/revisionnotfound/revisionnotfound.go"]
    assert plugin.PLUGIN_NAME.startswith("rollwise-revision-") and len(plugin.PLUGIN_NAME) == 26


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
