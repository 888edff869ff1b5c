"""Pure builders and readers of Traefik configuration for `rollwise.traffic.traefik.TraefikLayer`.

Called only by `traefik.py` (and its tests). Everything here is side-effect free: no files, no processes,
no HTTP, no clock. It turns a routing table into Traefik's static and dynamic configuration (plain dicts,
rendered as JSON, which Traefik's YAML file provider reads), and reads back what Traefik reports
(`/api/rawdata`, `/metrics`).

Dynamic configuration for a deployment NAME with backends A (revision 1, weight 45), B (revision 1, 45)
and C (revision 2, 10):

    routers:      NAME          PathPrefix(`/d/NAME/`) || Path(`/d/NAME`), priority 10, entrypoint web,
                                middlewares [NAME:strip, NAME:retry], service NAME
                  NAME:r1       the same rule && Header(`X-Rollwise-Revision`, `r1`), priority 30,
                                middlewares [NAME:strip, NAME:retry], service NAME:r1   (one per revision)
                  NAME:revision the same rule && HeaderRegexp(`X-Rollwise-Revision`, `.+`), priority 20,
                                middlewares [NAME:revision], service noop@internal
    middlewares:  NAME:strip    stripPrefix /d/NAME        (/d/NAME/version -> /version)
                  NAME:retry    retry, 3 attempts, 10ms initial interval, status 502 (idempotent only)
                  NAME:revision the rollwise plugin (`_traefik_plugin`): 404 naming the revision asked for
    services:     NAME          weighted [NAME:r1 weight 9, NAME:r2 weight 1]   (exact revision ratio)
                  NAME:r1       loadBalancer [http://A weight 1, http://B weight 1]
                  NAME:r2       loadBalancer [http://C weight 1]

The weighted service splits between revisions exactly (Traefik's weighted round robin is deterministic:
90:10 gives 180/20 of 200 requests); each revision's loadBalancer splits between its backends by their
weights. Traefik's Prometheus metrics count requests on the loadBalancer services, so `NAME:rN` counts are
the revision's counts (`parse_revision_stats`).

Names use ":" as the separator because deployment names may not contain it, so `NAME:` prefixes
identify a deployment's objects without ambiguity. A deployment with no backend (or only weight-0
backends) keeps its router and gets an empty (or all-zero) weighted service: Traefik answers 503 at once.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from rollwise.model import ValidationFailed, check_deployment_name
from rollwise.traffic import _traefik_plugin as plugin
from rollwise.traffic.base import Backend, RevisionStats

ENTRYPOINT_WEB = "web"
ENTRYPOINT_API = "traefik"  # the entrypoint name `api.insecure: true` exposes the API on
MARKER_MIDDLEWARE = "rollwise:config"
MARKER_HEADER = "X-Rollwise-Config"
REVISION_HEADER = "X-Rollwise-Revision"
"""A request carrying `X-Rollwise-Revision: rN` goes only to revision N's backends (case-sensitive)."""
PRIORITY_DEPLOYMENT = 10
PRIORITY_UNKNOWN_REVISION = 20
PRIORITY_REVISION = 30
"""Explicit router priorities within one deployment (routers of different deployments never match the
same path): a pinned revision above the 404 for any other header value, above the weighted split."""
NOOP_SERVICE = "noop@internal"
"""Traefik's internal service that answers 418; the 404 router's plugin answers before it is reached."""
MAX_DENOMINATOR = 10_000
"""Weights are read as fractions of the deployment's largest weight with denominators up to this."""
MAX_WEIGHT = 1_000_000
"""Integer weights stay at or below this; beyond it they are rounded at this scale instead."""
RETRY_ATTEMPTS = 3
RETRY_INITIAL_INTERVAL = "10ms"
RETRY_STATUS = ("502",)
"""Retried for idempotent methods only (Traefik never retries POST, PATCH or LOCK on a status): a 502 is
Traefik's answer when a connection broke after the request was written, e.g. a backend that crashed."""
DIAL_TIMEOUT = "30s"  # Traefik's default, written out so the static file says every forwarding timeout
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0, 15.0, 30.0)
"""Upper bounds (seconds) of Traefik's request-duration histogram: fine enough for a p99 of a fast
backend and of a model call of tens of seconds (Traefik adds +Inf)."""

_REQUESTS_METRIC = "traefik_service_requests"  # the parser drops the `_total` suffix of counters
_DURATION_METRIC = "traefik_service_request_duration_seconds"
_START_METRIC = "process_start_time_seconds"
_REVISION_SERVICE = re.compile(r"^(?P<deployment>[^:@]+):r(?P<revision>[0-9]+)$")


def validate_deployment_name(name: str) -> None:
    """Raise ValidationFailed unless `name` passes the model's deployment-name rule (a DNS label: fit for
    a URL path and, having no ":", for a Traefik object name)."""
    check_deployment_name(name, field="deployment name")


