"""The denoise stage: RNNoise through our binding, checked against pyrnnoise's own, on the
speech set and on generated noise."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Interrupt, Text
from pipeline.spec import spec_for
from pipeline.testing import run_stage
from stages.denoise import RATES, Denoiser, rnnoise_library
from stages.vad.quality import read_wav

try:
    rnnoise_library()
except Exception as exc:  # not installed: say so once, for every test here
    pytest.skip(f"RNNoise is not installed: {exc}", allow_module_level=True)


def run(samples: np.ndarray, rate: int, chunk: int) -> np.ndarray:
    with Denoiser(rate) as d:
        out = [d.process(samples[i : i + chunk]) for i in range(0, samples.size, chunk)]
        out.append(d.flush())
    return np.concatenate(out)


def noise(seconds: float, rate: int, level: float = 1000.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, int(seconds * rate)), -32768, 32767).astype(np.int16)


def test_our_binding_equals_pyrnnoise_at_48_khz() -> None:
    ref = pytest.importorskip("pyrnnoise.rnnoise")
    x = noise(1.0, 48000, 3000)
    state = ref.create()
    theirs = np.concatenate(
        [ref.process_mono_frame(state, x[i : i + 480])[0] for i in range(0, x.size, 480)]
    )
    ref.destroy(state)
    with Denoiser(48000) as d:
        ours = np.concatenate([d.process(x[i : i + 480]) for i in range(0, x.size, 480)])
    # pyrnnoise truncates the network's float output to int16, we round: at most 1 LSB apart
    assert ours.size == theirs.size
    assert np.abs(ours.astype(np.int32) - theirs.astype(np.int32)).max() <= 1


@pytest.mark.parametrize("rate", RATES)
def test_as_many_samples_come_out_as_went_in(rate: int) -> None:
    x = noise(0.537, rate)
    assert run(x, rate, rate // 50).size == x.size
    assert run(x, rate, 7).size == x.size


@settings(max_examples=15, deadline=None)
@given(chunks=st.lists(st.integers(1, 900), min_size=1, max_size=12))
def test_any_chunking_gives_the_same_samples(chunks: list[int]) -> None:
    x = noise(0.4, 16000, seed=3)
    whole = run(x, 16000, 320)
    out = []
    with Denoiser(16000) as d:
        at = 0
        for n in chunks * 100:
            if at >= x.size:
                break
            out.append(d.process(x[at : at + n]))
            at += n
        out.append(d.process(x[at:]))
        out.append(d.flush())
    assert np.array_equal(np.concatenate(out), whole)


def test_steady_noise_is_suppressed() -> None:
    x = noise(3.0, 16000, 600)
    y = run(x, 16000, 320)
    after = y[16000:].astype(np.float64)  # once it has learnt the noise
    before = x[16000:].astype(np.float64)
    reduction_db = 10 * np.log10(np.mean(before**2) / np.mean(after**2))
    assert reduction_db > 15, reduction_db


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_clean_speech_keeps_its_energy_and_comes_out_late_by_delay_s(
    speech_set: Path, rate: int
) -> None:
    import soxr

    x16, _ = read_wav(speech_set / "vad" / "dev-00-none-clean.wav")
    x16 = x16[: 16000 * 6]
    x = x16 if rate == 16000 else np.rint(soxr.resample(x16, 16000, rate)).astype(np.int16)
    with Denoiser(rate) as d:
        delay = d.delay_s
    y = run(x, rate, rate // 50)
    a, b = x.astype(np.float64), y.astype(np.float64)
    lags = np.arange(int(0.04 * rate))
    corr = [np.dot(a[: a.size - k], b[k:]) for k in lags]
    assert abs(int(np.argmax(corr)) - delay * rate) <= 0.0012 * rate  # within 1.2 ms
    # RNNoise is recurrent and gates words: where the speech falls against its 10 ms frames
    # can change its gain on one word by 10 dB or more. At 16 kHz, over 20 starts 0.5 ms apart,
    # 1 or 2 lose more than 1 dB overall (with either resampler filter), the rest 0.1-0.8 dB:
    # the energy is judged by the median over three starts 2.5 ms apart.
    changes = [10 * np.log10(np.sum(b**2) / np.sum(a**2))]
    for k in (1, 2):
        xs = x[k * rate // 400 :]
        ys = run(xs, rate, rate // 50).astype(np.float64)
        changes.append(10 * np.log10(np.sum(ys**2) / np.sum(xs.astype(np.float64) ** 2)))
    assert abs(float(np.median(changes))) < 1.0, changes


def test_the_stage_keeps_the_timeline_and_passes_other_frames() -> None:
    x = noise(0.2, 16000)
    frames = [
        Audio.from_samples(x[i : i + 320], 16000, pts=1.0 + i / 16000) for i in range(0, 3200, 320)
    ]
    out = run_stage("denoise", [Text("hi"), *frames[:5], Interrupt(pts=1.1), *frames[5:]])
    assert out[0] == Text("hi") and Interrupt(pts=1.1) in out
    audio = [f for f in out if isinstance(f, Audio)]
    assert sum(f.num_samples for f in audio) == 3200
    assert audio[0].pts == 1.0
    for a, b in itertools.pairwise(audio):
        assert b.pts == pytest.approx(a.end_pts)
    assert np.array_equal(np.concatenate([f.samples() for f in audio]), run(x, 16000, 320))


@pytest.mark.parametrize(
    ("fmt", "message", "fix"),
    [
        (AudioFormat("pcm16", 44100), "gets 44100 Hz audio; RNNoise runs at 48000 Hz", "resample"),
        (
            AudioFormat("pcmu", 8000),
            "gets pcmu 8000 Hz audio; the denoise stage takes mono pcm16",
            "g711_decode",
        ),
        (AudioFormat("pcm16", 16000, 2), "takes mono pcm16", "mono"),
    ],
)
def test_formats_it_cannot_take_are_refused_before_running(
    fmt: AudioFormat, message: str, fix: str
) -> None:
    spec = spec_for("denoise")
    assert spec.output_format is not None
    for rate in RATES:
        assert spec.output_format({}, AudioFormat("pcm16", rate)) == AudioFormat("pcm16", rate)
    with pytest.raises(FormatError) as err:
        spec.output_format({}, fmt)
    assert message in err.value.message and fix in err.value.fix


def test_a_rate_change_mid_stream_is_refused() -> None:
    frames = [Audio(bytes(640), "pcm16", 16000), Audio(bytes(320), "pcm16", 8000)]
    with pytest.raises(FormatError, match="gets pcm16 8000 Hz audio after pcm16 16000 Hz"):
        run_stage("denoise", frames)
