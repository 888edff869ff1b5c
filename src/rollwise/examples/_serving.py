"""What the example model server's two HTTP front ends share: the model and the answers it gives.

`model_server` (the program and its threaded stdlib front end) and `model_server_asgi` (the ASGI app run
by uvicorn, `--http uvicorn`) both import this module; they differ only in how they speak HTTP. Keeping
the model, the health rules (--unhealthy-after, --slow-health, draining) and the request parsing here
keeps the two modes answering alike. It lives apart from `model_server` because that module runs as
`__main__`: were the ASGI module to import it, the process would hold two copies of every class.

Pure logic plus a lock: no sockets, no sleeping (each front end waits in its own way: a thread sleeps, a
coroutine awaits). It must not import anything from rollwise beyond this package, nor uvicorn.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from http import HTTPStatus
from importlib import resources
from typing import Any

WEIGHTS_RESOURCE = "sentiment_weights.json"
MAX_BODY_BYTES = 64 * 1024
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
RESOURCES_ENV = "ROLLWISE_RESOURCES"

_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercased words (letters, with an inner apostrophe kept: "didn't"). Training uses this too."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, slots=True)
class SentimentModel:
    """Logistic regression over binary word features: p(positive) = sigmoid(bias + sum of weights)."""

    bias: float
    weights: Mapping[str, float]

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> SentimentModel:
        bias = document["bias"]
        weights = document["weights"]
        if not isinstance(bias, int | float) or not isinstance(weights, dict):
            raise ValueError("weights document needs a numeric 'bias' and a 'weights' object")
        if not all(isinstance(k, str) and isinstance(v, int | float) for k, v in weights.items()):
            raise ValueError("'weights' must map words to numbers")
        return cls(bias=float(bias), weights={k: float(v) for k, v in weights.items()})

    @classmethod
    def load_packaged(cls) -> SentimentModel:
        text = resources.files(__package__ or "rollwise.examples").joinpath(WEIGHTS_RESOURCE).read_text()
        return cls.from_document(json.loads(text))

    def probability_positive(self, text: str) -> float:
        z = self.bias + sum(self.weights.get(word, 0.0) for word in set(tokenize(text)))
        # Two branches keep exp() from overflowing for large |z|.
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    def predict(self, text: str) -> tuple[str, float]:
        """(label, probability of that label); a tie (no known word, zero bias) counts as positive."""
        p = self.probability_positive(text)
        return ("positive", p) if p >= 0.5 else ("negative", 1.0 - p)


class HttpError(Exception):
    """A request answered with `status` and {"error": message}; `close` ends the connection after."""

    def __init__(self, status: HTTPStatus, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close


def parse_predict_body(body: bytes) -> str:
    """The "text" of a /predict body; HttpError(400) for anything else."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HttpError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
    if not isinstance(document, dict):
        raise HttpError(HTTPStatus.BAD_REQUEST, 'body must be a JSON object like {"text": "..."}')
    text = document.get("text")
    if not isinstance(text, str):
        raise HttpError(HTTPStatus.BAD_REQUEST, '"text" must be a string')
    return text


def devices_from(environ: Mapping[str, str]) -> tuple[str | None, Any]:
    """What the route was given, as /version reports it: CUDA_VISIBLE_DEVICES as received and
    ROLLWISE_RESOURCES parsed (e.g. {"gpu": [0]}); None for a variable that is not set. ValueError when
    ROLLWISE_RESOURCES is not JSON (rollwise always sets JSON: anything else is a misconfiguration)."""
    raw = environ.get(RESOURCES_ENV)
    resources: Any = None
    if raw is not None:
        try:
            resources = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"{RESOURCES_ENV} is not JSON ({e.msg}): {raw[:80]!r}") from None
    return environ.get(DEVICES_ENV), resources


class ErrorSchedule:
    """Which predictions fail on purpose (`--error-rate F`): deterministic and evenly spread.

    The n-th prediction (counting from 1) fails when floor(n x F) > floor((n - 1) x F), so exactly
    floor(n x F) of the first n fail, whatever n: 0.2 fails the 5th, 10th, 15th...; 0.3 the 4th, 7th,
    10th, 14th...; 0 none; 1 every one. F is taken as the exact decimal it was written as (Fraction), so
    no rounding makes 0.3 fail one request too few or too many. Thread-safe (one lock, like ServingState).
    """

    def __init__(self, rate: float | str | Fraction = 0) -> None:
        fraction = Fraction(str(rate)) if isinstance(rate, float) else Fraction(rate)
        if not 0 <= fraction <= 1:
            raise ValueError(f"error rate {rate} is not between 0 and 1")
        self.rate = fraction
        self._lock = threading.Lock()
        self._count = 0

    def next_fails(self) -> bool:
        """Count one prediction; True when this one is to fail."""
        if self.rate == 0:
            return False
        with self._lock:
            self._count += 1
            n = self._count
        return math.floor(n * self.rate) > math.floor((n - 1) * self.rate)


