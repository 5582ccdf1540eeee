"""The garbage collector of a long-running server: settle the heap, watch the pauses.

CPython frees most objects by reference counting; its cyclic collector runs on top, in three
generations, whenever the tracked objects allocated minus those freed pass a threshold (700 by
default for the youngest generation, then every 10th run of the one below). A collection stops
the whole process, so in a server every call waits for it at once. A call server allocates
fast (frames, messages, futures: several per 20 ms call-frame), so with the defaults the young
generation is collected hundreds of times in a minute and everything of the process is walked
by a full collection every few seconds of load: tens of milliseconds each with a few hundred
calls up, heard as a late chunk by every caller.

:func:`settle` is called once, after start-up, by ``pipeline serve`` and ``pipeline emulator``:

- everything loaded until then (modules, classes, the checked pipeline) is *frozen*
  (``gc.freeze()``): it lives as long as the process, and a full collection no longer walks it;
- the thresholds are raised to :data:`SERVER_THRESHOLDS`: the young generation is collected once
  per 10,000 net allocations instead of 700, so objects that live for a few frames (a reply
  delta, a chunk in flight) are mostly freed by their reference count before any collection sees
  them, fewer of them are promoted, and older generations are collected less often.

:class:`GcPauses` counts each collection's pause by generation, into fixed buckets, from the
collector's own callback (no lock, no allocation beyond an integer: the callback runs inside the
collection); ``pipeline serve`` exports it as ``pipeline_gc_pause_seconds{generation}``.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["PAUSE_BUCKETS", "SERVER_THRESHOLDS", "GcPauses", "settle"]

#: (young, middle, old): collect the young generation after this many net allocations, the
#: middle one every 20th young collection, the old one every 10th middle one (and CPython
#: waits for the old generation to have grown by a quarter since its last collection). The old
#: generation is not deferred further: objects that only a full collection frees (reference
#: cycles left by ended calls) would pile up and make that collection longer.
SERVER_THRESHOLDS = (10_000, 20, 10)

#: Pause buckets, seconds.
PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)


def settle(thresholds: Sequence[int] = SERVER_THRESHOLDS) -> None:
    """Collect once, freeze what is alive (it lives as long as the server) and set the
    collector's ``thresholds``. Call once, after start-up, before the first call."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


class GcPauses:
    """Counts of the collector's pauses by generation and bucket (:data:`PAUSE_BUCKETS`), with
    their total, while :meth:`attach`-ed."""

    def __init__(self, buckets: Sequence[float] = PAUSE_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        #: per generation: counts per bucket (the last one above every bound)
        self.counts = [[0] * (len(self.bounds) + 1) for _ in range(3)]
        #: per generation: seconds paused in all
        self.total_s = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        self._clock = time.perf_counter

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = self._clock()
            return
        pause = self._clock() - self._t0
        gen = int(info.get("generation", 2))
        self.counts[gen][bisect.bisect_left(self.bounds, pause)] += 1
        self.total_s[gen] += pause

    def attach(self) -> None:
        """Start counting (idempotent)."""
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def detach(self) -> None:
        """Stop counting."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def cumulative(self, generation: int) -> list[tuple[float, int]]:
        """(upper bound, collections at or under it) per bucket, ``inf`` last."""
        out, seen = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts[generation], strict=True):
            seen += n
            out.append((bound, seen))
        return out
