"""Running a checked pipeline: a :class:`Runner` runs one :class:`~pipeline.plan.Plan` once.

The plan is immutable and shared: a runner keeps everything a run changes (contexts, channels,
inboxes, counters, the bus) to itself, so any number of runners run one plan at the same time.

Theory of operation
-------------------
``check()`` has cut the graph into *segments*: maximal linear runs of stages joined by plain links
(one producer, one consumer, no link options, not a feedback link). A segment runs as one task in
which each stage iterates the previous stage's generator directly: a hop costs a generator step, not
a queue and a task switch. Every other link is a bounded :class:`~pipeline.channels.Channel`; the
first stage of a segment reads its links through an :class:`~pipeline.channels.Inbox`, and the last
one's frames are fanned out to its links, each getting only the frame types its destination takes.

Every run has exactly one ``asyncio.TaskGroup``: one task per segment, plus the live view. End of
stream is the end of a stage's output: its links close, and a stage whose inputs have all closed
and drained sees its input end. A stage inside a cycle (``cycle_aware``) is told when its forward
inputs end (``ctx.forward_ended``), finishes what it owes, and returns; that ends the feedback path.

A stage that raises fails the run: the task group cancels every other task, every generator is
closed (so sinks run their ``finally`` and leave valid files), and a :class:`StageError` naming the
stage comes out. ``request_stop()`` (Ctrl-C) makes the sources end, so everything drains and the
sinks close normally; ``cancel()`` stops at once.

Per stage the runner counts every frame in and out, and times the stage's own work (producing a
frame; consuming one, for a sink), excluding time spent waiting for its input and sleeping on the
clock, on one frame in ``timing_every`` (16 by default; 1 times every frame): two clock reads and
their bookkeeping cost about as much as a fused hop. A pull made while an outer pull of the same
segment is being timed is timed too, so the outer stage's wait for its input is known exactly.
The summary says how many frames were timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from .channels import Channel, EndOfStream, Inbox
from .clock import Clock, RealClock
from .context import Bus, StageContext, call_stage
from .errors import PipelineError, StageError, UsageError
from .frames import (
    BYTES_PER_SAMPLE,
    EVENT_TYPES,
    Audio,
    AudioFormat,
    ErrorReport,
    Event,
    Frame,
    ToolCall,
    ToolResult,
    Transcript,
    with_stage,
)
from .graph import Pipeline
from .metrics import MetricsSink, StageMetrics
from .plan import Plan, PlannedLink, Segment

log = structlog.get_logger("pipeline")

_perf = time.perf_counter_ns

#: By default the runner times one frame in this many per stage (and counts every frame): the
#: two clock reads and the bookkeeping of a timed hop cost about as much as the hop itself.
TIMING_EVERY = 16

#: at most this many frame times are kept per stage (16 MB; at one in 16, 7 days of 20 ms frames)
_MAX_TIMES = 2_000_000


class StageStats:
    """Counters for one stage while it runs.

    ``frames_in``/``frames_out`` count every frame (a fused link adds them up in batches: on
    every timed frame, every event and at the end, so while running they may lag by up to
    ``timed_every`` frames); ``times`` holds the stage's own time for the frames that were
    timed, one in ``timed_every`` (see :class:`Runner`). A source's ``media_s`` is exact at
    every moment while its audio keeps the format it is counted in (the plan's, or its first
    timed frame's); a change of format is caught on the next timed frame."""

    __slots__ = (
        "audio_bytes",
        "audio_s",
        "bytes_per_s",
        "frames_in",
        "frames_out",
        "id",
        "media_format",
        "sleep_ns",
        "timed_every",
        "times",
        "type",
    )

    def __init__(
        self,
        id: str,
        type: str,
        timed_every: int = 1,
        media_format: AudioFormat | None = None,
    ) -> None:
        self.id = id
        self.type = type
        self.timed_every = timed_every
        self.frames_in = 0
        self.frames_out = 0
        self.sleep_ns = 0
        self.times = array("q")  # ns per frame timed (produced; consumed, for sinks)
        #: a source's media: bytes of audio in ``media_format`` (the plan's output format,
        #: when it knows it: one addition per frame), plus seconds counted frame by frame
        self.media_format = media_format
        self.bytes_per_s = media_format.bytes_per_second if media_format is not None else 0
        self.audio_bytes = 0
        self.audio_s = 0.0

    @property
    def media_s(self) -> float:
        """Seconds of audio the stage has emitted (counted for sources)."""
        if self.bytes_per_s:
            return self.audio_s + self.audio_bytes / self.bytes_per_s
        return self.audio_s

    def media_in(self, fmt: AudioFormat) -> None:
        """The source's audio is in ``fmt`` (its first frame's, when the plan did not know
        it): count bytes from now."""
        self.media_format = fmt
        self.bytes_per_s = fmt.bytes_per_second

    def media_exactly(self) -> None:
        """A frame of another format than the plan's came out: count frame by frame from now."""
        self.audio_s = self.media_s
        self.audio_bytes = 0
        self.bytes_per_s = 0
        self.media_format = None

    def add_wait(self, ns: int) -> None:
        """Time the stage declared as waiting (``ctx.waiting()``): billed like clock sleeps."""
        self.sleep_ns += ns

    def record(self, ns: int) -> None:
        if len(self.times) < _MAX_TIMES:
            self.times.append(ns)


class _StopFlag:
    """Set when the run is asked to stop: read on every frame a source yields (an attribute,
    cheaper than ``asyncio.Event.is_set()``)."""

    __slots__ = ("requested",)

    def __init__(self) -> None:
        self.requested = False


class _Timing:
    """Shared by the inputs of one segment: how many timed pulls are in progress. A pull made
    while another one is being timed is timed too, so that the outer one can take the inner
    one's wait out of its own time (pulls within a segment nest, one inside the other)."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0


class _MeteredClock:
    """The run's clock, counting how long one stage sleeps on it (not work)."""

    __slots__ = ("_clock", "_stats")

    def __init__(self, clock: Clock, stats: StageStats) -> None:
        self._clock = clock
        self._stats = stats

    def now(self) -> float:
        return self._clock.now()

    async def sleep_until(self, deadline: float) -> None:
        t0 = _perf()
        try:
            await self._clock.sleep_until(deadline)
        finally:
            self._stats.sleep_ns += _perf() - t0

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._clock.now() + seconds)


