"""VAD engines: int16 samples in, one speech score per analysis window out.

Every engine frames the audio itself: :meth:`Engine.process` takes any number of samples,
buffers a partial window until the next call, and returns one score per window completed. The
score's meaning, its default threshold and its hysteresis (how far below the threshold a score
must fall to count as quiet once speech has started) depend on the engine:

========  ===========================  =========  ==========  ===========================
engine    score                        threshold  hysteresis  rates (Hz)
========  ===========================  =========  ==========  ===========================
silero    speech probability, 0..1     0.5        0.15        8000 (256-sample windows),
                                                              16000 (512-sample windows)
webrtc    0 or 1 (webrtcvad's answer)  0.5        0           8000, 16000, 32000, 48000
energy    dB above the noise floor     9.0        3.0         any
========  ===========================  =========  ==========  ===========================

The silero model runs through onnxruntime. One ``InferenceSession`` per model file is shared by
every engine in the process (created on first use, under a lock, with one intra-op thread);
each engine keeps its own recurrent state and context, so gates never disturb one another.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from pipeline import native
from pipeline.errors import FormatError, InputError, UsageError
from stages.g711 import AUDIOOP

EngineName = Literal["silero", "webrtc", "energy"]

#: sample rates each engine takes (None: any)
ENGINE_RATES: dict[str, tuple[int, ...] | None] = {
    "silero": (8000, 16000),
    "webrtc": (8000, 16000, 32000, 48000),
    "energy": None,
}

SILERO_REINSTALL = "reinstall pipeline (pip install --force-reinstall pipeline)"


class Engine(Protocol):
    """What the gate needs from an engine."""

    rate: int
    #: samples per analysis window (one score each)
    window: int
    #: the threshold used when the caller gives none
    default_threshold: float
    #: once speaking, a window counts as quiet below ``threshold - hysteresis``
    hysteresis: float

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        """Scores for every window completed by these samples (a partial window waits)."""
        ...

    def reset(self) -> None:
        """Forget all state: buffered samples and any model state."""
        ...


# An engine that works on bytes (webrtc) may also offer ``process_bytes(data: bytes) ->
# list[float]``, ``process`` for native-order int16 bytes: the gate then hands it mono pcm16
# frames' bytes as they are, with no array round trip.


def check_rate(engine: str, rate: int) -> None:
    """Raise FormatError if ``engine`` cannot analyse audio at ``rate`` Hz. The message reads
    after the stage's name (``stage 'gate' (vad_gate) gets 44100 Hz audio; ...``)."""
    rates = ENGINE_RATES[engine]
    if rates is None or rate in rates:
        return
    names = " or ".join(str(r) for r in rates)
    raise FormatError(
        f"gets {rate} Hz audio; VAD engine '{engine}' takes {names} Hz",
        "add {type: resample, rate: 16000} before it",
    )


