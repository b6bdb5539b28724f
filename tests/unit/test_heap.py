from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from common.heap import freeze_startup_heap

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_freezes_what_is_alive_and_raises_only_the_young_threshold() -> None:
    _, middle, old = gc.get_threshold()
    alive = {"a": [1]}

    freeze_startup_heap(12_345)

    assert gc.get_threshold() == (12_345, middle, old)
    assert gc.get_freeze_count() > 0
    assert not any(obj is alive for obj in gc.get_objects())  # frozen: no collection scans it