def validate_backend(b: Backend) -> None:
    if not math.isfinite(b.weight) or b.weight < 0:
        raise ValidationFailed(f"backend {b.address}: weight {b.weight!r} is not a finite number >= 0")
    if isinstance(b.revision, bool) or not isinstance(b.revision, int) or b.revision < 0:
        raise ValidationFailed(f"backend {b.address}: revision {b.revision!r} is not an integer >= 0")


def weight_fractions(weights: Sequence[float]) -> list[Fraction]:
    """Each weight as an exact fraction of the largest one, with a denominator up to MAX_DENOMINATOR
    (so 0.9/0.1, 90/10 and 12.857142857142858 (= 90/7) are read exactly). Zero stays zero; a positive
    weight below 1/MAX_DENOMINATOR of the largest counts as 1/MAX_DENOMINATOR of it (never 0)."""
    for w in weights:
        if not math.isfinite(w) or w < 0:
            raise ValidationFailed(f"weight {w!r} is not a finite number >= 0")
    top = max(weights, default=0.0)
    if top <= 0:
        return [Fraction(0) for _ in weights]
    out = []
    for w in weights:
        f = Fraction(w / top).limit_denominator(MAX_DENOMINATOR) if w > 0 else Fraction(0)
        out.append(f if f > 0 or w == 0 else Fraction(1, MAX_DENOMINATOR))
    return out


