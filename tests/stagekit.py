"""Small stages for testing the runtime (referenced by module path from test YAML)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from pipeline import Audio, Frame, SpeechStarted, StageContext, Text, stage
from pipeline.frames import EVENT_TYPES, AudioFormat

#: generators of these stages currently open (aiostream's assert_cleanup idea): 0 after a run
OPEN: dict[str, int] = {"count": 0}
SEEN: dict[str, list[Frame]] = {}


def _fmt(params: object, _in: AudioFormat | None) -> AudioFormat:
    return AudioFormat("pcm16", 8000)


@stage("kit_source", emits=(Audio,), output_format=_fmt, register=False)
async def source(*, n: int = 5, samples: int = 160, ctx: StageContext) -> AsyncIterator[Frame]:
    """Emit n frames of pcm16 8 kHz whose samples hold the frame index, paced 20 ms apart.

    Parameters:
        n: how many frames
        samples: samples per frame
    """
    t0 = ctx.clock.now()
    OPEN["count"] += 1
    try:
        for i in range(n):
            await ctx.clock.sleep_until(t0 + i * samples / 8000)
            yield Audio(bytes([i % 256, 0]) * samples, "pcm16", 8000, pts=i * samples / 8000)
    finally:
        OPEN["count"] -= 1


@stage("kit_events", emits=(Text,), register=False)
async def events(*, n: int = 3, gap: float = 0.0, ctx: StageContext) -> AsyncIterator[Frame]:
    """Emit n text frames, `gap` seconds apart on the clock (and end `gap` after the last).

    Parameters:
        n: how many frames
        gap: seconds between frames
    """
    t0 = ctx.clock.now()
    for i in range(n):
        if gap:
            await ctx.clock.sleep_until(t0 + i * gap)
        yield Text(f"t{i}")
    if gap:
        await ctx.clock.sleep_until(t0 + n * gap)  # then ends


@stage("kit_pass", passthrough=True, register=False)
async def passthrough(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Forward everything."""
    OPEN["count"] += 1
    try:
        async for f in frames:
            yield f
    finally:
        OPEN["count"] -= 1


@stage("kit_fail", passthrough=True, register=False)
async def fail_after(frames: AsyncIterator[Frame], *, after: int = 2) -> AsyncIterator[Frame]:
    """Raise after forwarding `after` frames.

    Parameters:
        after: frames to forward first
    """
    i = 0
    async for f in frames:
        if i == after:
            raise ValueError(f"boom after {after}")
        i += 1
        yield f


@stage("kit_collect", accepts=tuple([Audio, *EVENT_TYPES]), register=False)
async def collect(frames: AsyncIterator[Frame], *, key: str = "out") -> AsyncIterator[Frame]:
    """Remember every frame under SEEN[key].

    Parameters:
        key: where to keep them
    """
    seen = SEEN.setdefault(key, [])
    OPEN["count"] += 1
    try:
        async for f in frames:
            seen.append(f)
    finally:
        OPEN["count"] -= 1
    return
    yield  # pragma: no cover


@stage("kit_echo_events", accepts=(Text,), emits=(SpeechStarted,), register=False)
async def echo_events(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Answer each text with a speech_started."""
    async for _f in frames:
        yield SpeechStarted(pts=0.0)


@stage("kit_loop", passthrough=True, cycle_aware=True, register=False)
async def loop_head(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Forward texts into the cycle and remember the answers coming back; once the forward
    input has ended, end as soon as every text sent has been answered (like a session waiting
    for the tool results it is owed)."""
    owed = 0
    answered = 0
    it = frames.__aiter__()
    while not (ctx.forward_ended.is_set() and answered >= owed):
        nxt = asyncio.ensure_future(it.__anext__())
        try:
            if not ctx.forward_ended.is_set():
                ended = asyncio.ensure_future(ctx.forward_ended.wait())
                await asyncio.wait({nxt, ended}, return_when=asyncio.FIRST_COMPLETED)
                ended.cancel()
                if not nxt.done() and answered >= owed:
                    return
            f = await nxt
        except StopAsyncIteration:
            return
        finally:
            if not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await nxt
        if isinstance(f, Text):
            owed += 1
            yield f
        elif isinstance(f, SpeechStarted):
            answered += 1
            SEEN.setdefault("answers", []).append(f)
        else:
            yield f


@stage("kit_slow_sink", accepts=tuple([Audio, *EVENT_TYPES]), register=False)
async def slow_sink(
    frames: AsyncIterator[Frame], *, each: float = 0.1, key: str = "slow", ctx: StageContext
) -> AsyncIterator[Frame]:
    """Take `each` seconds (on the clock) per frame; remember them under SEEN[key].

    Parameters:
        each: seconds per frame
        key: where to keep them
    """
    seen = SEEN.setdefault(key, [])
    OPEN["count"] += 1
    try:
        async for f in frames:
            await ctx.clock.sleep(each)
            seen.append(f)
    finally:
        OPEN["count"] -= 1
    return
    yield  # pragma: no cover
