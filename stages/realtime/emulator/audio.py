"""The emulator's audio: an energy voice detector with server VAD's semantics (on
:class:`~stages.vad.machine.VadMachine`), and the reply audio it sends (echo or tone, in the
session's output format)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soxr

from pipeline.frames import AudioFormat
from stages import g711
from stages.vad.machine import Action, VadMachine

from ..wire import TurnDetection

Int16 = np.ndarray[Any, np.dtype[np.int16]]


def dbfs(frame: Int16) -> float:
    """The level of ``frame`` (RMS, dB below full scale; -inf for silence)."""
    if frame.size == 0:
        return -math.inf
    x = frame.astype(np.float64)
    rms = math.sqrt(float(np.dot(x, x)) / frame.size)
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def vad_level_dbfs(threshold: float) -> float:
    """The frame level (dBFS) at and above which :class:`EnergyVad` calls a frame speech."""
    return -70.0 + 50.0 * threshold


@dataclass
class VadEvent:
    """``start`` (``ms`` = audio_start_ms, prefix padding included) or ``stop`` (``ms`` =
    audio_end_ms, silence included; ``speech_end_ms`` = end of the last speech frame)."""

    kind: Literal["start", "stop"]
    ms: int
    speech_end_ms: int = 0


class EnergyVad:
    """A deterministic energy detector with server VAD's semantics, on int16 samples.

    Each 10 ms frame is speech when its level reaches :func:`vad_level_dbfs` of ``threshold``;
    a :class:`~stages.vad.machine.VadMachine` (no minimum speech, a hangover of
    ``silence_duration_ms``) turns those decisions into turns. Times are milliseconds since the
    first sample of the session. ``start`` is reported at the first speech frame, back-dated by
    ``prefix_padding_ms`` (never before ``floor_ms``, the start of the uncommitted buffer);
    ``stop`` once ``silence_duration_ms`` passed without a speech frame.
    """

    FRAME_MS = 10

    def __init__(
        self,
        rate: int,
        threshold: float,
        prefix_padding_ms: int,
        silence_duration_ms: int,
        *,
        start_sample: int = 0,
    ) -> None:
        self.rate = rate
        self.level = vad_level_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.floor_ms = 0
        self._frame = rate * self.FRAME_MS // 1000
        self._hangover = max(silence_duration_ms, self.FRAME_MS) * rate // 1000
        self._machine = self._new_machine(start_sample)
        self._pending = np.zeros(0, dtype=np.int16)

    @classmethod
    def for_turns(cls, rate: int, turns: TurnDetection, start_sample: int = 0) -> EnergyVad:
        """A detector with a session's (resolved) turn detection settings."""
        return cls(
            rate,
            turns.threshold or 0.0,
            turns.prefix_padding_ms or 0,
            turns.silence_duration_ms or 0,
            start_sample=start_sample,
        )

    def matches(self, turns: TurnDetection) -> bool:
        """True if ``turns`` (resolved) asks for what this detector does."""
        return (
            self.level == vad_level_dbfs(turns.threshold or 0.0)
            and self.prefix_padding_ms == turns.prefix_padding_ms
            and self.silence_duration_ms == turns.silence_duration_ms
        )

    def _new_machine(self, position: int) -> VadMachine:
        machine = VadMachine(min_speech=0, hangover=self._hangover)
        machine.position = position  # samples consumed since the session started
        return machine

    @property
    def in_speech(self) -> bool:
        return self._machine.speaking

    def _ms(self, sample: int) -> int:
        # times from sample counts, so rates like 22050 Hz do not drift
        return sample * 1000 // self.rate

    def feed(self, samples: Int16) -> list[VadEvent]:
        """Consume samples; return the starts and stops they complete, in order."""
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = buf.size // self._frame
        events: list[VadEvent] = []
        machine = self._machine
        for i in range(n):
            frame = buf[i * self._frame : (i + 1) * self._frame]
            change = machine.step(dbfs(frame) >= self.level, self._frame)
            if change is None:
                continue
            if change.action is Action.START:
                start = max(self.floor_ms, self._ms(change.position) - self.prefix_padding_ms)
                events.append(VadEvent("start", start))
            else:
                stop = self._ms(machine.position)
                events.append(VadEvent("stop", stop, self._ms(change.position)))
        self._pending = buf[n * self._frame :].copy()
        return events

    def reset(self, floor_ms: int) -> None:
        """Forget any speech in progress (the buffer was cleared at ``floor_ms``)."""
        self._machine = self._new_machine(self._machine.position)
        self.floor_ms = floor_ms


def tone(rate: int, ms: int, hz: float) -> bytes:
    """``ms`` of a sine at ``hz``, pcm16 at ``rate`` (-10.5 dBFS)."""
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    return (np.round(0.3 * 32767 * np.sin(2 * np.pi * hz * t))).astype("<i2").tobytes()


def to_output(pcm: bytes, in_rate: int, out: AudioFormat) -> bytes:
    """pcm16 at ``in_rate`` → bytes in the output format (resampled, G.711-encoded as needed)."""
    if in_rate != out.rate and pcm:
        x = np.frombuffer(pcm, dtype="<i2")
        y = soxr.resample(x, in_rate, out.rate)
        pcm = np.asarray(y, dtype="<i2").tobytes()
    return g711.encode(pcm, out.encoding)


def split_text(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` consecutive pieces on word boundaries (some may be empty); their
    concatenation is ``text``."""
    tokens = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if parts <= 1 or len(tokens) <= 1:
        return [text] + [""] * max(parts - 1, 0)
    out = []
    for i in range(parts):
        # ceil boundaries: the first piece always has words, the rest spread evenly
        lo, hi = -(-i * len(tokens) // parts), -(-(i + 1) * len(tokens) // parts)
        out.append("".join(tokens[lo:hi]))
    return out
