"""The polyphase filter's two engines, the compiled kernel (stages/_cresample.c) and numpy, give
the same bytes and the same errors for any ratio, any chunking, loud input, and resets and
flushes anywhere; the kernel keeps no references it should not and releases every buffer."""

from __future__ import annotations

import sys

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import resample as resample_module
from stages.resample import TAP_BITS, PolyphaseResampler

I16 = npt.NDArray[np.int16]

pytestmark = pytest.mark.skipif(
    resample_module._cresample is None,
    reason="the compiled kernel stages._cresample is not built (or PIPELINE_PURE_PYTHON is set): "
    "nothing to compare the numpy engine with",
)

#: the telephony ratios both ways, and odd ones: 44.1 kHz (160/441 and 160/147), 8000 -> 8001
#: (a filter of 264,033 taps), 3/4 and 4/3, 11025 -> 8000
RATIOS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (24000, 48000),
    (48000, 24000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
    (44100, 16000),
    (16000, 44100),
    (44100, 48000),
    (48000, 44100),
    (8000, 8001),
    (12000, 16000),
    (32000, 24000),
    (11025, 8000),
]


def samples(draw: st.DrawFn, n: int) -> I16:
    """Noise at a drawn level: quiet, speech-like, or full-scale square (outputs saturate)."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.RandomState(seed)
    kind = draw(st.sampled_from(["quiet", "noise", "square", "extremes"]))
    if kind == "quiet":
        return rng.randint(-40, 41, n).astype(np.int16)
    if kind == "noise":
        return np.clip(np.rint(rng.standard_normal(n) * 8000), -32768, 32767).astype(np.int16)
    if kind == "square":
        return np.where(rng.random_sample(n) < 0.5, 32767, -32768).astype(np.int16)
    return rng.choice(np.array([-32768, 32767, 0, -1], np.int16), n)


@st.composite
def scripts(draw: st.DrawFn) -> tuple[tuple[int, int], list[tuple[str, object]]]:
    """A ratio and what happens to the stream: chunks (of any size, as bytes, bytearray,
    memoryview or int16 array, in process or process_bytes), resets, flushes, odd byte counts."""
    ratio = draw(st.sampled_from(RATIOS))
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 25))):
        what = draw(st.sampled_from(["chunk"] * 6 + ["reset", "flush", "odd"]))
        if what == "chunk":
            n = draw(st.one_of(st.integers(0, 50), st.sampled_from([160, 320, 441, 480, 882, 960])))
            how = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "array", "array in"]))
            steps.append((how, samples(draw, n)))
        else:
            steps.append((what, None))
    return ratio, steps


def apply(rs: PolyphaseResampler, how: str, x: object) -> bytes | str:
    """One step on ``rs``: the bytes out, or the error's type and message."""
    try:
        if how == "reset":
            rs.reset()
            return b""
        if how == "flush":
            return rs.flush().astype("<i2").tobytes()
        if how == "odd":
            return rs.process_bytes(b"\x01\x02\x03")
        assert isinstance(x, np.ndarray)
        if how == "array in":
            return rs.process(x).astype("<i2").tobytes()
        data = x.astype("<i2").tobytes()
        if how == "bytearray":
            return rs.process_bytes(bytearray(data))
        if how == "memoryview":
            return rs.process_bytes(memoryview(data))
        if how == "array":
            return rs.process(data).astype("<i2").tobytes()
        return rs.process_bytes(data)
    except Exception as exc:  # the errors must match too
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=150, deadline=None)
@given(scripts())
def test_native_and_pure_give_the_same_bytes(
    case: tuple[tuple[int, int], list[tuple[str, object]]],
) -> None:
    (in_rate, out_rate), steps = case
    native = PolyphaseResampler(in_rate, out_rate, engine="native")
    pure = PolyphaseResampler(in_rate, out_rate, engine="pure")
    assert native.engine == "native" and pure.engine == "pure"
    for i, (how, x) in enumerate(steps):
        a, b = apply(native, how, x), apply(pure, how, x)
        assert a == b, f"step {i} ({how}) of {in_rate} -> {out_rate}"
        assert (native.samples_in, native.samples_out) == (pure.samples_in, pure.samples_out)
    assert native.flush().tobytes() == pure.flush().tobytes()


def test_the_taps_are_exact_multiples_and_the_sums_stay_exact() -> None:
    for in_rate, out_rate in RATIOS:
        rs = PolyphaseResampler(in_rate, out_rate, engine="pure")
        scaled = rs.taps * 2.0**TAP_BITS
        assert np.array_equal(scaled, np.rint(scaled))
        branch_l1 = np.abs(rs.taps).reshape(-1, rs.up).sum(axis=0).max()
        assert 32768 * branch_l1 * 2.0**TAP_BITS < 2.0**53  # every partial sum is exact


def test_the_kernel_keeps_no_references_and_releases_buffers() -> None:
    rs = PolyphaseResampler(8000, 16000, engine="native")
    kernel = rs._kernel
    data = np.arange(-160, 160, dtype="<i2").tobytes()
    before = sys.getrefcount(data), sys.getrefcount(kernel)
    for _ in range(200):
        out = rs.process_bytes(data)
        assert sys.getrefcount(out) == 2  # new bytes, held by `out` alone
    assert (sys.getrefcount(data), sys.getrefcount(kernel)) == before
    # a buffer the kernel took is released, after a good call and after a refused one
    buf = bytearray(data)
    view = memoryview(buf)
    rs.process_bytes(view)
    with pytest.raises(ValueError, match="3 bytes of pcm16: not a whole number"):
        rs.process_bytes(memoryview(bytearray(3)))
    view.release()  # BufferError if the kernel still held an export
    buf.extend(b"\x00\x00")  # likewise for the bytearray itself


def test_the_kernel_refuses_bad_arguments_with_the_numbers() -> None:
    kernel_type = resample_module._cresample.Polyphase  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="must be float64 taps, a non-zero multiple of up = 3"):
        kernel_type(np.ones(4).tobytes(), 3, 1)
    with pytest.raises(ValueError, match=r"up 0 and down 1 must be in 1 \.\. 2\*\*30"):
        kernel_type(np.ones(4).tobytes(), 0, 1)
    with pytest.raises(ValueError, match="tap 1 is not finite"):
        kernel_type(np.array([1.0, np.nan]).tobytes(), 1, 1)
    k = kernel_type(np.ones(4).tobytes(), 1, 1)
    with pytest.raises(TypeError, match="takes 1 argument"):
        k.process()
    with pytest.raises(TypeError):
        k.process(12)
    with pytest.raises(BufferError):  # a strided view: not one run of pcm16 bytes
        k.process(memoryview(bytearray(8))[::2])
    assert (k.samples_in, k.samples_out) == (0, 0)


def test_arrays_out_are_writable_and_the_same_as_bytes_out() -> None:
    # process() wraps the kernel's new bytearray (no copy): a fresh, writable int16 array
    x = np.random.RandomState(8).randint(-9000, 9000, 800).astype(np.int16)
    a = PolyphaseResampler(16000, 8000, engine="native")
    b = PolyphaseResampler(16000, 8000, engine="native")
    for i in range(0, 800, 160):
        y = a.process(x[i : i + 160])
        assert y.dtype == np.int16 and y.flags.writeable
        assert y.tobytes() == b.process_bytes(x[i : i + 160].tobytes())
        y[:] = 0  # writing to it changes nothing in the resampler
    assert a.flush().tobytes() == b.flush().tobytes()
    out = a._kernel.process_bytearray(x.tobytes())
    assert type(out) is bytearray and sys.getrefcount(out) == 2
