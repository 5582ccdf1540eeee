"""Bounded channels between stages, and the inbox that merges a stage's incoming links.

A :class:`Channel` is one link: a bounded FIFO with an overflow policy and statistics. Control
frames (:data:`~pipeline.frames.CONTROL_TYPES`: interrupt) never wait behind audio and are never
dropped: they go into a separate lane that the consumer reads first, and an interrupt also drops the
audio still queued on that link (barge-in: what was not yet played is not played). Events queued
before an interrupt stay ahead of it: it overtakes audio, never a queued tool call.

An :class:`Inbox` is the receiving side of every link into one stage. ``get()`` returns the next
frame (control lanes first, then the data lanes round-robin) or raises :class:`EndOfStream` when
every link has been closed by its producer and drained.

Overflow policies, when a link is full:

* ``block``: the producer waits for room (back-pressure, the default; a feedback link, the one
  closing a cycle, never makes its producer wait, as that could deadlock the cycle);
* ``drop_oldest``: the oldest queued frame is dropped to make room (a live stream stays current);
* ``drop_newest``: the new frame is dropped.

Only the event loop's thread touches these objects; there are no locks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal

from .errors import PipelineError, UsageError
from .frames import CONTROL_TYPES, Audio, Frame, Interrupt

Overflow = Literal["block", "drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("block", "drop_oldest", "drop_newest")
DEFAULT_CAPACITY = 8


class EndOfStream(PipelineError):
    """Every link into this inbox has ended and nothing is left to read."""


class ClosedResourceError(PipelineError):
    """The receiving side of a channel is gone; nothing more can be sent on it."""


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a channel's counters."""

    name: str
    capacity: int
    overflow: str
    depth: int
    peak: int
    sent: int  # frames offered: sent == received + dropped + purged + depth
    received: int
    dropped: int
    purged: int  # audio dropped because an interrupt overtook it
    closed: bool


class Channel:
    """One link: a bounded FIFO of frames from one producer to one consumer's inbox."""

    __slots__ = (
        "_ctrl",
        "_data",
        "_inbox",
        "_space_waiters",
        "capacity",
        "closed",
        "dropped",
        "feedback",
        "name",
        "overflow",
        "peak",
        "purged",
        "received",
        "receiver_closed",
        "sent",
    )

    def __init__(
        self,
        name: str = "",
        capacity: int = DEFAULT_CAPACITY,
        overflow: Overflow = "block",
        *,
        feedback: bool = False,
    ) -> None:
        if capacity < 1:
            raise UsageError(f"channel capacity must be at least 1, got {capacity}")
        if overflow not in OVERFLOW_POLICIES:
            raise UsageError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}")
        self.name = name
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self.feedback = feedback
        self._data: deque[Frame] = deque()
        self._ctrl: deque[Frame] = deque()
        self._inbox: Inbox | None = None
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self.receiver_closed = False
        self.peak = 0
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.purged = 0

    # ------------------------------------------------------------------ producer side

    async def send(self, frame: Frame) -> None:
        """Queue ``frame``; under ``block`` wait while the link is full."""
        if self.receiver_closed:
            return  # the consumer has finished: frames for it are discarded
        if self.closed:
            raise ClosedResourceError(f"link {self.name} was closed by its producer")
        if type(frame) in CONTROL_TYPES:
            self._send_control(frame)
            return
        data = self._data
        while len(data) >= self.capacity:
            if self.overflow == "drop_newest":
                self.sent += 1  # sent counts every frame offered, as under drop_oldest
                self.dropped += 1
                return
            if self.overflow == "drop_oldest":
                self._drop_oldest()
                break
            if self.feedback:
                # A feedback link never makes its producer wait: inside a cycle that wait could
                # be on a stage that is itself waiting to send into the cycle (a deadlock). Its
                # capacity is a soft limit here; the summary's peak shows how far it went.
                break
            fut = asyncio.get_running_loop().create_future()
            self._space_waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()
            if self.receiver_closed:
                return
        data.append(frame)
        self.sent += 1
        depth = len(data) + len(self._ctrl)
        if depth > self.peak:
            self.peak = depth
        if self._inbox is not None:
            self._inbox._wake()

    def send_nowait(self, frame: Frame) -> bool:
        """Queue ``frame`` if there is room (or it's a control frame); False if it would block."""
        if self.receiver_closed:
            return True
        if type(frame) in CONTROL_TYPES:
            self._send_control(frame)
            return True
        if len(self._data) >= self.capacity and self.overflow == "block":
            return False
        # drop policies never block, so this completes synchronously
        coro = self.send(frame)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - cannot happen: only "block" suspends
            coro.close()
            return False
        return True

    def _drop_oldest(self) -> None:
        data = self._data
        for i, f in enumerate(data):
            if type(f) not in CONTROL_TYPES:  # an interrupt queued behind events is never dropped
                del data[i]
                self.dropped += 1
                return

    def _send_control(self, frame: Frame) -> None:
        lane = self._ctrl
        if isinstance(frame, Interrupt):
            kept = [f for f in self._data if not isinstance(f, Audio)]
            self.purged += len(self._data) - len(kept)
            self._data.clear()
            self._data.extend(kept)
            self._release_space()
            if kept:
                # Overtake audio only: events queued before the interrupt (a tool call of the
                # interrupted response, say) keep their order, so it goes behind them.
                lane = self._data
        lane.append(frame)
        self.sent += 1
        depth = len(self._data) + len(self._ctrl)
        if depth > self.peak:
            self.peak = depth
        if self._inbox is not None:
            self._inbox._wake()

    def close(self) -> None:
        """The producer is done: the consumer sees end of stream once the queue drains."""
        if not self.closed:
            self.closed = True
            if self._inbox is not None:
                self._inbox._wake()

    # ------------------------------------------------------------------ consumer side

    def _pop(self) -> Frame | None:
        if self._ctrl:
            self.received += 1
            return self._ctrl.popleft()
        if self._data:
            frame = self._data.popleft()
            self.received += 1
            self._release_space()
            return frame
        return None

    def _release_space(self) -> None:
        waiters = self._space_waiters
        while waiters and len(self._data) < self.capacity:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def close_receiver(self) -> None:
        """The consumer is gone: wake a blocked producer and discard what is queued."""
        self.receiver_closed = True
        self._data.clear()
        self._ctrl.clear()
        while self._space_waiters:
            fut = self._space_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    @property
    def depth(self) -> int:
        return len(self._data) + len(self._ctrl)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            name=self.name,
            capacity=self.capacity,
            overflow=self.overflow,
            depth=self.depth,
            peak=self.peak,
            sent=self.sent,
            received=self.received,
            dropped=self.dropped,
            purged=self.purged,
            closed=self.closed,
        )

    def __repr__(self) -> str:
        return f"<Channel {self.name} depth={self.depth}/{self.capacity} {self.overflow}>"


