"""Noise suppression with RNNoise: the ``denoise`` stage.

RNNoise (Jean-Marc Valin's recurrent network, BSD 3-Clause) works on 48 kHz mono in frames of
480 samples (10 ms) and returns each frame cleaned; its output lags its input by 960 samples
(20 ms, measured by cross-correlating clean speech with its output in
``tests/stages/test_denoise.py``). Its compiled library ships in the ``pyrnnoise`` wheel; this
module binds the four C functions it needs through ``ctypes`` (``rnnoise_create``,
``_process_frame``, ``_destroy``, ``_get_frame_size``) and never imports the wheel's Python
package, whose file helpers pull in an audio I/O stack we do not need.

Other rates go through the project's low-latency resampler on both sides (:mod:`stages.resample`,
polyphase FIR: about 1 ms of delay each way at 16 kHz): :data:`RATES` lists the rates taken,
those with an integer ratio to 48 kHz. :class:`Denoiser` is the synchronous core: int16 samples
in, as many denoised samples out as the chain can release, ``flush`` at the end; over a stream
exactly as many samples come out as went in, the content ``delay_s`` late.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.context import StageContext
from pipeline.errors import FormatError, InputError, UsageError
from pipeline.frames import Audio, AudioFormat, Frame
from pipeline.spec import stage

from .resample import StreamResampler

RNNOISE_RATE = 48000
#: how late RNNoise's output is, in 48 kHz samples (measured)
RNNOISE_DELAY = 960
#: sample rates the stage takes (an integer ratio to 48 kHz; resampled inside)
RATES = (8000, 12000, 16000, 24000, 48000)
INSTALL = "pip install 'pipeline[denoise]' (or: pip install pyrnnoise)"

_LIB: Any = None
_LIB_LOCK = threading.Lock()


def rnnoise_library() -> Any:
    """The RNNoise shared library from the installed ``pyrnnoise`` wheel, loaded once."""
    global _LIB
    if _LIB is not None:
        return _LIB
    with _LIB_LOCK:
        if _LIB is None:
            spec = importlib.util.find_spec("pyrnnoise")
            folders = list(spec.submodule_search_locations or []) if spec else []
            found = [p for f in folders for p in Path(f).glob("librnnoise*") if p.is_file()]
            if not found:
                raise InputError(f"the denoise stage needs the RNNoise library; {INSTALL}")
            lib = ctypes.CDLL(str(found[0]))
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.restype = None
            lib.rnnoise_process_frame.argtypes = [
                ctypes.c_void_p,
                ctypes.POINTER(ctypes.c_float),
                ctypes.POINTER(ctypes.c_float),
            ]
            lib.rnnoise_process_frame.restype = ctypes.c_float
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            if lib.rnnoise_get_frame_size() != 480:
                raise InputError(
                    f"{found[0]}: RNNoise frames of {lib.rnnoise_get_frame_size()} samples, "
                    f"expected 480; {INSTALL}"
                )
            _LIB = lib
    return _LIB


class Denoiser:
    """Streaming RNNoise for mono pcm16 at one of :data:`RATES`.

    ``process(samples)`` returns the denoised samples it can release (in order, no gaps);
    ``flush()`` the rest at the end of the stream, so that exactly as many come out as went in.
    ``speech_probability`` is RNNoise's own voice estimate for the last frame. Call ``close()``
    (or use it as a context manager) to free the native state."""

    frame = 480

    def __init__(self, rate: int) -> None:
        if rate not in RATES:
            raise FormatError(
                f"gets {rate} Hz audio; RNNoise runs at 48000 Hz and the denoise stage takes "
                f"{', '.join(str(r) for r in RATES)} Hz",
                "add {type: resample, rate: 16000} before it",
            )
        self.rate = rate
        self._lib = rnnoise_library()
        self._state = self._lib.rnnoise_create(None)
        self._up = StreamResampler(rate, RNNOISE_RATE) if rate != RNNOISE_RATE else None
        self._down = StreamResampler(RNNOISE_RATE, rate) if rate != RNNOISE_RATE else None
        self._pending: npt.NDArray[np.float32] = np.zeros(0, np.float32)
        self._scratch = np.zeros(self.frame, np.float32)
        self._ptr = self._scratch.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self.speech_probability = 0.0
        self.samples_in = 0
        self.samples_out = 0

    @property
    def delay_s(self) -> float:
        """How late the content comes out: RNNoise's 20 ms and the resamplers' group delays
        (with input frames a multiple of 10 ms; others wait up to 10 ms more for a full one)."""
        resampling = sum(r.delay_s for r in (self._up, self._down) if r is not None)
        return RNNOISE_DELAY / RNNOISE_RATE + resampling

    def _run(self, x48: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        buf = np.concatenate((self._pending, x48.astype(np.float32)))
        n = buf.size // self.frame
        out = np.empty(n * self.frame, np.float32)
        for i in range(n):
            self._scratch[:] = buf[i * self.frame : (i + 1) * self.frame]
            self.speech_probability = float(
                self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
            )
            out[i * self.frame : (i + 1) * self.frame] = self._scratch
        self._pending = buf[n * self.frame :]
        return np.clip(np.rint(out), -32768, 32767).astype(np.int16)

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        if self._state is None:
            raise UsageError("Denoiser.process after close()")
        self.samples_in += samples.size
        x48 = self._up.process(samples) if self._up is not None else samples
        y48 = self._run(x48)
        y = self._down.process(y48) if self._down is not None else y48
        return self._take(y)

    def flush(self) -> npt.NDArray[np.int16]:
        """The samples still owed at the end of the stream (the tail pushed through with
        silence), then ready for a new stream."""
        parts = []
        x48 = self._up.flush() if self._up is not None else np.zeros(0, np.int16)
        pad = (-(self._pending.size + x48.size)) % self.frame
        y48 = self._run(np.concatenate((x48, np.zeros(pad + self.frame, np.int16))))
        if self._down is not None:
            parts += [self._down.process(y48), self._down.flush()]
        else:
            parts.append(y48)
        out = self._take(np.concatenate(parts))
        if out.size + self.samples_out < self.samples_in:  # cannot happen; keep the count exact
            out = np.concatenate((out, np.zeros(self.samples_in - self.samples_out, np.int16)))
            self.samples_out = self.samples_in
        self._reset_counts()
        return out

    def _take(self, y: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        room = self.samples_in - self.samples_out
        y = y[: max(0, room)]
        self.samples_out += y.size
        return y

    def _reset_counts(self) -> None:
        self.samples_in = self.samples_out = 0
        self._pending = np.zeros(0, np.float32)
        self._lib.rnnoise_destroy(self._state)
        self._state = self._lib.rnnoise_create(None)

    def close(self) -> None:
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __enter__(self) -> Denoiser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _output_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    """Audio leaves in the format it came in; RNNoise must be installed, and the rate one it
    can reach by an integer ratio."""
    rnnoise_library()
    if fmt is None:
        return None
    if fmt.encoding != "pcm16" or fmt.channels != 1:
        raise FormatError(
            f"gets {fmt} audio; the denoise stage takes mono pcm16",
            "add {type: g711_decode} before it" if fmt.encoding != "pcm16" else "use mono audio",
        )
    if fmt.rate not in RATES:
        raise FormatError(
            f"gets {fmt.rate} Hz audio; RNNoise runs at 48000 Hz and the denoise stage takes "
            f"{', '.join(str(r) for r in RATES)} Hz",
            "add {type: resample, rate: 16000} before it",
        )
    return fmt


@stage("denoise", accepts=(Audio,), emits=(Audio,), passthrough=True, output_format=_output_format)
async def denoise(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Suppress background noise in speech (RNNoise).

    Mono pcm16 at 8, 12, 16, 24 or 48 kHz; other rates than 48 kHz are resampled to 48 kHz and
    back inside with the low-latency resampler. The content comes out about 22 ms late at 16 kHz
    (RNNoise's 20 ms and the two resamplers), in the same number of samples; each frame leaves
    with the media time of its first sample. Other frames pass at once.
    """
    core: Denoiser | None = None
    start = 0.0
    try:
        async for frame in frames:
            if not isinstance(frame, Audio):
                yield frame
                continue
            if core is None:
                try:
                    _output_format({}, frame.format)
                except FormatError as exc:
                    raise FormatError(
                        f"stage '{ctx.id}' (denoise) {exc.message}", exc.fix
                    ) from None
                core = Denoiser(frame.rate)
                start = frame.pts
                ctx.report("algorithmic_delay_ms", round(core.delay_s * 1000, 3))
            elif frame.rate != core.rate or frame.encoding != "pcm16" or frame.channels != 1:
                raise FormatError(
                    f"stage '{ctx.id}' (denoise) gets {frame.format} audio after "
                    f"pcm16 {core.rate} Hz; it denoises one format",
                    f"add {{type: resample, rate: {core.rate}}} before it",
                )
            pts = start + core.samples_out / core.rate
            out = core.process(frame.samples())
            if out.size:
                yield Audio.from_samples(out, core.rate, pts=pts)
        if core is not None:
            pts = start + core.samples_out / core.rate
            tail = core.flush()
            if tail.size:
                yield Audio.from_samples(tail, core.rate, pts=pts)
    finally:
        if core is not None:
            core.close()