class _Input:
    """The input of one stage: pulls from the previous stage's generator (fused) or from an
    inbox (queued), filters to the frame types the link carries, and counts every frame. One
    pull in ``every`` (and every pull made while an outer one is timed) is timed: the upstream
    stage is billed the pull's time minus its sleeps and its own input's wait, and this stage
    the wait (so that wait is not billed to it)."""

    __slots__ = (
        "_accept",
        "_every",
        "_gen",
        "_inbox",
        "_last",
        "_stop",
        "_timing",
        "_up",
        "_up_input",
        "_up_stamp",
        "_up_stats",
        "forward_ended",
        "on_event",
        "stats",
        "wait_ns",
    )

    def __init__(
        self,
        stats: StageStats,
        timing: _Timing,
        *,
        upstream: AsyncIterator[Frame] | None = None,
        up_input: _Input | None = None,
        up_stats: StageStats | None = None,
        inbox: Inbox | None = None,
        accept: tuple[type[Any], ...] | None = None,
        stop: _StopFlag | None = None,
        forward_ended: asyncio.Event | None = None,
        on_event: Callable[[Event], None] | None = None,
        every: int = 1,
    ) -> None:
        self.stats = stats
        self.on_event = on_event
        self._timing = timing
        self._every = every  # 0: only pulls nested in a timed one
        self._up = upstream
        self._up_input = up_input
        self._up_stats = up_stats
        self._up_stamp = up_stats.id if up_stats is not None else ""
        self._inbox = inbox
        self._accept = accept
        self._stop = stop if up_input is None else None  # a source's stream ends on stop
        self.forward_ended = forward_ended
        self.wait_ns = 0
        self._last = 0
        self._gen: AsyncGenerator[Frame, None] | None = None

    # Only sinks are billed per frame consumed; other stages per frame produced.
    _sink = False

    def frames(self) -> AsyncGenerator[Frame, None]:
        """The stage's input: an async generator, handed to the stage as it is (the stage's
        ``async for`` steps it with no Python-level ``__anext__`` in between)."""
        if self._gen is None:
            if self._inbox is not None:
                self._gen = self._from_inbox()
            elif self._accept is not None:
                self._gen = self._from_upstream()
            elif self._up_input is None:
                self._gen = self._from_source()
            else:
                self._gen = self._between()
        return self._gen

    def __aiter__(self) -> AsyncGenerator[Frame, None]:
        return self.frames()

    async def aclose(self) -> None:
        if self._gen is not None:
            await self._gen.aclose()

    async def _from_inbox(self) -> AsyncGenerator[Frame, None]:
        # A queued hop costs a few µs; timing its waits every time adds little to that.
        stats = self.stats
        inbox = self._inbox
        assert inbox is not None
        accept = self._accept
        sink = self._sink
        every = self._every
        left = 1  # the first frame is timed
        while True:
            t0 = _perf()
            if sink and self._last:  # a sink's work: from handing it a frame to its next ask
                stats.record(t0 - self._last)
                self._last = 0
            try:
                frame = await inbox.get()
                while accept is not None and not isinstance(frame, accept):
                    frame = await inbox.get()
            except EndOfStream:
                self._ended(t0)
                return
            t1 = _perf()
            stats.frames_in += 1
            self.wait_ns += t1 - t0
            left -= 1
            if sink and not left:
                left = every
                self._last = t1
            yield frame

    async def _between(self) -> AsyncGenerator[Frame, None]:
        # Fused, from a stage that is not a source, every frame carried: the most common
        # link, and the hot path of the whole framework. Two loops: a timed pull (one in
        # ``every``, and any pull while an outer one is timed) steps the upstream with
        # ``__anext__`` between two clock reads; the untimed pulls in between run in a bare
        # ``async for`` whose step is a countdown, a class test and a yield. The countdown is
        # the count: the frames pulled since the counters were last brought up to date are
        # ``mark - left``, added to them on each timed pull, each event, each return to the
        # timed loop and at the end.
        stats = self.stats
        sink = self._sink
        up = self._up
        up_stats = self._up_stats
        up_in = self._up_input
        assert up is not None and up_stats is not None and up_in is not None
        timing = self._timing
        every = self._every
        arrived = self._arrived
        audio = Audio
        perf = _perf
        times = up_stats.times
        left = mark = every  # the countdown to our own next timed pull, and its last count
        timed = bool(every) or timing.active > 0  # the first pull is timed
        try:
            while True:
                if timed:
                    t0 = perf()
                    w0 = up_in.wait_ns
                    s0 = up_stats.sleep_ns
                    timing.active += 1
                    try:
                        frame = await up.__anext__()
                    except StopAsyncIteration:  # the upstream ended during a timed pull
                        timing.active -= 1
                        self._ended(t0)
                        return
                    timing.active -= 1
                    t1 = perf()
                    own = t1 - t0 - (up_stats.sleep_ns - s0) - (up_in.wait_ns - w0)
                    if len(times) < _MAX_TIMES:  # never a negative time: see _from_upstream
                        times.append(own if own > 0 else 0)
                    self.wait_ns += t1 - t0
                    left -= 1
                    k = mark - left
                    up_stats.frames_out += k
                    stats.frames_in += k
                    mark = left
                    if frame.__class__ is not audio:
                        frame = arrived(frame)
                    yield frame
                    if sink:  # the sink's work: from handing it the frame to its next ask
                        stats.record(perf() - t1)
                    if not left:
                        left = mark = every
                        continue
                    if timing.active:
                        continue
                async for frame in up:
                    left -= 1
                    if frame.__class__ is not audio:
                        k = mark - left
                        up_stats.frames_out += k
                        stats.frames_in += k
                        mark = left
                        frame = arrived(frame)
                    yield frame
                    if left and not timing.active:
                        continue
                    break
                else:  # the upstream ended during an untimed pull
                    break
                timed = True
                if not left:
                    k = mark - left
                    up_stats.frames_out += k
                    stats.frames_in += k
                    left = mark = every
        except StageError:
            raise
        except Exception as exc:
            raise _stage_error(up_stats.id, exc) from exc
        finally:
            k = mark - left
            up_stats.frames_out += k
            stats.frames_in += k
            mark = left
        self._ended(None)

    async def _from_source(self) -> AsyncGenerator[Frame, None]:
        # Fused, from a source, every frame carried: as :meth:`_between`, and the source's
        # stream ends when the run is asked to stop, and its audio counts as the run's media:
        # in bytes of the plan's format, or of the first timed audio frame's when the plan
        # does not know it (the format is checked on each timed frame); frame by frame from
        # the first timed frame of another format on.
        stats = self.stats
        sink = self._sink
        up = self._up
        up_stats = self._up_stats
        assert up is not None and up_stats is not None
        stop = self._stop if self._stop is not None else _StopFlag()
        timing = self._timing
        every = self._every
        arrived = self._arrived
        audio = Audio
        perf = _perf
        times = up_stats.times
        bps = BYTES_PER_SAMPLE
        fmt = up_stats.media_format
        learn = exact = fmt is None  # frame by frame until a timed frame gives the format
        if stop.requested:
            self._ended(None)
            return
        left = mark = every  # as in _between: the countdown is the count
        timed = bool(every) or timing.active > 0  # the first pull is timed
        try:
            while True:
                if timed:
                    t0 = perf()
                    s0 = up_stats.sleep_ns
                    timing.active += 1
                    try:
                        frame = await up.__anext__()
                    except StopAsyncIteration:  # the source ended during a timed pull
                        timing.active -= 1
                        self._ended(t0)
                        return
                    timing.active -= 1
                    t1 = perf()
                    own = t1 - t0 - (up_stats.sleep_ns - s0)
                    if len(times) < _MAX_TIMES:
                        times.append(own if own > 0 else 0)
                    self.wait_ns += t1 - t0
                    left -= 1
                    k = mark - left
                    up_stats.frames_out += k
                    stats.frames_in += k
                    mark = left
                    if frame.__class__ is audio:
                        if learn:
                            fmt = frame.format
                            up_stats.media_in(fmt)
                            learn = exact = False
                        elif fmt is not None and not _holds(fmt, frame):
                            up_stats.media_exactly()
                            fmt = None
                            exact = True
                        if exact:
                            up_stats.audio_s += frame.duration
                        else:
                            up_stats.audio_bytes += len(frame.data)
                    else:
                        frame = arrived(frame)
                    yield frame
                    if sink:
                        stats.record(perf() - t1)
                    if stop.requested:
                        break
                    if not left:
                        left = mark = every
                        continue
                    if timing.active:
                        continue
                async for frame in up:
                    left -= 1
                    if frame.__class__ is audio:
                        if exact:  # Audio.duration, spelt out: a property call costs as much
                            up_stats.audio_s += (
                                len(frame.data)
                                // (bps[frame.encoding] * frame.channels)
                                / frame.rate
                            )
                        else:
                            up_stats.audio_bytes += len(frame.data)
                    else:
                        k = mark - left
                        up_stats.frames_out += k
                        stats.frames_in += k
                        mark = left
                        frame = arrived(frame)
                    yield frame
                    if left and not timing.active and not stop.requested:
                        continue
                    break
                else:  # the source ended during an untimed pull
                    break
                if stop.requested:
                    break
                timed = True
                if not left:
                    up_stats.frames_out += mark
                    stats.frames_in += mark
                    left = mark = every
        except StageError:
            raise
        except Exception as exc:
            raise _stage_error(up_stats.id, exc) from exc
        finally:
            k = mark - left
            up_stats.frames_out += k
            stats.frames_in += k
            mark = left
        self._ended(None)  # it ended, or the run was asked to stop

    async def _from_upstream(self) -> AsyncGenerator[Frame, None]:
        # Fused: step the upstream generator from this one. The untimed pull (15 in 16) is the
        # hot path of the whole framework: a generator step, a class test, a countdown. The
        # frame counts are kept in locals and added to the stages' counters on each timed
        # pull, each event and at the end.
        stats = self.stats
        sink = self._sink
        up = self._up
        up_stats = self._up_stats
        assert up is not None and up_stats is not None
        up_in = self._up_input
        accept = self._accept
        stop = self._stop
        source = up_in is None  # its audio counts as the run's media
        # in bytes, when the plan knows the source's format (checked on each timed frame)
        fmt = up_stats.media_format if source else None
        exact = source and fmt is None
        timing = self._timing
        every = self._every
        arrived = self._arrived
        audio = Audio
        bps = BYTES_PER_SAMPLE
        n = 0  # frames pulled and not yet added to the counters
        skipped = 0  # of those, frames the link does not carry
        t0 = t1 = w0 = s0 = 0
        if stop is not None and stop.requested:
            self._ended(None)  # a source asked to stop: end its stream here
            return
        # the first pull is timed (every 0: only when nested in a timed one)
        left = every
        timed = bool(every) or timing.active > 0
        if timed:
            t0 = _perf()
            w0 = up_in.wait_ns if up_in is not None else 0
            s0 = up_stats.sleep_ns
            timing.active += 1
        try:
            async for frame in up:
                n += 1
                if timed:
                    timing.active -= 1
                    t1 = _perf()
                    own = t1 - t0 - (up_stats.sleep_ns - s0)
                    if up_in is not None:
                        own -= up_in.wait_ns - w0
                    # A stage that reads its input in a task of its own (a session, a tool
                    # router) can wait for input while no output is asked for: never bill a
                    # negative time.
                    up_stats.record(own if own > 0 else 0)
                    self.wait_ns += t1 - t0
                    up_stats.frames_out += n
                    stats.frames_in += n - skipped
                    n = skipped = 0
                    if fmt is not None and frame.__class__ is audio and not _holds(fmt, frame):
                        up_stats.media_exactly()
                        fmt = None
                        exact = True
                if frame.__class__ is audio:
                    if source:
                        if exact:  # Audio.duration, spelt out: a property call costs as much
                            up_stats.audio_s += (
                                len(frame.data)
                                // (bps[frame.encoding] * frame.channels)
                                / frame.rate
                            )
                        else:
                            up_stats.audio_bytes += len(frame.data)
                else:
                    up_stats.frames_out += n
                    stats.frames_in += n - skipped
                    n = skipped = 0
                    frame = arrived(frame)
                if accept is not None and not isinstance(frame, accept):
                    skipped += 1
                    if stop is not None and stop.requested:
                        timed = False
                        break
                    if timed:  # a timed pull goes on over frames the link does not carry
                        t0 = t1
                    else:
                        left -= 1
                        if left and not timing.active:
                            continue
                        if not left:
                            left = every
                        timed = True
                        t0 = _perf()
                    w0 = up_in.wait_ns if up_in is not None else 0
                    s0 = up_stats.sleep_ns
                    timing.active += 1
                    continue
                yield frame
                if timed and sink:  # the sink's work: from handing it the frame to its next ask
                    stats.record(_perf() - t1)
                if stop is not None and stop.requested:
                    timed = False
                    break
                left -= 1
                if left and not timing.active:
                    timed = False
                    continue
                if not left:
                    left = every
                timed = True
                t0 = _perf()
                w0 = up_in.wait_ns if up_in is not None else 0
                s0 = up_stats.sleep_ns
                timing.active += 1
        except StageError:
            raise
        except Exception as exc:
            raise _stage_error(up_stats.id, exc) from exc
        finally:
            up_stats.frames_out += n
            stats.frames_in += n - skipped
        if timed:  # the upstream ended during a timed pull
            timing.active -= 1
            self._ended(t0)
        else:
            self._ended(None)

    def _arrived(self, frame: Any) -> Frame:
        """A frame from the upstream stage that is not audio: an event to stamp and report,
        or not a frame at all."""
        up_stats = self._up_stats
        assert up_stats is not None
        if frame.__class__ not in _EVENT_CLASSES:  # name the stage that yielded it
            raise _stage_error(
                up_stats.id, TypeError(f"yielded {frame!r}, which is not a frame")
            ) from None
        event: Event = frame
        if not event.stage:
            event = with_stage(event, self._up_stamp)
            if self.on_event is not None:
                self.on_event(event)
        return event

    def _ended(self, t0: int | None) -> None:
        if t0 is not None:
            self.wait_ns += _perf() - t0
        self._last = 0
        if self.forward_ended is not None:
            self.forward_ended.set()


