"""End of turn: a VAD's ``speech_stopped`` becomes the end of the caller's turn only when a model
says the caller has finished, or after a maximum wait.

Theory of operation
===================

A VAD hears silence, not meaning: "I'd like to book a table for ... four people" has a pause a
VAD takes for the end of the turn, and an agent that answers there cuts the caller off. The
:class:`TurnTaker` sits after the VAD and holds each ``speech_stopped`` back until it knows more.
Three states:

``SILENT``
    No turn is open. ``speech_started`` opens one (it passes on) and moves to ``SPEAKING``.
``SPEAKING``
    The caller is talking. At ``speech_stopped`` the caller of the machine asks the model about
    the audio of the turn (:meth:`TurnTaker.turn_audio`) and answers with a probability
    (:meth:`TurnTaker.answer`): ``COMPLETE`` passes the stop on (the turn ends) and goes to
    ``SILENT``; ``INCOMPLETE`` holds the stop and goes to ``PAUSED``.
``PAUSED``
    The caller stopped mid-sentence. If speech starts again, the held stop and the new start
    are both dropped: downstream the turn simply goes on (``RESUMED``). If it does not start
    again within ``max_wait`` (clock time, or media time when audio keeps flowing, whichever
    comes first), the held stop passes on (``TIMEOUT``); so does it at the end of the stream.

Each event is classified into an :class:`Input` and :data:`TRANSITIONS` gives the next state and
the :class:`Action`; the machine has no other logic. Everything else passes through at once,
audio included (the machine keeps the last ``window`` seconds of it for the model).

The machine is pure: no model, no clock, no I/O. Times are passed in, the probability comes from
whoever calls it, so it is tested and benchmarked on its own.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipeline.errors import UsageError
from pipeline.frames import Audio, Frame, SpeechStarted, SpeechStopped


class State(enum.Enum):
    """Where the turn is (see the module docstring)."""

    SILENT = "silent"
    SPEAKING = "speaking"
    PAUSED = "paused"


class Input(enum.Enum):
    """An event, classified."""

    STARTED = "started"  # speech_started
    COMPLETE = "complete"  # the model's answer at speech_stopped: finished
    INCOMPLETE = "incomplete"  # ... not finished
    STOPPED = "stopped"  # speech_stopped with no turn open (nothing to decide)
    TIMEOUT = "timeout"  # max_wait passed while paused
    END = "end"  # end of the stream


class Action(enum.Enum):
    PASS = "pass"  # the event passes on
    DROP = "drop"  # the event is dropped
    HOLD = "hold"  # the stop is held back
    RESUME = "resume"  # the new start and the held stop are both dropped
    RELEASE = "release"  # the held stop passes on


TRANSITIONS: dict[tuple[State, Input], tuple[State, Action]] = {
    (State.SILENT, Input.STARTED): (State.SPEAKING, Action.PASS),
    (State.SILENT, Input.STOPPED): (State.SILENT, Action.PASS),
    (State.SILENT, Input.END): (State.SILENT, Action.DROP),
    (State.SILENT, Input.TIMEOUT): (State.SILENT, Action.DROP),
    (State.SPEAKING, Input.STARTED): (State.SPEAKING, Action.DROP),
    (State.SPEAKING, Input.COMPLETE): (State.SILENT, Action.PASS),
    (State.SPEAKING, Input.INCOMPLETE): (State.PAUSED, Action.HOLD),
    (State.SPEAKING, Input.END): (State.SILENT, Action.DROP),
    (State.SPEAKING, Input.TIMEOUT): (State.SPEAKING, Action.DROP),
    (State.PAUSED, Input.STARTED): (State.SPEAKING, Action.RESUME),
    (State.PAUSED, Input.STOPPED): (State.PAUSED, Action.DROP),
    (State.PAUSED, Input.TIMEOUT): (State.SILENT, Action.RELEASE),
    (State.PAUSED, Input.END): (State.SILENT, Action.RELEASE),
}


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of the model: at the stop at media time ``pts``, the probability that the
    turn was complete, and what the machine did with it."""

    pts: float | None
    probability: float
    complete: bool


