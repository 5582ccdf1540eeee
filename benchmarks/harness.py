"""Timing helpers for the benchmarks: many repetitions, medians and p99, never a single run.

The machine is shared and noisy, so each figure is a distribution over repetitions, and every
figure is reported beside a baseline measured in the same run (a ratio, not an absolute)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Row:
    """One benchmark result: a distribution of µs per operation (or ms of latency)."""

    group: str
    name: str
    unit: str  # "µs/frame", "ms", "calls/core", ...
    median: float
    p99: float
    n: int
    baseline: str = ""  # name of the row this one is compared with
    ratio: float | None = None  # median / baseline median
    note: str = ""
    samples: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        return d


def per_call_us(fn: Callable[[], object], *, inner: int, repeat: int) -> np.ndarray:
    """µs per call of ``fn``: ``repeat`` samples, each the mean over ``inner`` back-to-back calls
    (so the timer's own cost is amortised)."""
    out = np.empty(repeat)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(3, inner // 10)):  # warm-up
            fn()
        perf = time.perf_counter_ns
        for r in range(repeat):
            t0 = perf()
            for _ in range(inner):
                fn()
            out[r] = (perf() - t0) / inner / 1e3
    finally:
        if gc_was:
            gc.enable()
    return out


def row(
    group: str,
    name: str,
    samples: np.ndarray | list[float],
    unit: str = "µs/frame",
    note: str = "",
) -> Row:
    a = np.asarray(samples, dtype=float)
    return Row(
        group,
        name,
        unit,
        float(np.median(a)),
        float(np.percentile(a, 99)),
        len(a),
        note=note,
        samples=[float(x) for x in a],
    )


def compare(r: Row, base: Row) -> Row:
    """Attach ``base`` as the baseline of ``r`` (ratio of medians)."""
    r.baseline = base.name
    r.ratio = r.median / base.median if base.median else None
    return r