class _SinkInput(_Input):
    _sink = True


_EVENT_CLASSES = frozenset(EVENT_TYPES)


def _holds(fmt: AudioFormat, frame: Audio) -> bool:
    return (
        frame.encoding == fmt.encoding and frame.rate == fmt.rate and frame.channels == fmt.channels
    )


def _stage_error(stage_id: str, exc: BaseException) -> StageError:
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, PipelineError):
        message = f"{type(exc).__name__}: {message}"
    err = StageError(stage_id, message)
    err.exit_code = getattr(exc, "exit_code", 1)
    return err


@dataclass
class StageSummary:
    """One stage's counters. ``frames_in``/``frames_out`` are exact; ``p50_us``/``p99_us`` are
    over the ``timed`` frames (one in ``timed_every``, the first one included), and
    ``total_ms`` is exact when every frame was timed, else their mean times the frames."""

    id: str
    type: str
    frames_in: int
    frames_out: int
    p50_us: float | None
    p99_us: float | None
    total_ms: float
    reports: dict[str, Any] = field(default_factory=dict)
    timed: int = 0
    timed_every: int = 1


@dataclass
class LinkSummary:
    name: str
    fused: bool
    capacity: int | None
    overflow: str
    sent: int
    peak: int
    dropped: int
    purged: int
    feedback: bool


