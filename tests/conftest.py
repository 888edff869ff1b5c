"""Suite-wide safety net: no test leaves a process behind, even when it fails.

Every process rollwise starts for a data directory carries it: route processes and Traefik have
`ROLLWISE_DATA_DIR=<dir>` in their environment, `rollwise server` has `--data-dir <dir>` on its command
line. After each test that used `tmp_path`, the processes whose marker or command line points into that
directory are stopped (SIGTERM, then SIGKILL); at the end of the session, the same for the whole pytest
base directory (module-scoped fixtures). Tests still stop what they start; this only catches a test
that failed before its own clean-up ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep import stop_processes_under

# The CLI's tables are as wide as COLUMNS says when it is set, else unwrapped off a terminal
# (cli/describe.py). pytest-xdist's workers inherit a COLUMNS of the controlling terminal's width: drop it,
# so the suite reads the same output serially and in parallel.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def _stop_what_the_test_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    tmp = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if isinstance(tmp, Path):
        stop_processes_under(tmp)


@pytest.fixture(scope="session", autouse=True)
def _stop_what_the_session_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    stop_processes_under(tmp_path_factory.getbasetemp())
