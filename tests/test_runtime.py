"""Running graphs: fan-in, fan-out, cycles, end of stream, errors, cancellation, stop, fusion.

Every run uses a VirtualClock: paced sources run at full speed, nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog

from pipeline import (
    Audio,
    Frame,
    Interrupt,
    Pipeline,
    SpeechStarted,
    StageContext,
    StageError,
    Text,
    VirtualClock,
    stage,
)
from pipeline.runtime import Runner, RunSummary
from tests import stagekit as kit

HOOK: dict[str, Callable[[], None]] = {}


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    kit.SEEN.clear()
    kit.OPEN["count"] = 0
    HOOK.clear()
    yield
    assert kit.OPEN["count"] == 0, "a stage generator was left open"


@stage("audio_only", accepts=(Audio,), register=False)
async def audio_only(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Sink for audio; fails on anything else."""
    seen = kit.SEEN.setdefault("audio_only", [])
    async for f in frames:
        assert isinstance(f, Audio), f
        seen.append(f)
    return
    yield  # pragma: no cover


@stage("text_only", accepts=(Text,), register=False)
async def text_only(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Sink for text; fails on anything else."""
    seen = kit.SEEN.setdefault("text_only", [])
    async for f in frames:
        assert isinstance(f, Text), f
        seen.append(f)
    return
    yield  # pragma: no cover


@stage("hook_after", passthrough=True, register=False)
async def hook_after(frames: AsyncIterator[Frame], *, n: int = 3) -> AsyncIterator[Frame]:
    """Forward; call HOOK['fn'] after forwarding n frames.

    Parameters:
        n: frames before the hook
    """
    i = 0
    async for f in frames:
        yield f
        i += 1
        if i == n:
            HOOK["fn"]()


def run(p: Pipeline, *, fuse: bool = True, on_start: Callable[[Any], None] | None = None) -> Any:
    async def main() -> RunSummary:
        # a guard against a hang, not a pause: a correct run ends long before
        return await asyncio.wait_for(
            p.run_async(clock=VirtualClock(), fuse=fuse, on_start=on_start), 10
        )

    return asyncio.run(main())


def texts(key: str) -> list[str]:
    return [f.text for f in kit.SEEN.get(key, []) if isinstance(f, Text)]


def audio_ids(key: str) -> list[int]:
    return [f.data[0] for f in kit.SEEN.get(key, []) if isinstance(f, Audio)]


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("fuse", [True, False])
def test_linear_chain_delivers_everything_in_order(fuse: bool) -> None:
    p = Pipeline("line")
    p.add("src", kit.source, n=7)
    p.add("a", kit.passthrough)
    p.add("b", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("src -> a -> b -> out")
    s = run(p, fuse=fuse)
    assert audio_ids("out") == list(range(7))
    assert s.status == "completed"
    assert [(st.id, st.frames_in, st.frames_out) for st in s.stages] == [
        ("src", 0, 7),
        ("a", 7, 7),
        ("b", 7, 7),
        ("out", 7, 0),
    ]
    assert [(lk.name, lk.fused, lk.sent) for lk in s.links] == [
        ("src -> a", fuse, 7),
        ("a -> b", fuse, 7),
        ("b -> out", fuse, 7),
    ]
    assert s.media_s == pytest.approx(7 * 0.02)


def test_fan_in_merges_and_ends_when_every_input_has_ended() -> None:
    p = Pipeline("fan-in")
    p.add("src", kit.source, n=4)
    p.add("ev", kit.events, n=3, gap=0.05)
    p.add("mix", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("src -> mix -> out")
    p.chain("ev -> mix")
    s = run(p)
    assert audio_ids("out") == [0, 1, 2, 3]
    assert texts("out") == ["t0", "t1", "t2"]
    assert s.stage("mix").frames_in == 7
    assert not s.link("src -> mix").fused and not s.link("ev -> mix").fused


@pytest.mark.parametrize("fuse", [True, False])
def test_fan_out_gives_each_link_only_what_its_destination_accepts(fuse: bool) -> None:
    p = Pipeline("fan-out")
    p.add("src", kit.source, n=3)
    p.add("ev", kit.events, n=2)
    p.add("mix", kit.passthrough)
    p.add("sound", audio_only)
    p.add("words", text_only)
    p.add("all", kit.collect)
    p.chain("src -> mix -> sound")
    p.chain("ev -> mix -> words")
    p.chain("mix -> all")
    s = run(p, fuse=fuse)
    assert audio_ids("audio_only") == [0, 1, 2]
    assert texts("text_only") == ["t0", "t1"]
    assert len(kit.SEEN["out"]) == 5
    assert (s.link("mix -> sound").sent, s.link("mix -> words").sent) == (3, 2)
    assert s.link("mix -> all").sent == 5


@pytest.mark.parametrize("capacity", [1, 8])
def test_end_of_stream_drains_everything_queued(capacity: int) -> None:
    p = Pipeline("drain")
    p.add("src", kit.source, n=20)
    p.add("slow", kit.slow_sink, each=1.0)  # 50 times slower than the source
    p.link("src", "slow", capacity=capacity)
    s = run(p)
    assert audio_ids("slow") == list(range(20))
    assert s.link("src -> slow").peak == capacity
    assert s.link("src -> slow").dropped == 0


def test_drop_oldest_link_in_a_graph() -> None:
    p = Pipeline("live")
    p.add("src", kit.source, n=20)
    p.add("slow", kit.slow_sink, each=1.0)
    p.link("src", "slow", capacity=2, overflow="drop_oldest")
    s = run(p)
    got = audio_ids("slow")
    lk = s.link("src -> slow")
    assert got[-2:] == [18, 19]  # the newest survive
    assert lk.sent == 20 and lk.dropped == 20 - len(got)
    assert got == sorted(got)


def test_drop_newest_link_in_a_graph() -> None:
    p = Pipeline("live")
    p.add("src", kit.source, n=20)
    p.add("slow", kit.slow_sink, each=1.0)
    p.link("src", "slow", capacity=2, overflow="drop_newest")
    s = run(p)
    got = audio_ids("slow")
    assert got[:3] == [0, 1, 2]  # the first is taken at once, the next two queued
    assert s.link("src -> slow").dropped == 20 - len(got) > 0


# ---------------------------------------------------------------- cycles


def cycle(loop_stage: Any, gap: float) -> Pipeline:
    p = Pipeline("cycle")
    p.add("src", kit.events, n=3, gap=gap)
    p.add("agent", loop_stage)
    p.add("tools", kit.echo_events)
    p.add("out", kit.collect)
    p.chain("src -> agent -> tools -> agent")
    p.chain("agent -> out")
    return p


@pytest.mark.parametrize("gap", [0.0, 1.0])
@pytest.mark.parametrize("fuse", [True, False])
def test_cycle_ends_by_itself_after_answers_owed(gap: float, fuse: bool) -> None:
    p = cycle(kit.loop_head, gap)
    s = run(p, fuse=fuse)
    assert texts("out") == ["t0", "t1", "t2"]
    assert len(kit.SEEN["answers"]) == 3  # every answer owed came back before the end
    assert all(isinstance(f, SpeechStarted) and f.stage == "tools" for f in kit.SEEN["answers"])
    fb = s.link("tools -> agent")
    assert fb.feedback and not fb.fused and fb.sent == 3
    assert not s.link("agent -> tools").feedback


def test_cycle_through_a_plain_stage_ends_too() -> None:
    """A stage that is not cycle-aware ends when its forward inputs end."""
    p = cycle(kit.passthrough, 1.0)
    s = run(p)
    assert texts("out") == ["t0", "t1", "t2"]
    assert s.status == "completed"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("fuse", [True, False])
def test_failing_stage_names_itself_and_every_stage_closes(fuse: bool) -> None:
    p = Pipeline("fails")
    p.add("src", kit.source, n=50)
    p.add("a", kit.passthrough)
    p.add("bad", kit.fail_after, after=3)
    p.add("b", kit.passthrough)
    p.add("out", kit.collect)
    p.add("side", kit.slow_sink, each=0.5)
    p.chain("src -> a -> bad -> b -> out")
    p.chain("a -> side")
    with pytest.raises(StageError) as e:
        run(p, fuse=fuse)
    assert e.value.stage == "bad"
    assert str(e.value) == "stage 'bad' failed: ValueError: boom after 3"
    assert isinstance(e.value.__cause__, ValueError)
    assert e.value.exit_code == 1
    assert audio_ids("out") == [0, 1, 2]
    # the fixture checks that every generator (sources, transforms, sinks) was closed


def test_failing_sink_names_the_sink() -> None:
    @stage("picky", accepts=(Audio,), register=False)
    async def picky(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            if isinstance(f, Audio) and f.data[0] == 2:
                raise RuntimeError("frame 2 is not welcome")
        return
        yield  # pragma: no cover

    p = Pipeline("sink fails")
    p.add("src", kit.source, n=10)
    p.add("a", kit.passthrough)
    p.add("sink", picky)
    p.chain("src -> a -> sink")
    with pytest.raises(StageError, match=r"^stage 'sink' failed: RuntimeError: frame 2"):
        run(p)


def test_failing_source_in_a_fan_in() -> None:
    @stage("bad_source", emits=(Text,), register=False)
    async def bad_source(*, ctx: StageContext) -> AsyncIterator[Frame]:
        yield Text("one")
        await ctx.clock.sleep(0.1)
        raise OSError("device unplugged")

    p = Pipeline("source fails")
    p.add("mic", bad_source)
    p.add("src", kit.source, n=100)
    p.add("mix", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("mic -> mix -> out")
    p.chain("src -> mix")
    with pytest.raises(StageError) as e:
        run(p)
    assert e.value.stage == "mic"
    assert str(e.value) == "stage 'mic' failed: OSError: device unplugged"


def test_stage_error_keeps_the_exit_code_of_a_pipeline_error() -> None:
    from pipeline import FormatError

    @stage("strict", accepts=(Audio,), emits=(Audio,), register=False)
    async def strict(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for _f in frames:
            raise FormatError("gets 8000 Hz audio", "add a resample")
            yield _f  # pragma: no cover

    p = Pipeline("format")
    p.add("src", kit.source, n=2)
    p.add("s", strict)
    p.add("out", kit.collect)
    p.chain("src -> s -> out")
    with pytest.raises(StageError) as e:
        run(p)
    assert str(e.value) == "stage 's' failed: gets 8000 Hz audio; add a resample"
    assert e.value.exit_code == 2


# ---------------------------------------------------------------- cancel and stop


@pytest.mark.parametrize("fuse", [True, False])
def test_cancel_closes_every_generator(fuse: bool) -> None:
    runner: list[Runner] = []
    HOOK["fn"] = lambda: runner[0].cancel()
    p = Pipeline("cancel")
    p.add("src", kit.source, n=10_000)
    p.add("a", kit.passthrough)
    p.add("hook", hook_after, n=5)
    p.add("out", kit.collect)
    p.add("slow", kit.slow_sink, each=0.01)
    p.chain("src -> a -> hook -> out")
    p.chain("a -> slow")
    s = run(p, fuse=fuse, on_start=runner.append)
    assert s.status == "interrupted"
    assert s.stage("src").frames_out < 100
    assert 4 <= len(audio_ids("out")) <= 5
    # OPEN == 0 (checked by the fixture): source, transforms and both sinks ran their finally


@pytest.mark.parametrize("fuse", [True, False])
def test_request_stop_ends_sources_and_drains_to_the_sinks(fuse: bool) -> None:
    runner: list[Runner] = []
    HOOK["fn"] = lambda: runner[0].request_stop()
    p = Pipeline("stop")
    p.add("src", kit.source, n=10_000)
    p.add("hook", hook_after, n=5)
    p.add("a", kit.passthrough)
    p.add("out", kit.collect)
    p.add("slow", kit.slow_sink, each=1.0)
    p.chain("src -> hook -> a -> out")
    p.link("hook", "slow", capacity=64)
    s = run(p, fuse=fuse, on_start=runner.append)
    assert s.status == "interrupted"
    emitted = s.stage("src").frames_out
    assert 5 <= emitted < 10
    assert audio_ids("out") == list(range(emitted))  # everything emitted reached both sinks
    assert audio_ids("slow") == list(range(emitted))


# ---------------------------------------------------------------- fused and queued


def test_fused_and_queued_runs_give_identical_outputs() -> None:
    def build() -> Pipeline:
        p = Pipeline("same")
        p.add("src", kit.source, n=30)
        p.add("ev", kit.events, n=4, gap=0.13)
        p.add("a", kit.passthrough)
        p.add("b", kit.passthrough)
        p.add("out", kit.collect)
        p.add("sound", audio_only)
        p.chain("src -> a -> b -> out")
        p.chain("ev -> a")
        p.chain("b -> sound")
        return p

    run(build(), fuse=True)
    fused = {k: list(v) for k, v in kit.SEEN.items()}
    kit.SEEN.clear()
    s = run(build(), fuse=False)
    assert fused == kit.SEEN
    assert len(fused["out"]) == 34 and len(fused["audio_only"]) == 30
    assert all(not lk.fused for lk in s.links)


def test_only_plain_one_to_one_links_are_fused() -> None:
    p = Pipeline("plan")
    p.add("src", kit.source, n=2)
    p.add("a", kit.passthrough)
    p.add("b", kit.passthrough)
    p.add("c", kit.passthrough)
    p.add("out", kit.collect)
    p.add("out2", kit.collect, key="out2")
    p.chain("src -> a")
    p.link("a", "b", capacity=4)  # a link option: queued
    p.chain("b -> c -> out")
    p.chain("c -> out2")  # fan-out from c: queued
    s = run(p)
    assert {lk.name: lk.fused for lk in s.links} == {
        "src -> a": True,
        "a -> b": False,
        "b -> c": True,
        "c -> out": False,
        "c -> out2": False,
    }
    assert s.link("a -> b").capacity == 4 and s.link("c -> out").capacity == 8


# ---------------------------------------------------------------- events


@pytest.mark.parametrize("fuse", [True, False])
def test_events_are_stamped_with_the_emitting_stage_and_keep_it(fuse: bool) -> None:
    p = Pipeline("stamps")
    p.add("ev", kit.events, n=2)
    p.add("talk", kit.echo_events)
    p.add("a", kit.passthrough)
    p.add("b", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("ev -> a -> talk -> b -> out")
    s = run(p, fuse=fuse)
    assert kit.SEEN["out"] == [SpeechStarted(pts=0.0, stage="talk")] * 2
    assert s.event_counts == {"text": 2, "speech_started": 2}


def test_summary_reports_and_times() -> None:
    @stage("reporter", passthrough=True, register=False)
    async def reporter(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
        ctx.report("algorithmic_delay_ms", 1.5)
        async for f in frames:
            yield f

    p = Pipeline("sum")
    p.add("src", kit.source, n=10)
    p.add("r", reporter)
    p.add("out", kit.collect)
    p.chain("src -> r -> out")
    s = run(p)
    st = s.stage("r")
    assert st.reports == {"algorithmic_delay_ms": 1.5}
    assert st.p50_us is not None and st.p99_us is not None and st.p50_us <= st.p99_us
    assert s.stage("src").frames_out == 10
    assert s.realtime_factor > 0


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("queued_after", [True, False])
def test_a_stage_yielding_a_non_frame_is_named(fuse: bool, queued_after: bool) -> None:
    @stage("sloppy", passthrough=True, register=False)
    async def sloppy(frames: AsyncIterator[Frame]) -> AsyncIterator[Any]:
        async for _f in frames:
            yield {"not": "a frame"}

    p = Pipeline("sloppy")
    p.add("src", kit.source, n=3)
    p.add("bad", sloppy)
    p.add("out", kit.collect)
    p.chain("src -> bad")
    p.link("bad", "out", capacity=2 if queued_after else None)
    with pytest.raises(StageError) as e:
        run(p, fuse=fuse)
    assert str(e.value) == (
        "stage 'bad' failed: TypeError: yielded {'not': 'a frame'}, which is not a frame"
    )


@stage("take2", accepts=(Audio,), register=False)
async def take2(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """A sink that stops reading after two frames."""
    n = 0
    async for _f in frames:
        n += 1
        if n == 2:
            return
    yield _f  # pragma: no cover


@pytest.mark.parametrize("fuse", [True, False])
def test_a_sink_ending_early_does_not_block_its_producer(fuse: bool) -> None:
    p = Pipeline("early")
    p.add("src", kit.source, n=50)
    p.add("t", take2)
    p.add("out", kit.collect)
    p.chain("src -> t")
    p.chain("src -> out")
    s = run(p, fuse=fuse)
    assert audio_ids("out") == list(range(50))  # the other branch got everything
    assert s.link("src -> t").sent == 2  # nothing more queued for a stage that has finished


@stage("interrupter", passthrough=True, register=False)
async def interrupter(frames: AsyncIterator[Frame], *, at: int = 5) -> AsyncIterator[Frame]:
    """Forward; after `at` frames send an interrupt.

    Parameters:
        at: frames before the interrupt
    """
    i = 0
    async for f in frames:
        yield f
        i += 1
        if i == at:
            yield Interrupt(pts=1.0)


@pytest.mark.parametrize("fuse", [True, False])
def test_an_interrupt_purges_audio_queued_on_a_link(fuse: bool) -> None:
    p = Pipeline("barge-in")
    p.add("src", kit.source, n=20)
    p.add("agent", interrupter, at=10)
    p.add("speaker", kit.slow_sink, each=1.0)
    p.chain("src -> agent")
    p.link("agent", "speaker", capacity=8)
    s = run(p, fuse=fuse)
    got = kit.SEEN["slow"]
    # 0 was playing and 1 next in line; 2..9 were queued and are not played
    assert got[:3] == [got[0], got[1], Interrupt(pts=1.0, stage="agent")]
    assert audio_ids("slow") == [0, 1, *range(10, 20)]
    lk = s.link("agent -> speaker")
    assert (lk.sent, lk.purged, lk.dropped) == (21, 8, 0)


@pytest.mark.parametrize("fuse", [True, False])
def test_request_stop_ends_every_source_of_a_fan_in(fuse: bool) -> None:
    runner: list[Runner] = []
    HOOK["fn"] = lambda: runner[0].request_stop()
    p = Pipeline("stop")
    p.add("mic", kit.source, n=1000)
    p.add("hook", hook_after, n=5)
    p.add("chat", kit.events, n=1000, gap=0.01)
    p.add("mix", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("mic -> hook -> mix -> out")
    p.chain("chat -> mix")
    s = run(p, fuse=fuse, on_start=runner.append)
    assert s.status == "interrupted"
    assert s.stage("mic").frames_out < 10 and s.stage("chat").frames_out < 20
    assert len(kit.SEEN["out"]) == s.stage("mic").frames_out + s.stage("chat").frames_out


@stage("bad_close", passthrough=True, register=False)
async def bad_close(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Forward; fail in finally when closed early."""
    try:
        async for f in frames:
            yield f
    except GeneratorExit:
        raise RuntimeError("cannot flush") from None


def test_a_stage_failing_while_being_closed_is_logged_under_its_own_id() -> None:
    p = Pipeline("close")
    p.add("src", kit.source, n=20)
    p.add("fragile", bad_close)
    p.add("t", take2)
    p.chain("src -> fragile -> t")
    with structlog.testing.capture_logs() as logs:
        s = run(p)
    assert s.status == "completed"
    assert [e for e in logs if e["event"] == "stage close failed"] == [
        {
            "event": "stage close failed",
            "stage": "fragile",
            "error": "cannot flush",
            "log_level": "warning",
        }
    ]


def test_a_cycle_carrying_audio_through_plain_stages_ends_instead_of_deadlocking() -> None:
    # src -> a -> b -> out, b -> a: every link fills up in a cycle of blocking sends unless the
    # feedback link (b -> a) never blocks. a is not cycle-aware: it ends with its forward input.
    kit.SEEN.clear()
    p = Pipeline("cycle")
    p.add("src", kit.source, n=40)
    p.add("a", kit.passthrough)
    p.add("b", kit.passthrough)
    p.add("out", kit.collect, key="cycle")
    p.link("src", "a", "b", "out")
    p.link("b", "a")

    async def go() -> RunSummary:
        async with asyncio.timeout(10):  # a safety net: a deadlock fails here
            return await p.run_async(clock=VirtualClock())

    summary = asyncio.run(go())
    assert summary.link("b -> a").feedback
    got = kit.SEEN["cycle"]
    assert len([f for f in got if isinstance(f, Audio)]) >= 40  # every source frame got through
    assert kit.OPEN["count"] == 0


def test_declared_waits_are_billed_like_clock_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.context
    from pipeline.runtime import StageStats

    ticks = iter([1_000, 5_001_000])  # 5 ms pass inside the waiting block
    monkeypatch.setattr(pipeline.context.time, "perf_counter_ns", lambda: next(ticks))
    stats = StageStats("src", "kit_source")
    ctx = StageContext(id="src", on_wait=stats.add_wait)
    with ctx.waiting():
        pass
    assert stats.sleep_ns == 5_000_000  # subtracted from the stage's own time per frame


# ---------------------------------------------------------------------------- sampled timing

#: a fake ``perf_counter_ns`` for the runner: only the stages below move it, by their "work"
NOW = [0]


@stage("costed_source", emits=(Audio,), register=False)
async def costed_source(*, n: int, cost: int) -> AsyncIterator[Frame]:
    """n frames, each costing ``cost`` ns of work before it is yielded."""
    for i in range(n):
        NOW[0] += cost
        yield Audio(b"\0\0" * 160, "pcm16", 8000, 1, i * 0.02)


@stage("costed_batch", passthrough=True, register=False)
async def costed_batch(
    frames: AsyncIterator[Frame], *, every: int, cost: int
) -> AsyncIterator[Frame]:
    """``cost`` ns of work per input frame; one frame out per ``every`` in."""
    k = 0
    async for f in frames:
        NOW[0] += cost
        k += 1
        if k % every == 0:
            yield f


@stage("costed_sink", accepts=(Audio,), emits=(), register=False)
async def costed_sink(frames: AsyncIterator[Frame], *, cost: int) -> AsyncIterator[Frame]:
    """``cost`` ns of work per frame consumed."""
    async for _ in frames:
        NOW[0] += cost
    return
    yield  # pragma: no cover


def _costed_run(n: int, timing_every: int, *, batch: int = 1, fuse: bool = True) -> RunSummary:
    p = Pipeline("costed")
    p.add("src", costed_source, n=n, cost=100)
    p.add("work", costed_batch, every=1, cost=1_000)
    p.add("batch", costed_batch, every=batch, cost=300)
    p.add("sink", costed_sink, cost=50)
    p.chain("src -> work -> batch -> sink")
    return asyncio.run(Runner(p.validate(), fuse=fuse, timing_every=timing_every).run())


@pytest.mark.parametrize("every", [1, 4, 16, 1000])
@pytest.mark.parametrize("fuse", [True, False])
def test_sampled_timing_counts_every_frame_and_bills_each_stage_only_its_own_work(
    monkeypatch: pytest.MonkeyPatch, every: int, fuse: bool
) -> None:
    import pipeline.runtime

    NOW[0] = 0
    monkeypatch.setattr(pipeline.runtime, "_perf", lambda: NOW[0])
    s = _costed_run(100, every, batch=4, fuse=fuse)
    assert s.timed_every == every
    counts = [(st.id, st.frames_in, st.frames_out) for st in s.stages]
    assert counts == [("src", 0, 100), ("work", 100, 100), ("batch", 100, 25), ("sink", 25, 0)]
    # whatever is timed, each stage is billed exactly its own work: a frame of the batcher
    # costs 4 × 300 ns, its input's 4 pulls taken out
    own = {st.id: (st.p50_us, st.p99_us) for st in s.stages}
    assert own == {
        "src": (0.1, 0.1),
        "work": (1.0, 1.0),
        "batch": (1.2, 1.2),
        "sink": (0.05, 0.05),
    }
    # totals are exact: every frame of a stage costs the same here
    assert [round(st.total_ms * 1e6) for st in s.stages] == [10_000, 100_000, 30_000, 1_250]
    for st in s.stages:
        frames = st.frames_out or st.frames_in
        assert st.timed_every == every
        # at least one frame in `every` (the first included), at most all of them
        assert -(-frames // every) <= st.timed <= frames
        if every == 1:
            assert st.timed == frames


def test_one_frame_in_n_is_timed_in_a_one_to_one_chain() -> None:
    s = _costed_run(100, 16)
    # frames 1, 17, 33, 49, 65, 81 and 97: seven of a hundred, in every stage
    assert [(st.id, st.timed) for st in s.stages] == [
        ("src", 7),
        ("work", 7),
        ("batch", 7),
        ("sink", 7),
    ]
    assert all(st.frames_in == 100 or st.frames_out == 100 for st in s.stages)
    every = _costed_run(100, 1)
    assert [st.timed for st in every.stages] == [100, 100, 100, 100]


def test_timing_every_below_one_is_refused() -> None:
    p = Pipeline("costed")
    p.add("src", costed_source, n=1, cost=0)
    p.add("sink", costed_sink, cost=0)
    p.chain("src -> sink")
    with pytest.raises(ValueError, match=r"timing_every is 1 .* got 0"):
        Runner(p.validate(), timing_every=0)
