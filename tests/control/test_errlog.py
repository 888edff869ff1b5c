"""A loop that fails every round alike logs one line per distinct error per minute, not a traceback per
round; a bug's first occurrence keeps its traceback."""

from __future__ import annotations

import logging

import pytest

from rollwise.control.errlog import ErrorLog
from rollwise.store.errors import StoreError


def test_one_line_per_distinct_error_per_period(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    errors = ErrorLog(logging.getLogger("t"), period=60.0, clock=lambda: now[0])
    full = StoreError("database unavailable: database or disk is full")
    with caplog.at_level(logging.ERROR, logger="t"):
        for second in range(0, 120):
            now[0] = float(second)
            errors.report("round failed", full)
        errors.report("round failed", StoreError("database unavailable: database is locked"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "round failed: store.unavailable: database unavailable: database or disk is full",
        "round failed: store.unavailable: database unavailable: database or disk is full"
        " (and 59 more times since the last report)",
        "round failed: store.unavailable: database unavailable: database is locked",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_bug_keeps_its_first_traceback(caplog: pytest.LogCaptureFixture) -> None:
    errors = ErrorLog(logging.getLogger("t"), clock=lambda: 0.0)
    with caplog.at_level(logging.ERROR, logger="t"):
        try:
            raise KeyError("x")
        except KeyError as e:
            assert errors.report("round failed", e)
            assert not errors.report("round failed", e)
    [record] = caplog.records
    assert record.exc_info is not None and "KeyError" in record.getMessage()
