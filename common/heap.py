"""The garbage collector tuned for a service whose garbage is acyclic: what start-up built is
never scanned again, and a young collection waits for many more allocations than the default."""

from __future__ import annotations

import gc


def freeze_startup_heap(young_threshold: int) -> None:
    """Collect once, move every object alive now to the permanent generation (``gc.freeze``),
    and start a young collection only after ``young_threshold`` more allocations than
    deallocations of container objects (the older thresholds keep their values)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
