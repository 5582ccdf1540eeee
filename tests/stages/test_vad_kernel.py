"""The webrtc engine's per-frame kernel: the compiled ``stages.vad._cvad.Windows`` against its
pure-Python twin ``PureWindows``, on arbitrary audio, frame sizes and splits.

Both must hand ``decide`` the same pre-emphasised windows, return the same scores, keep the same
partial window and carried sample, and raise the same errors. The native cases skip when the
kernel is not built (or ``PIPELINE_PURE_PYTHON`` is set).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stages import g711
from stages.vad import engines
from stages.vad.engines import NativeWindows, PureWindows

IMPLS: dict[str, Any] = {"pure": PureWindows, "native": NativeWindows}
needs_native = pytest.mark.skipif(
    NativeWindows is None, reason="stages.vad._cvad is not built (or PIPELINE_PURE_PYTHON is set)"
)


def _impl(name: str) -> Any:
    if IMPLS[name] is None:
        pytest.skip("stages.vad._cvad is not built (or PIPELINE_PURE_PYTHON is set)")
    return IMPLS[name]


class Recorder:
    """A ``decide`` that keeps every window it is given and answers from its bytes."""

    def __init__(self, fail_at: int = -1) -> None:
        self.windows: list[bytes] = []
        self.calls: list[tuple[Any, int, int]] = []
        self.fail_at = fail_at

    def __call__(self, handle: Any, rate: int, window: bytes, samples: int) -> Any:
        self.windows.append(bytes(window))
        self.calls.append((handle, rate, samples))
        if len(self.windows) - 1 == self.fail_at:
            raise RuntimeError(f"decide failed on window {self.fail_at}")
        # truthiness of an arbitrary object, as webrtcvad's bool would be
        return sum(window[:7]) % 3 == 0 or None


def _run(
    kind: Any, size: int, a: float, data: bytes, splits: list[int], fail_at: int = -1
) -> dict[str, Any]:
    if not any(splits):  # empty calls only would never get through the data
        splits = [*splits, 1]
    rec = Recorder(fail_at)
    w = kind(size, a, rec, "handle", 16000)
    scores: list[Any] = []
    errors: list[str] = []
    at = 0
    k = 0
    while at < len(data):
        n = 2 * splits[k % len(splits)]
        k += 1
        try:
            scores.append(w.process(data[at : at + n]))
        except RuntimeError as exc:
            errors.append(str(exc))
            scores.append(None)
        at += n
    return {
        "scores": scores,
        "windows": rec.windows,
        "calls": rec.calls,
        "errors": errors,
        "pending": w.pending,
        "prev": w.prev,
    }


def _audio(xs: list[int]) -> bytes:
    return np.array(xs, np.int16).tobytes()


samples = st.lists(st.integers(-32768, 32767), max_size=1500)
edges = st.lists(st.sampled_from([-32768, -32767, -1, 0, 1, 32766, 32767]), max_size=400)
alphas = st.one_of(
    st.sampled_from([0.0, 0.5, 0.8, 0.97, float(np.nextafter(1.0, 0.0))]),
    st.floats(0.0, 1.0, exclude_max=True),
)


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    st.one_of(samples, edges),
    st.sampled_from([1, 2, 7, 80, 160, 240, 320, 480, 960, 1440]),
    alphas,
    st.lists(st.integers(0, 2000), min_size=1, max_size=8),
)
def test_native_and_pure_give_the_same_windows_and_scores(
    xs: list[int], size: int, a: float, splits: list[int]
) -> None:
    data = _audio(xs)
    pure = _run(PureWindows, size, a, data, splits)
    assert _run(NativeWindows, size, a, data, splits) == pure
    # and the windows are the whole stream pre-emphasised once, cut every `size` samples
    whole = engines.preemphasize(data, b"\0\0", a) if a and data else data
    n = len(xs) // size
    assert pure["windows"] == [whole[2 * i * size : 2 * (i + 1) * size] for i in range(n)]
    assert pure["pending"] == whole[2 * n * size :]
    assert [s for c in pure["scores"] for s in c] == [
        1.0 if sum(w[:7]) % 3 == 0 else 0.0 for w in pure["windows"]
    ]


@needs_native
@settings(max_examples=100, deadline=None)
@given(
    samples,
    st.sampled_from([3, 160, 480]),
    alphas,
    st.lists(st.integers(0, 1200), min_size=1, max_size=6),
    st.integers(0, 6),
)
def test_a_failing_decide_leaves_both_in_the_same_state(
    xs: list[int], size: int, a: float, splits: list[int], fail_at: int
) -> None:
    data = _audio(xs)
    pure = _run(PureWindows, size, a, data, splits, fail_at)
    assert _run(NativeWindows, size, a, data, splits, fail_at) == pure


@pytest.mark.parametrize("impl", ["pure", "native"])
def test_every_product_is_floored_as_audioop_does(impl: str) -> None:
    """Every int16 value as x[n-1] (shuffled), for pre-emphasis factors with awkward products;
    through an odd-aligned buffer too (a memoryview slice): the kernel reads any alignment."""
    kind = _impl(impl)
    rng = np.random.default_rng(5)
    prevs = np.arange(-32768, 32768, dtype=np.int64)
    rng.shuffle(prevs)
    x = np.empty(2 * len(prevs), np.int16)
    x[0::2] = prevs
    x[1::2] = rng.integers(-32768, 32768, len(prevs))
    data = x.tobytes()
    x1 = np.concatenate([[0], x[:-1]]).astype(np.float64)
    for a in (0.8, 0.5, 0.3333333333333333, 0.7071067811865476, 1e-9, np.nextafter(1.0, 0.0)):
        expected = np.clip(x.astype(np.int64) + np.floor(x1 * -a), -32768, 32767).astype(np.int16)
        for buf in (data, memoryview(bytearray(b"\0" + data))[1:]):
            rec = Recorder()
            assert len(kind(len(x), float(a), rec, None, 8000).process(buf)) == 1
            assert rec.windows == [expected.tobytes()], a
        if engines.AUDIOOP is not None:
            assert engines._preemphasis_audioop(data, b"\0\0", float(a)) == expected.tobytes()


@pytest.mark.parametrize("impl", ["pure", "native"])
def test_refusals_read_the_same(impl: str) -> None:
    kind = _impl(impl)
    rec = Recorder()
    with pytest.raises(ValueError, match=r"^VAD audio of 3 bytes: int16 samples are 2 bytes each"):
        kind(160, 0.8, rec, None, 8000).process(b"abc")
    with pytest.raises(
        ValueError, match=r"^pre-emphasis 1\.0 is out of range; give 0 \(off\) up to below 1$"
    ):
        kind(160, 1.0, rec, None, 8000)
    with pytest.raises(ValueError, match=r"^pre-emphasis -0\.5 is out of range"):
        kind(160, -0.5, rec, None, 8000)
    with pytest.raises(ValueError, match=r"^a VAD window of 0 samples; give 1 to 16777216"):
        kind(0, 0.8, rec, None, 8000)
    with pytest.raises(TypeError, match=r"^decide must be callable .*, got 3$"):
        kind(160, 0.8, 3, None, 8000)


@pytest.mark.parametrize("impl", ["pure", "native"])
def test_reset_forgets_the_partial_window_and_the_carried_sample(impl: str) -> None:
    kind = _impl(impl)
    rec = Recorder()
    w = kind(4, 0.5, rec, None, 8000)
    assert w.process(_audio([100, 200, 300])) == [] and w.prev == 300
    assert w.pending == _audio([100, 150, 200])
    w.reset()
    assert (w.pending, w.prev) == (b"", 0)
    assert len(w.process(_audio([10, 20, 30, 40]))) == 1
    assert rec.windows == [_audio([10, 15, 20, 25])]


@needs_native
def test_the_kernel_holds_no_references_it_should_not() -> None:
    data = _audio(list(range(-500, 500)))

    def rec(handle: Any, rate: int, window: bytes, samples: int) -> bool:
        return window[0] > 128

    handle = object()
    rate = 16001 * 1  # an int of its own, not a cached small int
    before = [sys.getrefcount(o) for o in (data, rec, handle, rate)]
    w = NativeWindows(160, 0.8, rec, handle, rate)
    for _ in range(200):
        for i in range(0, len(data), 222):
            w.process(data[i : i + 222])
            w.process(memoryview(data)[i : i + 222])
    # every window handed over was dropped by the kernel: the recorder's copies are the only refs
    seen: list[Any] = []
    keep = NativeWindows(160, 0.8, lambda h, r, win, s: seen.append(win), handle, rate)
    keep.process(data)
    assert seen and {sys.getrefcount(seen[i]) for i in range(len(seen))} == {2}  # list, argument
    del w, keep
    assert [sys.getrefcount(o) for o in (data, rec, handle, rate)] == before


@needs_native
def test_a_windows_in_a_reference_cycle_is_collected() -> None:
    freed: list[bool] = []

    class Decide:
        windows: Any = None

        def __call__(self, *args: Any) -> bool:
            return False

        def __del__(self) -> None:
            freed.append(True)

    decide = Decide()
    decide.windows = NativeWindows(160, 0.8, decide, None, 8000)  # decide -> windows -> decide
    del decide
    gc.collect()
    assert freed == [True]


def _speech(rate: int) -> npt.NDArray[np.int16]:
    t = np.arange(rate * 2) / rate
    x = 8000 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    return (x + np.random.default_rng(1).normal(0, 300, len(t))).astype(np.int16)


@needs_native
@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_the_engine_decides_alike_on_both(rate: int, frame_ms: int) -> None:
    pytest.importorskip("webrtcvad")
    x = _speech(rate)
    got: dict[bool, list[float]] = {}
    for native in (False, True):
        e = engines.WebrtcEngine(rate, frame_ms=frame_ms, native=native)
        step: Callable[[int], int] = lambda i: (i * 37) % (rate // 25) + 1  # noqa: E731
        out, at, i = [], 0, 0
        while at < len(x):
            out += e.process_bytes(x[at : at + step(i)].tobytes())
            at += step(i)
            i += 1
        got[native] = out
    assert got[True] == got[False]
    assert 0.0 in got[True] and 1.0 in got[True]


TABLES = {
    "pcmu": g711.ULAW_DECODE.astype(np.int16).tobytes(),
    "pcma": g711.ALAW_DECODE.astype(np.int16).tobytes(),
}


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=1200),
    st.sampled_from(["pcmu", "pcma"]),
    st.sampled_from([1, 80, 160, 240]),
    alphas,
    st.lists(st.integers(0, 700), min_size=1, max_size=6),
    st.integers(-1, 4),
)
def test_g711_codes_go_in_as_their_decoded_samples(
    codes: bytes, encoding: str, size: int, a: float, splits: list[int], fail_at: int
) -> None:
    """process_g711(codes, table) on both, and process() of the codec's decoded bytes: the same
    windows, scores, state and errors, whatever the splits (and a decide failing anywhere)."""
    if not any(splits):
        splits = [*splits, 1]
    table = TABLES[encoding]
    runs = []
    for kind, coded in ((PureWindows, True), (NativeWindows, True), (NativeWindows, False)):
        rec = Recorder(fail_at)
        w = kind(size, a, rec, None, 8000)
        out: list[Any] = []
        at = k = 0
        while at < len(codes):
            piece = codes[at : at + splits[k % len(splits)]]
            at, k = at + len(piece), k + 1
            try:
                if coded:
                    out.append(w.process_g711(piece, table))
                else:
                    out.append(w.process(g711.decode(piece, encoding)))
            except RuntimeError as exc:
                out.append(str(exc))
        runs.append((out, rec.windows, w.pending, w.prev))
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("impl", ["pure", "native"])
def test_a_g711_table_must_be_256_samples(impl: str) -> None:
    w = _impl(impl)(160, 0.8, Recorder(), None, 8000)
    with pytest.raises(ValueError, match=r"^a G\.711 decode table is 256 native int16 samples"):
        w.process_g711(b"\x00" * 10, bytes(510))


@needs_native
def test_the_g711_path_holds_no_references() -> None:
    codes = bytes(range(256)) * 4
    table = TABLES["pcmu"]
    before = [sys.getrefcount(o) for o in (codes, table)]
    w = NativeWindows(160, 0.8, lambda h, r, win, s: False, None, 8000)
    for _ in range(300):
        w.process_g711(codes, table)
        w.process_g711(memoryview(codes)[3:500], table)
    del w
    assert [sys.getrefcount(o) for o in (codes, table)] == before