class Inbox:
    """Every link into one stage, read as one stream.

    ``forward_ended`` is called once every forward (non-feedback) link has ended and drained.
    With ``stop_at_forward_end`` (stages that are not cycle-aware) the inbox then ends, so a cycle
    cannot keep such a stage alive; otherwise it goes on until the feedback links end too.
    """

    def __init__(self, channels: list[Channel], *, stop_at_forward_end: bool = True) -> None:
        self.channels = channels
        for ch in channels:
            ch._inbox = self
        self._waiter: asyncio.Future[None] | None = None
        self._rr = 0
        self.stop_at_forward_end = stop_at_forward_end
        self._forward_done = not any(not c.feedback for c in channels)
        self._cut_feedback = (
            stop_at_forward_end
            and any(c.feedback for c in channels)
            and any(not c.feedback for c in channels)
        )
        self.on_forward_end: list[asyncio.Event] = []

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _try_get(self) -> Frame | None:
        chans = self.channels
        for ch in chans:  # control lanes first
            if ch._ctrl:
                return ch._pop()
        n = len(chans)
        for i in range(n):
            ch = chans[(self._rr + i) % n]
            if ch._data:
                self._rr = (self._rr + i + 1) % n
                return ch._pop()
        return None

    def _ended(self) -> bool:
        if not self._forward_done and all(
            c.closed and not c.depth for c in self.channels if not c.feedback
        ):
            self._forward_done = True
            for ev in self.on_forward_end:
                ev.set()
        if self._forward_done and self.stop_at_forward_end:
            return True
        return all(c.closed and not c.depth for c in self.channels)

    async def get(self) -> Frame:
        """The next frame; raises EndOfStream when the inputs have ended."""
        while True:
            if self._cut_feedback and self._ended():
                # Forward inputs are done: frames still coming round a cycle are not waited for
                # (they could circulate for ever through stages that do not end a cycle).
                raise EndOfStream
            frame = self._try_get()
            if frame is not None:
                return frame
            if self._ended():
                raise EndOfStream
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        """The consumer is done reading (finished early, failed or was cancelled)."""
        for ch in self.channels:
            ch.close_receiver()

    def __aiter__(self) -> Inbox:
        return self

    async def __anext__(self) -> Frame:
        try:
            return await self.get()
        except EndOfStream:
            raise StopAsyncIteration from None
