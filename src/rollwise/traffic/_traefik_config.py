"""Pure builders and readers of Traefik configuration for `rollwise.traffic.traefik.TraefikLayer`.

Called only by `traefik.py` (and its tests). Everything here is side-effect free: no files, no processes,
no HTTP, no clock. It turns a routing table into Traefik's static and dynamic configuration (plain dicts,
rendered as JSON, which Traefik's YAML file provider reads), and reads back what Traefik reports
(`/api/rawdata`, `/metrics`).

Dynamic configuration for a deployment NAME with backends A (weight 0.9) and B (0.1):

    routers:      NAME          rule PathPrefix(`/d/NAME/`) || Path(`/d/NAME`), entrypoint web,
                                middlewares [NAME:strip, NAME:retry], service NAME
    middlewares:  NAME:strip    stripPrefix /d/NAME        (/d/NAME/version -> /version)
                  NAME:retry    retry, 3 attempts, 10ms initial interval, status 502 (idempotent only)
    services:     NAME          weighted [NAME:A weight 900, NAME:B weight 100]
                  NAME:A        loadBalancer, one server http://A
                  NAME:B        loadBalancer, one server http://B

Names use ":" as the separator because deployment names may not contain it, so `NAME:` prefixes
identify a deployment's objects without ambiguity. A deployment with no backend (or only weight-0
backends) keeps its router and gets an empty weighted service: Traefik answers 503 at once.

There are no Traefik health checks: rollwise's own prober (each revision's interval, timeout and
thresholds) is the one authority that takes a backend out of the table. The retry middleware retries a
request that never reached a backend (any method) and, for idempotent methods, one answered 502 (a
connection that failed after the request was written); see docs/traffic.md.

The static configuration sets the idle timeout of Traefik's connections to backends
(`serversTransport.forwardingTimeouts.idleConnTimeout`) below the backends' keep-alive, so Traefik closes
an idle connection before a backend does and never sends a request into one the backend is closing.

Every dynamic file carries one unused middleware, `rollwise:config`, whose header value is a digest of
the rest of the file. Traefik lists it in `/api/rawdata`, so the digest Traefik reports says exactly which
file it has loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rollwise.model import ValidationFailed, check_deployment_name
from rollwise.traffic.base import Backend

ENTRYPOINT_WEB = "web"
ENTRYPOINT_API = "traefik"  # the entrypoint name `api.insecure: true` exposes the API on
MARKER_MIDDLEWARE = "rollwise:config"
MARKER_HEADER = "X-Rollwise-Config"
WEIGHT_SCALE = 1000
"""The weights of one deployment's backends are scaled to integers summing to about this."""
RETRY_ATTEMPTS = 3
RETRY_INITIAL_INTERVAL = "10ms"
RETRY_STATUS = ("502",)
"""Retried for idempotent methods only (Traefik never retries POST, PATCH or LOCK on a status): a 502 is
Traefik's answer when a connection broke after the request was written, e.g. a backend that crashed."""
DIAL_TIMEOUT = "30s"  # Traefik's default, written out so the static file says every forwarding timeout

_REQUESTS_METRIC = "traefik_service_requests"  # the parser drops the `_total` suffix of counters


def validate_deployment_name(name: str) -> None:
    """Raise ValidationFailed unless `name` passes the model's deployment-name rule (a DNS label: fit for
    a URL path and, having no ":", for a Traefik object name)."""
    check_deployment_name(name, field="deployment name")


def compute_weights(backends: Sequence[Backend]) -> list[int]:
    """Integer weights for Traefik, in the order of `backends`, proportional to their float weights.

    Each positive weight w becomes max(1, round(w / total * WEIGHT_SCALE)); zero stays zero. A positive
    weight never rounds to 0, so a backend the caller wants served is always served.
    Example: [0.9, 0.1] -> [900, 100]; [1, 1, 1] -> [333, 333, 333]; [0.0001, 1] -> [1, 1000]; [0] -> [0].
    """
    for b in backends:
        if not math.isfinite(b.weight) or b.weight < 0:
            raise ValidationFailed(f"backend {b.address}: weight {b.weight!r} is not a finite number >= 0")
    total = sum(b.weight for b in backends)
    if total <= 0:
        return [0 for _ in backends]
    return [0 if b.weight == 0 else max(1, round(b.weight / total * WEIGHT_SCALE)) for b in backends]


