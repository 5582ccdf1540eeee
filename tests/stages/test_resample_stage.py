"""The resample stage's steady-state path against a plain reference of its rules.

The stage skips its checks for a frame that goes on with the segment (same rate, pts within the
gap tolerance of where the segment has got to, pcm16 mono). Here every stream of frames hypothesis
draws (rate changes, same-rate audio, pts jitter inside and outside the tolerance, empty frames,
interrupts, events) must come out frame for frame as the rules say, written out plainly below:
a jump in pts or a change of rate flushes the tail and starts a new segment at the frame's pts,
same-rate audio passes as is, an interrupt drops the history, the end flushes the tail."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.frames import Audio, Frame, Interrupt, Text
from pipeline.testing import run_stage
from stages.resample import GAP_TOLERANCE_S, StreamResampler


def reference(frames: Sequence[Frame], rate: int, low_latency: bool) -> list[Frame]:
    """The stage's rules, one frame at a time, with nothing skipped."""
    out: list[Frame] = []
    rs: StreamResampler | None = None
    in_rate, anchor, n_in, n_out = 0, 0.0, 0, 0

    def flush() -> None:
        nonlocal n_in, n_out
        if rs is not None:
            y = rs.flush()
            if len(y):
                out.append(Audio(y.tobytes(), "pcm16", rate, 1, anchor + n_out / rate))
        n_in = n_out = 0

    for f in frames:
        if isinstance(f, Audio):
            if f.rate == rate:
                flush()
                rs, in_rate = None, 0
                out.append(f)
                continue
            if f.rate != in_rate:
                flush()
                rs, in_rate = StreamResampler(f.rate, rate, "HQ", low_latency), f.rate
            elif n_in and abs(f.pts - (anchor + n_in / f.rate)) > GAP_TOLERANCE_S:
                flush()
            if n_in == 0:
                anchor = f.pts
            assert rs is not None
            y = rs.process(f.data)
            n_in += len(f.data) // 2
            if len(y):
                out.append(Audio(y.tobytes(), "pcm16", rate, 1, anchor + n_out / rate))
                n_out += len(y)
        elif isinstance(f, Interrupt):
            if rs is not None:
                rs.reset()
            n_in = n_out = 0
            out.append(f)
        else:
            out.append(f)
    flush()
    return out


#: one step of a stream: ("audio", rate, samples as a fraction of 20 ms, pts jump in seconds),
#: ("interrupt",) or ("text",)
_jumps = st.sampled_from([0.0, 0.0, 0.0, 0.0004, -0.0009, 0.0011, -0.0015, 0.25, -3.0])
_step = st.one_of(
    st.tuples(
        st.just("audio"),
        st.sampled_from([8000, 8000, 8000, 16000, 24000]),
        st.sampled_from([1.0, 1.0, 1.0, 0.0, 0.5, 1.5]),
        _jumps,
    ),
    st.tuples(st.just("interrupt")),
    st.tuples(st.just("text")),
)


def _frames(steps: list[tuple[object, ...]], seed: int) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames: list[Frame] = []
    pts = 2.0
    for step in steps:
        if step[0] == "interrupt":
            frames.append(Interrupt(pts=pts))
        elif step[0] == "text":
            frames.append(Text("hi"))
        else:
            _, rate, size, jump = step
            assert isinstance(rate, int) and isinstance(size, float) and isinstance(jump, float)
            n = int(rate * 0.02 * size)
            x = (rng.standard_normal(n) * 4000).astype(np.int16)
            pts = max(0.0, pts + jump)
            frames.append(Audio(x.tobytes(), "pcm16", rate, 1, pts))
            pts += n / rate
    return frames


@pytest.mark.parametrize("low_latency", [True, False])
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=30), seed=st.integers(0, 2**16))
def test_stage_equals_the_plain_rules(
    low_latency: bool, steps: list[tuple[object, ...]], seed: int
) -> None:
    frames = _frames(steps, seed)
    got = run_stage("resample", frames, rate=16000, low_latency=low_latency)
    assert got == reference(frames, 16000, low_latency)


def test_a_long_steady_stream_keeps_exact_pts_and_samples() -> None:
    # 30 s of 20 ms frames whose pts are i × 0.02 (not exactly the segment's sample count over
    # the rate): no frame is taken for a gap, and every output pts is anchor + samples / rate
    rng = np.random.default_rng(3)
    frames: list[Frame] = [
        Audio(
            (rng.standard_normal(160) * 3000).astype(np.int16).tobytes(), "pcm16", 8000, 1, i * 0.02
        )
        for i in range(1500)
    ]
    got = run_stage("resample", frames, rate=16000)
    assert got == reference(frames, 16000, True)
    assert len(got) == 1501  # one frame out per frame in, then the tail
    assert all(isinstance(f, Audio) and f.pts == k * 320 / 16000 for k, f in enumerate(got))
