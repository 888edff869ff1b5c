"""`gc_paused()`: no cyclic garbage collection during one synchronous bulk step.

A cycle over 10,000 deployments builds hundreds of thousands of small objects that stay alive until
it ends (rows, records, views, outcomes). CPython counts them as allocations and runs its collector
over and over, and every full collection walks every live object again: measured, about 0.3 s of a
1.8 s cycle went to five full collections that found nothing to free. Pausing the collector while a
step maps rows to records or evaluates every deployment lets the garbage of that step be collected
once, afterwards.

Use it only around synchronous code (no `await` inside): other tasks of the event loop never run
while it is paused, so nothing else is affected. Nesting is fine (the outermost restores).

Called by: store.repository (row mapping of the cycle reads) and control.cycles (evaluation).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