def merge_duplicates(backends: Sequence[Backend]) -> list[Backend]:
    """One backend per address (weights of repeated addresses are added), in first-seen order."""
    merged: dict[str, Backend] = {}
    for b in backends:
        seen = merged.get(b.address)
        merged[b.address] = b if seen is None else replace(seen, weight=seen.weight + b.weight)
    return list(merged.values())


def child_service_name(deployment: str, address: str) -> str:
    return f"{deployment}:{address}"


def server_url(address: str) -> str:
    return f"http://{address}"


def compute_dynamic_config(services: Mapping[str, Sequence[Backend]]) -> dict[str, Any]:
    """The whole dynamic configuration (without the marker) for a routing table. Deterministic:
    deployments sorted by name, backends in the caller's order (duplicates merged)."""
    routers: dict[str, Any] = {}
    middlewares: dict[str, Any] = {}
    svcs: dict[str, Any] = {}
    for name in sorted(services):
        validate_deployment_name(name)
        backends = merge_duplicates(services[name])
        weights = compute_weights(backends)
        prefix = f"/d/{name}"
        routers[name] = {
            "entryPoints": [ENTRYPOINT_WEB],
            "rule": f"PathPrefix(`{prefix}/`) || Path(`{prefix}`)",
            "middlewares": [f"{name}:strip", f"{name}:retry"],
            "service": name,
        }
        middlewares[f"{name}:strip"] = {"stripPrefix": {"prefixes": [prefix]}}
        middlewares[f"{name}:retry"] = {
            "retry": {
                "attempts": RETRY_ATTEMPTS,
                "initialInterval": RETRY_INITIAL_INTERVAL,
                "status": list(RETRY_STATUS),
            }
        }
        svcs[name] = {
            "weighted": {
                "services": [
                    {"name": child_service_name(name, b.address), "weight": w}
                    for b, w in zip(backends, weights, strict=True)
                ]
            }
        }
        for b in backends:
            svcs[child_service_name(name, b.address)] = {
                "loadBalancer": {"servers": [{"url": server_url(b.address)}]}
            }
    # Traefik rejects the whole file when a section is an empty map ("routers cannot be a standalone
    # element"), so an empty table has no sections at all.
    sections = {"routers": routers, "middlewares": middlewares, "services": svcs}
    return {"http": {k: v for k, v in sections.items() if v}}


def render_dynamic_config(config: Mapping[str, Any]) -> tuple[str, str]:
    """(file text, digest): the config plus the marker middleware carrying the digest of the config.
    The text is compact JSON with one object per line, which keeps diffs of the file readable."""
    body = json.dumps(config, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    http = dict(config.get("http", {}))
    http["middlewares"] = {
        **http.get("middlewares", {}),
        MARKER_MIDDLEWARE: {"headers": {"customRequestHeaders": {MARKER_HEADER: digest}}},
    }
    lines = []
    for section in sorted(http):
        items = [
            f"  {json.dumps(name)}: {json.dumps(obj, sort_keys=True)}"
            for name, obj in sorted(http[section].items())
        ]
        lines.append(f" {json.dumps(section)}: {{\n" + ",\n".join(items) + "\n }")
    return '{"http": {\n' + ",\n".join(lines) + "\n}}\n", digest


def compute_static_config(
    *,
    proxy_address: str,
    api_address: str,
    dynamic_file: str,
    throttle: str,
    idle_timeout: str,
    access_log: str | None,
) -> dict[str, Any]:
    """Traefik's static configuration. Logs go to stdout, which the layer redirects to its log file.
    `idle_timeout` closes Traefik's idle connections to backends (the default serversTransport, used by
    every service of the dynamic configuration)."""
    lifecycle = {"lifeCycle": {"graceTimeOut": "4s", "requestAcceptGraceTimeout": "0s"}}
    config: dict[str, Any] = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            ENTRYPOINT_WEB: {"address": proxy_address, "transport": lifecycle},
            ENTRYPOINT_API: {"address": api_address, "transport": lifecycle},
        },
        "serversTransport": {
            "forwardingTimeouts": {"dialTimeout": DIAL_TIMEOUT, "idleConnTimeout": idle_timeout}
        },
        "api": {"insecure": True, "dashboard": False},
        "ping": {"entryPoint": ENTRYPOINT_API},
        "metrics": {
            "prometheus": {
                "entryPoint": ENTRYPOINT_API,
                "addServicesLabels": True,
                "addEntryPointsLabels": False,
                "addRoutersLabels": False,
            }
        },
        "providers": {
            "providersThrottleDuration": throttle,
            "file": {"filename": dynamic_file, "watch": True},
        },
        "log": {"level": "INFO", "noColor": True},
    }
    if access_log is not None:
        config["accessLog"] = {"filePath": access_log}
    return config


