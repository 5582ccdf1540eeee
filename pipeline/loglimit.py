"""Warnings a hostile peer can repeat, rate-limited and summarised.

A caller sending a thousand bad messages a second, or a port scanner opening bare TCP
connections, must not turn into a thousand log lines a second. :class:`LogLimit` is the pure
core: per kind of warning (its key), at most ``burst`` lines in each window of ``window_s``
seconds; the rest are counted, and the next line of that kind after the window is preceded by
one summary ("suppressed 950 similar warnings in the last 10 s"). :class:`LimitedLog` puts it
in front of a structlog logger. The clock is injected, so tests step it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LimitedLog", "LogLimit"]


@dataclass(slots=True)
class _Window:
    start: float
    lines: int = 0
    suppressed: int = 0


class LogLimit:
    """At most ``burst`` lines per key in each ``window_s``; the rest counted."""

    def __init__(
        self, burst: int = 5, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str) -> tuple[bool, int]:
        """(write this line?, lines of this key suppressed in the window that just closed,
        to report before it: 0 when none)."""
        now = self.clock()
        w = self._windows.get(key)
        report = 0
        if w is None or now - w.start >= self.window_s:
            report = w.suppressed if w is not None else 0
            w = self._windows[key] = _Window(now)
        if w.lines < self.burst:
            w.lines += 1
            return True, report
        w.suppressed += 1
        return False, report

    def pending(self) -> dict[str, int]:
        """Lines suppressed so far in the current windows, by key (not yet summarised)."""
        return {k: w.suppressed for k, w in self._windows.items() if w.suppressed}

    def forget(self) -> None:
        self._windows.clear()


class LimitedLog:
    """``warning``/``info`` through a :class:`LogLimit`, keyed by the event text (or ``key``)."""

    def __init__(self, log: Any, limit: LogLimit | None = None) -> None:
        self.log = log
        self.limit = limit or LogLimit()

    def _emit(self, method: str, event: str, key: str | None, fields: dict[str, Any]) -> None:
        k = key or event
        ok, suppressed = self.limit.admit(k)
        if suppressed:
            self._summary(k, suppressed)
        if ok:
            getattr(self.log, method)(event, **fields)

    def _summary(self, key: str, n: int) -> None:
        window = f"{self.limit.window_s:g}"
        self.log.warning(
            f"suppressed {n} similar warnings in the last {window} s",
            like=key,
            suppressed=n,
            window_s=self.limit.window_s,
        )

    def warning(self, event: str, *, key: str | None = None, **fields: Any) -> None:
        self._emit("warning", event, key, fields)

    def info(self, event: str, *, key: str | None = None, **fields: Any) -> None:
        self._emit("info", event, key, fields)

    def flush(self) -> None:
        """Write the summaries still pending (on the way out)."""
        for k, n in self.limit.pending().items():
            self._summary(k, n)
        self.limit.forget()