@dataclass
class RunSummary:
    """What a run did: per stage frames and time, per link peak depth and drops."""

    pipeline: str
    stages: list[StageSummary]
    links: list[LinkSummary]
    wall_s: float
    media_s: float
    status: str = "completed"  # completed | failed | interrupted
    #: events emitted, counted by type
    event_counts: dict[str, int] = field(default_factory=dict)
    #: the conversation as it happened: tool calls and results, final transcripts, errors
    notable: list[Event] = field(default_factory=list)
    #: stage times are over one frame in this many (every frame is counted)
    timed_every: int = 1

    @property
    def realtime_factor(self) -> float:
        return self.media_s / self.wall_s if self.wall_s > 0 else 0.0

    def stage(self, id: str) -> StageSummary:
        return next(s for s in self.stages if s.id == id)

    def link(self, name: str) -> LinkSummary:
        return next(lk for lk in self.links if lk.name == name)


def _percentiles(st: StageStats) -> tuple[float | None, float | None, float]:
    """p50 and p99 µs over the timed frames, and the total ms (estimated when sampled)."""
    times = st.times
    if not times:
        return None, None, 0.0
    import numpy as np

    a = np.frombuffer(times, dtype=np.int64)
    p50, p99 = np.percentile(a, [50, 99])
    total = float(a.sum())
    frames = st.frames_out or st.frames_in  # sinks are timed per frame consumed
    if st.timed_every > 1 and frames > len(a):
        total = total / len(a) * frames
    return float(p50) / 1e3, float(p99) / 1e3, total / 1e6


