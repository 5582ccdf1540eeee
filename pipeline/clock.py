"""Clocks. Stages that pace themselves (a realtime WAV source, a timeout) ask the clock, never
``time`` or ``asyncio.sleep`` directly, so tests can swap in a :class:`VirtualClock` and run a
minute of realtime audio in milliseconds without a single real sleep."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds and sleeping until a point in time."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The machine's monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(time.monotonic() + seconds)


class VirtualClock:
    """Time that only moves when every sleeper is waiting: the earliest deadline is reached
    at once. Time never goes backwards; sleepers wake in deadline order (ties: first come).

    The clock advances after the event loop has had a few turns to run whatever is ready, so
    work that is not sleeping runs "before" virtual time moves on.
    """

    def __init__(self, start: float = 0.0, settle_turns: int = 8) -> None:
        self._now = start
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._settle = settle_turns
        self._scheduled = False

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + seconds)

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._heap, (deadline, next(self._seq), fut))
        self._schedule(loop)
        await fut

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._settle_then_advance, loop, self._settle)

    def _settle_then_advance(self, loop: asyncio.AbstractEventLoop, turns: int) -> None:
        if turns > 0:
            loop.call_soon(self._settle_then_advance, loop, turns - 1)
            return
        self._scheduled = False
        while self._heap and self._heap[0][2].done():  # cancelled sleepers
            heapq.heappop(self._heap)
        if not self._heap:
            return
        deadline, _, fut = heapq.heappop(self._heap)
        self._now = max(self._now, deadline)
        fut.set_result(None)
        if self._heap:
            self._schedule(loop)
