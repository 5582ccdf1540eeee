"""Timing helpers for the benchmarks: many repetitions, medians and p99, never a single run.

The machine is shared and noisy, so each figure is a distribution over repetitions, and every
figure is reported beside a baseline measured in the same run (a ratio, not an absolute)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Coroutine
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
    goal: str = ""  # the key of the goal this row measures (benchmarks.goals), if any
    samples: list[float] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        return d


def per_call_us(
    fn: Callable[[], object],
    *,
    inner: int,
    repeat: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> np.ndarray:
    """µs per call of ``fn``: ``repeat`` samples, each the mean over ``inner`` back-to-back calls
    (so the timer's own cost is amortised). ``clock``: wall time by default;
    ``time.process_time_ns`` for CPU time (figures to add up or subtract from CPU figures)."""
    out = np.empty(repeat)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(3, inner // 10)):  # warm-up
            fn()
        perf = clock
        for r in range(repeat):
            t0 = perf()
            for _ in range(inner):
                fn()
            out[r] = (perf() - t0) / inner / 1e3
    finally:
        if gc_was:
            gc.enable()
    return out


def cpu_per_item_us(run: Callable[[int], object], *, n: int, n0: int, repeat: int) -> np.ndarray:
    """CPU µs per item of ``run(n)`` (a whole run over ``n`` items: frames through a pipeline),
    with the fixed cost (event loop, tasks, start and stop) taken out: each sample is
    ``(cpu(run(n)) - cpu(run(n0))) / (n - n0)``. CPU time of this process, not wall time: the
    machine is shared, and wall time would count the other processes."""
    cpu = time.process_time_ns
    out = np.empty(repeat)
    run(n0)  # warm-up (imports, first-call caches)
    for r in range(repeat):
        t0 = cpu()
        run(n0)
        t1 = cpu()
        run(n)
        t2 = cpu()
        out[r] = ((t2 - t1) - (t1 - t0)) / (n - n0) / 1e3
    return out


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (a library's ``async def`` that does sync work) to
    its result without an event loop, so only the work itself is timed."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the coroutine suspended; it needs an event loop")


def row(
    group: str,
    name: str,
    samples: np.ndarray | list[float],
    unit: str = "µs/frame",
    note: str = "",
) -> Row:
    """A row from samples (median and p99 over them)."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        a = np.asarray([float("nan")])
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


def fixed(group: str, name: str, value: float, unit: str, note: str = "") -> Row:
    """A row for one figure that is not a distribution (a count, or "not measured": NaN)."""
    return Row(group, name, unit, value, value, 1, note=note, samples=[value])


def quiet_pipecat() -> bool:
    """Import Pipecat with its logging silenced; False when it is not installed."""
    import warnings

    try:
        from loguru import logger

        logger.remove()
        import pipecat  # noqa: F401
    except Exception:
        return False
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pipecat\..*")
    warnings.filterwarnings("ignore", message=r".*deprecated since", category=DeprecationWarning)
    return True