@dataclass
class _Segment:
    """A segment of the plan with this run's inbox and channels."""

    plan: Segment
    inbox: Inbox | None
    out_links: list[tuple[PlannedLink, Channel]]


class Runner:
    """Runs a checked plan once. Create, then ``await run()``.

    ``plan`` is a :class:`~pipeline.plan.Plan` (``pipeline.check()``); any number of runners
    may run one plan at the same time: a runner keeps its state (contexts, channels, counters)
    to itself. A :class:`~pipeline.graph.Pipeline` is checked first (ConfigError if it cannot
    run). ``metrics`` receives what the stages report through ``ctx.metrics``."""

    def __init__(
        self,
        plan: Plan | Pipeline,
        *,
        clock: Clock | None = None,
        fuse: bool = True,
        metrics: MetricsSink | None = None,
        timing_every: int = TIMING_EVERY,
    ):
        if not isinstance(plan, Plan):
            plan = plan.validate()
        self.plan = plan.runnable()
        self.metrics = metrics
        self.clock: Clock = clock or RealClock()
        self.fuse = fuse
        if timing_every < 1:
            raise UsageError(f"timing_every is 1 (time every frame) or more, got {timing_every}")
        #: one frame in this many is timed per stage (every frame is counted)
        self.timing_every = timing_every
        self.bus = Bus()
        self.stats: dict[str, StageStats] = {}
        self.contexts: dict[str, StageContext] = {}
        self.channels: dict[str, Channel] = {}
        self._stopping = asyncio.Event()
        self._stop = _StopFlag()
        self._tasks: list[asyncio.Task[None]] = []
        self._cancelled = False
        self.started_at = 0.0
        self.running = False
        self.status = "completed"
        self.on_tick: Callable[[Runner], None] | None = None
        #: called with every event a stage emits, once, as it leaves the stage (observers:
        #: ``pipeline serve`` times turns and traces tool calls with it)
        self.event_hooks: list[Callable[[Event], None]] = []
        self.event_counts: dict[str, int] = {}
        self.notable: list[Event] = []
        self.segments = self._prepare()

    def _on_event(self, frame: Event) -> None:
        counts = self.event_counts
        counts[frame.type] = counts.get(frame.type, 0) + 1
        if len(self.notable) < 500 and (
            isinstance(frame, ToolCall | ToolResult | ErrorReport)
            or (isinstance(frame, Transcript) and frame.final)
        ):
            self.notable.append(frame)
        for hook in self.event_hooks:
            hook(frame)

    # ------------------------------------------------------------------ preparing

    def _prepare(self) -> list[_Segment]:
        """This run's state beside the plan: a context and counters per stage, a channel
        per queued link, an inbox per segment head."""
        plan = self.plan
        segments = plan.segments(self.fuse)
        fused = {lk.name for seg in segments for lk in seg.fused}
        for n, st in plan.stages.items():
            stats = self.stats[n] = StageStats(
                n,
                st.spec.name,
                self.timing_every,
                st.output_format if st.spec.is_source else None,
            )
            self.contexts[n] = StageContext(
                id=n,
                type=st.spec.name,
                clock=_MeteredClock(self.clock, stats),
                base_dir=plan.base_dir,
                log=log.bind(stage=n),
                bus=self.bus,
                downstream=st.downstream,
                upstream=st.upstream,
                input_format=st.input_format,
                metrics=StageMetrics(self.metrics, n),
                stopping=self._stopping,
                on_wait=stats.add_wait,
            )
        for lk in plan.links:
            if lk.name not in fused:
                self.channels[lk.name] = Channel(
                    lk.name, lk.queue_capacity, lk.overflow or "block", feedback=lk.feedback
                )
        out: list[_Segment] = []
        for seg in segments:
            head = seg.stages[0]
            in_chans = [self.channels[lk.name] for lk in seg.inputs]
            spec = plan.stages[head].spec
            inbox = Inbox(in_chans, stop_at_forward_end=not spec.cycle_aware) if in_chans else None
            if inbox is not None:
                inbox.on_forward_end.append(self.contexts[head].forward_ended)
                if not any(not c.feedback for c in in_chans):  # only feedback inputs
                    self.contexts[head].forward_ended.set()
            out.append(_Segment(seg, inbox, [(lk, self.channels[lk.name]) for lk in seg.outputs]))
        return out

    @property
    def fused_links(self) -> set[str]:
        """Names of the links this run fuses (no channel)."""
        return {lk.name for lk in self.plan.links if lk.name not in self.channels}

    # ------------------------------------------------------------------ running

    def request_stop(self) -> None:
        """Ask the sources to end (graceful: everything downstream drains and closes)."""
        self._stop.requested = True
        self._stopping.set()
        self.status = "interrupted"

    def cancel(self) -> None:
        """Stop now: cancel every task (sinks still close their files)."""
        self._cancelled = True
        self.status = "interrupted"
        for t in self._tasks:
            t.cancel()

    async def run(self) -> RunSummary:
        self.started_at = time.perf_counter()
        self.running = True
        try:
            async with asyncio.TaskGroup() as tg:
                for seg in self.segments:
                    name = seg.plan.stages[0]
                    self._tasks.append(tg.create_task(self._run_segment(seg), name=name))
                if self.on_tick is not None:
                    tg.create_task(self._tick(list(self._tasks)))
        except* StageError as eg:
            self.status = "failed"
            err = _first(eg)
            raise err from err.__cause__
        except* asyncio.CancelledError:
            if not self._cancelled:
                raise
        finally:
            self.running = False
            self.wall_s = time.perf_counter() - self.started_at
        return self.summary()

    async def _tick(self, segments: list[asyncio.Task[None]]) -> None:
        """Feed the live view four times a second until every segment is done."""
        done = asyncio.Event()
        for t in segments:
            t.add_done_callback(lambda _t: done.set() if all(s.done() for s in segments) else None)
        while not done.is_set():
            if self.on_tick is not None:
                self.on_tick(self)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)

    async def _run_segment(self, seg: _Segment) -> None:
        plan = self.plan
        gens: list[AsyncIterator[Frame]] = []
        inputs: list[_Input] = []
        ended = False
        timing = _Timing()
        every = self.timing_every
        try:
            upstream: AsyncIterator[Frame] | None = None
            up_input: _Input | None = None
            up_stats: StageStats | None = None
            for i, sid in enumerate(seg.plan.stages):
                st = plan.stages[sid]
                spec = st.spec
                stats = self.stats[sid]
                ctx = self.contexts[sid]
                inp: _Input | None
                cls = _SinkInput if spec.is_sink else _Input
                if i == 0:
                    inp = (
                        cls(
                            stats,
                            timing,
                            every=every,
                            inbox=seg.inbox,
                            forward_ended=ctx.forward_ended,
                            on_event=self._on_event,
                        )
                        if seg.inbox is not None
                        else None
                    )
                else:
                    link = seg.plan.fused[i - 1]
                    prev = plan.stages[seg.plan.stages[i - 1]]
                    narrower = link.types != prev.out_types
                    inp = cls(
                        stats,
                        timing,
                        every=every,
                        upstream=upstream,
                        up_input=up_input,
                        up_stats=up_stats,
                        accept=tuple(link.types) if narrower else None,
                        stop=self._stop,
                        forward_ended=ctx.forward_ended,
                        on_event=self._on_event,
                    )
                if inp is not None:
                    inputs.append(inp)
                gen = call_stage(spec, None if inp is None else inp.frames(), st.values, ctx)
                gens.append(gen)
                upstream, up_input, up_stats = gen, inp, stats
            assert upstream is not None and up_stats is not None
            await self._pump(seg, upstream, up_input, up_stats, timing)
            ended = True
        finally:
            if seg.inbox is not None:
                seg.inbox.close()
            if ended:
                # Only a segment that ended closes its links. One that failed leaves them open:
                # the run is failing and the stages behind them are cancelled, not told their
                # input ended (a sink would then take it for a finished run and, say, write
                # an empty file for a session that never started).
                for ch in (c for _, c in seg.out_links):
                    ch.close()
            for sid, gen in reversed(list(zip(seg.plan.stages, gens, strict=False))):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except Exception as exc:  # a failing finally in a stage
                        log.warning("stage close failed", stage=sid, error=str(exc))
            for inp in reversed(inputs):  # the glue between stages: nothing to fail here
                await inp.aclose()

    async def _pump(
        self,
        seg: _Segment,
        gen: AsyncIterator[Frame],
        gen_input: _Input | None,
        stats: StageStats,
        timing: _Timing,
    ) -> None:
        """Drive the last stage of a segment and fan its frames out to its links."""
        last = self.plan.stages[seg.plan.stages[-1]].spec
        tail = _Input(
            StageStats("", ""),
            timing,
            # a sink yields nothing: its one pull lasts the whole run and must not time the rest
            every=0 if last.is_sink else self.timing_every,
            upstream=gen,
            up_input=gen_input,
            up_stats=stats,
            stop=self._stop,
            on_event=self._on_event,
        )
        routes = [(tuple(lk.types), ch) for lk, ch in seg.out_links]
        try:
            tail_types = self.plan.stages[seg.plan.stages[-1]].out_types
            if len(routes) == 1 and set(routes[0][0]) >= tail_types:
                only = routes[0][1]  # one link that takes everything: no per-frame type test
                async for frame in tail.frames():
                    await only.send(frame)
                return
            async for frame in tail.frames():
                for types, ch in routes:
                    if isinstance(frame, types):
                        await ch.send(frame)
        finally:
            await tail.aclose()

    # ------------------------------------------------------------------ reporting

    def summary(self) -> RunSummary:
        p = self.plan
        stages = []
        for n, st in self.stats.items():
            p50, p99, total = _percentiles(st)
            stages.append(
                StageSummary(
                    n,
                    st.type,
                    st.frames_in,
                    st.frames_out,
                    p50,
                    p99,
                    total,
                    dict(self.contexts[n].reports),
                    len(st.times),
                    st.timed_every,
                )
            )
        links = []
        for lk in p.links:
            ch = self.channels.get(lk.name)
            if ch is None:
                links.append(
                    LinkSummary(
                        lk.name, True, None, "-", self.stats[lk.dst].frames_in, 0, 0, 0, lk.feedback
                    )
                )
            else:
                links.append(
                    LinkSummary(
                        lk.name,
                        False,
                        ch.capacity,
                        ch.overflow,
                        ch.sent,
                        ch.peak,
                        ch.dropped,
                        ch.purged,
                        lk.feedback,
                    )
                )
        media = max((st.media_s for st in self.stats.values()), default=0.0)
        wall = getattr(self, "wall_s", time.perf_counter() - self.started_at)
        return RunSummary(
            p.name,
            stages,
            links,
            wall,
            media,
            self.status,
            dict(self.event_counts),
            list(self.notable),
            self.timing_every,
        )


def _first(eg: BaseExceptionGroup[StageError]) -> StageError:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first(exc)
        return exc
    raise AssertionError("empty exception group")
