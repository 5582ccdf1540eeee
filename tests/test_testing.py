"""pipeline.testing.check_stage: passes well-behaved stages, and names what a bad one does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

import pipeline.testing as testing
from pipeline import Audio, AudioFormat, Frame, Interrupt, SpeechStarted, Text, stage
from pipeline.testing import check_stage, run_stage

AUDIO = [Audio(bytes(320), "pcm16", 8000, pts=i * 0.02) for i in range(4)]
FRAMES: list[Frame] = [*AUDIO, Text("hello"), Interrupt()]


@pytest.fixture(autouse=True)
def _short_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing, "CHECK_TIMEOUT_S", 0.5)


@stage("good_gain", accepts=(Audio,), emits=(Audio,), passthrough=True, register=False)
async def good_gain(frames: AsyncIterator[Frame], *, k: int = 1) -> AsyncIterator[Frame]:
    """Scale audio.

    Parameters:
        k: factor
    """
    async for f in frames:
        if isinstance(f, Audio):
            f = Audio.from_samples(f.samples() * k, f.rate, f.pts)
        yield f


def test_good_transform_passes_and_returns_its_output() -> None:
    out = check_stage(good_gain, FRAMES, k=2)
    assert out == FRAMES  # silence times two is silence; events pass through in order


def test_good_source_and_sink_pass() -> None:
    @stage("src3", emits=(Text,), register=False)
    async def src() -> AsyncIterator[Frame]:
        for i in range(3):
            yield Text(str(i))

    @stage("sink", accepts=(Text,), register=False)
    async def sink(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for _f in frames:
            pass
        return
        yield  # pragma: no cover

    assert check_stage(src) == [Text("0"), Text("1"), Text("2")]
    assert check_stage(sink, FRAMES) == []


def test_frames_a_stage_does_not_accept_are_not_fed() -> None:
    @stage("texts_only", accepts=(Text,), emits=(Text,), register=False)
    async def upper(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            assert isinstance(f, Text), f
            yield Text(f.text.upper())

    assert check_stage(upper, FRAMES) == [Text("HELLO")]


def test_undeclared_frame_type() -> None:
    @stage("liar", accepts=(Audio,), emits=(Audio,), passthrough=True, register=False)
    async def liar(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            yield f
            yield SpeechStarted(pts=0.0)

    with pytest.raises(AssertionError) as e:
        check_stage(liar, AUDIO)
    assert str(e.value) == (
        "stage 'liar' over 4 input frames: frame 1 is speech_started, but it declares it "
        "emits only audio; add SpeechStarted to emits=(...) of @stage"
    )


def test_passthrough_types_are_allowed_only_for_passthrough_stages() -> None:
    @stage("forwarder", accepts=(Audio, Text), emits=(Audio,), register=False)
    async def forwarder(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            yield f

    with pytest.raises(AssertionError, match="frame 4 is text, but it declares"):
        check_stage(forwarder, FRAMES)


def test_audio_format_differs_from_declared_output_format() -> None:
    def to_16k(_params: object, fmt: AudioFormat | None) -> AudioFormat:
        return AudioFormat("pcm16", 16000)

    @stage("fake_up", accepts=(Audio,), emits=(Audio,), output_format=to_16k, register=False)
    async def fake_up(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            yield f  # forgot to resample

    with pytest.raises(AssertionError) as e:
        check_stage(fake_up, AUDIO)
    assert "audio frame 0 is pcm16 8000 Hz, but it declares pcm16 16000 Hz" in str(e.value)


def test_source_that_never_ends() -> None:
    @stage("forever", emits=(Text,), register=False)
    async def forever() -> AsyncIterator[Frame]:
        while True:
            yield Text("again")

    with pytest.raises(AssertionError) as e:
        check_stage(forever, max_frames=50)
    assert str(e.value) == "stage 'forever' as a source: emitted more than 50 frames without ending"


def test_stage_that_does_not_end_after_its_input() -> None:
    @stage("stuck", accepts=(Audio,), emits=(Audio,), register=False)
    async def stuck(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            yield f
        await asyncio.Event().wait()

    with pytest.raises(AssertionError) as e:
        check_stage(stuck, AUDIO)
    assert str(e.value) == (
        "stage 'stuck' over 4 input frames: did not end within 0.5 s after its input ended"
    )


def test_stage_that_swallows_cancellation() -> None:
    @stage("stubborn", accepts=(Audio,), emits=(Audio,), register=False)
    async def stubborn(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        try:
            async for f in frames:
                yield f
        except asyncio.CancelledError:
            return

    with pytest.raises(AssertionError) as e:
        check_stage(stubborn, AUDIO)
    assert str(e.value) == (
        "stage 'stubborn': cancelled while waiting for input, it returned normally instead "
        "of letting CancelledError through"
    )


def test_stage_that_leaves_its_input_open_when_cancelled() -> None:
    @stage("orphan", accepts=(Audio,), emits=(Audio,), register=False)
    async def orphan(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        q: asyncio.Queue[Frame] = asyncio.Queue()

        async def read() -> None:
            async for f in frames:
                await q.put(f)

        reader = asyncio.get_running_loop().create_task(read(), name="orphan reader")
        done = asyncio.ensure_future(reader)
        while not (done.done() and q.empty()):
            get = asyncio.ensure_future(q.get())
            await asyncio.wait([get, done], return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                yield get.result()
            else:
                get.cancel()
        # on cancel the reader is left running: its input is never closed

    with pytest.raises(AssertionError) as e:
        check_stage(orphan, AUDIO)
    assert str(e.value) == (
        "stage 'orphan': cancelled while waiting for input, its input was left open (its "
        "finally did not run); cancel any task that reads it and await it"
    )


def test_stage_that_leaks_a_task() -> None:
    @stage("leaky", accepts=(Audio,), emits=(Audio,), register=False)
    async def leaky(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="leaky timer")
        async for f in frames:
            yield f

    with pytest.raises(AssertionError) as e:
        check_stage(leaky, AUDIO)
    assert str(e.value) == "stage 'leaky': tasks still running after it was cancelled: leaky timer"


def test_stage_that_yields_after_being_closed() -> None:
    @stage("clingy", accepts=(Audio,), emits=(Audio,), register=False)
    async def clingy(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        async for f in frames:
            try:
                yield f
            except GeneratorExit:
                yield f  # not allowed: a closed generator must finish

    with pytest.raises(AssertionError) as e:
        check_stage(clingy, AUDIO)
    assert str(e.value) == (
        "stage 'clingy': closed early, it failed: async generator ignored GeneratorExit"
    )


def test_stage_that_reads_its_input_after_being_closed() -> None:
    @stage("drainer", accepts=(Audio,), emits=(Audio,), register=False)
    async def drainer(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        try:
            async for f in frames:
                yield f
        finally:
            with contextlib.suppress(Exception):
                await frames.__anext__()

    with pytest.raises(AssertionError) as e:
        check_stage(drainer, AUDIO)
    assert str(e.value) == (
        "stage 'drainer': closed early, it read its input again (1 times) instead of just finishing"
    )


def test_stage_failing_on_empty_input() -> None:
    @stage("needs_one", accepts=(Audio,), emits=(Audio,), register=False)
    async def needs_one(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
        first = await frames.__anext__()
        yield first
        async for f in frames:
            yield f

    with pytest.raises(AssertionError) as e:
        check_stage(needs_one, AUDIO)
    assert str(e.value) == (
        "stage 'needs_one' over an empty input: raised "
        "RuntimeError('async generator raised StopAsyncIteration')"
    )


def test_bad_parameters_are_a_config_error_naming_the_stage() -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(
        ConfigError, match="stage 'good_gain': stage type 'good_gain' has no parameter 'q'"
    ):
        check_stage(good_gain, AUDIO, q=3)
    with pytest.raises(ConfigError, match="has no parameter 'q'"):
        run_stage(good_gain, AUDIO, q=3)


def test_run_stage_map_function() -> None:
    @stage("negate", accepts=(Audio,), register=False)
    def negate(f: Frame) -> Frame:
        assert isinstance(f, Audio)
        return Audio.from_samples(-f.samples().astype("int32") - 1, f.rate, f.pts)

    out = run_stage(negate, [*AUDIO[:1], Text("x")])
    assert out[0] == Audio(b"\xff\xff" * 160, "pcm16", 8000) and out[1] == Text("x")
    check_stage(negate, FRAMES)


def test_merge_feeds_a_stage_from_several_paced_inputs_in_time_order() -> None:
    from pipeline import Audio, Text, VirtualClock
    from pipeline.testing import merge, run_stage_async
    from tests import stagekit

    clock = VirtualClock()

    async def audio() -> AsyncIterator[Frame]:
        for i in range(3):
            await clock.sleep_until(i * 0.02)
            yield Audio(b"\x00\x00" * 160, "pcm16", 8000, pts=i * 0.02)

    async def texts() -> AsyncIterator[Frame]:
        await clock.sleep_until(0.03)
        yield Text("hello")

    async def go() -> list[Frame]:
        return await run_stage_async(stagekit.passthrough, merge(audio(), texts()))

    out = asyncio.run(go())
    assert [(f.type, f.pts) for f in out] == [
        ("audio", 0.0),
        ("audio", 0.02),
        ("text", None),
        ("audio", 0.04),
    ]
