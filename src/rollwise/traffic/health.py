"""Health probing of routes over real HTTP and TCP: the `Prober` used with the local runtime.

The route controller (rollwise.control) calls `probe` for each running route on its revision's health
check interval, and `listening` (or the module-level `tcp_open`) to learn that a just-started process
has begun accepting connections. Both answer with a bool and never raise for network trouble: a refused
connection, a timeout, a reset, a 5xx or a malformed address all mean "not healthy / not listening".
`check` gives the same verdict with the reason, for history messages.

One `httpx.AsyncClient` is shared by all probes, with a bounded pool and short keep-alive, so probing
hundreds of routes every second neither opens a connection per probe nor piles up idle sockets. It
ignores proxy environment variables (a probe of 127.0.0.1 must never go through HTTP_PROXY) and does
not follow redirects (a 3xx is not healthy). Call `aclose()` when done.

This module must not import the runtime, the store or the control layer, and must not decide what a
failed probe means: thresholds and consequences are the controller's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

import httpx

USER_AGENT = "rollwise-prober"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one health probe: `ok` on a 2xx, else why not (status or error)."""

    ok: bool
    status: int | None = None
    """The HTTP status when the route answered; None when it did not."""
    error: str = ""
    """Empty when ok; otherwise a short reason, e.g. "HTTP 503" or "connection refused"."""


class HttpProber:
    """`Prober` over HTTP: True when `GET http://{address}{path}` answers 2xx within the timeout."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport` replaces the network (e.g. `httpx.MockTransport`) for tests of callers."""
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=min(20, max_connections),
                keepalive_expiry=keepalive_expiry,
            ),
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    async def check(self, address: str, path: str, *, timeout: float) -> ProbeResult:
        """Probe once and say why it failed; the whole probe (pool wait included) fits in `timeout`."""
        url = f"http://{address}{path if path.startswith('/') else '/' + path}"
        try:
            async with asyncio.timeout(timeout):
                response = await self._client.get(url, timeout=timeout)
        except (TimeoutError, httpx.TimeoutException):
            return ProbeResult(False, error=f"no answer within {timeout:g}s")
        except httpx.ConnectError as e:
            return ProbeResult(False, error=_connect_reason(e))
        except httpx.HTTPError as e:
            return ProbeResult(False, error=f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        except (httpx.InvalidURL, ValueError) as e:
            return ProbeResult(False, error=f"bad address {address!r}: {e}")
        except OSError as e:  # httpx translates these, this is a last line of defence
            return ProbeResult(False, error=e.strerror or type(e).__name__)
        if 200 <= response.status_code < 300:
            return ProbeResult(True, status=response.status_code)
        return ProbeResult(False, status=response.status_code, error=f"HTTP {response.status_code}")

    async def probe(self, address: str, path: str, *, timeout: float) -> bool:
        return (await self.check(address, path, timeout=timeout)).ok

    async def listening(self, address: str, *, timeout: float) -> bool:
        return await tcp_open(address, timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> HttpProber:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


async def tcp_open(address: str, timeout: float) -> bool:
    """True when a TCP connection to `address` ("host:port" or "[v6]:port") succeeds within `timeout`.

    The connection is closed at once without sending anything.
    """
    host, _, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port_text.isdigit():
        return False
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port_text))
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # closed by the peer first: it was listening all the same
    return True


def _connect_reason(error: httpx.ConnectError) -> str:
    # httpx wraps httpcore wraps anyio's "All connection attempts failed" wraps the socket's own error.
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return f"cannot connect: {cause.strerror}"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect: {error}" if str(error) else "cannot connect"
