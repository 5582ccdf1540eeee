"""Count what a server's event loop runs: ``python -m benchmarks.loopcount [pipeline args]``.

Runs the ``pipeline`` command (``serve ...``) with every callback of asyncio's own event loop
counted by kind: a task step by the task's coroutine (``step _Run.pump_input``), a socket read
(``cb _SelectorSocketTransport._read_ready``), a timer or future callback by its function; and
the loop's iterations (one per wake-up from ``select``). Tasks are asyncio's pure-Python ones so
that each step can be named; the counts, not the timings, are the point (the loop runs slower
for it). At exit the counts go to the JSON file named by ``LOOPCOUNT_OUT``.

``python -m benchmarks.callsim load --count-callbacks FILE`` runs the server this way (on
asyncio's loop) and prints the counts per call-frame (20 ms of one call): how many wake-ups,
task steps and socket reads each 20 ms of a call costs, and which task takes them.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.tasks
import atexit
import collections
import json
import os
import sys
from collections.abc import Callable
from typing import Any

OUT_ENV = "LOOPCOUNT_OUT"


def name_of(callback: Callable[..., Any]) -> str:
    """``step QUALNAME`` for a task's step, else ``cb QUALNAME`` of the callback."""
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.tasks._PyTask):  # type: ignore[attr-defined]
        coro = owner.get_coro()
        return "step " + str(getattr(coro, "__qualname__", type(coro).__name__))
    return "cb " + str(getattr(callback, "__qualname__", type(callback).__name__))


class LoopCounter:
    """Counts the loop's callbacks by :func:`name_of` and its iterations, once installed."""

    def __init__(self) -> None:
        self.callbacks: collections.Counter[str] = collections.Counter()
        self.iterations = 0

    def install(self) -> None:
        """Patch asyncio (before any loop exists): pure-Python tasks, counted callbacks."""
        asyncio.tasks.Task = asyncio.tasks._PyTask  # type: ignore[attr-defined, misc]
        asyncio.Task = asyncio.tasks._PyTask  # type: ignore[attr-defined, misc]
        run = asyncio.events.Handle._run
        once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]
        counts = self.callbacks

        def counted_run(handle: asyncio.events.Handle) -> None:
            counts[name_of(handle._callback)] += 1  # type: ignore[attr-defined]
            run(handle)

        def counted_once(loop: asyncio.base_events.BaseEventLoop) -> None:
            self.iterations += 1
            once(loop)

        asyncio.events.Handle._run = counted_run  # type: ignore[method-assign, assignment]
        asyncio.base_events.BaseEventLoop._run_once = counted_once  # type: ignore[attr-defined]

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"iterations": self.iterations, "callbacks": dict(self.callbacks)}, f)


def summary(path: str, call_frames: float, top: int = 12) -> list[str]:
    """Lines of the counts in ``path`` per call-frame: iterations, callbacks, the largest
    kinds."""
    with open(path) as f:
        doc = json.load(f)
    cbs: dict[str, int] = doc["callbacks"]
    lines = [
        f"per call-frame ({call_frames:.0f} call-frames): loop wake-ups "
        f"{doc['iterations'] / call_frames:.2f}, callbacks {sum(cbs.values()) / call_frames:.2f}"
    ]
    for name, n in sorted(cbs.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {n / call_frames:6.3f}  {name}")
    return lines


def main() -> None:
    counter = LoopCounter()
    counter.install()
    out = os.environ.get(OUT_ENV)
    if out:
        atexit.register(counter.dump, out)
    from pipeline.cli import run_main

    sys.argv = ["pipeline", *sys.argv[1:]]
    run_main()


if __name__ == "__main__":
    main()
