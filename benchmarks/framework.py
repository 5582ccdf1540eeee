"""Framework overhead: CPU per frame through 5 pass-through stages, and per-frame latency.

Designs measured in the same run:

* ``plain generators``: five async generators chained by hand (the floor);
* ``asyncio.Queue(8) + tasks``: the textbook design, one task per stage;
* ``pipeline fused``: our Runner, the five stages fused into one segment (stats on);
* ``pipeline queued``: our Runner with every link a bounded channel (``fuse=False``);
* ``pipecat``: Pipecat's Pipeline of 5 pass-through FrameProcessors, when ``pipecat-ai`` is
  installed (the optional ``bench`` extra).

**Cost** is CPU time of this process per frame, with the fixed cost of a run (event loop, tasks,
start and stop) taken out by differencing a long and a short run (``cpu_per_item_us``). Per-hop
figures divide it by the 6 links a frame crosses (source → 5 stages → sink).

**Latency** is the time from the source handing a frame on to the sink receiving it, with the
source paced (a short sleep between frames) so every frame finds the pipeline empty: the cost
of crossing it, not time spent queued behind earlier frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pipeline import Audio, Frame, Pipeline, stage

from .harness import Row, compare, cpu_per_item_us, quiet_pipecat, row

STAGES = 5
HOPS = STAGES + 1
FRAME = Audio(b"\x00\x00" * 160, "pcm16", 8000)
#: pause between frames in the latency runs (seconds)
GAP_S = 0.0002

_perf = time.perf_counter_ns


@stage("bench_source", emits=(Audio,), register=False)
async def _source(*, n: int = 1000, gap_s: float = 0.0) -> AsyncIterator[Frame]:
    """n 20 ms frames, as fast as possible (gap_s 0) or with a pause between them, each
    stamped with the time it is handed on (pts: perf_counter seconds) when paced."""
    f = FRAME
    if not gap_s:
        for _ in range(n):
            yield f
        return
    for _ in range(n):
        await asyncio.sleep(gap_s)
        yield Audio(f.data, "pcm16", 8000, 1, _perf() / 1e9)


@stage("bench_pass", passthrough=True, register=False)
async def _pass(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Forward every frame."""
    async for f in frames:
        yield f


@stage("bench_sink", register=False)
async def _sink(frames: AsyncIterator[Frame], *, out: Any = None) -> AsyncIterator[Frame]:
    """Consume; with ``out`` (a list), record each frame's latency in µs."""
    if out is None:
        async for _ in frames:
            pass
    else:
        async for f in frames:
            out.append(_perf() / 1e3 - f.pts * 1e6)  # type: ignore[union-attr]
    return
    yield  # pragma: no cover


