"""How far a run has got: media time, percent and time left, for the live view and the log.

A source that knows how much media it will emit (a WAV file, a generated signal) sets
``ctx.media_total_s``; the runner counts the media seconds each source has emitted. From those
two and the time elapsed, :func:`measure` makes a :class:`Progress` (pure: no clock is read).
Without a terminal, :class:`ProgressLog` logs one ``progress`` line every few seconds of the
run's clock (``ctx.clock``, so tests drive it with a virtual clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .clock import Clock

if TYPE_CHECKING:
    from .runtime import Runner

__all__ = ["Progress", "ProgressLog", "measure", "of_runner"]

#: seconds of the run's clock between two progress lines in the log
LOG_INTERVAL_S = 5.0


def _clock_text(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss`` from an hour on)."""
    if seconds >= 3600:
        h, rest = divmod(int(seconds), 3600)
        m, s = divmod(rest, 60)
        return f"{h}:{m:02d}:{s:02d}"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


@dataclass(frozen=True, slots=True)
class Progress:
    """Media seconds emitted so far, of ``total_s`` (None: unknown, e.g. a live call or a
    stream on standard input), after ``elapsed_s`` seconds of running."""

    media_s: float
    total_s: float | None
    elapsed_s: float

    @property
    def percent(self) -> float | None:
        if not self.total_s:
            return None
        return min(100.0, 100.0 * self.media_s / self.total_s)

    @property
    def left_s(self) -> float | None:
        """Seconds until the end at the speed so far (None until something has been emitted)."""
        if self.total_s is None or self.media_s <= 0 or self.elapsed_s <= 0:
            return None
        return max(0.0, self.elapsed_s * (self.total_s - self.media_s) / self.media_s)

    def text(self) -> str:
        """``media 0:12.5 of 0:30.0 (41.7%), 0:17.5 left`` (or ``media 0:12.5`` alone)."""
        out = f"media {_clock_text(self.media_s)}"
        if self.total_s is not None:
            out += f" of {_clock_text(self.total_s)} ({self.percent:.1f}%)"
            left = self.left_s
            if left is not None:
                out += f", {_clock_text(left)} left"
        return out

    def fields(self) -> dict[str, Any]:
        """The figures as log fields."""
        out: dict[str, Any] = {"media_s": round(self.media_s, 3)}
        if self.total_s is not None:
            out["total_s"] = round(self.total_s, 3)
            out["percent"] = round(self.percent or 0.0, 1)
            left = self.left_s
            if left is not None:
                out["left_s"] = round(left, 1)
        return out


def measure(sources: Iterable[tuple[float, float | None]], elapsed_s: float) -> Progress | None:
    """Progress from each source's ``(media seconds emitted, total or None)``: the longest
    source of known length when there is one (the run ends with it), else the furthest source.
    None when the pipeline has no source."""
    items = list(sources)
    if not items:
        return None
    known = [(done, total) for done, total in items if total is not None]
    if known:
        done, total = max(known, key=lambda dt: dt[1])
        return Progress(done, total, elapsed_s)
    return Progress(max(done for done, _ in items), None, elapsed_s)


def of_runner(runner: Runner, elapsed_s: float) -> Progress | None:
    """The progress of a running :class:`~pipeline.runtime.Runner`."""
    sources = [
        (runner.stats[sid].media_s, ctx.media_total_s)
        for sid, ctx in runner.contexts.items()
        if runner.plan.stages[sid].spec.is_source
    ]
    return measure(sources, elapsed_s)


class ProgressLog:
    """Called on every tick of a run (``Runner.on_tick``): logs ``progress`` with the figures
    of :class:`Progress` once every ``interval_s`` seconds of ``clock``, the first after one
    interval."""

    def __init__(self, log: Any, clock: Clock, interval_s: float = LOG_INTERVAL_S) -> None:
        self._log = log
        self._clock = clock
        self._interval = interval_s
        self._start: float | None = None
        self._next = 0.0

    def __call__(self, runner: Runner) -> None:
        now = self._clock.now()
        if self._start is None:
            self._start = now
            self._next = now + self._interval
            return
        if now < self._next:
            return
        self._next = now + self._interval
        progress = of_runner(runner, now - self._start)
        if progress is not None:
            self._log.info("progress", pipeline=runner.plan.name, **progress.fields())
