"""wav_sink, jsonl_sink and null_sink: what lands on disk, under every way a run can end."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import StageError
from pipeline.frames import (
    Audio,
    AudioFormat,
    ErrorReport,
    Frame,
    Interrupt,
    SpeechStarted,
    ToolCall,
    Transcript,
)
from pipeline.spec import spec_for
from pipeline.testing import check_stage, run_stage
from stages import g711
from stages.sinks import jsonl_sink, null_sink, wav_sink
from stages.wavfile import read_header, read_wav

SINE = (np.sin(np.arange(1600) * 0.05) * 20000).astype("<i2")


def pcm_frames(n: int = 5, size: int = 160, rate: int = 8000) -> list[Audio]:
    data = np.resize(SINE, n * size).astype("<i2").tobytes()
    return [
        Audio(data[i * size * 2 : (i + 1) * size * 2], "pcm16", rate, 1, i * size / rate)
        for i in range(n)
    ]


def ctx_for(name: str, **kw: Any) -> StageContext:
    return StageContext(id=name, type=name, **kw)


# ---------------------------------------------------------------------------- wav_sink


def test_wav_sink_writes_frames_exactly(tmp_path: Path) -> None:
    frames = pcm_frames()
    p = tmp_path / "out" / "sub" / "reply.wav"  # folders are created
    assert run_stage("wav_sink", [*frames, SpeechStarted(pts=0.1)], path=p) == []
    h, data = read_wav(p)
    assert h.format == AudioFormat("pcm16", 8000)
    assert data == b"".join(f.data for f in frames)
    got, rate = sf.read(p, dtype="int16")
    assert rate == 8000 and np.array_equal(got, np.frombuffer(data, "<i2"))


@pytest.mark.parametrize(("enc", "tag"), [("pcmu", 7), ("pcma", 6)])
def test_wav_sink_keeps_g711(tmp_path: Path, enc: str, tag: int) -> None:
    frames = [
        Audio(g711.encode(f.data, enc), enc, 8000, 1, f.pts)  # type: ignore[arg-type]
        for f in pcm_frames(3, 81)  # odd sizes: the pad byte is handled
    ]
    p = tmp_path / "r.wav"
    run_stage("wav_sink", frames, path=p)
    h, data = read_wav(p)
    assert (h.format_tag, h.format.encoding, h.num_frames) == (tag, enc, 243)
    assert data == b"".join(f.data for f in frames)
    assert sf.info(p).frames == 243


def test_wav_sink_publishes_played(tmp_path: Path) -> None:
    ctx = ctx_for("reply")
    seen: list[Played] = []
    ctx.bus.subscribe(PLAYED, seen.append)
    run_stage("wav_sink", pcm_frames(3), path=tmp_path / "r.wav", ctx=ctx)
    assert seen == [Played("reply", 0.02), Played("reply", 0.04), Played("reply", 0.06)]
    assert ctx.reports["seconds"] == 0.06


@pytest.mark.parametrize(
    ("frame", "shown"),
    [
        (Audio(b"\0" * 160, "pcmu", 8000, 1, 0.04), "pcmu 8000 Hz"),
        (Audio(b"\0" * 640, "pcm16", 8000, 2, 0.04), "pcm16 8000 Hz x2"),
    ],
)
def test_wav_sink_refuses_another_encoding_or_channel_count(
    tmp_path: Path, frame: Audio, shown: str
) -> None:
    with pytest.raises(StageError, match=f"got {shown} audio at 0.040 s after pcm16 8000 Hz"):
        run_stage("wav_sink", [*pcm_frames(2), frame], path=tmp_path / "r.wav")


def test_wav_sink_refuses_a_second_format(tmp_path: Path) -> None:
    frames: list[Frame] = [*pcm_frames(2), Audio(b"\0" * 640, "pcm16", 16000, 1, 0.04)]
    p = tmp_path / "r.wav"
    with pytest.raises(StageError) as exc:
        run_stage("wav_sink", frames, path=p)
    assert str(exc.value) == (
        "stage 'wav_sink' failed: got pcm16 16000 Hz audio at 0.040 s after pcm16 8000 Hz audio; "
        "a WAV file holds one format: add a resample or g711 stage before it"
    )
    # what came before is on disk, in a valid file
    h, data = read_wav(p)
    assert h.num_frames == 320 and sf.info(p).frames == 320
    assert data == b"".join(f.data for f in frames[:2] if isinstance(f, Audio))


@pytest.mark.parametrize(
    ("input_format", "expected"),
    [(None, AudioFormat("pcm16", 8000)), (AudioFormat("pcmu", 8000), AudioFormat("pcmu", 8000))],
)
def test_wav_sink_without_audio_writes_an_empty_wav(
    tmp_path: Path, input_format: AudioFormat | None, expected: AudioFormat
) -> None:
    p = tmp_path / "empty.wav"
    ctx = ctx_for("reply", input_format=input_format)
    run_stage("wav_sink", [Transcript("user", "hi")], path=p, ctx=ctx)
    h, data = read_wav(p)
    assert (h.format, h.num_frames, data) == (expected, 0, b"")
    assert sf.info(p).frames == 0


async def _stalling(frames: list[Audio], stalled: asyncio.Event) -> AsyncIterator[Frame]:
    for f in frames:
        yield f
    stalled.set()
    await asyncio.Event().wait()  # a stream that never ends by itself
    yield frames[0]  # pragma: no cover


def test_wav_file_is_valid_after_cancel(tmp_path: Path) -> None:
    frames = pcm_frames(7)
    p = tmp_path / "r.wav"

    async def main() -> None:
        stalled = asyncio.Event()

        async def consume() -> None:
            gen = wav_sink(_stalling(frames, stalled), path=p, ctx=ctx_for("reply"))
            async with contextlib.aclosing(gen):
                async for _ in gen:
                    pass  # pragma: no cover

        task = asyncio.create_task(consume())
        await stalled.wait()
        # the header is already consistent before the cancel...
        assert read_header(p).num_frames == 7 * 160
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # ...and after it: soundfile reads every frame received
    got, rate = sf.read(p, dtype="int16")
    assert rate == 8000
    assert got.tobytes() == b"".join(f.data for f in frames)


def test_wav_file_is_valid_after_keyboard_interrupt(tmp_path: Path) -> None:
    frames = pcm_frames(4)
    p = tmp_path / "r.wav"

    async def interrupted() -> AsyncIterator[Frame]:
        for f in frames:
            yield f
        raise KeyboardInterrupt

    async def main() -> None:
        gen = wav_sink(interrupted(), path=p, ctx=ctx_for("reply"))
        async with contextlib.aclosing(gen):
            async for _ in gen:
                pass  # pragma: no cover

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert sf.read(p, dtype="int16")[0].tobytes() == b"".join(f.data for f in frames)


def test_wav_file_is_valid_after_an_upstream_error(tmp_path: Path) -> None:
    p = tmp_path / "r.wav"

    async def failing() -> AsyncIterator[Frame]:
        yield pcm_frames(1)[0]
        raise RuntimeError("upstream broke")

    async def main() -> None:
        async for _ in wav_sink(failing(), path=p, ctx=ctx_for("reply")):
            pass  # pragma: no cover

    with pytest.raises(RuntimeError, match="upstream broke"):
        asyncio.run(main())
    assert sf.info(p).frames == 160


def test_wav_sink_cancelled_before_any_audio_leaves_no_file(tmp_path: Path) -> None:
    p = tmp_path / "r.wav"

    async def main() -> None:
        stalled = asyncio.Event()
        gen = wav_sink(_stalling([], stalled), path=p, ctx=ctx_for("reply"))
        task = asyncio.create_task(gen.__anext__())  # type: ignore[arg-type]
        await stalled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert not p.exists()  # nothing was written, so nothing is left half made


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(0, 400), max_size=10), st.sampled_from(["pcm16", "pcmu"]))
def test_wav_sink_file_equals_concatenation_for_any_split(
    tmp_path: Path, cuts: list[int], enc: str
) -> None:
    data = g711.encode(SINE.tobytes(), enc)  # type: ignore[arg-type]
    width = 2 if enc == "pcm16" else 1
    bounds = sorted({0, len(SINE), *(min(c * 4, len(SINE)) for c in cuts)})
    frames = [
        Audio(data[a * width : b * width], enc, 8000, 1, a / 8000)  # type: ignore[arg-type]
        for a, b in itertools.pairwise(bounds)
    ]
    p = tmp_path / "h.wav"
    run_stage("wav_sink", frames, path=p)
    assert read_wav(p)[1] == data
    assert sf.read(p, dtype="int16")[0].tobytes() == g711.decode(data, enc)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- jsonl_sink

EVENTS: list[Frame] = [
    SpeechStarted(pts=1.24, stage="gate"),
    Transcript("user", "what time is it", final=True, pts=2.5, stage="agent"),
    ToolCall("c1", "get_time", '{"city": "Tokyo"}', stage="agent"),
    Interrupt(pts=3.0, stage="agent"),
    ErrorReport("rate_limited", "slow down", stage="agent"),
]


def test_jsonl_sink_writes_one_line_per_event(tmp_path: Path) -> None:
    p = tmp_path / "logs" / "events.jsonl"
    ctx = ctx_for("log")
    run_stage("jsonl_sink", [*EVENTS, *pcm_frames(1)], path=p, ctx=ctx)
    lines = p.read_bytes().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"type": "speech_started", "pts": 1.24, "stage": "gate"},
        {
            "type": "transcript",
            "pts": 2.5,
            "stage": "agent",
            "role": "user",
            "text": "what time is it",
            "final": True,
            "item_id": "",
        },
        {
            "type": "tool_call",
            "pts": None,
            "stage": "agent",
            "call_id": "c1",
            "name": "get_time",
            "arguments": '{"city": "Tokyo"}',
            "response_id": "",
        },
        {"type": "interrupt", "pts": 3.0, "stage": "agent", "response_id": ""},
        {
            "type": "error",
            "pts": None,
            "stage": "agent",
            "code": "rate_limited",
            "message": "slow down",
        },
    ]
    assert lines[0] == b'{"type":"speech_started","pts":1.24,"stage":"gate"}'
    assert ctx.reports["events"] == 5


def test_jsonl_sink_flushes_each_line(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    seen: list[int] = []

    async def upstream() -> AsyncIterator[Frame]:
        for ev in EVENTS[:3]:
            yield ev
            # the line of the event before is on disk before the next one is taken
            seen.append(len(p.read_bytes().splitlines()))

    async def main() -> None:
        async for _ in jsonl_sink(upstream(), path=p, ctx=ctx_for("log")):
            pass  # pragma: no cover

    asyncio.run(main())
    assert seen == [1, 2, 3]


def test_jsonl_sink_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    run_stage("jsonl_sink", EVENTS[:1], path="-")
    assert capfd.readouterr().out == '{"type":"speech_started","pts":1.24,"stage":"gate"}\n'


def test_jsonl_sink_without_events_leaves_an_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    run_stage("jsonl_sink", [], path=p)
    assert p.read_bytes() == b""


# ---------------------------------------------------------------------------- null_sink and specs


def test_null_sink_consumes_everything() -> None:
    ctx = ctx_for("null")
    assert run_stage("null_sink", [*pcm_frames(5), *EVENTS], ctx=ctx) == []
    assert ctx.reports == {"frames": 10, "seconds": 0.1}


def test_sink_specs() -> None:
    for name, accepts in [("wav_sink", (Audio,)), ("jsonl_sink", None), ("null_sink", None)]:
        spec = spec_for(name)
        assert spec.is_sink and not spec.passthrough and spec.emits == ()
        if accepts is not None:
            assert spec.accepts == accepts
    assert Audio not in spec_for("jsonl_sink").accepts
    assert Audio in spec_for("null_sink").accepts and SpeechStarted in spec_for("null_sink").accepts
    assert spec_for("wav_sink").params["path"].path_role == "output"
    assert spec_for("jsonl_sink").params["path"].path_role == "output"
    assert null_sink is spec_for("null_sink").func


def test_conformance(tmp_path: Path) -> None:
    assert check_stage("wav_sink", pcm_frames(3), path=tmp_path / "c.wav") == []
    assert sf.info(tmp_path / "c.wav").frames == 480
    assert check_stage("jsonl_sink", EVENTS, path=tmp_path / "c.jsonl") == []
    assert len((tmp_path / "c.jsonl").read_bytes().splitlines()) == 5
    assert check_stage("null_sink", [*pcm_frames(2), *EVENTS]) == []