class TurnTaker:
    """Frames in, frames out, with ``speech_stopped`` held until the turn is complete.

    Use: ``push(frame, now)`` for every frame; when it returns with :attr:`asking` set, run the
    model on :meth:`turn_audio` and call :meth:`answer`; call :meth:`expire` when
    :attr:`deadline` (clock time) passes, and :meth:`finish` at the end of the stream."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        max_wait: float = 2.0,
        pre_speech: float = 0.5,
        window: float = 8.0,
        rate: int = 16000,
    ) -> None:
        self.threshold = threshold
        self.max_wait = max_wait
        self.pre_speech = pre_speech
        self.window = window
        self.rate = rate
        self.state = State.SILENT
        #: the stop waiting for the model's answer (set by push, cleared by answer)
        self.asking: SpeechStopped | None = None
        #: clock time at which a held stop passes on, while paused
        self.deadline: float | None = None
        self.decisions: list[Decision] = []
        self.timeouts = 0
        self.resumed = 0
        self._held: SpeechStopped | None = None
        self._media_deadline: float | None = None
        self._turn_start: float | None = None
        self._audio: collections.deque[tuple[float, npt.NDArray[np.int16]]] = collections.deque()
        self._held_samples = 0

    # -- the event table

    def _step(self, event: Input, frame: Frame | None) -> list[Frame]:
        self.state, action = TRANSITIONS[self.state, event]
        match action:
            case Action.PASS:
                return [frame] if frame is not None else []
            case Action.HOLD:
                assert isinstance(frame, SpeechStopped)
                self._held = frame
                return []
            case Action.RESUME:
                self._held = None
                self.deadline = self._media_deadline = None
                self.resumed += 1
                return []
            case Action.RELEASE:
                held, self._held = self._held, None
                self.deadline = self._media_deadline = None
                return [held] if held is not None else []
            case _:
                return []

    # -- frames in

    def push(self, frame: Frame, now: float) -> list[Frame]:
        """What passes on for ``frame`` at clock time ``now``. A ``speech_stopped`` in a turn
        sets :attr:`asking` and returns nothing: answer it before pushing more."""
        match frame:
            case Audio():
                out = self._expire_media(frame.pts)
                self._keep(frame)
                out.append(frame)
                return out
            case SpeechStarted():
                if self.state is State.SILENT:
                    self._turn_start = frame.pts
                return self._step(Input.STARTED, frame)
            case SpeechStopped():
                if self.state is State.SPEAKING:
                    self.asking = frame
                    return []
                return self._step(Input.STOPPED, frame)
            case _:
                return [frame]

    def answer(self, probability: float, now: float) -> list[Frame]:
        """The model's probability for :attr:`asking`; what passes on."""
        stop, self.asking = self.asking, None
        if stop is None:
            raise UsageError("answer() without a question: push a speech_stopped first")
        complete = probability >= self.threshold
        self.decisions.append(Decision(stop.pts, probability, complete))
        out = self._step(Input.COMPLETE if complete else Input.INCOMPLETE, stop)
        if not complete:
            self.deadline = now + self.max_wait
            self._media_deadline = None if stop.pts is None else stop.pts + self.max_wait
        return out

    def expire(self, now: float) -> list[Frame]:
        """The held stop, if ``max_wait`` has passed by clock time ``now``."""
        if self.deadline is None or now < self.deadline:
            return []
        self.timeouts += 1
        return self._step(Input.TIMEOUT, None)

    def _expire_media(self, pts: float) -> list[Frame]:
        if self._media_deadline is None or pts < self._media_deadline:
            return []
        self.timeouts += 1
        return self._step(Input.TIMEOUT, None)

    def finish(self) -> list[Frame]:
        """At the end of the stream: a held stop passes on."""
        return self._step(Input.END, None)

    # -- the audio the model hears

    def _keep(self, frame: Audio) -> None:
        samples = frame.samples()
        self._audio.append((frame.pts, samples))
        self._held_samples += samples.size
        limit = int((self.window + self.pre_speech) * self.rate)
        while self._audio and self._held_samples - self._audio[0][1].size >= limit:
            self._held_samples -= self._audio.popleft()[1].size

    def turn_audio(self) -> npt.NDArray[np.int16]:
        """The audio of the current turn from ``pre_speech`` before its start (all of it kept
        when the start is unknown), at most ``window`` seconds, ending now."""
        since = None if self._turn_start is None else self._turn_start - self.pre_speech
        # a frame counts if it ends after ``since`` (by more than float rounding)
        parts = [
            s for pts, s in self._audio if since is None or pts + s.size / self.rate > since + 1e-9
        ]
        if not parts:
            return np.zeros(0, np.int16)
        audio = np.concatenate(parts)
        return audio[-int(self.window * self.rate) :]
