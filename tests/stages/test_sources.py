"""wav_source and signal_source: framing, pts, pacing on a virtual clock, stopping, formats."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clock import VirtualClock
from pipeline.context import StageContext
from pipeline.errors import InputError, StageError
from pipeline.frames import Audio, AudioFormat, Frame
from pipeline.spec import spec_for
from pipeline.testing import check_stage, run_stage
from stages import g711
from stages.sources import SignalGenerator, frame_samples, signal_source, wav_source
from stages.wavfile import WavWriter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def audio(frames: list[Frame]) -> list[Audio]:
    out = [f for f in frames if isinstance(f, Audio)]
    assert len(out) == len(frames)
    return out


def write_wav(path: Path, data: bytes, fmt: AudioFormat) -> Path:
    with WavWriter(path, fmt) as w:
        w.write(data)
    return path


def ramp(n: int) -> bytes:
    return (np.arange(n) % 30000).astype("<i2").tobytes()


async def timed(gen: Any, clock: VirtualClock, *, stop_after: int | None = None,
                ctx: StageContext | None = None) -> list[tuple[float, Audio]]:  # fmt: skip
    """(clock time at arrival, frame) for every frame a source yields."""
    out: list[tuple[float, Audio]] = []
    async with contextlib.aclosing(gen):
        async for f in gen:
            out.append((clock.now(), f))
            if stop_after is not None and len(out) == stop_after:
                assert ctx is not None
                ctx.stopping.set()
    return out


# ---------------------------------------------------------------------------- wav_source


def test_wav_source_frames_and_pts(tmp_path: Path) -> None:
    data = ramp(8000 + 37)  # 1 s and a bit at 8 kHz
    p = write_wav(tmp_path / "a.wav", data, AudioFormat("pcm16", 8000))
    frames = audio(run_stage("wav_source", path=p, pace="fast"))
    assert len(frames) == 51
    assert [f.num_samples for f in frames] == [160] * 50 + [37]
    assert [f.pts for f in frames] == [i * 160 / 8000 for i in range(51)]
    assert all(f.format == AudioFormat("pcm16", 8000) for f in frames)
    assert b"".join(f.data for f in frames) == data


@pytest.mark.parametrize("enc", ["pcmu", "pcma"])
def test_wav_source_keeps_g711_as_stored(tmp_path: Path, enc: str) -> None:
    codes = bytes(range(256)) * 4
    p = write_wav(tmp_path / "u.wav", codes, AudioFormat(enc, 8000))  # type: ignore[arg-type]
    frames = audio(run_stage("wav_source", path=p, pace="fast", frame_ms=10))
    assert [f.num_samples for f in frames] == [80] * 12 + [64]
    assert all(f.encoding == enc and f.rate == 8000 for f in frames)
    assert b"".join(f.data for f in frames) == codes


def test_wav_source_converts_stereo_float(tmp_path: Path) -> None:
    x = np.array([[0.5, -0.5], [0.25, 0.25], [1.0, 0.0]] * 100)
    p = tmp_path / "f.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    frames = audio(run_stage("wav_source", path=p, pace="fast"))
    got = np.frombuffer(b"".join(f.data for f in frames), "<i2")
    assert got[:3].tolist() == [0, 8192, 16384]
    assert len(got) == 300 and frames[0].format == AudioFormat("pcm16", 16000)


def test_wav_source_output_format_reads_the_header(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "u.wav", b"\x01" * 80, AudioFormat("pcmu", 8000))
    spec = spec_for("wav_source")
    assert spec.is_source and spec.emits == (Audio,)
    assert spec.output_format is not None
    assert spec.output_format({"path": p}, None) == AudioFormat("pcmu", 8000)
    (tmp_path / "bad.wav").write_bytes(b"ID3\x03" + b"\0" * 40)
    with pytest.raises(InputError, match=r"bad\.wav: not a WAV file \(starts with b'ID3\\x03'\)"):
        spec.output_format({"path": tmp_path / "bad.wav"}, None)


def test_wav_source_zero_samples(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "z.wav", b"", AudioFormat("pcmu", 8000))
    assert run_stage("wav_source", path=p, pace="realtime") == []
    assert run_stage("wav_source", path=p, pace="fast", loop=True) == []  # no endless loop


def test_wav_source_realtime_pacing_on_virtual_clock(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", ramp(1600), AudioFormat("pcm16", 8000))  # 200 ms

    async def main() -> list[tuple[float, Audio]]:
        clock = VirtualClock(start=100.0)
        ctx = StageContext(id="caller", clock=clock)
        return await timed(wav_source(path=p, pace="realtime", ctx=ctx), clock)

    got = asyncio.run(main())
    assert len(got) == 10
    for t, f in got:
        assert t == pytest.approx(100.0 + f.pts, abs=1e-9)  # released at start + pts
    assert [round(t - 100.0, 6) for t, _ in got] == [round(0.02 * i, 6) for i in range(10)]


def test_wav_source_fast_does_not_wait(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", ramp(16000), AudioFormat("pcm16", 8000))

    async def main() -> list[tuple[float, Audio]]:
        clock = VirtualClock(start=5.0)
        return await timed(
            wav_source(path=p, pace="fast", ctx=StageContext("c", clock=clock)), clock
        )

    got = asyncio.run(main())
    assert len(got) == 100
    assert {t for t, _ in got} == {5.0}


def test_wav_source_loops_with_continuous_pts(tmp_path: Path) -> None:
    data = ramp(200)
    p = write_wav(tmp_path / "a.wav", data, AudioFormat("pcm16", 8000))

    async def main() -> list[tuple[float, Audio]]:
        clock = VirtualClock()
        ctx = StageContext("c", clock=clock)
        gen = wav_source(path=p, pace="fast", loop=True, ctx=ctx)
        return await timed(gen, clock, stop_after=7, ctx=ctx)

    frames = [f for _, f in asyncio.run(main())]
    assert len(frames) == 7  # stops once asked
    # 200 samples: frames of 160 and 40, then again; pts keeps counting across the loop
    assert [f.num_samples for f in frames] == [160, 40, 160, 40, 160, 40, 160]
    assert [round(f.pts * 8000) for f in frames] == [0, 160, 200, 360, 400, 560, 600]
    assert b"".join(f.data for f in frames) == (data * 4)[: 760 * 2]


def test_wav_source_stops_when_asked_during_realtime(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", ramp(8000), AudioFormat("pcm16", 8000))

    async def main() -> list[tuple[float, Audio]]:
        clock = VirtualClock()
        ctx = StageContext("c", clock=clock)
        return await timed(wav_source(path=p, ctx=ctx), clock, stop_after=3, ctx=ctx)

    got = asyncio.run(main())
    assert [f.pts for _, f in got] == [0.0, 0.02, 0.04]


def test_wav_source_rejects_bad_frame_ms(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", ramp(10), AudioFormat("pcm16", 8000))
    with pytest.raises(StageError, match="frame_ms must be at least 1, got 0"):
        run_stage("wav_source", path=p, frame_ms=0)


def test_wav_source_closes_the_file_on_early_close(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "a.wav", ramp(8000), AudioFormat("pcm16", 8000))

    async def main() -> None:
        gen = wav_source(path=p, pace="fast", ctx=StageContext("c"))
        first = await gen.__anext__()
        assert isinstance(first, Audio) and first.pts == 0.0
        await gen.aclose()

    asyncio.run(main())  # a leaked file would warn (ResourceWarning) under -W error


@pytest.mark.skipif(not (EXAMPLES / "caller_8k_ulaw.wav").exists(), reason="no example yet")
def test_example_caller_is_8k_ulaw() -> None:
    frames = audio(run_stage("wav_source", path=EXAMPLES / "caller_8k_ulaw.wav", pace="fast"))
    assert {f.format for f in frames} == {AudioFormat("pcmu", 8000)}
    seconds = sum(f.duration for f in frames)
    assert 4.0 <= seconds <= 8.0
    assert (EXAMPLES / "caller_8k_ulaw.wav").stat().st_size < 100_000


# ---------------------------------------------------------------------------- signal_source


def test_signal_sine_values_and_framing() -> None:
    frames = audio(run_stage("signal_source", kind="sine", freq=1000, rate=16000, seconds=0.1))
    assert [f.num_samples for f in frames] == [320] * 5
    assert [f.pts for f in frames] == [0.0, 0.02, 0.04, 0.06, 0.08]
    x = np.frombuffer(b"".join(f.data for f in frames), "<i2")
    want = np.rint(0.5 * 32767 * np.sin(2 * np.pi * 1000 * np.arange(1600) / 16000))
    assert np.array_equal(x, want.astype(np.int16))
    # measured frequency and level
    spec = np.abs(np.fft.rfft(x))
    assert np.argmax(spec) * 16000 / 1600 == 1000
    assert np.max(np.abs(x)) == 16384  # 0.5 * 32767 rounded (at the peak sample)


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["sine", "noise", "silence"]),
    freq=st.floats(20, 7999),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8),
)
def test_signal_blocks_do_not_matter(kind: Any, freq: float, sizes: list[int]) -> None:
    whole = SignalGenerator(kind, rate=16000, freq=freq, seed=3).read(sum(sizes))
    g = SignalGenerator(kind, rate=16000, freq=freq, seed=3)
    assert b"".join(g.read(n) for n in sizes) == whole


def test_sine_phase_is_continuous_across_frames() -> None:
    # 441 Hz at 8 kHz does not fit whole cycles into 20 ms frames
    frames = audio(run_stage("signal_source", freq=441, rate=8000, seconds=1.0, frame_ms=20))
    x = np.frombuffer(b"".join(f.data for f in frames), "<i2").astype(float)
    assert len(x) == 8000
    # no step at frame boundaries larger than the largest step inside a frame
    d = np.abs(np.diff(x))
    boundary = d[159::160]
    assert boundary.max() <= d.max()
    assert d.max() <= 0.5 * 32767 * 2 * np.pi * 441 / 8000 + 1


def test_signal_noise_is_deterministic_and_bounded() -> None:
    a = run_stage("signal_source", kind="noise", seconds=0.5, seed=42, amplitude=0.25)
    b = run_stage("signal_source", kind="noise", seconds=0.5, seed=42, amplitude=0.25)
    c = run_stage("signal_source", kind="noise", seconds=0.5, seed=43, amplitude=0.25)
    assert a == b
    assert a != c
    x = np.frombuffer(b"".join(f.data for f in audio(a)), "<i2")
    assert len(x) == 8000 and np.abs(x).max() <= round(0.25 * 32767)
    assert abs(float(x.mean())) < 200 and float(x.std()) > 0.25 * 32767 / 2


def test_signal_silence() -> None:
    frames = audio(run_stage("signal_source", kind="silence", seconds=0.05, rate=8000))
    assert b"".join(f.data for f in frames) == b"\0" * 800


@pytest.mark.parametrize("enc", ["pcmu", "pcma"])
def test_signal_g711_encodings(enc: str) -> None:
    pcm = audio(run_stage("signal_source", rate=8000, seconds=0.1))
    coded = audio(run_stage("signal_source", rate=8000, seconds=0.1, encoding=enc))
    assert all(f.format == AudioFormat(enc, 8000) for f in coded)  # type: ignore[arg-type]
    assert [f.pts for f in coded] == [f.pts for f in pcm]
    assert b"".join(f.data for f in coded) == g711.encode(b"".join(f.data for f in pcm), enc)  # type: ignore[arg-type]


def test_signal_seconds_rounding_and_last_frame() -> None:
    frames = audio(run_stage("signal_source", rate=8000, seconds=0.0301))
    assert [f.num_samples for f in frames] == [160, 81]
    assert run_stage("signal_source", seconds=0) == []


def test_signal_output_format_and_defaults() -> None:
    spec = spec_for("signal_source")
    assert spec.output_format is not None
    assert spec.output_format({}, None) == AudioFormat("pcm16", 16000)
    assert spec.output_format({"encoding": "pcmu", "rate": 8000}, None) == AudioFormat("pcmu", 8000)
    assert spec.params["pace"].default == "fast"
    assert spec.params["kind"].annotation.__args__ == ("sine", "silence", "noise")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rate": 0}, "rate must be a positive number of Hz, got 0"),
        ({"amplitude": 1.5}, "amplitude is a fraction of full scale (0 to 1), got 1.5"),
        ({"seconds": -1}, "seconds must be 0 or more, got -1"),
        ({"frame_ms": -5}, "frame_ms must be at least 1, got -5"),
    ],
)
def test_signal_bad_params(params: dict[str, Any], message: str) -> None:
    with pytest.raises(StageError) as exc:
        run_stage("signal_source", **params)
    assert str(exc.value) == f"stage 'signal_source' failed: {message}"


def test_signal_realtime_pacing() -> None:
    async def main() -> list[tuple[float, Audio]]:
        clock = VirtualClock()
        ctx = StageContext("sig", clock=clock)
        gen = signal_source(rate=8000, seconds=0.1, frame_ms=25, pace="realtime", ctx=ctx)
        return await timed(gen, clock)

    got = asyncio.run(main())
    assert [(round(t, 6), f.pts) for t, f in got] == [
        (0.0, 0.0),
        (0.025, 0.025),
        (0.05, 0.05),
        (0.075, 0.075),
    ]


def test_frame_samples() -> None:
    assert frame_samples(8000, 20) == 160
    assert frame_samples(11025, 20) == 220  # 220.5 rounds to even
    assert frame_samples(8000, 0) == 1


def test_conformance(tmp_path: Path) -> None:
    p = write_wav(tmp_path / "u.wav", bytes(range(256)) * 10, AudioFormat("pcmu", 8000))
    out = audio(check_stage("wav_source", path=p, pace="realtime"))
    assert len(out) == 16 and out[-1].num_samples == 160
    out = audio(check_stage("signal_source", kind="noise", encoding="pcma", rate=8000))
    assert len(out) == 50 and out[0].format == AudioFormat("pcma", 8000)
