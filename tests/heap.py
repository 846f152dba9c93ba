"""Measuring traced-call latency inside a long test session."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def heap_frozen() -> Iterator[None]:
    """Keep the test session's own objects out of the cyclic garbage collector while measuring.

    A full (generation 2) collection walks every tracked object of the process with the GIL held,
    on whichever thread happens to allocate. Measured (gc callbacks, perf): the one slow traced
    call in 200 with a locked store was such a collection, 0.15-0.25 s for this module's ~250 000
    objects on an idle machine, 0.3-0.7 s under load; 0.9-1.8 s for the full suite's ~740 000.
    Its length depends on the test session's heap, not on llmtrace; frozen, the collector still
    sees everything the measured calls allocate (llmtrace's queued spans included).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
