"""Framework overhead: µs per frame through 5 pass-through stages.

Designs measured in the same run:

* ``plain generators``: five async generators chained by hand (the floor);
* ``asyncio.Queue(8) + tasks``: the textbook design, one task per stage;
* ``pipeline fused``: our Runner, the five stages fused into one segment (stats on);
* ``pipeline queued``: our Runner with every link a bounded channel (``fuse=False``);
* ``pipecat``: Pipecat's Pipeline of 5 pass-through FrameProcessors, when ``pipecat-ai`` is
  installed (the optional ``bench`` extra).

Per-hop figures divide the whole cost by the 6 hops (source → 5 stages → sink).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from pipeline import Audio, Frame, Pipeline, stage

from .harness import Row, compare, row

STAGES = 5
FRAME = Audio(b"\x00\x00" * 160, "pcm16", 8000)


@stage("bench_source", emits=(Audio,), register=False)
async def _source(*, n: int = 1000) -> AsyncIterator[Frame]:
    """n identical 20 ms frames, as fast as possible."""
    f = FRAME
    for _ in range(n):
        yield f


@stage("bench_pass", passthrough=True, register=False)
async def _pass(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Forward every frame."""
    async for f in frames:
        yield f


@stage("bench_sink", register=False)
async def _sink(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Consume."""
    async for _ in frames:
        pass
    return
    yield  # pragma: no cover


async def _plain(n: int) -> None:
    async def src() -> AsyncIterator[Frame]:
        for _ in range(n):
            yield FRAME

    async def hop(it: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in it:
            yield f

    it: AsyncIterator[Frame] = src()
    for _ in range(STAGES):
        it = hop(it)
    async for _ in it:
        pass


async def _queues(n: int) -> None:
    qs: list[asyncio.Queue[Frame | None]] = [asyncio.Queue(8) for _ in range(STAGES + 1)]

    async def src() -> None:
        for _ in range(n):
            await qs[0].put(FRAME)
        await qs[0].put(None)

    async def hop(i: int) -> None:
        while (f := await qs[i].get()) is not None:
            await qs[i + 1].put(f)
        await qs[i + 1].put(None)

    async def sink() -> None:
        while await qs[STAGES].get() is not None:
            pass

    async with asyncio.TaskGroup() as tg:
        tg.create_task(src())
        for i in range(STAGES):
            tg.create_task(hop(i))
        tg.create_task(sink())


def _ours(n: int, fuse: bool) -> Pipeline:
    p = Pipeline("bench")
    p.add("src", _source, n=n)
    ids = [p.add(f"s{i}", _pass) for i in range(STAGES)]
    p.add("sink", _sink)
    p.link("src", *ids, "sink")
    p.validate()
    return p


async def _run_ours(p: Pipeline, fuse: bool) -> None:
    from pipeline.runtime import Runner

    await Runner(p, fuse=fuse).run()


def _time(coro_factory: Any, n: int, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        asyncio.run(coro_factory())
        out.append((time.perf_counter_ns() - t0) / n / 1e3)
    return out


def _pipecat(n: int, repeat: int) -> list[float] | None:
    try:
        from pipecat.frames.frames import EndFrame, InputAudioRawFrame
        from pipecat.pipeline.pipeline import Pipeline as PcPipeline
        from pipecat.pipeline.runner import PipelineRunner
        from pipecat.pipeline.task import PipelineTask
        from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    except Exception:
        return None

    class Pass(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    async def once() -> None:
        task = PipelineTask(PcPipeline([Pass() for _ in range(STAGES)]))
        runner = PipelineRunner(handle_sigint=False)

        async def feed() -> None:
            for _ in range(n):
                await task.queue_frame(
                    InputAudioRawFrame(audio=FRAME.data, sample_rate=8000, num_channels=1)
                )
            await task.queue_frame(EndFrame())

        await asyncio.gather(runner.run(task), feed())

    return _time(once, n, repeat)


def run(quick: bool = False) -> list[Row]:
    """The framework rows, each with its baseline."""
    n = 2000 if quick else 20000
    repeat = 7 if quick else 21
    plain = row("framework", "plain generators, 5 hops", _time(lambda: _plain(n), n, repeat))
    queues = row(
        "framework", "asyncio.Queue(8) + tasks, 5 hops", _time(lambda: _queues(n), n, repeat)
    )
    fused_p = _ours(n, True)
    queued_p = _ours(n, False)
    fused = row(
        "framework", "pipeline fused, 5 hops", _time(lambda: _run_ours(fused_p, True), n, repeat)
    )
    queued = row(
        "framework", "pipeline queued, 5 hops", _time(lambda: _run_ours(queued_p, False), n, repeat)
    )
    rows = [plain, queues, compare(fused, plain), compare(queued, queues)]
    hops = STAGES + 1  # source -> 5 stages -> sink
    per_fused = row("framework", "pipeline, per fused hop", [a / hops for a in fused.samples])
    per_queued = row("framework", "pipeline, per queued hop", [a / hops for a in queued.samples])
    rows += [per_fused, per_queued]
    pc = _pipecat(max(200, n // 10), max(3, repeat // 3))
    if pc is not None:
        pcr = row("framework", "pipecat Pipeline, 5 processors", pc)
        rows.append(pcr)
        rows.append(compare(row("framework", "pipeline fused vs pipecat", fused.samples), pcr))
    return rows
