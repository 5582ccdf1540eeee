"""Turn, response and barge-in state of one realtime connection, as tables.

Theory of operation
-------------------
A realtime conversation has three things in motion at once, each a small state machine whose
transitions are a table ``(state, trigger) -> state`` (as in h11's ``_state.py``):

* **The response slot** (:data:`RESPONSE`): the server runs one response at a time. We ask for
  one (``ask``: a ``response.create`` goes out) and the server starts it (``created``, also when
  its own VAD starts one unasked) and ends it (``done``). Asking while a response is requested
  or in flight is remembered (the ``+queued`` states) and sent once the slot is free, so at most
  one ``response.create`` is ever outstanding. ``refused`` is the server's
  ``conversation_already_has_active_response``: our ask lost a race with a response the server
  started, so it is asked again once that one is done.

      idle --ask--> requested --created--> active --done--> idle
                        |ask                  |ask
                        v                     v
              requested+queued --created--> active+queued --done--> requested (asked again)

* **Each response's tool calls** (:data:`CALLS`): a response that asked for tools is ``done``
  owing their outputs; once every output is given it is ``followed_up`` (exactly one
  ``response.create`` went out for it) or, when the user barged in on it or it was cancelled,
  ``settled`` with no follow-up: the user's next turn drives the conversation.

      active --done--> done --answered--> followed_up
                         \\--answered_cut--> settled

* **Barge-in** (:data:`BARGE`): whether assistant audio of the current response is arriving
  (``playing``), and whether the user cut a response (``cut``: its later audio is discarded
  until another response starts).

      quiet --audio--> playing --done--> quiet
      quiet / playing --interrupt--> cut --created (another response)--> quiet

* **The user's turn under server VAD** (:data:`TURN`): ``speaking`` between the server's
  ``speech_started`` and ``speech_stopped``, then ``answer_due`` until the server starts the
  response that answers it. The end of the input waits for ``listening``.

Triggers from the server must never raise (a server may send anything): every table lists every
server trigger in every state, a test checks it. Triggers only our side fires (``ask``,
``interrupt``, ``answered``) are listed only where they make sense: anywhere else
:meth:`Machine.fire` raises :class:`~pipeline.errors.SessionLocalError`, a bug on our side.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, Literal, TypeAlias, TypeVar

from pipeline.errors import SessionLocalError

S = TypeVar("S", bound=str)

# ----------------------------------------------------------------------------- the response slot

ResponseSlot: TypeAlias = Literal[
    "idle", "requested", "requested+queued", "active", "active+queued"
]
#: Server triggers of :data:`RESPONSE`: every state lists them.
RESPONSE_SERVER_TRIGGERS = ("created", "done", "refused", "lost")
RESPONSE: Mapping[tuple[ResponseSlot, str], ResponseSlot] = {
    ("idle", "ask"): "requested",
    ("idle", "created"): "active",  # the server's VAD started one
    ("idle", "done"): "idle",  # the end of a response we never saw start (tolerated)
    ("idle", "refused"): "idle",
    ("requested", "ask"): "requested+queued",
    ("requested", "created"): "active",
    ("requested", "done"): "requested",  # a late done of an earlier response
    ("requested", "refused"): "requested",  # nothing known in flight: asked again at once
    ("requested+queued", "ask"): "requested+queued",
    ("requested+queued", "created"): "active+queued",
    ("requested+queued", "done"): "requested+queued",
    ("requested+queued", "refused"): "requested",  # asked again at once
    ("active", "ask"): "active+queued",
    ("active", "created"): "active",  # the server started another (it ends the first)
    ("active", "done"): "idle",
    ("active", "refused"): "active+queued",  # asked again once this one is done
    ("active+queued", "ask"): "active+queued",
    ("active+queued", "created"): "active+queued",
    ("active+queued", "done"): "requested",  # the queued ask goes out
    ("active+queued", "refused"): "active+queued",
    # the connection is gone: nothing is in flight on it any more
    ("idle", "lost"): "idle",
    ("requested", "lost"): "idle",
    ("requested+queued", "lost"): "idle",
    ("active", "lost"): "idle",
    ("active+queued", "lost"): "idle",
}
#: The transitions that send a ``response.create`` (every other one sends nothing).
RESPONSE_SENDS_CREATE: frozenset[tuple[ResponseSlot, str]] = frozenset(
    {
        ("idle", "ask"),
        ("active+queued", "done"),
        ("requested", "refused"),
        ("requested+queued", "refused"),
    }
)

# ----------------------------------------------------------------------------- tool calls

CallState: TypeAlias = Literal["active", "done", "followed_up", "settled"]
CALLS_SERVER_TRIGGERS = ("call", "done")
CALLS: Mapping[tuple[CallState, str], CallState] = {
    ("active", "call"): "active",
    ("active", "done"): "done",
    ("done", "call"): "done",  # arguments.done after response.done (tolerated)
    ("done", "done"): "done",
    ("done", "answered"): "followed_up",  # every output given: one response.create
    ("done", "answered_cut"): "settled",  # every output given; the user's turn drives on
    ("followed_up", "call"): "followed_up",
    ("followed_up", "done"): "followed_up",
    ("settled", "call"): "settled",
    ("settled", "done"): "settled",
}

# ----------------------------------------------------------------------------- barge-in

BargeState: TypeAlias = Literal["quiet", "playing", "cut"]
#: ``audio`` / ``created`` concern the current response; ``audio_cut`` / ``created_cut`` the
#: response the user cut (its audio is discarded, a repeated ``response.created`` changes nothing).
BARGE_SERVER_TRIGGERS = ("audio", "audio_cut", "created", "created_cut", "done")
BARGE: Mapping[tuple[BargeState, str], BargeState] = {
    ("quiet", "audio"): "playing",
    ("quiet", "audio_cut"): "quiet",
    ("quiet", "created"): "quiet",
    ("quiet", "created_cut"): "quiet",
    ("quiet", "done"): "quiet",
    ("quiet", "interrupt"): "cut",  # its audio is still queued or playing downstream
    ("playing", "audio"): "playing",
    ("playing", "audio_cut"): "playing",
    ("playing", "created"): "quiet",  # a new response: none of its audio yet
    ("playing", "created_cut"): "quiet",
    ("playing", "done"): "quiet",
    ("playing", "interrupt"): "cut",
    ("cut", "audio"): "cut",
    ("cut", "audio_cut"): "cut",  # discarded
    ("cut", "created"): "quiet",  # another response: the cut is over
    ("cut", "created_cut"): "cut",
    ("cut", "done"): "cut",
    ("cut", "interrupt"): "cut",
}

# ----------------------------------------------------------------------------- the user's turn

TurnState: TypeAlias = Literal["listening", "speaking", "answer_due"]
TURN_SERVER_TRIGGERS = ("speech_started", "speech_stopped", "created")
TURN: Mapping[tuple[TurnState, str], TurnState] = {
    ("listening", "speech_started"): "speaking",
    ("listening", "speech_stopped"): "answer_due",  # a stop without its start (tolerated)
    ("listening", "created"): "listening",
    ("speaking", "speech_started"): "speaking",
    ("speaking", "speech_stopped"): "answer_due",
    ("speaking", "created"): "speaking",  # the answer to an earlier turn
    ("answer_due", "speech_started"): "speaking",
    ("answer_due", "speech_stopped"): "answer_due",
    ("answer_due", "created"): "listening",
}


class Machine(Generic[S]):
    """One state machine: its table and its state. :meth:`fire` moves by the table; a pair
    missing from it is a bug on our side (the tables list every server trigger in every state)
    and raises SessionLocalError naming the machine, the state and the trigger."""

    __slots__ = ("name", "state", "table")

    def __init__(self, name: str, table: Mapping[tuple[S, str], S], start: S) -> None:
        self.name = name
        self.table = table
        self.state: S = start

    def fire(self, trigger: str) -> S:
        try:
            self.state = self.table[(self.state, trigger)]
        except KeyError:
            raise SessionLocalError(
                f"{self.name}: '{trigger}' is not allowed in state '{self.state}'",
                code="bad_transition",
            ) from None
        return self.state

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, state={self.state!r})"


def states_of(table: Mapping[tuple[S, str], S]) -> set[S]:
    """Every state a table mentions."""
    return {s for s, _ in table} | set(table.values())
