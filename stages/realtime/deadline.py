"""Timeouts on an injected clock: :func:`clock_timeout` is ``asyncio.timeout`` measured on a
:class:`~pipeline.clock.Clock` (``ctx.clock``), so a test on a
:class:`~pipeline.clock.VirtualClock` sees a 30 s timeout fire at once, with no real wait.

A virtual clock jumps to the next deadline after a few turns of the event loop, even while a
message is on its way over loopback. When the clock reaches the deadline, the timeout therefore
gives the loop :data:`GRACE_TURNS` more turns before it fires: a reply already in flight lands
first. On the real clock that costs microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from pipeline.clock import Clock

#: Event-loop turns between the clock reaching the deadline and the timeout firing.
GRACE_TURNS = 100


class Deadline:
    """The handle :func:`clock_timeout` yields: :meth:`disarm` stops the timer (the body then
    runs as long as it takes); :attr:`expired` says whether it fired."""

    def __init__(self, clock: Clock, timeout: asyncio.Timeout) -> None:
        self._clock = clock
        self._timeout = timeout
        self._timer: asyncio.Task[None] | None = None
        self.expired = False

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = asyncio.create_task(self._fire(seconds), name="clock_timeout")

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def _fire(self, seconds: float) -> None:
        await self._clock.sleep(seconds)
        for _ in range(GRACE_TURNS):
            await asyncio.sleep(0)
        self.expired = True
        self._timeout.reschedule(asyncio.get_running_loop().time())

    async def close(self) -> None:
        self.disarm()
        if self._timer is not None:
            await asyncio.wait([self._timer])  # never raises the timer's own cancellation


@contextlib.asynccontextmanager
async def clock_timeout(clock: Clock, seconds: float | None) -> AsyncIterator[Deadline]:
    """``async with clock_timeout(ctx.clock, 5.0):`` raises TimeoutError out of the block if it
    runs longer than 5 s of ``clock`` time (``None``: no limit until :meth:`Deadline.arm`).
    Cancellation from outside passes through unchanged, as with ``asyncio.timeout``."""
    async with asyncio.timeout(None) as timeout:
        deadline = Deadline(clock, timeout)
        if seconds is not None:
            deadline.arm(seconds)
        try:
            yield deadline
        finally:
            await deadline.close()
