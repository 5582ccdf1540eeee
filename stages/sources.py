"""Sources: a WAV file (``wav_source``) and generated test signals (``signal_source``).

Both emit audio frames of ``frame_ms`` milliseconds (the last one may be shorter) whose ``pts``
is the index of their first sample divided by the rate, so media time is exact however long the
stream runs. ``pace: realtime`` releases each frame when the clock reaches ``start + pts`` (the
first at once), like a microphone or a phone line; ``pace: fast`` releases them as fast as the
pipeline takes them. Both stop early when the run is asked to stop (Ctrl-C).

The sample generation is plain synchronous code (:class:`SignalGenerator`); WAV reading lives in
:mod:`stages.wavfile`.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.context import StageContext
from pipeline.errors import InputError, StageError
from pipeline.frames import BYTES_PER_SAMPLE, Audio, AudioFormat, Encoding, Frame, make_audio
from pipeline.spec import InputPath, stage

from . import g711
from .wavfile import WavReader, WavStreamReader, read_header

#: ``path: "-"``: standard input
STDIN = "-"

__all__ = ["SignalGenerator", "frame_samples", "signal_source", "wav_source"]

Pace = Literal["realtime", "fast"]


def frame_samples(rate: int, frame_ms: int) -> int:
    """Samples per frame of ``frame_ms`` at ``rate`` (rounded, at least one)."""
    return max(1, round(rate * frame_ms / 1000))


class _Pacer:
    """Releases media time ``pts`` at ``start + pts`` on the clock (realtime), or at once."""

    def __init__(self, ctx: StageContext, pace: Pace) -> None:
        self._ctx = ctx
        self._realtime = pace == "realtime"
        self._start: float | None = None

    async def wait(self, pts: float) -> None:
        if not self._realtime:
            return
        if self._start is None:
            self._start = self._ctx.clock.now()
        await self._ctx.clock.sleep_until(self._start + pts)


def _frame_ms_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    frame_ms = values.get("frame_ms", 20)
    if frame_ms <= 0:
        return [("frame_ms", f"frame_ms must be at least 1, got {frame_ms}")]
    return []


def _raise_first(ctx: StageContext, problems: list[tuple[str, str]]) -> None:
    """Called as a stage starts, for callers that skipped ``pipeline validate`` (Python)."""
    if problems:
        raise StageError(ctx.id, problems[0][1])


def _check_wav_source(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Bad numbers are found by ``pipeline validate`` (exit 2), not once the run has started."""
    out = _frame_ms_problems(values)
    if str(values.get("path")) == STDIN and values.get("loop"):
        out.append(("loop", "loop: true cannot rewind standard input ('-'); remove loop"))
    return out


# ---------------------------------------------------------------------------- wav_source


def _wav_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    if str(params["path"]) == STDIN:
        return None  # known once the stream's header arrives, as the run starts
    return read_header(params["path"]).format


