"""The VAD gate's synchronous core: audio frames in, audio frames and speech events out.

:class:`VadGate` ties an engine (per-window scores), a threshold with hysteresis, and the
:class:`~stages.vad.machine.VadMachine` (turns) to a stream of :class:`Audio` frames. It works
in sample positions of the analysed stream (samples since the first frame) and keeps a map from
positions to media time, so events carry the ``pts`` of the onset/offset sample even when the
input's timestamps have gaps.

Audio is never re-encoded: the gate decodes a *copy* of each frame for the engine and forwards
the original bytes (whole frames, or byte slices of them in gate mode).

``mode="annotate"``
    Every frame passes at once, unchanged. An event follows the frame in which it was decided;
    deciding lags the onset by ``min_speech`` and at most one window (and the offset by the
    hangover), and the event's ``pts`` says where speech really started or stopped.
``mode="gate"``
    Only speech passes: from ``prefix`` before the onset to ``hangover`` after the offset. While
    closed, the gate holds back just enough audio to release the prefix (``prefix`` before the
    start of a possible onset); on START it emits ``SpeechStarted``, then the held audio from
    ``onset - prefix`` in order, then every frame as it comes. During a pause it passes audio
    up to ``pause start + hangover`` and holds the rest until it knows whether speech resumes
    (then it passes) or has stopped (``SpeechStopped``; the rest is held as a possible prefix).
    So what passes is exactly ``[onset - prefix, offset + hangover)`` for every turn, never the
    same sample twice (to the sample whatever the frame sizes when ``hangover_ms`` is at least
    one engine window; with a shorter hangover a frame may already have passed a little more).

At the end of the stream (:meth:`VadGate.finish`) a turn still open is closed with
``SpeechStopped`` at the end of the audio (or where the pause in progress began).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.errors import UsageError
from pipeline.frames import (
    BYTES_PER_SAMPLE,
    Audio,
    Frame,
    SpeechStarted,
    SpeechStopped,
    make_audio,
)
from stages.g711 import ALAW_DECODE, AUDIOOP, DECODERS, ULAW_DECODE

from .engines import Engine
from .machine import Action, State, Transition, VadMachine

_SILENCE, _SPEECH, _HANGOVER = State.SILENCE, State.SPEECH, State.HANGOVER

Mode = Literal["gate", "annotate"]
_NO_SCORES: list[float] = []


#: G.711 code -> linear sample, as ITU-T G.711 (and audioop.ulaw2lin / alaw2lin): the codec's tables
ULAW_TO_PCM16 = ULAW_DECODE
ALAW_TO_PCM16 = ALAW_DECODE


def _ulaw2lin(codes: bytes, width: int) -> bytes:
    return DECODERS["pcmu"](codes)


def _alaw2lin(codes: bytes, width: int) -> bytes:
    return DECODERS["pcma"](codes)


#: encoding -> decode(codes, width=2): audioop's own functions where it imports (one C call,
#: no Python frame around it), else the codec's tables
_DECODE: dict[str, Callable[[bytes, int], bytes]] = (
    {"pcmu": AUDIOOP.ulaw2lin, "pcma": AUDIOOP.alaw2lin}
    if AUDIOOP is not None
    else {"pcmu": _ulaw2lin, "pcma": _alaw2lin}
)

_PCM16 = np.dtype("<i2")  # parsed once: a dtype string costs ~0.4 µs per call

#: G.711 encoding -> its decode table as native int16 bytes (for an engine's process_g711)
_G711_TABLES: dict[str, bytes] = {
    "pcmu": ULAW_TO_PCM16.astype(np.int16).tobytes(),
    "pcma": ALAW_TO_PCM16.astype(np.int16).tobytes(),
}


def analysis_samples(frame: Audio) -> npt.NDArray[np.int16]:
    """The frame's audio as mono int16 samples for the engine (decoded, channels averaged):
    read-only (a view of the frame's bytes for mono pcm16; engines only read it)."""
    if frame.encoding == "pcm16":
        pcm = np.frombuffer(frame.data, dtype=_PCM16)
    else:  # the codec's own decoder: audioop where it imports, else the same tables
        pcm = np.frombuffer(DECODERS[frame.encoding](frame.data), dtype=_PCM16)
    if frame.channels > 1:
        usable = len(pcm) - len(pcm) % frame.channels
        mixed = pcm[:usable].reshape(-1, frame.channels).mean(axis=1)
        pcm = np.rint(mixed).astype(np.int16)
    return pcm


class VadGate:
    """Gate or annotate a stream of audio frames of one rate (see the module docstring).

    Call :meth:`push` for every audio frame, in order, and :meth:`finish` at the end of the
    stream; each returns the frames to send on. All durations are in milliseconds.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        threshold: float | None = None,
        min_speech_ms: int = 100,
        hangover_ms: int = 300,
        prefix_ms: int = 300,
        mode: Mode = "gate",
    ) -> None:
        rate = engine.rate
        self.engine = engine
        self.rate = rate
        self.mode = mode
        self.threshold = engine.default_threshold if threshold is None else threshold
        self.release_threshold = self.threshold - engine.hysteresis
        self.prefix = _samples(prefix_ms, rate)
        self.hangover = _samples(hangover_ms, rate)
        self.machine = VadMachine(min_speech=_samples(min_speech_ms, rate), hangover=self.hangover)
        #: samples received so far
        self.position = 0
        # audio received, not yet released or dropped (gate mode): see _Held
        self._held: deque[_Held] = deque()
        # (start position, pts) of recent frames, to turn positions into media time
        self._anchors: deque[tuple[int, float]] = deque()
        self._annotate = mode == "annotate"
        self._window = engine.window
        # mono pcm16 frames go to the engine as they are: bytes when it takes them (webrtc),
        # else a read-only view
        process_bytes = getattr(engine, "process_bytes", None)
        self._process_pcm16: Callable[[bytes], list[float]] = (
            process_bytes
            if process_bytes is not None and sys.byteorder == "little"
            else lambda data: engine.process(np.frombuffer(data, dtype=_PCM16))
        )
        # G.711 frames straight into the engine's kernel when it has one (webrtc, compiled)
        self._g711: Callable[[bytes, bytes], list[float]] | None = (
            getattr(engine, "process_g711", None) if sys.byteorder == "little" else None
        )

    def push(self, frame: Audio) -> list[Frame]:
        """Analyse one audio frame; return what to send on (audio and events, in order)."""
        data = frame.data
        encoding = frame.encoding
        if encoding == "pcm16" and frame.channels == 1 and frame.rate == self.rate:
            n = len(data) >> 1  # the usual case: no decoding, straight into the engine
            scores = self._process_pcm16(data) if n else _NO_SCORES
        elif self._g711 is not None and frame.channels == 1 and frame.rate == self.rate:
            # telephony: G.711 mono, decoded on its way into the engine's kernel
            n = len(data)
            scores = self._g711(data, _G711_TABLES[encoding]) if n else _NO_SCORES
        else:
            n, scores = self._analyse(frame)
        start = self.position
        position = self.position = start + n
        anchors = self._anchors
        anchors.append((start, frame.pts))
        if len(anchors) > 8:  # a few spare anchors cost nothing: prune now and then
            self._prune_anchors()
        annotate = self._annotate
        out: list[Frame]
        if annotate:  # every frame passes at once: only the events need work
            out = [frame]
        else:  # held before the events: a START or STOP releases it
            out = []
            if n:
                self._held.append((start, position, frame, frame.pts, start))
        if scores:
            machine = self.machine
            state = machine.state
            # one window in a steady state (most frames): only the machine's position moves,
            # as _score has it
            if len(scores) == 1 and (
                (state is _SILENCE and scores[0] < self.threshold)
                or (state is _SPEECH and scores[0] >= self.release_threshold)
            ):
                machine.position += self._window
            else:
                self._score(scores, out)
        if annotate:
            return out
        held = self._held
        machine = self.machine
        state = machine.state
        if state is _SPEECH:  # everything held passes (whole frames: they end by position)
            while held:
                entry = held.popleft()
                out.append(entry[2] if entry[0] == entry[4] else _whole(entry))
        elif state is _SILENCE:  # keep just what a prefix needs: _drop, inline
            before = machine.position - self.prefix
            while held and held[0][1] <= before:
                held.popleft()
            if held and held[0][0] < before:  # a frame across the prefix's start: its tail
                first_start, end, f, f_pts, first = held[0]
                held[0] = (before, end, f, f_pts + (before - first_start) / f.rate, first)
        elif state is _HANGOVER:
            # only up to offset + hangover: the pause may turn out to be the end
            limit = machine.pending_since + self.hangover
            self._release(min(limit, position), out)
        else:
            self._drop(machine.pending_since - self.prefix)
        return out

    def _analyse(self, frame: Audio) -> tuple[int, list[float]]:
        """(samples, scores) for a frame off the usual path: G.711, several channels, or a
        rate the gate does not analyse (refused)."""
        if frame.rate != self.rate:
            raise UsageError(f"the gate analyses {self.rate} Hz audio, got {frame.rate} Hz")
        data = frame.data
        encoding = frame.encoding
        if frame.channels != 1:
            n = frame.num_samples
            return n, self.engine.process(analysis_samples(frame)) if n else _NO_SCORES
        if encoding == "pcm16":
            n = len(data) >> 1
            return n, self._process_pcm16(data) if n else _NO_SCORES
        # telephony: G.711 mono, decoded for the engine only
        n = len(data)
        return n, self._process_pcm16(_DECODE[encoding](data, 2)) if n else _NO_SCORES

    def finish(self) -> list[Frame]:
        """End of stream: close a turn still open; return the last frames to send on."""
        out: list[Frame] = []
        machine = self.machine
        if machine.speaking:
            # in hangover the pause began at pending_since; in speech, speech ran to the end
            end = machine.pending_since if machine.state is State.HANGOVER else self.position
            if self.mode == "gate":
                self._release(min(end + self.hangover, self.position), out)
            out.append(SpeechStopped(pts=self._pts_at(end)))
        self._held.clear()
        return out

    # ------------------------------------------------------------------ internals

    def _score(self, scores: list[float], out: list[Frame]) -> None:
        """Step the machine through the windows' scores, adding the events to ``out``."""
        machine = self.machine
        window = self._window
        threshold, release = self.threshold, self.release_threshold
        for score in scores:
            state = machine.state
            # the two steady states inline, as VadMachine.step has them: only the position moves
            if state is _SILENCE:
                if score < threshold:
                    machine.position += window
                    continue
                voice = True
            elif state is _SPEECH:
                if score >= release:
                    machine.position += window
                    continue
                voice = False
            else:
                voice = score >= (release if state is _HANGOVER else threshold)
            transition = machine.step(voice, window)
            if transition is not None:
                self._on_transition(transition, out)

    def _on_transition(self, transition: Transition, out: list[Frame]) -> None:
        at = transition.position
        if transition.action is Action.START:
            if self.mode == "gate":
                self._drop(at - self.prefix)
            out.append(SpeechStarted(pts=self._pts_at(at)))
        else:
            if self.mode == "gate":
                self._release(min(at + self.hangover, self.position), out)
            out.append(SpeechStopped(pts=self._pts_at(at)))

    def _release(self, until: int, out: list[Frame]) -> None:
        """Held audio up to ``until`` onto ``out``, as (slices of) the input frames."""
        held = self._held
        while held and held[0][0] < until:
            entry = held.popleft()
            start, end, frame, pts, first = entry
            if end <= until:
                out.append(_whole(entry))
            else:  # the head passes (at pts), the tail stays (at pts + k / rate)
                w = BYTES_PER_SAMPLE[frame.encoding] * frame.channels
                out.append(
                    make_audio(
                        frame.data[(start - first) * w : (until - first) * w],
                        frame.encoding,
                        frame.rate,
                        frame.channels,
                        pts,
                    )
                )
                held.appendleft((until, end, frame, pts + (until - start) / frame.rate, first))

    def _drop(self, before: int) -> None:
        """Forget held audio before ``before`` (it will never pass)."""
        held = self._held
        while held and held[0][0] < before:
            start, end, frame, pts, first = held.popleft()
            if end > before:  # keep the tail; the bytes are cut when (if) it passes
                held.appendleft((before, end, frame, pts + (before - start) / frame.rate, first))
                break

    def _prune_anchors(self) -> None:
        keep = min(self.machine.pending_since, self.position)
        anchors = self._anchors
        while len(anchors) > 1 and anchors[1][0] <= keep:
            anchors.popleft()

    def _pts_at(self, position: int) -> float:
        start, pts = self._anchors[0]
        for anchor in reversed(self._anchors):
            if anchor[0] <= position:
                start, pts = anchor
                break
        # to the nanosecond: 4.352, not 4.351999999999999, in the event log
        return round(pts + (position - start) / self.rate, 9)


def _samples(ms: int, rate: int) -> int:
    return max(0, round(ms * rate / 1000))


# A held piece of an input frame: (start, end, frame, pts, first). It covers stream positions
# [start, end) of ``frame``, which began at ``first`` (pieces always run to the frame's end), and
# starts at media time ``pts``. A piece is cut from its frame only when it passes: in silence the
# prefix's start moves every window, mostly inside a frame, and cutting there every time would
# make a frame (and copy its bytes) for audio that will mostly be dropped. ``pts`` is computed as
# cutting would compute it (``pts + k / rate`` at each cut), so the output is the same.
_Held = tuple[int, int, Audio, float, int]


def _whole(entry: _Held) -> Audio:
    """The held piece as a frame: the input frame itself when it was never cut."""
    start, _end, frame, pts, first = entry
    if start == first:
        return frame
    cut = (start - first) * BYTES_PER_SAMPLE[frame.encoding] * frame.channels
    return make_audio(frame.data[cut:], frame.encoding, frame.rate, frame.channels, pts)