async def _plain(n: int, gap_s: float = 0.0, out: list[float] | None = None) -> None:
    async def src() -> AsyncIterator[Frame]:
        for _ in range(n):
            if gap_s:
                await asyncio.sleep(gap_s)
                yield Audio(FRAME.data, "pcm16", 8000, 1, _perf() / 1e9)
            else:
                yield FRAME

    async def hop(it: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in it:
            yield f

    it: AsyncIterator[Frame] = src()
    for _ in range(STAGES):
        it = hop(it)
    async for f in it:
        if out is not None:
            out.append(_perf() / 1e3 - f.pts * 1e6)


async def _queues(n: int, gap_s: float = 0.0, out: list[float] | None = None) -> None:
    qs: list[asyncio.Queue[Frame | None]] = [asyncio.Queue(8) for _ in range(STAGES + 1)]

    async def src() -> None:
        for _ in range(n):
            if gap_s:
                await asyncio.sleep(gap_s)
                await qs[0].put(Audio(FRAME.data, "pcm16", 8000, 1, _perf() / 1e9))
            else:
                await qs[0].put(FRAME)
        await qs[0].put(None)

    async def hop(i: int) -> None:
        while (f := await qs[i].get()) is not None:
            await qs[i + 1].put(f)
        await qs[i + 1].put(None)

    async def sink() -> None:
        while (f := await qs[STAGES].get()) is not None:
            if out is not None:
                out.append(_perf() / 1e3 - f.pts * 1e6)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(src())
        for i in range(STAGES):
            tg.create_task(hop(i))
        tg.create_task(sink())


def _ours(n: int, gap_s: float = 0.0, out: list[float] | None = None) -> Pipeline:
    p = Pipeline("bench")
    p.add("src", _source, n=n, gap_s=gap_s)
    ids = [p.add(f"s{i}", _pass) for i in range(STAGES)]
    p.add("sink", _sink, out=out)
    p.link("src", *ids, "sink")
    p.validate()
    return p


async def _run_ours(p: Pipeline, fuse: bool) -> None:
    from pipeline.runtime import Runner

    await Runner(p, fuse=fuse).run()


async def _pipecat(
    n: int, gap_s: float = 0.0, out: list[float] | None = None, lean: bool = False
) -> None:
    """One run of Pipecat's Pipeline over n frames (needs pipecat-ai): its defaults, or
    ``lean``: processors in direct mode (no queue and task each), turn tracking, RTVI, idle
    timeout and the dangling-task check off."""
    from pipecat.frames.frames import EndFrame, InputAudioRawFrame
    from pipecat.pipeline.pipeline import Pipeline as PcPipeline
    from pipecat.pipeline.runner import PipelineRunner
    from pipecat.pipeline.task import PipelineTask
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class Pass(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    class Last(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                if out is not None:
                    out.append(_perf() / 1e3 - frame.bench_t0 / 1e3)
                return
            await self.push_frame(frame, direction)

    kw: dict[str, Any] = {"enable_direct_mode": True} if lean else {}
    procs = [Pass(**kw) for _ in range(STAGES - 1)] + [Last(**kw)]
    if lean:
        task = PipelineTask(
            PcPipeline(procs),
            enable_turn_tracking=False,
            enable_rtvi=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
    else:
        task = PipelineTask(PcPipeline(procs))
    runner = PipelineRunner(handle_sigint=False)

    async def feed() -> None:
        for _ in range(n):
            if gap_s:
                await asyncio.sleep(gap_s)
            f = InputAudioRawFrame(audio=FRAME.data, sample_rate=8000, num_channels=1)
            f.bench_t0 = _perf()
            await task.queue_frame(f)
        await task.queue_frame(EndFrame())

    await asyncio.gather(runner.run(task), feed())


def _cost(make: Callable[[int], Any], n: int, n0: int, repeat: int) -> list[float]:
    return list(cpu_per_item_us(lambda k: asyncio.run(make(k)), n=n, n0=n0, repeat=repeat))


def _latency(run_once: Callable[[list[float]], object]) -> list[float]:
    out: list[float] = []
    run_once(out)
    return out[10:]  # the first frames pay for warm-up


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """The framework rows: cost per frame and per hop, latency p50/p99, each with its baseline."""
    n, n0, repeat = (400, 40, 2) if tiny else (4000, 400, 5) if quick else (20000, 2000, 15)
    lat_n = 60 if tiny else 500 if quick else 2000
    g = "framework"
    plain = row(g, "plain generators, 5 hops", _cost(_plain, n, n0, repeat))
    queues = row(g, "asyncio.Queue(8) + tasks, 5 hops", _cost(_queues, n, n0, repeat))
    fused = row(
        g,
        "pipeline fused, 5 hops",
        _cost(lambda k: _run_ours(_ours(k), True), n, n0, repeat),
    )
    queued = row(
        g,
        "pipeline queued, 5 hops",
        _cost(lambda k: _run_ours(_ours(k), False), n, n0, repeat),
    )
    rows = [plain, queues, compare(fused, plain), compare(queued, queues)]
    per_fused = row(
        g, "pipeline, per fused hop", [a / HOPS for a in fused.samples], note="goal ≤ 2 µs"
    )
    per_queued = row(
        g, "pipeline, per queued hop", [a / HOPS for a in queued.samples], note="goal ≤ 12 µs"
    )
    per_plain = row(g, "plain generators, per hop", [a / HOPS for a in plain.samples])
    per_q = row(g, "asyncio.Queue + tasks, per hop", [a / HOPS for a in queues.samples])
    rows += [per_plain, compare(per_fused, per_plain), per_q, compare(per_queued, per_q)]

    # latency through the 5 stages, source paced so the pipeline is empty when a frame arrives
    lat_q = row(
        g,
        "latency asyncio.Queue + tasks",
        _latency(lambda out: asyncio.run(_queues(lat_n, GAP_S, out))),
        unit="µs",
    )
    lat_plain = row(
        g,
        "latency plain generators",
        _latency(lambda out: asyncio.run(_plain(lat_n, GAP_S, out))),
        unit="µs",
    )
    lat_fused = row(
        g,
        "latency pipeline fused",
        _latency(lambda out: asyncio.run(_run_ours(_ours(lat_n, GAP_S, out), True))),
        unit="µs",
    )
    lat_queued = row(
        g,
        "latency pipeline queued",
        _latency(lambda out: asyncio.run(_run_ours(_ours(lat_n, GAP_S, out), False))),
        unit="µs",
    )
    rows += [lat_plain, compare(lat_fused, lat_plain), lat_q, compare(lat_queued, lat_q)]

    if quiet_pipecat():
        pn, pn0 = max(100, n // 5), max(20, n0 // 5)
        pc = row(
            g,
            "pipecat Pipeline, 5 processors",
            _cost(_pipecat, pn, pn0, max(2, repeat // 2)),
        )
        lean = row(
            g,
            "pipecat Pipeline, extras off + direct mode",
            _cost(lambda k: _pipecat(k, lean=True), pn, pn0, max(2, repeat // 2)),
        )
        pc_hop = row(g, "pipecat, per hop", [a / HOPS for a in pc.samples])
        lat_pc = row(
            g,
            "latency pipecat Pipeline",
            _latency(lambda out: asyncio.run(_pipecat(max(60, lat_n // 2), GAP_S, out))),
            unit="µs",
        )
        rows += [
            pc,
            compare(row(g, "pipeline queued vs pipecat", queued.samples), pc),
            compare(row(g, "pipeline fused vs pipecat", fused.samples), pc),
            lean,
            compare(row(g, "pipeline queued vs pipecat lean", queued.samples), lean),
            pc_hop,
            lat_pc,
            compare(row(g, "latency pipeline queued vs pipecat", lat_queued.samples, "µs"), lat_pc),
        ]
    return rows
