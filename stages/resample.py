"""Sample-rate conversion of pcm16 audio: a low-latency polyphase filter, or soxr.

Two engines behind one streaming interface (:class:`StreamResampler`: ``process`` a chunk of
int16 samples, ``flush`` at the end of the stream, ``reset`` on barge-in), both plain synchronous
code with no event loop:

* ``low_latency=True`` (default): :class:`PolyphaseResampler`, a linear-phase FIR evaluated in
  polyphase form for the exact rational ratio ``out/in`` (reduced by their gcd), designed
  minimax (equiripple) for the ratio. It meets the telephony numbers by design: ≥ 77 dB
  attenuation everywhere from 0.575 × the lower rate up (aliases when down-sampling, images
  when up-sampling), ≤ 0.1 dB ripple up to 0.425 × the lower rate, and about 12 / lower-rate
  seconds of delay (1.44-1.59 ms when one side is 8 kHz). Every input chunk produces every
  output sample it can: after ``n`` input samples exactly ``ceil(n × out / in)`` have come
  out, so a 20 ms frame in is a 20 ms frame out. Two engines compute the same bytes: the
  compiled kernel ``stages._cresample`` (the default where it is built) and numpy (the
  fallback, ``engine="pure"``); the taps are multiples of 2**-TAP_BITS so that every
  summation order gives the same sums (see TAP_BITS).
* ``low_latency=False``: :class:`SoxrStream`, ``soxr.ResampleStream`` at the chosen quality. Its
  concatenated output equals one-shot ``soxr.resample`` of the whole input to ±1 LSB, but it
  releases audio in bursts (tens of ms held back; see ``docs/resample.md``).

The ``resample`` stage adapts either to a stream of :class:`~pipeline.frames.Audio` frames.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import soxr

from pipeline import native
from pipeline.context import StageContext
from pipeline.errors import FormatError, StageError, UsageError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt, make_audio
from pipeline.spec import stage
from stages.g711 import AUDIOOP

Quality: TypeAlias = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
Int16Array: TypeAlias = npt.NDArray[np.int16]
Float64Array: TypeAlias = npt.NDArray[np.float64]
#: What one call does (see PolyphaseResampler._plan), flat (unpacking is cheaper so): where
#: the input bytes and samples go; the window view, its float copy, the block matrix, the
#: product and the outputs in it (all None: no block product); where the history moves to and
#: from (None: it stays); the state after the call, the input and the output counts; where the
#: outputs are rounded to for ``process_bytes`` (a little-endian int16 scratch, or None).
#: (The arrays and views are typed Any: they are all set, or all None, together with y.)
_Plan: TypeAlias = tuple[
    Any, Int16Array, Any, Any, Any, Any, Float64Array | None, Any, Any, "_Plans", int, int, Any
]


class _LittleEndianInto:
    """Where pcm16 bytes go on a big-endian host: ``into[:] = data`` swaps them in."""

    __slots__ = ("view",)

    def __init__(self, view: Int16Array) -> None:
        self.view = view

    def __setitem__(self, key: slice, data: bytes) -> None:
        self.view[key] = np.frombuffer(data, dtype=_PCM16)


class _Plans(dict[int, _Plan]):
    """A state of the polyphase engine: the input from ``_buf[off]`` on is the last ``hist``
    samples; the dict holds the plans of calls made in this state, by input length."""

    __slots__ = ("hist", "off")

    def __init__(self, off: int, hist: int) -> None:
        super().__init__()
        self.off = off
        self.hist = hist


#: Pass band edge, stop band edge, as fractions of the lower of the two rates.
PASS_EDGE = 0.425
STOP_EDGE = 0.575
#: The filter's worst stop-band point, anywhere from the stop edge up, is at least this far
#: down: 76 dB promised, 1 dB kept in hand for int16 rounding.
STOP_BAND_DB = 77.0
#: Pass-band ripple (peak to peak) allowed in the design: 0.5 dB promised.
PASS_RIPPLE_DB = 0.1
#: Up to this many taps the filter is a weighted minimax design (21-27 % shorter than a Kaiser
#: window's for the same worst point); beyond, for odd ratios such as 44.1 kHz, a
#: Kaiser-windowed sinc designed for DESIGN_ATTENUATION_DB (its formula's estimate misses by
#: up to 1.3 dB, hence 2 dB in hand).
_MAX_MINIMAX_TAPS = 1024
DESIGN_ATTENUATION_DB = 78.0
#: The taps are integer multiples of 2**-TAP_BITS. With int16 input (|x| ≤ 2**15) and the
#: absolute taps of every phase summing to less than 2**(53 - 15 - TAP_BITS) = 64 (about 2.4 at
#: most in the designs here; checked for each design), every product x·tap and every partial
#: sum of an output's products is an integer times 2**-TAP_BITS below 2**53: a float64 holds it
#: exactly. So every summation order (BLAS's block product, the gather, the compiled loop with
#: its vector accumulators, with or without fused multiply-add) gives the same double, and
#: rounding it gives the same sample. The quantisation moves each tap by at most 2**-33 (below
#: -190 dB of the response): the design goals are checked with the quantised taps.
TAP_BITS = 32
_TAP_SCALE = float(1 << TAP_BITS)
#: Above this many coefficients in the block matrix, use the gather form (less waste, slower).
_MAX_BLOCK_MATRIX = 1 << 18
#: Above this many filter coefficients, the ratio is too odd for the polyphase engine.
_MAX_TAPS = 1 << 23

#: Above this many cached call plans (odd chunk sizes), start the cache afresh. A steady
#: stream of equal chunks needs one per state it passes through: tens.
_MAX_PLANS = 256
#: pcm16 bytes can be copied as they are into an int16 array (a little-endian host)
_LITTLE_ENDIAN = sys.byteorder == "little"
#: numpy functions as module globals: one lookup each per call instead of two
_RINT = np.rint
_INT16 = np.int16

_EMPTY16: Int16Array = np.zeros(0, dtype=np.int16)
_PCM16 = np.dtype("<i2")  # parsed once: a dtype string costs ~0.4 µs per call


def _as_int16(samples: Int16Array | bytes) -> Int16Array:
    if isinstance(samples, (bytes, bytearray, memoryview)):  # a tuple: faster than a union
        return np.frombuffer(samples, dtype=_PCM16)
    return samples


def _clip_ufunc() -> Any:
    """The ufunc behind ``np.clip``, without its Python wrapper (~2 µs on short arrays; the
    ufunc alone costs what one ``np.maximum`` does). None if this numpy hides it."""
    for name in ("numpy._core.umath", "numpy.core.umath"):
        try:
            return importlib.import_module(name).clip
        except (ImportError, AttributeError):
            continue
    return None


def _clip_pair(y: npt.NDArray[Any], lo: Any, hi: Any, out: npt.NDArray[Any]) -> None:
    np.maximum(y, lo, out=out)
    np.minimum(out, hi, out=out)


_CLIP: Callable[..., Any] = _clip_ufunc() or _clip_pair


def _no_peak(samples: Any, width: int) -> int:
    return 1 << 16  # louder than any int16 sample: always saturate


_ALWAYS = 1 << 62  # an input count no stream reaches

#: The largest absolute sample of native int16 samples (``audioop.max(samples, 2)``: C, a
#: small fraction of one numpy call), or a stand-in that makes every call saturate.
_PEAK: Callable[[Any, int], int] = AUDIOOP.max if AUDIOOP is not None else _no_peak


#: The int16 bounds as 0-d arrays: a ufunc takes these at about half the cost of Python floats.
_LO = np.array(-32768.0)
_HI = np.array(32767.0)
#: The same for the soxr engine's float32 audio, and its scale to and from ±1.0
_F32 = np.dtype(np.float32)
_LO32 = np.array(-32768.0, _F32)
_HI32 = np.array(32767.0, _F32)
_TO_UNIT = np.array(1 / 32768, _F32)
_FROM_UNIT = np.array(32768.0, _F32)
_MULTIPLY = np.multiply


def _to_int16(y: Float64Array) -> Int16Array:
    """Round to nearest and saturate (``y`` is scratch: changed in place). The bounds are
    integers, so saturating after rounding gives what saturating first would."""
    np.rint(y, y)  # out as a positional argument: cheaper to parse than out=
    _CLIP(y, _LO, _HI, y)
    return y.astype(np.int16)


def kaiser_lowpass(
    fs: float, cutoff: float, transition: float, attenuation_db: float, multiple_of: int = 1
) -> Float64Array:
    """A linear-phase Kaiser-windowed sinc low-pass filter sampled at ``fs`` Hz.

    ``cutoff`` is the -6 dB point (the middle of the transition band, Hz), ``transition`` the
    width of the band from pass edge to stop edge (Hz). The length follows Kaiser's formula for
    ``attenuation_db``, rounded up to a multiple of ``multiple_of`` (the polyphase factor). DC
    gain is ``multiple_of`` so that each polyphase branch of an up-sampler has unit gain.
    """
    a = attenuation_db
    dw = 2.0 * math.pi * transition / fs
    n = math.ceil((a - 7.95) / (2.285 * dw)) + 1
    n = math.ceil(n / multiple_of) * multiple_of
    if a > 50:
        beta = 0.1102 * (a - 8.7)
    elif a >= 21:
        beta = 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    else:
        beta = 0.0
    fc = cutoff / fs
    t = np.arange(n) - (n - 1) / 2.0
    h: Float64Array = 2.0 * fc * np.sinc(2.0 * fc * t) * np.kaiser(n, beta)
    h *= multiple_of / h.sum()
    return h


def _response_db(
    h: Float64Array, fs: float, pass_edge: float, stop_edge: float
) -> tuple[float, float]:
    """The worst stop-band level (dB, relative to DC) and the pass-band ripple (dB, peak to
    peak) of taps ``h`` at ``fs`` Hz, from a zero-padded FFT (64 points per tap at least)."""
    n_fft = 1 << max(16, (64 * len(h)).bit_length())
    mag = np.abs(np.fft.rfft(h / h.sum(), n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1 / fs)
    stop = 20 * math.log10(float(mag[freqs >= stop_edge].max()))
    band = 20 * np.log10(mag[freqs <= pass_edge])
    return stop, float(band.max() - band.min())


def minimax_lowpass(
    fs: float, pass_edge: float, stop_edge: float, n: int, stop_weight: float
) -> Float64Array:
    """A linear-phase low-pass filter of ``n`` taps at ``fs`` Hz, weighted minimax.

    Pass band ``[0, pass_edge]``, stop band ``[stop_edge, fs/2]`` (Hz); the stop band's error
    counts ``stop_weight`` times the pass band's. Lawson's iteration: weighted least squares on
    a dense grid, each point's weight multiplied by its error until the largest errors even
    out (equiripple). DC gain 1 (scale it for a polyphase up-sampler)."""
    grid = np.linspace(0.0, fs / 2, 8 * n)
    grid = grid[(grid <= pass_edge) | (grid >= stop_edge)]
    want = (grid <= pass_edge).astype(np.float64)
    weight = np.where(grid <= pass_edge, 1.0, stop_weight)
    w = 2 * math.pi * grid / fs
    # amplitude response as cosines of the half filter: type I (odd n) or type II (even n)
    k = np.arange((n + 1) // 2) + (0.0 if n % 2 else 0.5)
    basis = np.cos(np.outer(w, k))
    if n % 2:
        basis[:, 1:] *= 2.0
    else:
        basis *= 2.0
    v = np.full(len(grid), 1.0 / len(grid))
    a = np.zeros(len(k))
    for _ in range(30):
        bw = basis.T * (weight * v)
        a = np.linalg.solve(bw @ basis, bw @ want)
        v *= np.abs(basis @ a - want) * weight
        v /= v.sum()
    h: Float64Array = np.concatenate([a[:0:-1] if n % 2 else a[::-1], a])
    h /= h.sum()
    return h


def quantise_taps(h: Float64Array, multiple_of: int) -> Float64Array:
    """``h`` rounded to integer multiples of 2**-TAP_BITS (read-only), after checking that
    int16 input keeps every partial sum of every polyphase branch exact in float64 (see
    TAP_BITS). ``h`` is ``multiple_of`` branches interleaved (tap ``p + k·multiple_of`` is
    branch ``p``'s ``k``-th)."""
    q: Float64Array = np.rint(h * _TAP_SCALE) / _TAP_SCALE
    worst = float(np.abs(q).reshape(-1, multiple_of).sum(axis=0).max())
    if worst * 32768.0 * _TAP_SCALE >= 2.0**53:
        raise UsageError(
            f"a polyphase branch's taps sum to {worst:.3g} in magnitude: int16 input would make "
            f"sums beyond 2**53 with taps at 2**-{TAP_BITS}; lower TAP_BITS for this filter"
        )
    q.setflags(write=False)
    return q


@functools.lru_cache(maxsize=64)
def _design(fs: float, low: float, multiple_of: int) -> Float64Array:
    """The taps for a resampler at intermediate rate ``fs`` whose lower rate is ``low``: the
    shortest length (a multiple of the polyphase factor) whose minimax design, quantised to
    multiples of 2**-TAP_BITS, meets STOP_BAND_DB and PASS_RIPPLE_DB; a Kaiser design beyond
    _MAX_MINIMAX_TAPS. DC gain is ``multiple_of`` (each polyphase branch of an up-sampler has
    unit gain)."""
    fp, fst, L = PASS_EDGE * low, STOP_EDGE * low, multiple_of
    dp = 10 ** (PASS_RIPPLE_DB / 40) - 1  # the largest pass-band and stop-band errors
    ds = 10 ** (-STOP_BAND_DB / 20)
    # Herrmann's estimate for an equiripple filter, then the nearest lengths around it
    est = (-20 * math.log10(math.sqrt(dp * ds)) - 13) / (14.6 * (fst - fp) / fs)

    def meets(n: int) -> Float64Array | None:
        h = quantise_taps(minimax_lowpass(fs, fp, fst, n, dp / ds) * L, L)
        stop, ripple = _response_db(h, fs, fp, fst)
        return h if stop <= -STOP_BAND_DB and ripple <= PASS_RIPPLE_DB else None

    n = max(L, round(est / L) * L)
    best: Float64Array | None = None
    if n <= _MAX_MINIMAX_TAPS:
        if (h := meets(n)) is not None:  # shorter while it still meets the goals
            while n > L and (shorter := meets(n - L)) is not None:
                h, n = shorter, n - L
            best = h
        else:  # longer until it does
            while best is None and n + L <= _MAX_MINIMAX_TAPS:
                n += L
                best = meets(n)
    if best is not None:
        return best
    # (thousands of taps: the quantisation's 2**-33 per tap is far below the Kaiser design's
    # 2 dB in hand, and the response check would take a very long FFT)
    return quantise_taps(
        kaiser_lowpass(fs, 0.5 * low, fst - fp, DESIGN_ATTENUATION_DB, multiple_of=L), L
    )


#: The polyphase filter's compiled kernel (stages/_cresample.c), None when not built
_cresample = native.load("stages._cresample")
#: The engines of the polyphase filter: the compiled kernel, or numpy (the fallback)
Engine: TypeAlias = Literal["native", "pure"]


def _engine(engine: Engine | None, block_periods: int | None) -> Engine:
    """The engine asked for, or the default: the kernel when it is built (numpy when a block
    size is asked for: only numpy has blocks)."""
    if engine is None:
        return "native" if _cresample is not None and block_periods is None else "pure"
    if engine == "native" and _cresample is None:
        raise UsageError(
            "the compiled polyphase kernel (stages._cresample) is not built or "
            "PIPELINE_PURE_PYTHON is set: reinstall the package with a C compiler, or use "
            "engine='pure'"
        )
    if engine not in ("native", "pure"):
        raise UsageError(f"engine {engine!r} is not one of 'native', 'pure'")
    return engine


class PolyphaseResampler:
    """Low-latency streaming resampler for pcm16: a linear-phase FIR in polyphase form.

    The taps: the shortest minimax design (a multiple of ``L`` long) that keeps the whole stop
    band, from 0.575 × the lower rate up, STOP_BAND_DB down with PASS_RIPPLE_DB of ripple up to
    0.425 × the lower rate (a Kaiser design for odd ratios with thousands of taps).

    For ``out/in = L/M`` (reduced), output sample ``j`` sits at ``j·M`` on the ``in·L`` Hz grid
    and is ``Σ_k h[p + kL]·x[b − k]`` with ``b = ⌊jM/L⌋``, ``p = jM mod L``: it needs input up to
    sample ``b`` only, so each chunk releases every output its input makes computable. The
    filter history is kept between chunks, so any split of the input gives the same samples.
    Outputs are computed ``K·L`` at a time (``K·M`` inputs apart) as one matrix product of a
    strided view of the input with a block matrix holding the phases (``block_periods`` = ``K``;
    chosen for speed by default); for ratios where that matrix would be large (e.g. 8000 ↔
    8001 Hz) a gather form does the same sums.

    The content comes out ``delay_s`` late (the filter's group delay); ``flush`` releases the
    tail so that every input sample's content is out.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        block_periods: int | None = None,
        engine: Engine | None = None,
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise UsageError(f"sample rates must be positive, got {in_rate} and {out_rate}")
        g = math.gcd(in_rate, out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.up = L = out_rate // g
        self.down = M = in_rate // g
        low = min(in_rate, out_rate)
        fs = float(in_rate) * L
        n_est = math.ceil((DESIGN_ATTENUATION_DB - 7.95) / (2.285 * 2 * math.pi * 0.15 * low / fs))
        if n_est > _MAX_TAPS:
            raise UsageError(
                f"{in_rate} Hz -> {out_rate} Hz reduces to {L}/{M}: too odd a ratio for the "
                "low-latency polyphase filter; use low_latency: false"
            )
        h = _design(fs, float(low), L)
        self.taps = h
        self.num_taps = n = len(h)
        self._T = T = n // L
        #: group delay of the filter, in seconds of media
        self.delay_s = (n - 1) / 2.0 / fs
        #: which engine computes the sums: "native" (the compiled kernel) or "pure" (numpy)
        self.engine: Engine = _engine(engine, block_periods)
        self._kernel: Any = None
        if self.engine == "native":
            # The kernel holds the stream (history, counts): its methods are this object's.
            self._kernel = kernel = _cresample.Polyphase(h.tobytes(), L, M)  # type: ignore[union-attr]
            self.process_bytes = kernel.process  # type: ignore[method-assign]
            self.process = self._process_native  # type: ignore[method-assign]
            self.reset = kernel.reset  # type: ignore[method-assign]
            return
        #: phases[p, k] = h[p + k·L]
        phases = np.ascontiguousarray(h.reshape(T, L).T)
        # Outputs are computed a block at a time: P = K·L outputs from Q = K·M new inputs, as
        # one row (S inputs) of a strided view times a block matrix holding the phases. The
        # rows overlap by T - 1 inputs and the matrix holds S·P coefficients for P·T taps:
        # a larger K wastes products on zeros, a smaller one copies more overlap and gives
        # BLAS thinner matrices. P = 20 (24 for L = 3, 6) was the cheapest on 20 ms frames
        # at every telephony ratio (8k↔16k/24k/48k, 16k↔24k/48k, 24k↔48k); with the shorter
        # minimax filters, decimating by 3 or more is cheaper with P = 8 (5-9 % at 24k→8k,
        # 48k→16k, 48k→8k), by 2 it is a wash.
        if block_periods is not None:
            K = block_periods
        elif L == 1:
            K = 8 if M >= 3 else 20
        else:
            K = max(1, min(10, 24 // L))
        self._P, self._Q = K * L, K * M
        P = self._P
        self._S = S = ((P - 1) * M) // L + T
        self._block: Float64Array | None = None
        self._phases: Float64Array | None = None
        if S * P > _MAX_BLOCK_MATRIX:  # one period per block: the smallest block matrix
            self._P, self._Q = P, _ = L, M
            self._S = S = ((P - 1) * M) // L + T
        if S * P <= _MAX_BLOCK_MATRIX:
            # column r: output j = bP + r of block b, window starting at input bQ - (T-1)
            G = np.zeros((S, P))
            k = np.arange(T)
            for r in range(P):
                G[(r * M) // L + T - 1 - k, r] = phases[(r * M) % L]
            self._block = G
        else:
            self._phases = phases
        # An output is at most (the sum of its phase's |taps|) × (the loudest input sample in
        # its window): while every input sample an output's window can see is at most _quiet,
        # no output can round beyond the int16 range and saturating is skipped (it changes
        # nothing then). The margin covers the float sums' rounding.
        gain = float(np.abs(phases).sum(axis=1).max())
        self._quiet = int(32767.0 / (gain * (1.0 + 1e-9))) - 1
        self._reach = T - 1  # a sample is in the windows of the outputs T - 1 inputs on
        # Finding the peak costs about what saturating costs per sample (audioop.max 0.5 ns,
        # the clip ufunc 0.25 ns, each after ~0.1 µs per call): it pays off only where twice
        # as many samples come out as go in. Elsewhere every call saturates.
        self._peak: Callable[[Any, int], int] | None = _PEAK if L >= 2 * M else None
        # After a loud chunk, saturate for this many more inputs (0.2 s) without looking at
        # their peaks: loud speech costs one peak every ten 20 ms frames, not one a frame
        self._hold = self._reach + in_rate // 5
        # The input buffer: from _buf[off] on, the last `hist` input samples (off and hist:
        # the state, see _Plans); _buf[off] is where the next block's window starts (T - 1
        # samples of history before the first input the next output needs), so a call's
        # block windows are one view of the buffer from there. The buffer stays int16: the
        # copy of the windows for BLAS converts, and samples past the input meet exactly-zero
        # coefficients only. The state moves along the buffer and the history goes back to
        # the front only now and then (see _plan): most calls move nothing.
        self._buf: Int16Array = np.zeros(max(4096, 4 * (T + S)), np.int16)
        self._bytes = self._buf.data.cast("B")
        #: per block count: its float copy of the windows, the product, the product as a row,
        #: and a little-endian int16 row the product is rounded into for process_bytes
        self._scratch: dict[int, tuple[Float64Array, Float64Array, Float64Array, Int16Array]] = {}
        #: per state (off, hist): the plans of the calls made in it, by input length
        self._states: dict[tuple[int, int], _Plans] = {}
        self._n_plans = 0
        self.reset()

    def reset(self) -> None:
        """Forget the history: the next sample starts a new stream (silence before it)."""
        T = self._T
        self._buf[: T - 1] = 0
        self._now = self._state(0, T - 1)  # _buf[0] is input sample _n_in - (T - 1)
        self._n_in = 0  # input samples consumed (ceil(_n_in × L / M) outputs released)
        #: calls whose new input starts before this input sample may see a sample louder
        #: than _quiet in an output's window: they saturate (all of them, without a peak)
        self._loud_until = 0 if self._peak is not None else _ALWAYS

    @property
    def samples_in(self) -> int:
        """Input samples consumed since the start (or the last reset/flush)."""
        if self._kernel is not None:
            return int(self._kernel.samples_in)
        return self._n_in

    @property
    def samples_out(self) -> int:
        """Output samples released since the start (or the last reset/flush)."""
        if self._kernel is not None:
            return int(self._kernel.samples_out)
        return -(-self._n_in * self.up // self.down)

    def _process_native(self, samples: Int16Array | bytes) -> Int16Array:
        """:meth:`process` through the compiled kernel: the same samples, as a fresh array."""
        if type(samples) is bytes:
            out = self._kernel.process_bytearray(samples)
        else:
            out = self._kernel.process_bytearray(np.ascontiguousarray(_as_int16(samples), _PCM16))
        if _LITTLE_ENDIAN:  # a writable array over the new bytearray: no copy
            return np.frombuffer(out, _INT16)
        return np.frombuffer(out, _PCM16).astype(_INT16)

    def process(self, samples: Int16Array | bytes) -> Int16Array:
        """Resample one chunk; returns every output sample it makes computable (int16)."""
        # plans by chunk length: in bytes for bytes, ~samples (negative) for arrays
        if type(samples) is bytes:
            plan = self._now.get(len(samples)) or self._plan(len(samples) >> 1, len(samples))
            plan[0][:] = samples  # bytes straight into the int16 buffer: no array made
        else:
            x = _as_int16(samples)
            plan = self._now.get(~len(x)) or self._plan(len(x), ~len(x))
            plan[1][...] = x
        _, samples, win, rows, block, out, y, shift_to, shift_from, after, n, n_out, _ = plan
        n0 = self._n_in
        # (unlooked-at input counts as loud: it is looked at once it would reach past
        # _loud_until; the windows of calls starting before _loud_until may hold loud samples)
        if (
            (peak := self._peak) is not None
            and n0 + n + self._reach > self._loud_until
            and peak(samples, 2) > self._quiet
        ):
            self._loud_until = n0 + n + self._hold
        if y is not None:
            # overlapping rows to contiguous (int16 to float) for BLAS; then the product. The
            # statement and the method skip np.copyto's and np.dot's __array_function__
            # dispatch (0.3 and 0.1 µs a call, a tenth of the whole call)
            rows[...] = win
            rows.dot(block, out)
            # _to_int16, inlined: a function call costs about what a ufunc call does here.
            # Saturate first (the bounds are integers: the order does not change the
            # samples), and only where a loud sample may be in a window.
            if n0 < self._loud_until:
                _CLIP(y, _LO, _HI, y)
            _RINT(y, y)
            result = y.astype(_INT16)
        elif n_out:  # the gather form
            result = self._gather(n)
        else:  # not enough input for an output yet
            result = _EMPTY16
        if shift_to is not None:  # past the middle: the history goes back to the front
            shift_to[:] = shift_from
        self._now = after
        self._n_in = n0 + n
        return result

    def process_bytes(self, data: bytes) -> bytes:
        """:meth:`process` for pcm16 bytes in and out: what a stream of frames needs.

        The same samples; the product is rounded straight into a reused int16 row and copied
        out as ``bytes`` once, where ``process(data).tobytes()`` makes an array and then the
        bytes (0.1-0.3 µs per 20 ms frame). The bytes are new each call: nothing handed out is
        written to later."""
        plan = self._now.get(len(data)) or self._plan(len(data) >> 1, len(data))
        plan[0][:] = data
        _, samples, win, rows, block, out, y, shift_to, shift_from, after, n, n_out, rounded = plan
        n0 = self._n_in
        # (unlooked-at input counts as loud: it is looked at once it would reach past
        # _loud_until; the windows of calls starting before _loud_until may hold loud samples)
        if (
            (peak := self._peak) is not None
            and n0 + n + self._reach > self._loud_until
            and peak(samples, 2) > self._quiet
        ):
            self._loud_until = n0 + n + self._hold
        if y is not None:
            rows[...] = win
            rows.dot(block, out)
            # Saturate where a loud sample may be in a window, then round (as in process).
            # The assignment converts exact integers: nothing is truncated.
            if n0 < self._loud_until:
                _CLIP(y, _LO, _HI, y)
            _RINT(y, y)
            rounded[...] = y
            result: bytes = rounded.tobytes()
        elif n_out:  # the gather form
            result = self._gather(n).astype(_PCM16).tobytes()
        else:
            result = b""
        if shift_to is not None:
            shift_to[:] = shift_from
        self._now = after
        self._n_in = n0 + n
        return result

    def flush(self) -> Int16Array:
        """End of stream: the outputs still owed (the filter's tail, as if silence followed).

        Afterwards the resampler is reset, ready for a new stream."""
        L, M = self.up, self.down
        n, j0 = self.samples_in, self.samples_out
        if n == 0:  # nothing since the start or the last reset: nothing owed
            self.reset()
            return _EMPTY16
        tail = math.ceil((self.num_taps - 1) / 2.0 / M)
        j_end = -(-n * L // M) + tail
        need = ((j_end - 1) * M) // L + 1  # inputs read by output j_end - 1
        # the zeros may make a few outputs past j_end computable: they are not owed
        y = self.process(np.zeros(max(0, need - n), dtype=np.int16))[: max(0, j_end - j0)]
        self.reset()
        return y

    def _state(self, off: int, hist: int) -> _Plans:
        state = self._states.get((off, hist))
        if state is None:
            state = self._states[(off, hist)] = _Plans(off, hist)
        return state

    def _forget_plans(self) -> None:
        self._states.clear()
        self._n_plans = 0
        self._now = self._state(self._now.off, self._now.hist)

    def _plan(self, n: int, key: int) -> _Plan:
        """What a call with ``n`` input samples does in the current state: computed once, then
        looked up by ``key``. Only the state (off, hist) and ``n`` decide it."""
        if key >= 0 and key & 1:  # bytes, not whole samples
            raise ValueError(f"{key} bytes of pcm16: not a whole number of 2-byte samples")
        T, L, M, P, Q, S = self._T, self.up, self.down, self._P, self._Q, self._S
        h = self._now.hist
        n1 = h + n  # one past the new input, counted from _buf[off]
        # outputs so far and after this call, counted from the first output of the block whose
        # window starts at _buf[off]; that window's first T - 1 samples are history
        j0 = -(-(h - (T - 1)) * L // M)
        j1 = -(-(n1 - (T - 1)) * L // M)
        nb = (j1 - 1) // P + 1 if j1 > j0 else 0
        need = max(n1, (nb - 1) * Q + S) if nb else n1
        if self._now.off + need > len(self._buf):  # a large chunk: history to the front first
            old, at = self._buf, self._now.off
            if 2 * need > len(old):  # grow: every view of the old buffer goes
                self._buf = np.zeros(4 * need, np.int16)
                self._bytes = self._buf.data.cast("B")
                self._scratch.clear()
            self._buf[:h] = old[at : at + h]
            self._now = _Plans(0, h)
            self._forget_plans()
        if self._n_plans >= _MAX_PLANS:  # odd chunk sizes: keep the cache small
            self._forget_plans()
        off, buf, b = self._now.off, self._buf, self._bytes
        work: tuple[Any, Any, Any, Any, Any] = (None, None, None, None, None)
        rounded = None
        if nb and (block := self._block) is not None:
            scratch = self._scratch.get(nb)
            if scratch is None:
                out = np.empty((nb, P))
                scratch = self._scratch[nb] = (
                    np.empty((nb, S)),
                    out,
                    out.reshape(-1),
                    np.empty(nb * P, _PCM16),
                )
            rows, out, flat, flat16 = scratch
            win = np.ndarray((nb, S), np.int16, buf, 2 * off, (2 * Q, 2))
            work = (win, rows, block, out, flat[j0:j1])  # a slice of a contiguous array: contiguous
            rounded = flat16[j0:j1]
        keep = (j1 // P) * Q if j1 > j0 else 0  # where the next call's first window starts
        hist = n1 - keep
        shift: tuple[Any, Any] = (None, None)
        # Past the middle, or 16 calls of this size on: the history goes back to the front
        # (the state visits a bounded number of offsets whatever the chunk size).
        if off + keep >= min(len(buf) // 2, 16 * max(n, 1)):
            shift = (b[: 2 * hist], b[2 * (off + keep) : 2 * (off + n1)])
            after = self._state(0, hist)
        else:
            after = self._state(off + keep, hist)
        samples = buf[off + h : off + n1]
        plan: _Plan = (
            b[2 * (off + h) : 2 * (off + n1)] if _LITTLE_ENDIAN else _LittleEndianInto(samples),
            samples,
            *work,
            *shift,
            after,
            n,
            max(0, j1 - j0),
            rounded,
        )
        self._now[key] = plan
        self._n_plans += 1
        return plan

    def _gather(self, n: int) -> Int16Array:
        """The gather form's outputs for the ``n`` samples just written after the history."""
        assert self._phases is not None
        L, M, T = self.up, self.down, self._T
        j0, start = self.samples_out, self._n_in - self._now.hist - self._now.off
        j1 = -(-(self._n_in + n) * L // M)
        if j1 <= j0:
            return _EMPTY16
        m = np.arange(j0, j1, dtype=np.int64) * M
        idx = (m // L - start)[:, None] - np.arange(T)  # positions of x[b - k]
        y = np.einsum("ij,ij->i", self._phases[m % L], self._buf[idx].astype(np.float64))
        return _to_int16(y)


class SoxrStream:
    """``soxr.ResampleStream`` for pcm16 with an explicit ``flush``: the high-quality engine.

    Runs soxr in float32 (soxr's int16 streaming path dithers each call differently, so its
    output would depend on the chunking); the result is rounded to int16 and equals one-shot
    ``soxr.resample`` of the whole int16 input to ±1 LSB whatever the chunk sizes. soxr holds
    audio back and releases it in bursts: many 20 ms calls return nothing.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        self._chunk = self._s.resample_chunk
        self._n_in = 0
        self._n_out = 0

    @property
    def delay_s(self) -> float:
        """Audio soxr holds back right now, in seconds (it varies from call to call)."""
        return float(self._s.delay()) / self.out_rate

    @property
    def samples_in(self) -> int:
        return self._n_in

    @property
    def samples_out(self) -> int:
        return self._n_out

    def process(self, samples: Int16Array | bytes) -> Int16Array:
        """Resample one chunk; soxr may return fewer samples than the chunk is worth, or none."""
        x = _as_int16(samples)
        self._n_in += len(x)
        # int16 to float32 and scaled in one ufunc (the same float32 products as a cast and
        # then a multiply: the int16 values are exact in float32)
        y: npt.NDArray[np.float32] = self._chunk(_MULTIPLY(x, _TO_UNIT, dtype=_F32))
        if not (m := len(y)):
            return _EMPTY16
        self._n_out += m
        y *= _FROM_UNIT  # float32 holds ±32768 to 1/256 LSB: rounding is exact
        _CLIP(y, _LO32, _HI32, y)  # the bounds are integers: saturating first rounds the same
        _RINT(y, y)
        return y.astype(_INT16)

    def process_bytes(self, data: bytes) -> bytes:
        """:meth:`process` for pcm16 bytes in and out (``b""`` when soxr holds it all back)."""
        x = np.frombuffer(data, _PCM16)
        self._n_in += len(x)
        y: npt.NDArray[np.float32] = self._chunk(_MULTIPLY(x, _TO_UNIT, dtype=_F32))
        if not (m := len(y)):
            return b""
        self._n_out += m
        y *= _FROM_UNIT
        _CLIP(y, _LO32, _HI32, y)
        _RINT(y, y)
        return y.astype(_PCM16).tobytes()

    def flush(self) -> Int16Array:
        """End of stream: everything soxr still holds. Afterwards it is reset."""
        y: npt.NDArray[np.float32] = self._s.resample_chunk(np.zeros(0, np.float32), last=True)
        self._n_out += len(y)
        y *= _FROM_UNIT
        _CLIP(y, _LO32, _HI32, y)
        _RINT(y, y)
        out = y.astype(_INT16)
        self.reset()
        return out

    def reset(self) -> None:
        """Drop what soxr holds; the next sample starts a new stream."""
        self._s.clear()
        self._n_in = self._n_out = 0


class _Identity:
    """Same rate in and out: samples pass unchanged."""

    delay_s = 0.0

    def __init__(self) -> None:
        self.samples_in = self.samples_out = 0

    def process(self, samples: Int16Array | bytes) -> Int16Array:
        x = _as_int16(samples)
        self.samples_in += len(x)
        self.samples_out += len(x)
        return x

    def process_bytes(self, data: bytes) -> bytes:
        self.samples_in += len(data) >> 1
        self.samples_out += len(data) >> 1
        return data

    def flush(self) -> Int16Array:
        self.reset()
        return _EMPTY16

    def reset(self) -> None:
        self.samples_in = self.samples_out = 0


class StreamResampler:
    """Streaming mono pcm16 resampling, ``in_rate`` → ``out_rate``, for any chunk sizes.

    ``low_latency=True`` uses :class:`PolyphaseResampler` (``quality`` is ignored: the filter is
    fixed by the 70 dB / 0.5 dB / 5 ms goals), ``False`` uses :class:`SoxrStream` at ``quality``.
    Call ``process`` per chunk, ``flush`` at the end of the stream (then it is ready for a new
    one), ``reset`` to drop the history (barge-in). ``delay_s`` is the algorithmic delay: the
    filter's group delay for the polyphase engine, what soxr holds back right now for soxr.
    """

    def __init__(
        self, in_rate: int, out_rate: int, quality: Quality = "HQ", low_latency: bool = True
    ) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self.low_latency = low_latency
        self.engine: PolyphaseResampler | SoxrStream | _Identity
        if in_rate == out_rate:
            self.engine = _Identity()
        elif low_latency:
            self.engine = PolyphaseResampler(in_rate, out_rate)
        else:
            self.engine = SoxrStream(in_rate, out_rate, quality)
        # the engine's own method on the instance: a call through process() below would add
        # a Python frame (~0.1 µs, 3 % of a 20 ms frame's cost)
        self.process = self.engine.process  # type: ignore[method-assign]
        self.process_bytes = self.engine.process_bytes  # type: ignore[method-assign]

    @property
    def delay_s(self) -> float:
        return self.engine.delay_s

    @property
    def samples_in(self) -> int:
        """Input samples consumed in the current stream."""
        return self.engine.samples_in

    @property
    def samples_out(self) -> int:
        """Output samples released in the current stream."""
        return self.engine.samples_out

    def process(self, samples: Int16Array | bytes) -> Int16Array:
        """Resample one chunk of int16 samples (or little-endian pcm16 bytes)."""
        return self.engine.process(samples)

    def process_bytes(self, data: bytes) -> bytes:
        """Resample one chunk of pcm16 bytes to pcm16 bytes (what a frame carries)."""
        return self.engine.process_bytes(data)

    def flush(self) -> Int16Array:
        """End of stream: the samples still owed. The resampler is then ready for a new stream."""
        return self.engine.flush()

    def reset(self) -> None:
        """Drop the history and anything held back."""
        self.engine.reset()


# ---------------------------------------------------------------------------- the stage


def _output_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    rate = int(params["rate"])
    if rate <= 0:
        raise FormatError(f"rate {rate} Hz is not a sample rate", "set rate to e.g. 16000")
    if fmt is None:
        return AudioFormat("pcm16", rate)
    if fmt.encoding != "pcm16":
        raise FormatError(
            f"gets {fmt.encoding} {fmt.rate} Hz audio; resample needs pcm16",
            "add {type: g711_decode} before it",
        )
    if fmt.channels != 1:
        raise FormatError(
            f"gets {fmt} audio; resample needs mono ({fmt.channels} channels)",
            "feed it mono audio (a mono WAV, or a source with channels: 1)",
        )
    return AudioFormat("pcm16", rate)


#: A jump in input pts larger than this (seconds) starts a new segment.
GAP_TOLERANCE_S = 1e-3
_NAN = math.nan


def _tail(rs: StreamResampler | None, rate: int, anchor: float, n_out: int) -> Audio | None:
    """Flush ``rs``: its last samples as a frame (None if none), ``n_out`` samples into the
    segment that began at ``anchor``. The caller starts a new segment."""
    assert rs is not None
    y = rs.flush()
    if not len(y):
        return None
    return Audio(y.astype(_PCM16, copy=False).tobytes(), "pcm16", rate, 1, anchor + n_out / rate)


@stage(
    "resample",
    accepts=(Audio,),
    emits=(Audio,),
    passthrough=True,
    output_format=_output_format,
)
async def resample(
    frames: AsyncIterator[Frame],
    *,
    rate: int,
    quality: Quality = "HQ",
    low_latency: bool = True,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Convert pcm16 audio to another sample rate; ≤ 5 ms added with low_latency (default).

    Output pts are input media time mapped through (not shifted by the filter delay): the
    output's content lags its pts by the reported ``algorithmic_delay_ms``. A jump in the input
    pts (a gap or a restart) flushes the tail before the jump and starts afresh; an interrupt
    drops the history and is forwarded. At the end of the stream the tail is flushed as a last
    frame. Audio already at ``rate`` passes unchanged.

    Parameters:
        rate: output sample rate in Hz
        quality: soxr quality when low_latency is false (QQ, LQ, MQ, HQ, VHQ)
        low_latency: true: a polyphase filter adding ~2 ms; false: soxr streaming (bursty)
    """
    _output_format({"rate": rate}, None)  # a bad rate fails here, before any audio
    rs: StreamResampler | None = None
    process: Callable[[bytes], bytes] = _Identity().process_bytes  # rs's engine's, once set
    in_rate = 0  # rs's input rate (0: none yet)
    anchor = 0.0  # pts of the current segment's first input sample
    n_in = n_out = 0  # samples into and out of rs in the current segment
    # the pts that continues the segment, anchor + n_in / in_rate; NaN (equal to nothing)
    # before the segment's first frame
    expect = _NAN
    tol = GAP_TOLERANCE_S
    reported = False
    # (no closure over these: a variable a nested function shares is slower to reach, and
    # the loop below reaches them for every frame)
    async for f in frames:
        # The steady state, a frame that goes on with the segment (audio at the same rate,
        # its pts within the tolerance of where the segment has got to, pcm16 mono), takes
        # the first branch: every frame but the first of a stream, of a rate, or after a gap
        # or an interrupt. Its checks are the frame's own fields, compared with what the
        # segment's first frame set up.
        if (
            f.__class__ is Audio  # frames are never subclassed
            and f.rate == in_rate
            and -tol <= f.pts - expect <= tol
            and f.encoding == "pcm16"
            and f.channels == 1
        ):
            data = f.data
            out = process(data)
            n_in += len(data) >> 1
            expect = anchor + n_in / in_rate
            if out:
                yield make_audio(out, "pcm16", rate, 1, anchor + n_out / rate)
                n_out += len(out) >> 1
            continue
        if f.__class__ is not Audio:
            if f.__class__ is Interrupt and rs is not None:
                rs.reset()
                n_in = n_out = 0
                expect = _NAN
            yield f
            continue
        if f.encoding != "pcm16" or f.channels != 1:
            fmt = _output_format({"rate": rate}, f.format)  # raises FormatError
            raise StageError(ctx.id, f"cannot resample {fmt}")
        f_rate = f.rate
        if f_rate == rate:  # nothing to do, at no cost
            if rs is not None and (t := _tail(rs, rate, anchor, n_out)) is not None:
                yield t
            rs, in_rate, n_in, n_out, expect = None, 0, 0, 0, _NAN
            yield f
            continue
        if f_rate != in_rate:
            if rs is not None and (t := _tail(rs, rate, anchor, n_out)) is not None:
                yield t
            rs = StreamResampler(f_rate, rate, quality, low_latency)
            process, in_rate = rs.engine.process_bytes, f_rate
            if not reported:
                reported = True
                ctx.report("algorithmic_delay_ms", round(rs.delay_s * 1000, 3))
        elif n_in and (t := _tail(rs, rate, anchor, n_out)) is not None:
            yield t  # a gap: the tail before it, and a new segment
        # a new segment starts with this frame
        anchor, n_out = f.pts, 0
        data = f.data
        out = process(data)
        n_in = len(data) >> 1
        expect = anchor + n_in / in_rate if n_in else _NAN
        if out:
            yield make_audio(out, "pcm16", rate, 1, anchor)
            n_out = len(out) >> 1
    if rs is not None and (t := _tail(rs, rate, anchor, n_out)) is not None:
        yield t