def format_duration(seconds: float) -> str:
    """A Traefik duration in whole milliseconds: 1.0 -> "1000ms"."""
    return f"{round(seconds * 1000)}ms"


def api_port_of(static: Mapping[str, Any]) -> int | None:
    """The API port a static configuration (as `compute_static_config` writes it) names, or None."""
    try:
        address = static["entryPoints"][ENTRYPOINT_API]["address"]
        return int(str(address).rpartition(":")[2])
    except (KeyError, TypeError, ValueError):
        return None


def static_differences(running: Any, wanted: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where the static configuration a Traefik runs differs from the one wanted
    (for the log line that explains why a running Traefik is not adopted)."""
    if not isinstance(running, Mapping):
        return [prefix or "(whole file)"]
    paths = []
    for key in sorted(set(running) | set(wanted)):
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = running.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            paths += static_differences(a, b, path)
        elif a != b:
            paths.append(path)
    return paths


@dataclass(frozen=True, slots=True)
class RawData:
    """What Traefik reports in `/api/rawdata`, reduced to what the layer needs."""

    digest: str | None
    """The digest of the rollwise file Traefik has loaded; None when no rollwise file is loaded."""
    servers: Mapping[str, frozenset[str]]
    """Deployment name -> server URLs of all its services, as Traefik reports them."""
    errors: Mapping[str, tuple[str, ...]]
    """Object name (router, middleware or service, without @file) -> Traefik's error messages."""


def parse_rawdata(raw: Mapping[str, Any]) -> RawData:
    """Read `/api/rawdata`. Raises ValueError (or KeyError/TypeError) when the shape is unexpected."""
    digest: str | None = None
    errors: dict[str, tuple[str, ...]] = {}
    servers: dict[str, set[str]] = {}
    for kind in ("routers", "middlewares", "services"):
        for full_name, obj in (raw.get(kind) or {}).items():
            name, _, provider = full_name.rpartition("@")
            if provider != "file":
                continue
            if obj.get("error"):
                errors[name] = tuple(str(e) for e in obj["error"])
            if kind == "middlewares" and name == MARKER_MIDDLEWARE:
                digest = obj["headers"]["customRequestHeaders"][MARKER_HEADER]
            if kind == "services":
                deployment = name.partition(":")[0]
                urls = servers.setdefault(deployment, set())
                for server in (obj.get("loadBalancer") or {}).get("servers") or ():
                    urls.add(server["url"])
                urls.update((obj.get("serverStatus") or {}).keys())
    return RawData(
        digest=digest,
        servers={k: frozenset(v) for k, v in servers.items()},
        errors=errors,
    )


def parse_request_counts(metrics_text: str) -> dict[str, dict[int, int]]:
    """Deployment name -> HTTP status -> requests, from Traefik's Prometheus text (child services'
    `traefik_service_requests_total`, summed over backends, methods and protocols)."""
    counts: dict[str, dict[int, int]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != _REQUESTS_METRIC:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            service, _, provider = sample.labels.get("service", "").rpartition("@")
            if provider != "file":
                continue
            deployment = service.partition(":")[0]
            code = int(sample.labels.get("code", "0"))
            per_code = counts.setdefault(deployment, {})
            per_code[code] = per_code.get(code, 0) + int(sample.value)
    return counts
