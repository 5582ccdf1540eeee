"""Resampling: each number the low-latency engine promises, measured; soxr mode against one-shot
soxr.resample; chunk-size invariance; and the stage (flush, interrupt, pts, format errors)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt, Text
from pipeline.spec import spec_for
from pipeline.testing import make_context, run_stage
from stages.resample import PolyphaseResampler, StreamResampler

I16 = npt.NDArray[np.int16]
F64 = npt.NDArray[np.float64]

#: the ratios telephony uses, plus a few odd ones the generic polyphase path takes
TELEPHONY = [
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (48000, 8000),
    (8000, 48000),
    (48000, 16000),
    (48000, 24000),
]
ODD = [(44100, 16000), (22050, 8000), (11025, 16000), (8000, 44100)]
AMP = 16000.0  # about -6 dBFS


def tone(freq: float, rate: int, seconds: float, amp: float = AMP) -> I16:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stream(rs: StreamResampler, x: I16, sizes: list[int] | int) -> tuple[I16, list[int]]:
    """Feed x in chunks (fixed size, or the given sizes then the rest); return all output
    (flush included) and the number of samples each chunk returned."""
    if isinstance(sizes, int):
        sizes = [sizes] * (len(x) // sizes + 1)
    outs, counts, i = [], [], 0
    for n in sizes:
        if i >= len(x):
            break
        y = rs.process(x[i : i + n])
        outs.append(y)
        counts.append(len(y))
        i += n
    if i < len(x):
        outs.append(rs.process(x[i:]))
    outs.append(rs.flush())
    return np.concatenate(outs), counts


def fit_tone(y: F64, freq: float, rate: int) -> tuple[float, float]:
    """Least-squares sinusoid at ``freq``: (its amplitude, RMS of what is left)."""
    t = np.arange(len(y)) / rate
    basis = np.stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    resid = y - basis @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(resid**2)))


def steady(y: I16, rate: int, n_out_before_flush: int) -> F64:
    """The output after the start transient and before the end transient (10 ms each)."""
    skip = int(0.010 * rate)
    return y[skip : n_out_before_flush - skip].astype(np.float64)


def db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


def low_latency_out(in_rate: int, out_rate: int, x: I16) -> I16:
    rs = StreamResampler(in_rate, out_rate)
    return rs.process(x)  # no flush: the tail after the tone ends is its own transient


# ---------------------------------------------------------------------------- stop band


def stop_band_tones(in_rate: int, out_rate: int) -> list[float]:
    """Input tones whose output (alias or image) lies in [0.575 × min, Nyquist)."""
    low = min(in_rate, out_rate)
    fracs = [0.575, 0.6, 0.65, 0.75, 0.9, 1.0, 1.2, 1.5, 2.0, 2.5, 2.9]
    return [f * low for f in fracs if f * low < 0.5 * in_rate - 50]


@pytest.mark.parametrize(
    "in_rate,out_rate",
    [(24000, 8000), (16000, 8000), (48000, 8000), (24000, 16000), (48000, 16000), (44100, 16000)],
)
def test_aliases_attenuated_70db_when_downsampling(in_rate: int, out_rate: int) -> None:
    worst = -999.0
    for f in stop_band_tones(in_rate, out_rate):
        y = low_latency_out(in_rate, out_rate, tone(f, in_rate, 0.25))
        level = db(float(np.sqrt(np.mean(steady(y, out_rate, len(y)) ** 2))) / (AMP / math.sqrt(2)))
        assert level <= -70.0, f"{f:.0f} Hz at {in_rate} -> {out_rate}: alias at {level:.1f} dB"
        worst = max(worst, level)
    print(f"{in_rate}->{out_rate}: worst alias {worst:.1f} dB")


@pytest.mark.parametrize(
    "in_rate,out_rate", [(8000, 16000), (8000, 24000), (8000, 48000), (16000, 24000)]
)
def test_images_attenuated_70db_when_upsampling(in_rate: int, out_rate: int) -> None:
    # a tone at f comes with images at k·in ± f; with f ≤ 0.425·in they all lie in the stop band
    for frac in (0.0125, 0.0625, 0.125, 0.25, 0.375, 0.425):
        f = frac * in_rate
        y = low_latency_out(in_rate, out_rate, tone(f, in_rate, 0.25))
        amp, resid = fit_tone(steady(y, out_rate, len(y)), f, out_rate)
        level = db(resid / (amp / math.sqrt(2)))
        assert level <= -70.0, f"{f:.0f} Hz at {in_rate} -> {out_rate}: images at {level:.1f} dB"


def test_soxr_qq_aliases_for_contrast() -> None:
    """Why low_latency does not just use soxr QQ: 5 kHz at 24 kHz → 8 kHz comes out as 3 kHz."""
    x = tone(5000, 24000, 0.25)
    qq = soxr.resample(x, 24000, 8000, quality="QQ").astype(np.float64)[80:-80]
    amp, _ = fit_tone(qq, 3000, 8000)
    assert db(amp / AMP) > -10  # barely attenuated
    ours = low_latency_out(24000, 8000, x)
    assert db(fit_tone(steady(ours, 8000, len(ours)), 3000, 8000)[0] / AMP) < -70


# ---------------------------------------------------------------------------- pass band


@pytest.mark.parametrize("in_rate,out_rate", TELEPHONY + ODD)
def test_pass_band_ripple_within_half_db(in_rate: int, out_rate: int) -> None:
    low = min(in_rate, out_rate)
    freqs = [100, 300, 1000, 2000, 3000, 0.425 * low]
    gains = []
    for f in freqs:
        y = low_latency_out(in_rate, out_rate, tone(f, in_rate, 0.2))
        amp, _ = fit_tone(steady(y, out_rate, len(y)), f, out_rate)
        gains.append(db(amp / AMP))
    assert max(gains) - min(gains) <= 0.5, gains
    assert max(abs(g) for g in gains) <= 0.5, gains


# ---------------------------------------------------------------------------- delay


def impulse_delay_s(in_rate: int, out_rate: int) -> tuple[float, float]:
    """(delay measured from an impulse's centre of mass, worst hold-back after a 20 ms frame)."""
    rs = StreamResampler(in_rate, out_rate)
    x = np.zeros(in_rate // 10, dtype=np.int16)
    n0 = in_rate // 25
    x[n0] = 30000
    outs, hold = [], 0.0
    for i in range(0, len(x), in_rate // 50):
        outs.append(rs.process(x[i : i + in_rate // 50]))
        hold = max(hold, rs.samples_in / in_rate - rs.samples_out / out_rate)
    outs.append(rs.flush())
    y = np.concatenate(outs).astype(np.float64)
    centre = float(np.sum(np.arange(len(y)) * y) / np.sum(y))
    return centre / out_rate - n0 / in_rate, hold


@pytest.mark.parametrize("in_rate,out_rate", TELEPHONY + ODD)
def test_added_delay_at_most_5ms_measured_with_an_impulse(in_rate: int, out_rate: int) -> None:
    delay, hold = impulse_delay_s(in_rate, out_rate)
    expected = StreamResampler(in_rate, out_rate).delay_s
    assert delay == pytest.approx(expected, abs=2e-5)  # the reported delay is the real one
    assert hold <= 1 / out_rate + 1e-12  # nothing held back beyond one output sample
    assert delay + hold <= 0.005
    print(f"{in_rate}->{out_rate}: delay {delay * 1e3:.3f} ms, hold-back {hold * 1e3:.3f} ms")


@pytest.mark.parametrize("in_rate,out_rate", [(8000, 16000), (24000, 8000), (16000, 24000)])
def test_delay_by_cross_correlation_with_aligned_soxr(in_rate: int, out_rate: int) -> None:
    # soxr one-shot output is aligned with its input: the lag of the correlation peak is ours
    rng = np.random.default_rng(7)
    x = np.clip(rng.standard_normal(in_rate // 2) * 4000, -32768, 32767).astype(np.int16)
    ref = soxr.resample(x, in_rate, out_rate, quality="VHQ").astype(np.float64)
    rs = StreamResampler(in_rate, out_rate)
    y = stream(rs, x, in_rate // 50)[0].astype(np.float64)
    n = len(ref) - 200
    r = np.array([np.dot(y[k : k + n], ref[:n]) for k in range(0, 200)])
    k = int(np.argmax(r))  # the whole-sample lag; the fraction from the cross-spectrum's phase
    f = np.fft.rfftfreq(n, 1 / out_rate)
    cross = np.fft.rfft(y[k : k + n]) * np.conj(np.fft.rfft(ref[:n]))
    band = (f > 50) & (f < 0.4 * min(in_rate, out_rate))
    slope = np.polyfit(2 * np.pi * f[band], np.unwrap(np.angle(cross[band])), 1)[0]
    lag = k - slope * out_rate
    assert lag / out_rate == pytest.approx(rs.delay_s, abs=0.1 / out_rate)
    assert lag / out_rate <= 0.005


# ---------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("in_rate,out_rate", TELEPHONY + ODD)
@pytest.mark.parametrize("frame_ms", [10, 20])
def test_every_frame_returns_audio_and_length_tracks_input(
    in_rate: int, out_rate: int, frame_ms: int
) -> None:
    rs = StreamResampler(in_rate, out_rate)
    n = in_rate * frame_ms // 1000
    x = tone(440, in_rate, 1.0)[: n * 40]
    _, counts = stream(rs, x, n)
    assert len(counts) == 40 and min(counts) > 0
    cum_in = np.cumsum([n] * len(counts))
    ideal = np.floor(cum_in * out_rate / in_rate)
    assert np.all(np.abs(np.cumsum(counts) - ideal) <= 1)


RATIOS = st.sampled_from(TELEPHONY + ODD)


@st.composite
def signal_and_splits(draw: st.DrawFn, max_len: int = 3000) -> tuple[I16, list[int]]:
    n = draw(st.integers(0, max_len))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "sine", "loud"]))
    if kind == "noise":
        x = np.clip(rng.standard_normal(n) * 5000, -32768, 32767)
    elif kind == "sine":
        x = 20000 * np.sin(2 * np.pi * rng.uniform(50, 3500) / 8000 * np.arange(n))
    else:  # full scale square-ish: the filter overshoots, output must saturate, not wrap
        x = np.where(rng.random(n) < 0.5, -32768, 32767)
    sizes = draw(st.lists(st.integers(0, 700), max_size=30))
    return np.rint(x).astype(np.int16), sizes


@settings(max_examples=60, deadline=None)
@given(RATIOS, signal_and_splits())
def test_polyphase_chunking_is_sample_exact(
    rates: tuple[int, int], case: tuple[I16, list[int]]
) -> None:
    in_rate, out_rate = rates
    x, sizes = case
    whole = stream(StreamResampler(in_rate, out_rate), x, [len(x)])[0]
    rs = StreamResampler(in_rate, out_rate)
    split, counts = stream(rs, x, sizes)
    np.testing.assert_array_equal(split, whole)
    # after every chunk, output = ceil(input × ratio) (so floor(...) + 0 or 1)
    cum_in = np.minimum(np.cumsum(sizes[: len(counts)]), len(x))
    assert np.all(np.cumsum(counts) == -(-cum_in * out_rate // in_rate))


@settings(max_examples=60, deadline=None)
@given(RATIOS, st.sampled_from(["QQ", "LQ", "MQ", "HQ", "VHQ"]), signal_and_splits())
def test_soxr_mode_equals_one_shot_soxr(
    rates: tuple[int, int], quality: str, case: tuple[I16, list[int]]
) -> None:
    in_rate, out_rate = rates
    x, sizes = case
    rs = StreamResampler(in_rate, out_rate, quality=quality, low_latency=False)  # type: ignore[arg-type]
    y = stream(rs, x, sizes)[0]
    ref = soxr.resample(x, in_rate, out_rate, quality=quality)
    assert len(y) == len(ref)
    assert np.abs(y.astype(np.int32) - ref).max(initial=0) <= 1
    # bytes in and out (what the stage calls): the same samples
    rs = StreamResampler(in_rate, out_rate, quality=quality, low_latency=False)  # type: ignore[arg-type]
    parts, i = [], 0
    for n in sizes:
        parts.append(rs.process_bytes(x[i : i + n].tobytes()))
        i += n
    parts += [rs.process_bytes(x[i:].tobytes()), rs.flush().astype("<i2").tobytes()]
    np.testing.assert_array_equal(np.frombuffer(b"".join(parts), dtype="<i2"), y)


@pytest.mark.parametrize("low_latency", [True, False])
def test_sine_in_random_chunks_has_no_click(low_latency: bool) -> None:
    x = tone(1000, 8000, 1.0)
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.integers(1, 400, size=200)]
    whole = stream(StreamResampler(8000, 24000, low_latency=low_latency), x, [len(x)])[0]
    split = stream(StreamResampler(8000, 24000, low_latency=low_latency), x, sizes)[0]
    diff = np.abs(split.astype(np.int32) - whole)
    assert diff.max() == 0 if low_latency else diff.max() <= 1


def test_flush_releases_the_tail_and_resets() -> None:
    rs = StreamResampler(8000, 16000)
    x = tone(1000, 8000, 0.1)
    y = rs.process(x)
    tail = rs.flush()
    assert len(y) == 1600
    assert len(tail) == math.ceil(rs.delay_s * 16000)
    # the tail is what silence after the tone would have pushed out
    rs2 = StreamResampler(8000, 16000)
    rs2.process(x)
    np.testing.assert_array_equal(tail, rs2.process(np.zeros(100, np.int16))[: len(tail)])
    assert rs.samples_in == 0 and rs.samples_out == 0
    assert len(rs.flush()) == 0  # nothing owed after a flush
    # a fresh stream after the flush is the same as a new resampler
    np.testing.assert_array_equal(rs.process(x), StreamResampler(8000, 16000).process(x))


def test_reset_drops_history() -> None:
    rs = StreamResampler(8000, 16000)
    rs.process(tone(1000, 8000, 0.05))
    rs.reset()
    x = tone(300, 8000, 0.05)
    np.testing.assert_array_equal(rs.process(x), StreamResampler(8000, 16000).process(x))


def test_accepts_bytes_and_same_rate_is_identity() -> None:
    x = tone(440, 16000, 0.02)
    np.testing.assert_array_equal(
        StreamResampler(8000, 16000).process(x.tobytes()), StreamResampler(8000, 16000).process(x)
    )
    same = StreamResampler(16000, 16000)
    assert same.delay_s == 0.0
    np.testing.assert_array_equal(same.process(x), x)


def test_filter_design() -> None:
    r = PolyphaseResampler(8000, 24000)
    assert r.up == 3 and r.down == 1
    assert r.num_taps % 3 == 0
    np.testing.assert_allclose(r.taps, r.taps[::-1])  # linear phase
    assert r.delay_s == pytest.approx((r.num_taps - 1) / 2 / 24000)
    with pytest.raises(ValueError, match="positive"):
        PolyphaseResampler(0, 8000)


# ---------------------------------------------------------------------------- the stage


def frames_of(x: I16, rate: int, ms: int = 20, pts0: float = 0.0) -> list[Audio]:
    n = rate * ms // 1000
    return [
        Audio.from_samples(x[i : i + n], rate, pts=pts0 + i / rate) for i in range(0, len(x), n)
    ]


def audio_of(out: Sequence[Frame]) -> I16:
    return np.concatenate([f.samples() for f in out if isinstance(f, Audio)])


def test_stage_streams_flushes_and_keeps_pts_continuous() -> None:
    x = tone(1000, 8000, 0.2)
    ins = frames_of(x, 8000, pts0=5.0)
    spec = spec_for("resample")
    ctx = make_context(spec)
    out = run_stage("resample", ins, ctx=ctx, rate=16000)
    audio = [f for f in out if isinstance(f, Audio)]
    assert len(audio) == len(ins) + 1  # one per input frame, then the flushed tail
    ref = stream(StreamResampler(8000, 16000), x, [len(x)])[0]
    np.testing.assert_array_equal(audio_of(out), ref)
    assert all(f.rate == 16000 and f.encoding == "pcm16" for f in audio)
    assert audio[0].pts == 5.0
    for a, b in itertools.pairwise(audio):
        assert b.pts == pytest.approx(a.end_pts, abs=1e-9)
    assert ctx.reports["algorithmic_delay_ms"] == pytest.approx(1.594, abs=0.01)


def test_stage_soxr_mode_matches_one_shot_and_skips_empty_outputs() -> None:
    x = tone(700, 24000, 0.3)
    out = run_stage("resample", frames_of(x, 24000), rate=8000, low_latency=False, quality="VHQ")
    audio = [f for f in out if isinstance(f, Audio)]
    assert all(f.num_samples > 0 for f in audio)
    ref = soxr.resample(x, 24000, 8000, quality="VHQ")
    y = audio_of(out)
    assert len(y) == len(ref) and np.abs(y.astype(np.int32) - ref).max() <= 1
    for a, b in itertools.pairwise(audio):
        assert b.pts == pytest.approx(a.end_pts, abs=1e-9)


def test_stage_passes_other_frames_and_same_rate_audio_unchanged() -> None:
    a = Audio.from_samples(tone(440, 16000, 0.02), 16000)
    t = Text("hello")
    out = run_stage("resample", [t, a, t], rate=16000)
    assert out == [t, a, t]
    assert out[1] is a


def test_stage_interrupt_resets_and_is_forwarded() -> None:
    x = tone(1000, 8000, 0.1)
    before, after = frames_of(x, 8000), frames_of(tone(300, 8000, 0.06), 8000, pts0=3.0)
    irq = Interrupt(pts=0.1)
    out = run_stage("resample", [*before, irq, *after], rate=16000)
    i = out.index(irq)
    head = audio_of(out[:i])
    assert len(head) == 1600  # nothing flushed: the tail is dropped on barge-in
    tail_part = [f for f in out[i + 1 :] if isinstance(f, Audio)]
    assert tail_part[0].pts == 3.0
    ref = stream(StreamResampler(8000, 16000), tone(300, 8000, 0.06), [480])[0]
    np.testing.assert_array_equal(audio_of(out[i + 1 :]), ref)


def test_stage_flushes_at_a_pts_gap() -> None:
    a, b = tone(1000, 8000, 0.04), tone(500, 8000, 0.04)
    ins = frames_of(a, 8000) + frames_of(b, 8000, pts0=10.0)
    out = [f for f in run_stage("resample", ins, rate=16000) if isinstance(f, Audio)]
    # two input frames, the first segment's tail, two frames, the second tail
    assert [round(f.pts, 6) for f in out] == [0.0, 0.02, 0.04, 10.0, 10.02, 10.04]
    ra = stream(StreamResampler(8000, 16000), a, [len(a)])[0]
    np.testing.assert_array_equal(audio_of(out[:3]), ra)


@pytest.mark.parametrize("low_latency", [True, False])
def test_stage_segment_starts_at_its_first_samples(low_latency: bool) -> None:
    # an empty frame, then audio elsewhere on the timeline, then an interrupt and more audio:
    # each segment's pts come from its first frame with samples
    x = tone(1000, 8000, 0.4)  # soxr holds back up to ~0.15 s
    ins: list[Frame] = [Audio(b"", "pcm16", 8000, 1, 1.0), *frames_of(x, 8000, pts0=5.0)]
    ins += [Interrupt(pts=5.4), Audio(b"", "pcm16", 8000, 1, 6.0), *frames_of(x, 8000, pts0=7.0)]
    out = run_stage("resample", ins, rate=16000, low_latency=low_latency)
    i = next(k for k, f in enumerate(out) if isinstance(f, Interrupt))
    for part, pts0 in ((out[:i], 5.0), (out[i + 1 :], 7.0)):
        audio = [f for f in part if isinstance(f, Audio)]
        assert audio[0].pts == pts0
        for a, b in itertools.pairwise(audio):
            assert b.pts == pytest.approx(a.end_pts, abs=1e-9)
    ref = stream(StreamResampler(8000, 16000, low_latency=low_latency), x, [len(x)])[0]
    np.testing.assert_array_equal(audio_of(out[i + 1 :]), ref)


def test_stage_rejects_g711_with_the_fix() -> None:
    spec = spec_for("resample")
    assert spec.output_format is not None
    with pytest.raises(FormatError) as exc:
        spec.output_format({"rate": 16000}, AudioFormat("pcmu", 8000))
    # the graph prints "stage 'up' (resample): <message>; <fix>"
    assert exc.value.message == "gets pcmu 8000 Hz audio; resample needs pcm16"
    assert exc.value.fix == "add {type: g711_decode} before it"
    assert spec.output_format({"rate": 16000}, AudioFormat("pcm16", 8000)) == AudioFormat(
        "pcm16", 16000
    )
    pcmu = Audio(b"\xff" * 160, "pcmu", 8000)
    with pytest.raises(FormatError, match="g711_decode"):
        run_stage("resample", [pcmu], rate=16000)
    with pytest.raises(FormatError, match="needs mono"):
        spec.output_format({"rate": 16000}, AudioFormat("pcm16", 8000, 2))


@pytest.mark.parametrize("in_rate,out_rate", TELEPHONY + ODD)
def test_filter_response_over_the_whole_stop_band(in_rate: int, out_rate: int) -> None:
    # the tone tests sample the stop band; the filter's own spectrum covers all of it
    r = PolyphaseResampler(in_rate, out_rate)
    fs = in_rate * r.up
    n_fft = 1 << max(16, (r.num_taps * 8).bit_length())
    spec = np.abs(np.fft.rfft(r.taps / r.up, n_fft))
    f = np.fft.rfftfreq(n_fft, 1 / fs)
    low = min(in_rate, out_rate)
    stop = 20 * np.log10(spec[f >= 0.575 * low].max())
    passband = 20 * np.log10(spec[f <= 0.425 * low])
    assert stop <= -70, stop
    assert passband.max() - passband.min() <= 0.5


@pytest.mark.parametrize("in_rate,out_rate", [(8000, 24000), (24000, 16000), (48000, 8000)])
def test_block_size_is_only_a_speed_choice(in_rate: int, out_rate: int) -> None:
    x = np.clip(np.random.default_rng(5).standard_normal(in_rate // 5) * 5000, -32768, 32767)
    x16 = x.astype(np.int16)
    outs = []
    for k in (None, 1, 3, 17):
        r = PolyphaseResampler(in_rate, out_rate, block_periods=k)
        outs.append(np.concatenate([r.process(x16[i : i + 333]) for i in range(0, len(x), 333)]))
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_stage_flushes_when_the_input_rate_changes() -> None:
    a, b = tone(1000, 8000, 0.04), tone(500, 16000, 0.04)
    ins = frames_of(a, 8000) + frames_of(b, 16000, pts0=0.04) + frames_of(a, 8000, pts0=0.08)
    out = [f for f in run_stage("resample", ins, rate=16000) if isinstance(f, Audio)]
    ra = stream(StreamResampler(8000, 16000), a, [len(a)])[0]
    np.testing.assert_array_equal(audio_of(out[:3]), ra)  # 2 frames and the tail
    assert out[3] is ins[2] and out[4] is ins[3]  # 16 kHz audio passes as is
    np.testing.assert_array_equal(audio_of(out[5:]), ra)
    assert out[5].pts == 0.08


def test_stage_rejects_a_bad_rate() -> None:
    with pytest.raises(FormatError, match="not a sample rate"):
        run_stage("resample", [], rate=0)


def test_gather_form_for_odd_ratios_matches_the_block_form(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.clip(np.random.default_rng(9).standard_normal(4410) * 5000, -32768, 32767)
    x16 = x.astype(np.int16)
    block = PolyphaseResampler(44100, 16000, engine="pure")
    monkeypatch.setattr("stages.resample._MAX_BLOCK_MATRIX", 0)
    gather = PolyphaseResampler(44100, 16000, engine="pure")
    assert block._block is not None and gather._block is None
    yb = np.concatenate([block.process(x16), block.flush()])
    sizes = np.random.default_rng(1).integers(0, 500, size=40)
    parts, i = [], 0
    for n in sizes:
        parts.append(gather.process(x16[i : i + n]))
        i += int(n)
    parts += [gather.process(x16[i:]), gather.flush()]
    yg = np.concatenate(parts)
    assert len(yg) == len(yb)
    # the same sums in another order: the same samples (the sums are exact, see TAP_BITS)
    np.testing.assert_array_equal(yg, yb)
    np.testing.assert_array_equal(yg, np.concatenate([gather.process(x16), gather.flush()]))
    parts_b, i = [], 0
    for n in sizes:
        parts_b.append(gather.process_bytes(x16[i : i + n].tobytes()))
        i += int(n)
    parts_b += [gather.process_bytes(x16[i:].tobytes()), gather.flush().astype("<i2").tobytes()]
    np.testing.assert_array_equal(np.frombuffer(b"".join(parts_b), dtype="<i2"), yg)
