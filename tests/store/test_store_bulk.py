"""`gc_paused`: the collector is off inside, restored afterwards (also when nested or on error)."""

from __future__ import annotations

import gc

import pytest

from rollwise.store.bulk import gc_paused


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outermost pause restores
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
