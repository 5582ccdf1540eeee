"""pipeline.heap: settling the collector, counting its pauses."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Iterator

import pytest

from pipeline.heap import PAUSE_BUCKETS, SERVER_THRESHOLDS, GcPauses, settle


@pytest.fixture
def collector() -> Iterator[None]:
    """Restore the collector's thresholds and unfreeze what a test froze."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_freezes_what_is_alive_and_raises_the_thresholds(collector: None) -> None:
    kept = [[i] for i in range(1000)]  # tracked containers alive at start-up
    settle()
    assert gc.get_threshold() == SERVER_THRESHOLDS
    assert gc.get_freeze_count() >= len(kept)
    assert not any(obj is kept for obj in gc.get_objects())  # frozen: out of the collector's walk
    settle((5000, 10, 10))
    assert gc.get_threshold() == (5000, 10, 10)


def test_pauses_are_counted_by_generation_while_attached() -> None:
    pauses = GcPauses()
    pauses.attach()
    pauses.attach()  # idempotent: counted once
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.detach()
    gc.collect(1)  # detached: not counted
    assert [c[-1][1] for c in map(pauses.cumulative, range(3))] == [1, 0, 1]
    assert pauses.total_s[0] > 0 and pauses.total_s[1] == 0 and pauses.total_s[2] > 0
    cum = pauses.cumulative(2)
    assert [b for b, _ in cum] == [*PAUSE_BUCKETS, float("inf")]
    assert all(a <= b for (_, a), (_, b) in itertools.pairwise(cum))


def test_a_pause_lands_in_its_bucket() -> None:
    pauses = GcPauses(buckets=(0.001, 0.01))
    times = iter([1.0, 1.005, 2.0, 2.0, 3.0, 3.5])
    pauses._clock = lambda: next(times)
    for gen in (1, 1, 2):
        pauses._callback("start", {"generation": gen})
        pauses._callback("stop", {"generation": gen, "collected": 0})
    assert pauses.cumulative(1) == [(0.001, 1), (0.01, 2), (float("inf"), 2)]
    assert pauses.cumulative(2) == [(0.001, 0), (0.01, 0), (float("inf"), 1)]
    assert pauses.total_s[1] == pytest.approx(0.005) and pauses.total_s[2] == 0.5