def integer_ratio(values: Sequence[Fraction]) -> list[int]:
    """The smallest integers in exactly the ratio of `values` (>= 0): [9/10, 1/10] -> [9, 1],
    [1, 1, 1] -> [1, 1, 1], [0, 1] -> [0, 1], all zero -> all 0. When those integers would exceed
    MAX_WEIGHT they are rounded at that scale instead (a positive value never becomes 0)."""
    positive = [v for v in values if v > 0]
    if not positive:
        return [0 for _ in values]
    lcm = math.lcm(*(v.denominator for v in positive))
    ints = [int(v * lcm) for v in values]
    gcd = math.gcd(*ints)
    ints = [i // gcd for i in ints]
    if max(ints) <= MAX_WEIGHT:
        return ints
    top = max(positive)
    return [0 if v == 0 else max(1, round(v / top * MAX_WEIGHT)) for v in values]


def integer_weights(weights: Sequence[float]) -> list[int]:
    """Integer weights for Traefik in exactly the ratio of `weights` (see `weight_fractions` and
    `integer_ratio`): [0.9, 0.1] -> [9, 1]; [90, 10] -> [9, 1]; [1, 1, 1] -> [1, 1, 1]; [0.9, 0] -> [1, 0]."""
    return integer_ratio(weight_fractions(weights))


def merge_duplicates(backends: Sequence[Backend]) -> list[Backend]:
    """One backend per (address, revision) (weights of repeated ones are added), in first-seen order."""
    merged: dict[tuple[str, int], Backend] = {}
    for b in backends:
        key = (b.address, b.revision)
        seen = merged.get(key)
        merged[key] = b if seen is None else replace(seen, weight=seen.weight + b.weight)
    return list(merged.values())


def revision_service_name(deployment: str, revision: int) -> str:
    return f"{deployment}:r{revision}"


def revision_value(revision: int) -> str:
    """The `X-Rollwise-Revision` header value that pins revision `revision`: "r2"."""
    return f"r{revision}"


def server_url(address: str) -> str:
    return f"http://{address}"


def _deployment_objects(name: str, backends: Sequence[Backend]) -> dict[str, dict[str, Any]]:
    """The routers, middlewares and services of one deployment (backends validated and merged)."""
    by_revision: dict[int, list[tuple[Backend, Fraction]]] = {}
    for b, f in zip(backends, weight_fractions([b.weight for b in backends]), strict=True):
        by_revision.setdefault(b.revision, []).append((b, f))
    revisions = sorted(by_revision)
    shares = integer_ratio([sum((f for _, f in by_revision[r]), Fraction(0)) for r in revisions])
    prefix = f"/d/{name}"
    rule = f"PathPrefix(`{prefix}/`) || Path(`{prefix}`)"
    chain = [f"{name}:strip", f"{name}:retry"]
    routers: dict[str, Any] = {
        name: {
            "entryPoints": [ENTRYPOINT_WEB],
            "rule": rule,
            "priority": PRIORITY_DEPLOYMENT,
            "middlewares": chain,
            "service": name,
        },
        f"{name}:revision": {
            "entryPoints": [ENTRYPOINT_WEB],
            "rule": f"({rule}) && HeaderRegexp(`{REVISION_HEADER}`, `.+`)",
            "priority": PRIORITY_UNKNOWN_REVISION,
            "middlewares": [f"{name}:revision"],
            "service": NOOP_SERVICE,
        },
    }
    middlewares: dict[str, Any] = {
        f"{name}:strip": {"stripPrefix": {"prefixes": [prefix]}},
        f"{name}:retry": {
            "retry": {
                "attempts": RETRY_ATTEMPTS,
                "initialInterval": RETRY_INITIAL_INTERVAL,
                "status": list(RETRY_STATUS),
            }
        },
        f"{name}:revision": {
            "plugin": {
                plugin.PLUGIN_NAME: {
                    "deployment": name,
                    "header": REVISION_HEADER,
                    "revisions": [revision_value(r) for r in revisions],
                }
            }
        },
    }
    services: dict[str, Any] = {
        name: {
            "weighted": {
                "services": [
                    {"name": revision_service_name(name, r), "weight": w}
                    for r, w in zip(revisions, shares, strict=True)
                ]
            }
        }
    }
    for r in revisions:
        members = by_revision[r]
        server_weights = integer_ratio([f for _, f in members])
        if not any(server_weights):
            server_weights = [1 for _ in members]  # no share of the split, but pinned requests are served
        child = revision_service_name(name, r)
        services[child] = {
            "loadBalancer": {
                "servers": [
                    {"url": server_url(b.address), "weight": w}
                    for (b, _), w in zip(members, server_weights, strict=True)
                ]
            }
        }
        routers[child] = {
            "entryPoints": [ENTRYPOINT_WEB],
            "rule": f"({rule}) && Header(`{REVISION_HEADER}`, `{revision_value(r)}`)",
            "priority": PRIORITY_REVISION,
            "middlewares": chain,
            "service": child,
        }
    return {"routers": routers, "middlewares": middlewares, "services": services}


def compute_dynamic_config(services: Mapping[str, Sequence[Backend]]) -> dict[str, Any]:
    """The whole dynamic configuration (without the marker) for a routing table. Deterministic:
    deployments sorted by name, revisions by number, backends in the caller's order (duplicates
    merged). Raises ValidationFailed for a bad name, weight or revision."""
    sections: dict[str, dict[str, Any]] = {"routers": {}, "middlewares": {}, "services": {}}
    for name in sorted(services):
        validate_deployment_name(name)
        for b in services[name]:
            validate_backend(b)
        for section, objects in _deployment_objects(name, merge_duplicates(services[name])).items():
            sections[section].update(objects)
    # Traefik rejects the whole file when a section is an empty map ("routers cannot be a standalone
    # element"), so an empty table has no sections at all.
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
    every service of the dynamic configuration). Traefik must run in the directory holding the plugin's
    files (`_traefik_plugin.files()`)."""
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
                "buckets": list(DURATION_BUCKETS),
            }
        },
        # The 404 for a revision without backends (`_traefik_plugin`): read from
        # ./plugins-local/src/<module> of Traefik's working directory, the layer's directory.
        "experimental": {"localPlugins": {plugin.PLUGIN_NAME: {"moduleName": plugin.MODULE_NAME}}},
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


def parse_revision_stats(
    metrics_text: str, expected: Iterable[tuple[str, int]] = ()
) -> dict[tuple[str, int], RevisionStats]:
    """(deployment, revision) -> cumulative counters, from Traefik's Prometheus text: the revision
    services' (`NAME:rN@file`) `traefik_service_requests_total` and
    `traefik_service_request_duration_seconds` histogram, summed over methods, protocols and codes.
    `started` is Traefik's `process_start_time_seconds`. Every key of `expected` is present (zero counts
    and empty-bucket histogram when Traefik has not counted it yet). Raises ValueError for unreadable
    text."""
    started = 0.0
    by_code: dict[tuple[str, int], dict[int, int]] = {}
    buckets: dict[tuple[str, int], dict[float, int]] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == _START_METRIC:
            started = float(family.samples[0].value) if family.samples else 0.0
            continue
        if family.name not in (_REQUESTS_METRIC, _DURATION_METRIC):
            continue
        for sample in family.samples:
            key = _revision_key(sample.labels.get("service", ""))
            if key is None:
                continue
            if family.name == _REQUESTS_METRIC and sample.name.endswith("_total"):
                codes = by_code.setdefault(key, {})
                code = int(sample.labels.get("code", "0"))
                codes[code] = codes.get(code, 0) + int(sample.value)
            elif family.name == _DURATION_METRIC and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                per_bound = buckets.setdefault(key, {})
                per_bound[bound] = per_bound.get(bound, 0) + int(sample.value)
    empty = tuple((b, 0) for b in (*DURATION_BUCKETS, math.inf))
    stats: dict[tuple[str, int], RevisionStats] = {}
    for key in sorted({*expected, *by_code, *buckets}):
        codes = by_code.get(key, {})
        histogram = tuple(sorted(buckets[key].items())) if key in buckets else empty
        stats[key] = RevisionStats(
            requests=sum(codes.values()),
            errors=sum(n for code, n in codes.items() if 500 <= code <= 599),
            by_code=dict(sorted(codes.items())),
            buckets=histogram,
            started=started,
        )
    return stats


def _revision_key(service_label: str) -> tuple[str, int] | None:
    service, _, provider = service_label.rpartition("@")
    if provider != "file":
        return None
    match = _REVISION_SERVICE.match(service)
    if match is None:
        return None
    return match["deployment"], int(match["revision"])


def revision_keys(services: Mapping[str, Sequence[Backend]]) -> set[tuple[str, int]]:
    """The (deployment, revision) pairs a routing table has backends of."""
    return {(name, b.revision) for name, backends in services.items() for b in backends}