class _Framer:
    """Cuts a stream of samples into windows of ``size``, carrying a partial window over."""

    __slots__ = ("_buf", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf: npt.NDArray[np.int16] = np.zeros(0, np.int16)

    def windows(self, pcm: npt.NDArray[np.int16]) -> list[npt.NDArray[np.int16]]:
        if not len(self._buf):
            if len(pcm) == self.size:  # a frame of one window, nothing carried: the usual case
                return [pcm]
            buf = pcm
        else:
            buf = np.concatenate((self._buf, pcm))
        n = len(buf) // self.size
        self._buf = buf[n * self.size :].copy()
        return [buf[i * self.size : (i + 1) * self.size] for i in range(n)]

    def reset(self) -> None:
        self._buf = np.zeros(0, np.int16)


# ---------------------------------------------------------------------------- silero

_SESSIONS: dict[str, Any] = {}
_SESSIONS_LOCK = threading.Lock()


SILERO_MODEL = Path(__file__).with_name("data") / "silero_vad.onnx"
"""Silero VAD v6 (MIT licence, ``data/SILERO_VAD_LICENSE``), shipped inside this package."""


def find_silero_model() -> Path:
    """The ``silero_vad.onnx`` shipped with this package (``stages/vad/data/``).

    Raises InputError when the file is missing (a broken install), saying what to do."""
    if SILERO_MODEL.is_file():
        return SILERO_MODEL
    raise InputError(
        f"the silero VAD model shipped with pipeline is missing ({SILERO_MODEL}); "
        f"{SILERO_REINSTALL} (or give the gate model_path: FILE.onnx, or use engine: webrtc)"
    )


def silero_session(model_path: Path | None = None) -> Any:
    """The process-wide onnxruntime session for the silero model (created on first use)."""
    path = Path(model_path) if model_path is not None else find_silero_model()
    key = str(path.resolve())
    session = _SESSIONS.get(key)
    if session is not None:
        return session
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            if not path.is_file():
                raise InputError(
                    f"{path}: silero VAD model file not found; check model_path, "
                    "or drop it to use the model shipped with pipeline"
                )
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise InputError(f"{path}: cannot load the silero VAD model: {exc}") from None
            _SESSIONS[key] = session
    return session


class SileroEngine:
    """Silero VAD v5/v6 through onnxruntime: a speech probability per 32 ms window.

    The model takes ``[1, context + window]`` float32 samples in -1..1, where the context is the
    last 64 (16 kHz) or 32 (8 kHz) samples of the previous window, a recurrent ``state`` of
    shape ``[2, 1, 128]`` and the rate ``sr`` (int64); it returns the probability and the next
    state. This is what the official ``OnnxWrapper`` does, without torch.
    """

    default_threshold = 0.5
    hysteresis = 0.15

    def __init__(self, rate: int, *, model_path: Path | None = None) -> None:
        check_rate("silero", rate)
        self.rate = rate
        self.window = 512 if rate == 16000 else 256
        self._context_size = 64 if rate == 16000 else 32
        self._session = silero_session(model_path)
        self._sr = np.array(rate, dtype=np.int64)
        # the model's input: the context, then the window being filled (already scaled)
        self._input = np.zeros((1, self._context_size + self.window), np.float32)
        self._filled = 0  # samples of the window in _input so far
        self._state = np.zeros((2, 1, 128), np.float32)

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        scores: list[float] = []
        ctx, window = self._context_size, self.window
        x = self._input
        row = x[0]
        filled, i, n = self._filled, 0, len(pcm)
        while i < n:
            # samples go straight into the model's input, scaled there: × 2^-15 is exact in
            # float32, so a window filled in pieces holds what one filled at once would
            take = min(n - i, window - filled)
            piece = row[ctx + filled : ctx + filled + take]
            piece[:] = pcm[i : i + take]
            piece *= 1.0 / 32768.0
            filled += take
            i += take
            if filled == window:
                out, self._state = self._session.run(
                    None, {"input": x, "state": self._state, "sr": self._sr}
                )
                scores.append(float(out[0, 0]))
                row[:ctx] = row[-ctx:]
                filled = 0
        self._filled = filled
        return scores

    def reset(self) -> None:
        self._input[:] = 0.0
        self._filled = 0
        self._state = np.zeros((2, 1, 128), np.float32)


# ---------------------------------------------------------------------------- webrtc


_INT16 = np.dtype(np.int16)
# audioop's functions, looked up once (None without audioop)
_MUL: Any = AUDIOOP.mul if AUDIOOP is not None else None
_ADD: Any = AUDIOOP.add if AUDIOOP is not None else None


def _preemphasis_audioop(data: bytes, prev: bytes, a: float) -> bytes:
    assert AUDIOOP is not None
    return AUDIOOP.add(data, AUDIOOP.mul(prev + data[:-2], 2, -a), 2)  # type: ignore[no-any-return]


def _preemphasis_numpy(data: bytes, prev: bytes, a: float) -> bytes:
    # audioop's arithmetic: the product in double, floored; the sum saturated
    y = np.frombuffer(prev + data[:-2], np.int16) * -a
    np.floor(y, out=y)
    y += np.frombuffer(data, np.int16)
    np.maximum(y, -32768.0, out=y)
    np.minimum(y, 32767.0, out=y)
    return y.astype(np.int16).tobytes()


def preemphasize(data: bytes, prev: bytes, a: float) -> bytes:
    """``y[n] = x[n] + ⌊-a·x[n-1]⌋`` saturated to int16, on native int16 bytes; ``prev`` holds
    ``x[-1]`` (the 2 bytes before ``data``) and ``0 <= a < 1``. Through ``audioop`` when it
    imports (``audioop.add(data, audioop.mul(shifted, 2, -a), 2)``, ~1.5 µs per 20 ms at
    16 kHz), else numpy with the same arithmetic (~5 µs): the same bytes either way."""
    return (_preemphasis_audioop if AUDIOOP is not None else _preemphasis_numpy)(data, prev, a)


def _is_speech(vad: Any, rate: int, window: bytes, samples: int) -> bool:
    return bool(vad.is_speech(window, rate))


class PureWindows:
    """The webrtc engine's per-frame work in Python: int16 audio in pieces of any length, cut
    into windows of ``size`` samples, each pre-emphasised (:func:`preemphasize`, ``x[-1] = 0``
    at the start) and handed to ``decide(handle, rate, window, size)``; :meth:`process` returns
    a score per window completed, 1.0 where the answer is true, else 0.0. The compiled
    ``stages.vad._cvad.Windows`` computes the same windows and scores, and raises the same
    errors: if ``decide`` raises, the call's samples are consumed all the same (the windows
    after the failing one go unanalysed, a partial window at the end is kept).
    """

    __slots__ = ("_a", "_decide", "_end", "_handle", "_minus_a", "_rate", "_raw", "_size", "_wb")

    def __init__(
        self,
        size: int,
        a: float,
        decide: Callable[[Any, int, bytes, int], Any],
        handle: Any,
        rate: int,
    ) -> None:
        if not 1 <= size <= 1 << 24:
            raise ValueError(
                f"a VAD window of {size} samples; give 1 to {1 << 24} samples (the engine's "
                "rate x frame_ms / 1000)"
            )
        if not 0.0 <= a < 1.0:
            raise ValueError(
                f"pre-emphasis {float(a)!r} is out of range; give 0 (off) up to below 1"
            )
        if not callable(decide):
            raise TypeError(
                f"decide must be callable as decide(handle, rate, window, samples), got {decide!r}"
            )
        self._size, self._a, self._minus_a = size, float(a), -float(a)
        self._decide, self._handle, self._rate = decide, handle, rate
        self._wb = 2 * size
        self._end = self._wb + 2  # a window and the sample before it
        # x[-1] (the sample before them, for the pre-emphasis), then the samples not yet
        # analysed, as they came: a window is pre-emphasised once, when it is complete
        self._raw = b"\0\0"

    def process(self, data: bytes) -> list[float]:
        """Scores for every window completed by these native-order int16 bytes."""
        if len(data) & 1:
            raise ValueError(
                f"VAD audio of {len(data)} bytes: int16 samples are 2 bytes each; pass whole "
                "samples"
            )
        raw = self._raw + data
        size = len(raw)
        end = self._end
        if size < end:  # no window completed (one 20 ms frame in three for 30 ms windows)
            self._raw = raw
            return []
        wb = self._wb
        if size >= end + wb:  # several windows: large frames
            return self._windows(raw)
        # one window, the usual case: raw[2:end] pre-emphasised with raw[:wb], its x[n-1]
        self._raw = raw[wb:]
        if not self._a:
            window = raw[2:end]
        elif _ADD is not None:
            window = _ADD(raw[2:end], _MUL(raw[:wb], 2, self._minus_a), 2)
        else:
            window = _preemphasis_numpy(raw[2:end], raw[:2], self._a)
        return [1.0 if self._decide(self._handle, self._rate, window, self._size) else 0.0]

    def process_g711(self, codes: bytes, table: bytes) -> list[float]:
        """:meth:`process` for G.711 codes, each decoded through ``table`` (the codec's 256
        native int16 samples, as bytes)."""
        if not isinstance(table, bytes) or len(table) != 512:
            raise ValueError(
                f"a G.711 decode table is 256 native int16 samples (512 bytes), got {table!r}; "
                "pass the codec's table as bytes"
            )
        lut = np.frombuffer(table, np.int16)
        return self.process(lut[np.frombuffer(codes, np.uint8)].tobytes())

    def _windows(self, raw: bytes) -> list[float]:
        wb = self._wb
        n = (len(raw) - 2) // wb
        a, rate, decide, handle, size = self._a, self._rate, self._decide, self._handle, self._size
        self._raw = raw[n * wb :]
        scores = []
        for i in range(n):
            at = i * wb
            window = raw[at + 2 : at + wb + 2]
            if a:
                window = preemphasize(window, raw[at : at + 2], a)
            scores.append(1.0 if decide(handle, rate, window, size) else 0.0)
        return scores

    def reset(self) -> None:
        """Forget the partial window and the carried sample."""
        self._raw = b"\0\0"

    @property
    def pending(self) -> bytes:
        """The partial window so far, pre-emphasised."""
        raw = self._raw
        if len(raw) == 2 or not self._a:
            return raw[2:]
        return preemphasize(raw[2:], raw[:2], self._a)

    @property
    def prev(self) -> int:
        """``x[-1]``: the last sample received."""
        return int.from_bytes(self._raw[-2:], sys.byteorder, signed=True)


_CVAD = native.load("stages.vad._cvad")
#: the compiled twin of :class:`PureWindows` (None when not built, or PIPELINE_PURE_PYTHON=1)
NativeWindows: Any = _CVAD.Windows if _CVAD is not None else None


class WebrtcEngine:
    """Google's WebRTC VAD (``webrtcvad``): a 0/1 decision per 10, 20 or 30 ms window.

    ``aggressiveness`` 0..3: higher says "speech" less often (fewer false alarms in noise).
    ``preemphasis`` (``y[n] = x[n] - a·x[n-1]``, 0 to turn it off, below 1) tilts the spectrum
    before webrtcvad sees it: mains hum and its low harmonics otherwise keep its lowest band
    (80-250 Hz) busy, and it never hears the end of speech (on a babble-and-hum file
    it found one segment from the first word to the end of the file without it, and every
    utterance with it, at no cost on the other files). It works on bytes, as webrtcvad does
    (:func:`preemphasize`): no float conversion, no numpy on the audioop path.

    The per-frame work (pre-emphasis, windows, the call into webrtcvad) is the compiled
    ``stages.vad._cvad`` kernel when it is built, else :class:`PureWindows`, which computes the
    same: ``native=True`` / ``False`` asks for one of them (``None``: the kernel when built).
    """

    default_threshold = 0.5
    hysteresis = 0.0
    #: :meth:`process` for native-order int16 bytes (what the gate has for pcm16 frames): the
    #: windows' own ``process``, so the gate's call goes straight into the kernel
    process_bytes: Callable[[bytes], list[float]]

    def __init__(
        self,
        rate: int,
        *,
        aggressiveness: int = 3,
        frame_ms: int = 30,
        preemphasis: float = 0.8,
        native: bool | None = None,
        decide: Callable[[Any, int, bytes, int], Any] | None = None,
    ) -> None:
        check_rate("webrtc", rate)
        if frame_ms not in (10, 20, 30):
            raise UsageError(f"webrtc frames are 10, 20 or 30 ms, not {frame_ms}")
        if not 0 <= aggressiveness <= 3:
            raise UsageError(f"webrtc aggressiveness is 0..3, not {aggressiveness}")
        if not 0 <= preemphasis < 1:
            raise UsageError(f"webrtc pre-emphasis is 0 (off) up to below 1, not {preemphasis}")
        if native and NativeWindows is None:
            raise UsageError(
                "the compiled VAD kernel (stages.vad._cvad) is not in use (not built, or "
                "PIPELINE_PURE_PYTHON is set); reinstall pipeline with a C compiler, or leave "
                "native unset"
            )
        import webrtcvad

        vad = webrtcvad.Vad(aggressiveness)
        self.rate = rate
        self.window = rate * frame_ms // 1000
        self._vad = vad
        # webrtcvad's Vad.is_speech is a Python method around the C function _webrtcvad.process
        # (handle, rate, bytes, samples): calling that directly saves its frame, ~0.2 µs a window
        # (a ``decide`` given is called with the ``webrtcvad.Vad`` as its handle, as
        # ``_is_speech`` is)
        handle: Any = vad
        if decide is None:
            try:
                decide = importlib.import_module("_webrtcvad").process
                handle = vad._vad
            except (ImportError, AttributeError):  # another webrtcvad build: its public method
                decide = _is_speech
        #: decide(handle, rate, window, samples): webrtcvad's answer for one window
        self.decide = decide
        use_native = NativeWindows is not None if native is None else native
        kind = NativeWindows if use_native else PureWindows
        self.windows = kind(self.window, float(preemphasis), decide, handle, rate)
        self.process_bytes = self.windows.process
        #: with the compiled kernel, ``process_g711(codes, table)``: G.711 codes decoded on
        #: their way into the windows (one call a telephony frame); None on the pure path,
        #: where the codec's own decoder (audioop) and :attr:`process_bytes` are quicker
        self.process_g711: Callable[[bytes, bytes], list[float]] | None = (
            self.windows.process_g711 if use_native else None
        )

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        # native order, as webrtcvad reads it
        if pcm.dtype is not _INT16:
            pcm = pcm.astype(_INT16)
        return self.process_bytes(pcm.tobytes())

    def reset(self) -> None:
        self.windows.reset()


# ---------------------------------------------------------------------------- energy


class EnergyEngine:
    """Band energy over an adaptive noise floor, numpy only: the score of a 20 ms window is its
    level (dB, 200 Hz to 4 kHz, so mains hum and rumble do not count) above the noise floor.

    The floor is the lowest window level of the last ``floor_s`` seconds (minimum statistics):
    speech always has pauses between words, so the minimum follows the noise, rising within
    ``floor_s`` when the noise gets louder and falling at once when it gets quieter. Levels below
    ``min_level_db`` (dB re full scale) never count as speech, so digital silence with a little
    dither does not trigger it.
    """

    default_threshold = 9.0
    hysteresis = 3.0

    def __init__(
        self,
        rate: int,
        *,
        window_ms: int = 20,
        floor_s: float = 2.0,
        band: tuple[float, float] = (200.0, 4000.0),
        min_level_db: float = -60.0,
    ) -> None:
        self.rate = rate
        self.window = max(1, rate * window_ms // 1000)
        self._framer = _Framer(self.window)
        self._taper = np.hanning(self.window).astype(np.float32)
        freqs = np.fft.rfftfreq(self.window, 1.0 / rate)
        band_bins = np.flatnonzero((freqs >= band[0]) & (freqs <= min(band[1], rate / 2)))
        # the band's bins are consecutive: a slice (a view), not a mask (a copy)
        self._lo = int(band_bins[0]) if len(band_bins) else 0
        self._hi = int(band_bins[-1]) + 1 if len(band_bins) else 0
        # full-scale sine in the band -> about 0 dB
        self._norm = float(np.sum(self._taper) ** 2 / 4.0 * 32768.0**2)
        self._floor_windows = max(1, round(floor_s * 1000 / window_ms))
        # the running minimum of the last _floor_windows levels: (window number, level), levels
        # increasing, so the first is the minimum (each level enters and leaves once)
        self._lows: deque[tuple[int, float]] = deque()
        self._count = 0
        self._min_level = min_level_db
        # per-window buffers: the tapered window, its spectrum, the band's power per bin
        self._x = np.empty(self.window, np.float32)
        self._rfft = _rfft(self.window, self._x)
        self._power = np.empty(self._hi - self._lo, np.float32)

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        scores: list[float] = []
        lows = self._lows
        for win in self._framer.windows(pcm):
            # np.abs(np.fft.rfft(win * taper)[band]) ** 2, summed: the same numpy loops, into
            # buffers made once
            np.multiply(win, self._taper, out=self._x)
            spectrum = self._rfft(self._x)
            power_bins = np.abs(spectrum[self._lo : self._hi], out=self._power)
            np.square(power_bins, out=power_bins)
            power = float(np.sum(power_bins)) / self._norm
            level = 10.0 * float(np.log10(power + 1e-12))
            n = self._count
            while lows and lows[-1][1] >= level:
                lows.pop()
            lows.append((n, level))
            if lows[0][0] <= n - self._floor_windows:
                lows.popleft()
            self._count = n + 1
            floor = max(lows[0][1], self._min_level)
            scores.append(max(0.0, level - floor))
        return scores

    def reset(self) -> None:
        self._framer.reset()
        self._lows.clear()
        self._count = 0


def _rfft(n: int, x: npt.NDArray[np.float32]) -> Callable[[npt.NDArray[np.float32]], Any]:
    """``np.fft.rfft`` for ``n`` float32 samples (numpy 2 computes it in float32), as the
    pocketfft ufunc numpy's own ``rfft`` ends in, called directly into a buffer made once: the
    same numbers without ~5 µs of argument handling a window. numpy 1.x: ``np.fft.rfft``."""
    try:
        pfu = importlib.import_module("numpy.fft._pocketfft_umath")
        ufunc = pfu.rfft_n_even if n % 2 == 0 else pfu.rfft_n_odd
    except (ImportError, AttributeError):
        return np.fft.rfft
    out = np.empty(n // 2 + 1, np.result_type(x.dtype, 1j))

    def rfft(x: npt.NDArray[np.float32]) -> Any:
        return ufunc(x, 1, out=out)

    return rfft


def make_engine(
    name: str,
    rate: int,
    *,
    aggressiveness: int = 3,
    model_path: Path | None = None,
) -> Engine:
    """An engine by name for audio at ``rate`` Hz (FormatError if it cannot take that rate)."""
    if name == "silero":
        return SileroEngine(rate, model_path=model_path)
    if name == "webrtc":
        return WebrtcEngine(rate, aggressiveness=aggressiveness)
    if name == "energy":
        return EnergyEngine(rate)
    raise UsageError(f"unknown VAD engine '{name}'; use silero, webrtc or energy")