class ServingState:
    """The model, its version, the misbehaviour settings, the drain flag and the in-flight count.

    Created when the server starts listening (--unhealthy-after counts from then). Thread-safe: the
    stdlib front end calls it from one thread per connection, uvicorn from its event loop. Never call
    it from a signal handler: the handler could interrupt the main thread while it holds the lock.
    """

    def __init__(
        self,
        *,
        model: SentimentModel,
        version: str,
        unhealthy_after: float | None = None,
        latency: float = 0.0,
        slow_health: float = 0.0,
        slow_health_every: int = 1,
        cuda_visible_devices: str | None = None,
        resources: Any = None,
        error_rate: float | str | Fraction = 0,
    ) -> None:
        if slow_health_every < 1:
            raise ValueError("slow_health_every must be at least 1")
        self.model = model
        self.version = version
        self.latency = latency
        self.slow_health = slow_health
        self.slow_health_every = slow_health_every
        self.cuda_visible_devices = cuda_visible_devices
        self.resources = resources
        self.errors = ErrorSchedule(error_rate)
        self.draining = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._in_flight_at_drain: int | None = None
        self._health_requests = 0
        self.unhealthy_at = None if unhealthy_after is None else time.monotonic() + unhealthy_after

    # Requests in flight -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @contextmanager
    def request_in_flight(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def begin_drain(self) -> int:
        """Mark the server draining (answers now say `Connection: close`); the requests in flight then.

        Idempotent: later calls return the count of the first, which is what the stop line reports.
        """
        with self._lock:
            if self._in_flight_at_drain is None:
                self._in_flight_at_drain = self._in_flight
            count = self._in_flight_at_drain
        self.draining.set()
        return count

    # Answers ------------------------------------------------------------------------------------------

    def is_healthy(self) -> bool:
        if self.draining.is_set():
            return False
        return self.unhealthy_at is None or time.monotonic() < self.unhealthy_at

    def health_delay(self) -> float:
        """Seconds to hold this /healthz answer: --slow-health on the N-th, 2N-th, ... request.

        Counting the N-th (not the 1st) lets a route pass its first probes quickly and become ready,
        then time out now and then, like MLServer's health endpoint on a saturated machine. With
        N = 1 every answer is slow. Call once per /healthz request, before answering.
        """
        with self._lock:
            self._health_requests += 1
            count = self._health_requests
        if self.slow_health > 0 and count % self.slow_health_every == 0:
            return self.slow_health
        return 0.0

    def health(self) -> tuple[HTTPStatus, dict[str, str]]:
        """The /healthz answer as of now (after any slow-health wait, so it says the current state)."""
        if self.is_healthy():
            return HTTPStatus.OK, {"status": "ok"}
        status = "draining" if self.draining.is_set() else "unhealthy"
        return HTTPStatus.SERVICE_UNAVAILABLE, {"status": status}

    def version_info(self) -> dict[str, Any]:
        """The /version answer: the version, and the devices the process was given (`devices_from`)."""
        return {"version": self.version, "cuda_visible_devices": self.cuda_visible_devices,
                "resources": self.resources}

    def predict(self, text: str) -> tuple[HTTPStatus, dict[str, Any]]:
        """The /predict answer, status and body (the front end adds --latency: it knows how to wait).

        With --error-rate, the predictions `ErrorSchedule` picks are answered 500
        {"error": "injected failure (--error-rate F)", "version": v}: the body still names the version,
        so a client can tell which revision failed. /healthz is not affected (only an analysis of the
        answers can tell this server is bad)."""
        if self.errors.next_fails():
            return HTTPStatus.INTERNAL_SERVER_ERROR, {
                "error": f"injected failure (--error-rate {float(self.errors.rate):g})", "version": self.version}
        label, score = self.model.predict(text)
        return HTTPStatus.OK, {"label": label, "score": round(score, 6), "version": self.version}
