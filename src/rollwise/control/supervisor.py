"""The proxy supervisor: notices a proxy exit within a quarter of a second and brings it back with the
current routing table.

The traffic layer knows whether its process lives (`running`) and how to restart it with the table it
last wrote (`ensure_running`); this loop asks every `interval` seconds of its clock, independently of the
coordinator's rounds (a long cycle must not delay a restart). After a restart it wakes the coordinator:
routes waiting for their removal to be confirmed by the proxy carry on against the new process. While
the proxy is down, `/healthz` says `degraded` (api.app reads `TrafficLayer.running`), and the metrics
count restarts (`rollwise_proxy_restarts_total`).

Called by `rollwise server` and the in-process plane (cli.serve) while the server is active. Must not:
stop the proxy, or raise out of `run` (a failed restart is logged once per minute and tried again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from rollwise.control.clock import Clock
from rollwise.control.errlog import ErrorLog
from rollwise.model.errors import RollwiseError
from rollwise.traffic.base import TrafficLayer

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.25


class ProxySupervisor:
    def __init__(
        self,
        traffic: TrafficLayer,
        *,
        clock: Clock,
        interval: float = CHECK_INTERVAL,
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self._traffic = traffic
        self._clock = clock
        self._interval = interval
        self._on_restart = on_restart
        self._errors = ErrorLog(log, clock=clock.monotonic)

    async def check_once(self) -> bool:
        """Restart the proxy if it is down; True when it did."""
        if self._traffic.running:
            return False
        try:
            restarted = await self._traffic.ensure_running()
        except RollwiseError as e:
            self._errors.report("the proxy is down and could not be restarted (trying again)", e)
            return False
        if restarted:
            self._on_restart()
        return restarted

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.check_once()
            await self._clock.wait(stop, self._interval)