@stage("wav_source", emits=(Audio,), output_format=_wav_format, check=_check_wav_source)
async def wav_source(
    *,
    path: InputPath,
    pace: Pace = "realtime",
    frame_ms: int = 20,
    loop: bool = False,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Play a WAV file as audio frames (PCM16, μ-law, A-law as stored; other WAVs converted).

    PCM16, μ-law (tag 7) and A-law (tag 6) mono files come out as stored (pcm16, pcmu, pcma);
    8-bit, 24/32-bit, float and multi-channel files come out as pcm16 mono (see docs/audio-io.md).

    Parameters:
        path: the WAV file to read, or - for a WAV stream on standard input
        pace: realtime (one frame per frame_ms on the clock) or fast (as fast as taken)
        frame_ms: milliseconds of audio per frame
        loop: start over at the end of the file (forever, until the run stops)
    """
    _raise_first(ctx, _check_wav_source({"frame_ms": frame_ms, "path": path, "loop": loop}, Path()))
    if str(path) == STDIN:
        async for frame in _wav_stream(pace, frame_ms, ctx):
            yield frame
        return
    with WavReader(path) as reader:
        fmt = reader.format
        encoding, rate, channels = fmt.encoding, fmt.rate, fmt.channels
        n = frame_samples(rate, frame_ms)
        align = BYTES_PER_SAMPLE[encoding] * channels
        size = n * align  # bytes per frame
        per_block = max(1, (1 << 16) // size)  # frames per read: about 64 KiB
        pacer = _Pacer(ctx, pace)
        realtime = pace == "realtime"
        stopping = ctx.stopping.is_set
        make = make_audio  # the frame without the dataclass __init__ (see pipeline.frames)
        index = 0  # sample index of the next frame, across loops
        if not loop:
            ctx.media_total_s = reader.header.duration
        if reader.header.conversion:
            ctx.log.info("wav_converted", path=str(path), rule=reader.header.conversion)
        while not stopping():
            if realtime:
                for data in reader.chunks(n):
                    pts = index / rate
                    await pacer.wait(pts)
                    if stopping():
                        return
                    index += len(data) // align
                    yield make(data, encoding, rate, channels, pts)
            else:
                # As fast as taken: the frames of a block are made in one go and handed out
                # from a list.
                for block in reader.chunks(n * per_block):
                    first = index
                    index += len(block) // align
                    frames = [
                        make(block[i : i + size], encoding, rate, channels, (first + k * n) / rate)
                        for k, i in enumerate(range(0, len(block), size))
                    ]
                    for frame in frames:
                        if stopping():
                            return
                        yield frame
            if not loop or reader.header.num_frames == 0:
                break
            reader.rewind()


async def _wav_stream(pace: Pace, frame_ms: int, ctx: StageContext) -> AsyncIterator[Frame]:
    """``wav_source`` on standard input: blocking reads run in a thread, so the event loop
    goes on while the writer of the pipe (sox, ffmpeg) is slow or pauses."""
    stdin = sys.stdin.buffer
    try:
        with ctx.waiting():
            reader = await asyncio.to_thread(WavStreamReader, stdin)
    except InputError as exc:
        raise StageError(ctx.id, str(exc)) from None
    fmt = reader.format
    if reader.header.conversion:
        ctx.log.info("wav_converted", path=STDIN, rule=reader.header.conversion)
    n = frame_samples(fmt.rate, frame_ms)
    pacer = _Pacer(ctx, pace)
    index = 0
    while not ctx.stopping.is_set():
        with ctx.waiting():
            data = await asyncio.to_thread(reader.read, n)
        if not data:
            break
        pts = index / fmt.rate
        await pacer.wait(pts)
        if ctx.stopping.is_set():
            break
        frame = make_audio(data, fmt.encoding, fmt.rate, fmt.channels, pts)
        index += frame.num_samples
        yield frame


# ---------------------------------------------------------------------------- signal_source

Kind = Literal["sine", "silence", "noise"]


class SignalGenerator:
    """Samples of a test signal, block by block: the concatenation of the blocks does not
    depend on their sizes (the sine is computed from the absolute sample index, so its phase
    is continuous; the noise draws from one seeded generator in order).

    ``amplitude`` is a fraction of full scale (1.0 = 32767); noise is uniform in
    ±amplitude. Output is pcm16 bytes (little-endian int16), rounded to nearest.
    """

    def __init__(
        self,
        kind: Kind,
        *,
        rate: int,
        freq: float = 440.0,
        amplitude: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.rate = rate
        self.freq = freq
        self.scale = amplitude * 32767.0
        self._rng = np.random.default_rng(seed)
        self.position = 0

    def read(self, n: int) -> bytes:
        """The next ``n`` samples as pcm16 bytes."""
        x: npt.NDArray[np.float64]
        if self.kind == "sine":
            idx = np.arange(self.position, self.position + n, dtype=np.float64)
            # reduce the phase modulo one cycle in exact-ish arithmetic to keep precision
            # over long runs: (i * f / rate) mod 1
            cycles = np.mod(idx * self.freq, self.rate) / self.rate
            x = self.scale * np.sin(2.0 * np.pi * cycles)
        elif self.kind == "noise":
            x = self._rng.uniform(-self.scale, self.scale, n)
        else:
            x = np.zeros(n)
        self.position += n
        return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _signal_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    return AudioFormat(params.get("encoding", "pcm16"), int(params.get("rate", 16000)))


def _check_signal_source(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Bad numbers are found by ``pipeline validate`` (exit 2), not once the run has started."""
    out = _frame_ms_problems(values)
    rate = values.get("rate", 16000)
    if rate <= 0:
        out.append(("rate", f"rate must be a positive number of Hz, got {rate}"))
    amplitude = values.get("amplitude", 0.5)
    if not 0.0 <= amplitude <= 1.0:  # also refuses nan
        out.append(
            ("amplitude", f"amplitude is a fraction of full scale (0 to 1), got {amplitude:g}")
        )
    seconds = values.get("seconds", 1.0)
    if not math.isfinite(seconds):
        out.append(("seconds", f"seconds must be a finite number, got {seconds:g}"))
    elif seconds < 0:
        out.append(("seconds", f"seconds must be 0 or more, got {seconds:g}"))
    freq = values.get("freq", 440.0)
    if values.get("kind", "sine") == "sine" and rate > 0 and not 0.0 <= freq <= rate / 2:
        out.append(
            (
                "freq",
                f"freq must be between 0 and half the rate ({rate / 2:g} Hz) or the tone "
                f"aliases, got {freq:g}",
            )
        )
    return out


@stage("signal_source", emits=(Audio,), output_format=_signal_format, check=_check_signal_source)
async def signal_source(
    *,
    kind: Kind = "sine",
    freq: float = 440.0,
    rate: int = 16000,
    seconds: float = 1.0,
    encoding: Encoding = "pcm16",
    amplitude: float = 0.5,
    seed: int = 0,
    frame_ms: int = 20,
    pace: Pace = "fast",
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Generate a test signal: a sine tone, silence, or seeded white noise.

    Parameters:
        kind: sine, silence or noise (uniform white noise, the same for the same seed)
        freq: sine frequency in Hz
        rate: sample rate in Hz
        seconds: duration of the signal
        encoding: pcm16, pcmu or pcma (G.711-encoded from the pcm16 signal)
        amplitude: peak level as a fraction of full scale (0 to 1)
        seed: noise seed
        frame_ms: milliseconds of audio per frame
        pace: fast (as fast as taken) or realtime (one frame per frame_ms on the clock)
    """
    values = {"frame_ms": frame_ms, "rate": rate, "amplitude": amplitude, "seconds": seconds}
    _raise_first(ctx, _check_signal_source(values | {"kind": kind, "freq": freq}, Path()))
    gen = SignalGenerator(kind, rate=rate, freq=freq, amplitude=amplitude, seed=seed)
    total = round(seconds * rate)
    ctx.media_total_s = total / rate
    pacer = _Pacer(ctx, pace)
    for start, count in _blocks(total, frame_samples(rate, frame_ms)):
        if ctx.stopping.is_set():
            break
        pts = start / rate
        await pacer.wait(pts)
        if ctx.stopping.is_set():
            break
        yield make_audio(g711.encode(gen.read(count), encoding), encoding, rate, 1, pts)


def _blocks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)
