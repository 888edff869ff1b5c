"""The server of the CLI tests (imported as `cli_server`), and what running the installed script needs.

`InProcessServer` is the assembly `rollwise server --no-proxy` makes (`build_plane` with the simulated
runtime by default, the coordinator loop and proxy supervisor, the REST app under uvicorn on a free port,
the token file in the data directory), run in a thread of the test process. It starts in a fraction of a
second, so one per module serves the command tests; simulated routes start in `startup` seconds, and
`wait(...)` looks at the deployment again after each coordinator round (no polling interval). The tests
of the `rollwise server` process itself are in test_server_cli.py.

`clean_env()` is the environment of a subprocess: without the test process's ROLLWISE_* variables.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import httpx

ROLLWISE = str(Path(sys.executable).with_name("rollwise"))
START_TIMEOUT = 60.0
"""Real seconds a server may take to start, at most (a bound, not a wait)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROLLWISE_")} | {
        "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float = START_TIMEOUT,
               poll: float = 0.02) -> None:
    """Return once `condition()` holds (checked every `poll` seconds; `timeout` bounds the wait)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(poll)


class InProcessServer:
    """`rollwise server --runtime RUNTIME --no-proxy` assembled in a thread of this process (see the module
    docstring). Use as a context manager; `url`, `data_dir` and `token` are what a client needs."""

    def __init__(self, data_dir: Path, *, runtime: str = "simulated", startup: float = 0.05,
                 round_every: float = 0.05) -> None:
        """`startup`: seconds a simulated route takes to listen; `round_every`: seconds between the
        coordinator's rounds when nothing is marked (a server's default is 0.2), so a route that
        listens is noticed within that time."""
        self.data_dir = data_dir
        self.runtime = runtime
        self.startup = startup
        self.round_every = round_every
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.token = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._rounds = 0
        self._round_done = threading.Condition()
        self._uvicorn: Any = None
        self._thread = threading.Thread(target=self._run, name="rollwise-server", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise AssertionError("the in-process server did not start")
        if self._error is not None:
            self.__exit__(None, None, None)
            raise AssertionError("the in-process server failed to start") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        self._thread.join(START_TIMEOUT)
        self._sock.close()
        assert not self._thread.is_alive(), "the in-process server did not stop"
        if self._error is not None and exc[0] is None:
            raise AssertionError("the in-process server failed") from self._error

    def args(self) -> list[str]:
        return ["--server", self.url, "--data-dir", str(self.data_dir)]

    def api(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def wait(self, name: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        """GET /v1/deployments/NAME until `until` holds, looking again after each coordinator round."""
        last: list[httpx.Response] = []

        def reached() -> bool:
            last[:] = [self.api(f"/v1/deployments/{name}")]
            return last[0].status_code == 200 and bool(until(last[0].json()))

        self.after_rounds(reached, what=lambda: f"{name}: last {last[0].text}", timeout=timeout)
        return dict(last[0].json())

    def wait_gone(self, name: str, timeout: float = 30.0) -> None:
        """Return once GET /v1/deployments/NAME answers 404, looking again after each coordinator round."""
        self.after_rounds(lambda: self.api(f"/v1/deployments/{name}").status_code == 404,
                          what=lambda: f"{name}: still there", timeout=timeout)

    def after_rounds(self, condition: Callable[[], bool], *, what: Callable[[], str], timeout: float) -> None:
        """Return once `condition()` holds; it is checked again each time the coordinator ran a round."""
        deadline = time.monotonic() + timeout
        while True:
            with self._round_done:
                seen = self._rounds
            if condition():
                return
            with self._round_done:
                left = deadline - time.monotonic()
                assert left > 0, f"not within {timeout:g}s: {what()}"
                self._round_done.wait_for(lambda: self._rounds > seen or self._error is not None, timeout=left)
            assert self._error is None, self._error

    # --- the server thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self._error = e
        finally:
            self._ready.set()
            with self._round_done:
                self._round_done.notify_all()

    def _one_round(self, _: object) -> None:
        with self._round_done:
            self._rounds += 1
            self._round_done.notify_all()

    async def _serve(self) -> None:
        import uvicorn

        from rollwise.api.app import create_app
        from rollwise.api.auth import load_or_create_token
        from rollwise.cli.serve import ServerConfig, build_plane, running
        from rollwise.control.coordinator import Intervals
        from rollwise.runtime.simulated import SimBehaviour, SimulatedRuntime

        self.token, path = load_or_create_token(self.data_dir, None)
        assert path is not None, "ROLLWISE_TOKEN is set: the CLI would not find the token in the data directory"
        config = ServerConfig(data_dir=self.data_dir, runtime=self.runtime, proxy=False,
                              api_port=int(self._sock.getsockname()[1]), intervals=Intervals(short=0.01, routes=self.round_every))
        async with build_plane(config) as plane:
            if isinstance(plane.runtime, SimulatedRuntime):
                for number in range(1, 20):
                    plane.runtime.set_behaviour(number, SimBehaviour(startup_seconds=self.startup))
            plane.coordinator.route_observers.append(self._one_round)
            app = create_app(plane.ops, token=self.token, role=lambda: plane.role, coordinator=plane.coordinator)
            self._uvicorn = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                                          timeout_graceful_shutdown=5))
            async with running(plane):
                serving = asyncio.create_task(self._uvicorn.serve(sockets=[self._sock]))
                self._ready.set()
                await serving
