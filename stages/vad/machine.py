"""The VAD state machine: per-window speech decisions in, speech start/stop events out.

Theory of operation
===================

An engine looks at the audio one window at a time (32 ms for silero at 16 kHz, 20 ms for the
others) and says how speech-like each window is. A single window is a poor answer to "is someone
talking": a cough or a click scores high for one window, and speech has short pauses between words
that score low. This machine turns the stream of per-window decisions into a stream of *turns*,
with four states:

``SILENCE``
    Nothing is happening. A speech window moves us to ``ONSET`` and remembers where it began.
``ONSET``
    Speech may be starting. We wait until the speech run lasts ``min_speech`` samples, then
    confirm it: ``START`` is reported at the *first* sample of the run (not at the moment we
    became sure), and we move to ``SPEECH``. A quiet window before that rejects the run as a blip
    and we go back to ``SILENCE`` having reported nothing.
``SPEECH``
    Someone is talking. A quiet window moves us to ``HANGOVER`` and remembers where speech ended.
``HANGOVER``
    Speech paused. A speech window within ``hangover`` samples bridges the pause: back to
    ``SPEECH``, nothing reported. Once the quiet run lasts ``hangover`` samples, ``STOP`` is
    reported at the sample where speech ended, and we go to ``SILENCE``.

Each window is first *classified* into one of four inputs, using the state's counters:
``VOICE`` (a speech window), ``CONFIRMED`` (a speech window that makes the run long enough),
``QUIET`` (a quiet window) and ``EXPIRED`` (a quiet window that makes the pause long enough).
The classified input then selects the next state and the action from :data:`TRANSITIONS`, a
plain table; the machine has no other logic. A length of zero makes the first window of a run
count, so ``min_speech=0`` starts at the first speech window and ``hangover=0`` stops at the first
quiet one.

Positions are sample counts in the analysed stream; the caller turns them into media time. The
machine is pure: no audio, no clock, no I/O, so it is tested and benchmarked on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.errors import UsageError

# The members are singletons compared by identity, so they take the identity hash (C): Enum's own
# __hash__ is a Python function, a third of a step's cost in the table and frozenset lookups.


class State(enum.Enum):
    """Where the machine is (see the module docstring)."""

    __hash__ = object.__hash__  # see the note above State

    SILENCE = "silence"
    ONSET = "onset"
    SPEECH = "speech"
    HANGOVER = "hangover"


class Input(enum.Enum):
    """One analysed window, classified against the state's counters."""

    __hash__ = object.__hash__  # see the note above State

    VOICE = "voice"
    CONFIRMED = "confirmed"
    QUIET = "quiet"
    EXPIRED = "expired"


class Action(enum.Enum):
    """What a transition reports."""

    __hash__ = object.__hash__  # see the note above State

    NONE = "none"
    START = "start"  # speech started at the first sample of the onset run
    STOP = "stop"  # speech stopped at the first sample of the pause


#: (state, input) -> (next state, action). Every pair that can occur is listed.
TRANSITIONS: dict[tuple[State, Input], tuple[State, Action]] = {
    (State.SILENCE, Input.QUIET): (State.SILENCE, Action.NONE),
    (State.SILENCE, Input.VOICE): (State.ONSET, Action.NONE),
    (State.SILENCE, Input.CONFIRMED): (State.SPEECH, Action.START),
    (State.ONSET, Input.VOICE): (State.ONSET, Action.NONE),
    (State.ONSET, Input.CONFIRMED): (State.SPEECH, Action.START),
    (State.ONSET, Input.QUIET): (State.SILENCE, Action.NONE),  # a blip: rejected
    (State.SPEECH, Input.VOICE): (State.SPEECH, Action.NONE),
    (State.SPEECH, Input.QUIET): (State.HANGOVER, Action.NONE),
    (State.SPEECH, Input.EXPIRED): (State.SILENCE, Action.STOP),
    (State.HANGOVER, Input.VOICE): (State.SPEECH, Action.NONE),  # a pause: bridged
    (State.HANGOVER, Input.QUIET): (State.HANGOVER, Action.NONE),
    (State.HANGOVER, Input.EXPIRED): (State.SILENCE, Action.STOP),
}

_SPEAKING = frozenset({State.SPEECH, State.HANGOVER})
_SILENCE = State.SILENCE
_SPEECH = State.SPEECH
_RUNS = frozenset({State.ONSET, State.HANGOVER})  # states that count a run from _run_start


@dataclass(frozen=True, slots=True)
class Transition:
    """A reported change: ``action`` at sample ``position`` of the analysed stream."""

    action: Action
    position: int


class VadMachine:
    """Turns per-window speech decisions into START/STOP transitions (see the module docs).

    Feed it with :meth:`step` once per analysed window, in order; it returns the transition
    that window caused, if any. ``min_speech`` and ``hangover`` are in samples.
    """

    __slots__ = ("_run_start", "hangover", "min_speech", "position", "state")

    def __init__(self, *, min_speech: int, hangover: int) -> None:
        if min_speech < 0 or hangover < 0:
            raise UsageError("min_speech and hangover must be >= 0 samples")
        self.min_speech = min_speech
        self.hangover = hangover
        self.state = State.SILENCE
        #: samples analysed so far (the end of the last window)
        self.position = 0
        # where the current run began: the speech run in ONSET, the pause in HANGOVER
        self._run_start = 0

    @property
    def speaking(self) -> bool:
        """True between a START and its STOP."""
        return self.state in _SPEAKING

    @property
    def pending_since(self) -> int:
        """The earliest position a later transition may report (the caller keeps audio and
        timing from there on)."""
        if self.state in _RUNS:
            return self._run_start
        return self.position

    def classify(self, voice: bool, length: int) -> Input:
        """The input a window of ``length`` samples makes in the current state."""
        end = self.position + length
        if voice:
            start = self._run_start if self.state is State.ONSET else self.position
            if self.state in (State.SILENCE, State.ONSET) and end - start >= self.min_speech:
                return Input.CONFIRMED
            return Input.VOICE
        start = self._run_start if self.state is State.HANGOVER else self.position
        if self.state in _SPEAKING and end - start >= self.hangover:
            return Input.EXPIRED
        return Input.QUIET

    def step(self, voice: bool, length: int) -> Transition | None:
        """Advance by one window of ``length`` samples; ``voice`` is the engine's decision."""
        state = self.state
        if (state is _SILENCE and not voice) or (state is _SPEECH and voice):
            # the two steady states, as the table has them ((SILENCE, QUIET) and (SPEECH,
            # VOICE) stay put, report nothing, keep _run_start): only the position moves
            self.position += length
            return None
        event = self.classify(voice, length)
        old = self.state
        new, action = TRANSITIONS[(old, event)]
        # the run this window ends or extends began at _run_start, or here if it is new
        run_start = self._run_start if old in _RUNS else self.position
        if new in _RUNS and new is not old:
            self._run_start = self.position
        self.state = new
        self.position += length
        if action is Action.NONE:
            return None
        return Transition(action, run_start)
