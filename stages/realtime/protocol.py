"""The realtime voice protocol, without I/O: server messages in, typed events out, client
messages to send.

Theory of operation
-------------------
One :class:`RealtimeProtocol` lives for one WebSocket connection. It imports neither
``websockets`` nor ``asyncio`` (as ``websockets.protocol`` and h11 do): the caller pumps text
frames through it.

* ``receive(message)`` takes one server message (JSON text or an already decoded dict) and
  returns the typed events it means (:class:`AudioDeltaEvent`, :class:`FunctionCallDoneEvent`,
  ...; :mod:`stages.realtime.wire.server`). It never raises on what the server sends: unknown
  events and ``ping`` come back as :class:`IgnoredEvent`, unreadable JSON as
  :class:`MalformedEvent`.
* Methods such as ``append_audio``, ``tool_output`` or ``interrupt`` build client messages.
  Every client message, including the ones ``receive`` decides to send (the deferred
  ``response.create`` once every tool call of a response has its output), is queued; the caller
  sends what ``data_to_send()`` returns after each call. The methods also return the messages
  they queued, which is what tests look at.

Three dialects share one event model: ``xai`` (Grok Voice Agent API, the default), ``openai``
(OpenAI Realtime GA) and ``openai-beta``. What each dialect spells its own way is in its codec
(:mod:`stages.realtime.wire`): incoming event names are normalised through
:data:`EVENT_ALIASES` (GA names are canonical); ``session.update`` is the typed
:class:`SessionConfig`'s ``to_wire()``. Errors come nested (``{"error": {...}}``) or flat
(``code`` and ``message`` at the top level); :func:`parse_error` reads both.

The session lifecycle is the table :data:`TRANSITIONS`::

    connecting --open--> configuring --session.updated--> ready <--> responding
         any --close--> closing --closed--> closed      (connection lost: any --> closed)

Client triggers (``open``, ``close``, ``closed``) are strict: one our side fires where the table
has no entry raises :class:`~pipeline.errors.SessionLocalError`. A server event the table does not
list leaves the state as it is (a server may send anything).

Within a live connection, the response slot, each response's tool calls, barge-in and the user's
turn are the tables of :mod:`stages.realtime.turns`; :attr:`RealtimeProtocol.quiescent` says when
nothing is owed any more (the stage may close).

``rate_limits.updated`` is tolerated (a :class:`RateLimitsEvent` event) and never waited for: xAI
does not send it.

Why one module of about 850 lines: :class:`RealtimeProtocol` is the one object that sees every
state (connection, response slot, tool calls, barge-in, user turn) and every client message, so
it is not split across files; the tables themselves live in :mod:`stages.realtime.turns`, the
wire in :mod:`stages.realtime.wire`. A sixth of the module is the re-export of the codec's names,
so the stage, the emulator's tests and user code import one protocol module.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import orjson

from pipeline.errors import SessionLocalError
from pipeline.frames import AudioFormat

from .turns import (
    BARGE,
    CALLS,
    RESPONSE,
    RESPONSE_SENDS_CREATE,
    TURN,
    BargeState,
    CallState,
    Machine,
    ResponseSlot,
    TurnState,
)
from .wire import (
    BENIGN_ERROR_CODES,
    CLIENT_EVENT_ALIASES,
    CLIENT_EVENTS,
    CODECS,
    DEFAULT_PCM_RATE,
    DIALECT_ALIASES,
    DIALECTS,
    EVENT_ALIASES,
    FATAL_ERROR_CODES,
    FORMAT_ALIASES,
    OPENAI_VOICES,
    PCM24K,
    RESPONSE_STATUSES,
    SERVER_EVENTS,
    WIRE_FORMATS,
    XAI_VOICES,
    Dialect,
    DialectCodec,
    ErrorInfo,
    SessionConfig,
    TurnDetection,
    WireFormat,
    b64,
    canonical_event,
    codec,
    fast,
    format_from_wire,
    is_fatal_error,
    normalize_dialect,
    normalize_encoding,
    parse_error,
    session_formats,
)
from .wire import client as wc
from .wire.server import (
    CALLS_CANCELLED,
    AudioDeltaEvent,
    AudioDoneEvent,
    CallsCancelledEvent,
    ErrorEvent,
    FunctionCallDoneEvent,
    IgnoredEvent,
    InputCommittedEvent,
    MalformedEvent,
    RateLimitsEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
    ServerEvent,
    SessionCreatedEvent,
    SessionReadyEvent,
    SpeechStartedEvent,
    SpeechStoppedEvent,
    TranscriptDeltaEvent,
    TranscriptDoneEvent,
    TruncatedEvent,
)

__all__ = [
    "BENIGN_ERROR_CODES",
    "CALLS_CANCELLED",
    "CLIENT_EVENTS",
    "CLIENT_EVENT_ALIASES",
    "DEFAULT_PCM_RATE",
    "DIALECTS",
    "DIALECT_ALIASES",
    "EVENT_ALIASES",
    "FATAL_ERROR_CODES",
    "FORMAT_ALIASES",
    "OPENAI_VOICES",
    "PCM24K",
    "RESPONSE_STATUSES",
    "SERVER_EVENTS",
    "WIRE_FORMATS",
    "XAI_VOICES",
    "AudioDeltaEvent",
    "AudioDoneEvent",
    "CallsCancelledEvent",
    "Dialect",
    "ErrorEvent",
    "ErrorInfo",
    "FunctionCallDoneEvent",
    "IgnoredEvent",
    "InputCommittedEvent",
    "MalformedEvent",
    "RateLimitsEvent",
    "ResponseCreatedEvent",
    "ResponseDoneEvent",
    "ServerEvent",
    "SessionConfig",
    "SessionCreatedEvent",
    "SessionReadyEvent",
    "SpeechStartedEvent",
    "SpeechStoppedEvent",
    "TranscriptDeltaEvent",
    "TranscriptDoneEvent",
    "TruncatedEvent",
    "TurnDetection",
    "WireFormat",
    "canonical_event",
    "format_from_wire",
    "is_fatal_error",
    "normalize_dialect",
    "normalize_encoding",
    "parse_error",
    "session_formats",
]

# ----------------------------------------------------------------------------- the codec's facts
# (the wire knowledge is in stages.realtime.wire; these keep the protocol's names for it)

DEFAULT_VOICE: dict[Dialect, str] = {d: c.default_voice for d, c in CODECS.items()}
DEFAULT_MODEL: dict[Dialect, str] = {d: c.default_model for d, c in CODECS.items()}
DEFAULT_URL: dict[Dialect, str] = {d: c.default_url for d, c in CODECS.items()}
DEFAULT_API_KEY_ENV: dict[Dialect, str] = {d: c.api_key_env for d, c in CODECS.items()}
DEFAULT_TRANSCRIPTION_MODEL: dict[Dialect, str] = {
    d: c.transcription_model for d, c in CODECS.items()
}
#: PCM rates each dialect accepts (G.711 is always 8000 Hz).
PCM_RATES: dict[Dialect, tuple[int, ...]] = {d: c.pcm_rates for d, c in CODECS.items()}


def check_format(dialect: Dialect, fmt: AudioFormat) -> None:
    """Raise ValueError (with the accepted values) if ``dialect`` cannot carry ``fmt``."""
    codec(dialect).check_format(fmt)


def format_to_wire(fmt: AudioFormat, dialect: Dialect) -> dict[str, Any] | str:
    """The wire form of an audio format in ``dialect``."""
    return codec(dialect).format_to_wire(fmt)


def session_update_payload(config: SessionConfig) -> dict[str, Any]:
    """The ``session`` object of a ``session.update`` in ``config.dialect`` (spec 2.2 / 3.4)."""
    return config.to_wire()


# ----------------------------------------------------------------------------- state machine

State: TypeAlias = Literal["connecting", "configuring", "ready", "responding", "closing", "closed"]

#: (state, trigger) -> next state. Triggers are the client's ``open``/``close``/``closed`` (strict)
#: and canonical server event names (a pair not in the table leaves the state as it is).
TRANSITIONS: dict[tuple[State, str], State] = {
    ("connecting", "open"): "configuring",
    ("configuring", "session.updated"): "ready",
    ("ready", "session.updated"): "ready",
    ("responding", "session.updated"): "responding",
    ("ready", "response.created"): "responding",
    ("responding", "response.created"): "responding",
    ("responding", "response.done"): "ready",
    ("connecting", "close"): "closing",
    ("configuring", "close"): "closing",
    ("ready", "close"): "closing",
    ("responding", "close"): "closing",
    ("connecting", "closed"): "closed",
    ("configuring", "closed"): "closed",
    ("ready", "closed"): "closed",
    ("responding", "closed"): "closed",
    ("closing", "closed"): "closed",
}


def dumps(message: Mapping[str, Any]) -> str:
    """Serialize a message (compact JSON)."""
    return orjson.dumps(message).decode()


#: The triggers only our side fires on the lifecycle table.
LOCAL_TRIGGERS: frozenset[str] = frozenset({"open", "close", "closed"})

_AUDIO_DELTA = "response.output_audio.delta"
#: the audio delta's name in every dialect
_AUDIO_DELTA_NAMES: frozenset[str] = frozenset(
    {_AUDIO_DELTA} | {name for name in EVENT_ALIASES if canonical_event(name) == _AUDIO_DELTA}
)
# receive() takes audio deltas past the lifecycle table: it has no entry for them.
assert not any(trigger == _AUDIO_DELTA for _, trigger in TRANSITIONS)
#: the compiled reader of the usual audio delta (None when not built: the checked path reads all)
_DELTA_READER = fast.native_reader(_AUDIO_DELTA_NAMES)


@dataclass
class _ResponseRecord:
    """One response's tool calls (the :data:`~stages.realtime.turns.CALLS` table)."""

    id: str
    calls: Machine[CallState] = field(
        default_factory=lambda: Machine("tool calls", CALLS, "active")
    )
    call_ids: list[str] = field(default_factory=list)
    status: str = "in_progress"
    interrupted: bool = False  # barge-in: the user's next turn drives what follows


class RealtimeProtocol:
    """The client side of one realtime connection, sans I/O. See the module docstring.

    Call ``connection_made()`` once the socket is open (it queues ``session.update``), then
    ``receive()`` for every text frame and the builder methods as frames arrive; send what
    ``data_to_send()`` returns after each call.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self._encode_append = codec(config.dialect).append_encoder()
        #: the dialect's server messages are its events as they are (audio deltas go straight
        #: to their handler)
        self._plain = type(codec(config.dialect)).decode_server is DialectCodec.decode_server
        #: reads the usual audio delta straight into its event (None: the checked path reads it)
        self._read_delta = _DELTA_READER if self._plain else None
        self.state: State = "connecting"
        self._outbox: list[str] = []
        self._seq = 0
        # responses and tool calls
        self.slot: Machine[ResponseSlot] = Machine("response", RESPONSE, "idle")
        self.barge: Machine[BargeState] = Machine("barge-in", BARGE, "quiet")
        self.turn: Machine[TurnState] = Machine("turn", TURN, "listening")
        self._responses: dict[str, _ResponseRecord] = {}
        self._active: str | None = None
        self._last: str = ""  # the response created last (what a barge-in interrupts)
        self._cut: str = ""  # the response the user barged in on
        self._calls: dict[str, str] = {}  # call_id -> response_id
        self._call_names: dict[str, str] = {}
        self._outputs: set[str] = set()
        self._withdrawn: set[str] = set()  # calls the model cancelled: no output owed
        # audio
        self._input_bytes_uncommitted = 0
        self._audio_item: str = ""
        self._audio_bytes: dict[str, int] = {}  # item_id -> bytes of assistant audio received
        self._user_partial: dict[str, str] = {}
        self._user_final: set[str] = set()
        self._updates_sent = 0
        self._updates_acked = 0
        self._sync_ids: set[str] = set()

    def __repr__(self) -> str:
        return f"RealtimeProtocol(dialect={self.config.dialect!r}, state={self.state!r})"

    # -- state

    def _fire(self, trigger: str) -> None:
        nxt = TRANSITIONS.get((self.state, trigger))
        if nxt is None and trigger in LOCAL_TRIGGERS:
            raise SessionLocalError(
                f"connection: '{trigger}' is not allowed in state '{self.state}'",
                code="bad_transition",
            )
        self.state = nxt or self.state

    def _ask(self, trigger: str) -> list[str]:
        """Move the response slot; send ``response.create`` where the table says so."""
        before = self.slot.state
        self.slot.fire(trigger)
        if (before, trigger) in RESPONSE_SENDS_CREATE:
            return [self._send(wc.ResponseCreate())]
        return []

    def _record(self, response_id: str) -> _ResponseRecord:
        return self._responses.setdefault(response_id, _ResponseRecord(response_id))

    @property
    def ready(self) -> bool:
        """``session.updated`` has arrived (audio may be sent)."""
        return self.state in ("ready", "responding")

    @property
    def active_response(self) -> str | None:
        """The id of the response in flight, if any."""
        return self._active

    @property
    def pending_calls(self) -> tuple[str, ...]:
        """Tool calls emitted whose output has not been given yet."""
        return tuple(c for c in self._calls if c not in self._outputs and c not in self._withdrawn)

    @property
    def owes(self) -> bool:
        """A response is in flight, a tool output is owed, or a response is still to be asked
        for: the caller should not close yet."""
        return self.slot.state != "idle" or bool(self.pending_calls)

    @property
    def quiescent(self) -> bool:
        """Nothing is owed on this connection: every ``session.update`` answered, no response
        asked for or in flight, no tool output owed, and no user turn the server's VAD heard end
        still waiting for its answer. The caller may close."""
        return self.synced and not self.owes and self.turn.state == "listening"

    @property
    def assistant_playing(self) -> bool:
        """Audio of the response in flight is arriving (and the user did not cut it)."""
        return self.barge.state == "playing" and self._active is not None

    @property
    def last_response(self) -> str:
        """The response in flight, else the one created last ("" before any): what a barge-in
        interrupts."""
        return self._active or self._last

    @property
    def assistant_item(self) -> str:
        """The assistant item whose audio came last (for truncation)."""
        return self._audio_item

    def assistant_audio_ms(self, item_id: str | None = None) -> int:
        """Milliseconds of assistant audio received for ``item_id`` (default: the last one)."""
        item = self._audio_item if item_id is None else item_id
        n = self._audio_bytes.get(item, 0)
        fmt = self.config.output_format
        return n * 1000 // fmt.bytes_per_second

    # -- outbox

    def _send(self, event: wc.ClientEvent) -> str:
        self._seq += 1
        text = codec(self.config.dialect).encode_client(event, f"c-{self._seq}")
        self._outbox.append(text)
        return text

    @property
    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return anything."""
        return bool(self._outbox)

    def data_to_send(self) -> list[str]:
        """The client messages queued since the last call, in order (then forgotten)."""
        out, self._outbox = self._outbox, []
        return out

    # -- client side

    def connection_made(self) -> list[str]:
        """The socket is open: queue ``session.update`` at once."""
        self._fire("open")
        return [self.session_update()]

    def session_update(self, config: SessionConfig | None = None) -> str:
        """Queue a ``session.update`` for ``config`` (default: this protocol's)."""
        if config is not None:
            self.config = config
            self._encode_append = codec(config.dialect).append_encoder()
        self._updates_sent += 1
        return self._send(wc.SessionUpdate(self.config.to_wire()))

    def sync(self) -> str:
        """Queue a barrier: a ``session.update`` that changes nothing (an empty session; GA
        needs its ``type``). Servers handle client events in order, so once :attr:`synced` is
        true again every message sent before it was handled (the server's VAD has seen all the
        audio). An error answering it counts as the answer. Used at the end of the input."""
        session = codec(self.config.dialect).sync_session()
        self._updates_sent += 1
        text = self._send(wc.SessionUpdate(session))
        self._sync_ids.add(f"c-{self._seq}")
        return text

    @property
    def synced(self) -> bool:
        """Every ``session.update`` sent has its ``session.updated``."""
        return self._updates_acked >= self._updates_sent

    def _require_ready(self, what: str) -> None:
        """Conversation messages go out only on a ready session: before ``session.updated`` the
        server would read them with its defaults, after the close nobody reads them."""
        if not self.ready:
            raise SessionLocalError(
                f"{what} in state '{self.state}'; send it once the session is ready "
                "(after session.updated, before the close)",
                code="not_ready",
            )

    def append_audio(self, data: bytes) -> str:
        """Queue ``input_audio_buffer.append`` with ``data`` (raw bytes in the input format).

        Raises SessionLocalError before ``session.updated`` (servers read such audio at their
        default rate) and for a byte count that is not whole samples."""
        if self.state != "ready" and self.state != "responding":  # (self.ready, in line)
            raise SessionLocalError(
                f"audio sent in state '{self.state}', before session.updated; hold it until the "
                "session is ready",
                code="audio_before_ready",
            )
        n = len(data)
        if n % 2 and self.config.input_format.encoding == "pcm16":  # G.711: a byte a sample
            raise SessionLocalError(
                f"{n} bytes of {self.config.input_format.encoding} is not whole samples",
                code="partial_sample",
            )
        self._input_bytes_uncommitted += n
        self._seq += 1  # as _send, with the message built directly (the call's hot path)
        text = self._encode_append(data, f"c-{self._seq}")
        self._outbox.append(text)
        return text

    def commit(self) -> list[str]:
        """Queue ``input_audio_buffer.commit`` (manual turns). Nothing if no audio was appended
        since the last commit: the server would answer with an error."""
        self._require_ready("input_audio_buffer.commit")
        if self._input_bytes_uncommitted == 0:
            return []
        self._input_bytes_uncommitted = 0
        return [self._send(wc.InputAudioBufferCommit())]

    def clear_input(self) -> str:
        """Queue ``input_audio_buffer.clear``."""
        self._require_ready("input_audio_buffer.clear")
        self._input_bytes_uncommitted = 0
        return self._send(wc.InputAudioBufferClear())

    def create_response(self) -> list[str]:
        """Ask for a response: ``response.create`` now, or once the response in flight is done
        (at most one is ever queued)."""
        self._require_ready("response.create")
        return self._ask("ask")

    def send_text(
        self, text: str, role: Literal["user", "system", "assistant"] = "user"
    ) -> list[str]:
        """A typed turn: ``conversation.item.create`` (a message) then a response."""
        self._require_ready("a text turn")
        kind = "output_text" if role == "assistant" else "input_text"
        item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
        sent = [self._send(wc.ConversationItemCreate(item))]
        return sent + self.create_response()

    def force_message(
        self, text: str, *, voice: str | None = None, interruptible: bool = True
    ) -> list[str]:
        """xAI: the assistant says ``text`` verbatim (a ``force_message`` item: a greeting, or
        "one moment please" while a slow tool runs); the server answers with a normal response
        of that text, in ``voice`` if given. ``interruptible=False`` asks the server to ignore the
        caller until it has been played."""
        self._require_ready("force_message")
        item: dict[str, Any] = {
            "type": "force_message",
            "role": "assistant",
            "interruptible": interruptible,
            "content": [{"type": "output_text", "text": text}],
        }
        if voice:
            item["voice"] = voice
        return [self._send(wc.ConversationItemCreate(item))]

    def replay(self, turns: list[tuple[str, str]]) -> list[str]:
        """Carry a conversation over to a new session: each earlier turn as a message item
        (the user's as ``input_text``, the assistant's as ``output_text``), asking for no
        response."""
        self._require_ready("a conversation replay")
        sent = []
        for role, text in turns:
            kind = "output_text" if role == "assistant" else "input_text"
            item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
            sent.append(self._send(wc.ConversationItemCreate(item)))
        return sent

    def user_turn_ended(self) -> list[str]:
        """Manual turns: the user stopped speaking, so commit the audio and ask for a response."""
        sent = self.commit()
        if not sent:
            return []
        return sent + self.create_response()

    def tool_output(self, call_id: str, output: str) -> list[str]:
        """One ``function_call_output`` item for ``call_id``; then, once every call of that
        response has its output and the response is done, exactly one ``response.create``
        (none for a response that was cancelled or barged in on: the user's turn drives the
        next one). A call owed stays in :attr:`pending_calls` until its output is given, even
        when its response was cancelled: the tool router answers every call it drops with an
        error result, so the conversation never keeps a ``function_call`` without an output.

        An output for a call this connection never emitted (e.g. from before a reconnect), a
        second output for the same call, or one for a call the model withdrew
        (:data:`CALLS_CANCELLED`) sends nothing and returns []."""
        self._require_ready("a tool output")
        if call_id not in self._calls or call_id in self._outputs or call_id in self._withdrawn:
            return []
        self._outputs.add(call_id)
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        sent = [self._send(wc.ConversationItemCreate(item))]
        return sent + self._follow_up(self._calls[call_id])

    def _follow_up(self, response_id: str) -> list[str]:
        resp = self._responses.get(response_id)
        if resp is None or not resp.call_ids or resp.calls.state != "done":
            return []
        if any(c not in self._outputs for c in resp.call_ids):
            return []
        if resp.status == "cancelled" or resp.interrupted:
            # The user barged in: their new turn drives the next response (which sees these
            # outputs in the conversation); asking for one here would talk over the caller.
            resp.calls.fire("answered_cut")
            return []
        resp.calls.fire("answered")
        return self._ask("ask")  # internal: may run while a late event arrives on a closing session

    def cancel_response(self) -> list[str]:
        """Queue ``response.cancel`` if a response is in flight."""
        if self._active is None:
            return []
        return [self._send(wc.ResponseCancel(self._active))]

    def truncate(self, item_id: str, audio_end_ms: int) -> str:
        """Queue ``conversation.item.truncate``: the assistant item was heard up to
        ``audio_end_ms``."""
        return self._send(wc.ConversationItemTruncate(item_id, max(0, int(audio_end_ms))))

    def interrupt(self, played_ms: int | None, *, local: bool) -> list[str]:
        """Barge-in. Cancel the response in flight (``local``: our own VAD heard it; the server's
        VAD cancels by itself) and truncate the assistant item at ``played_ms`` (what was heard;
        None: all audio received so far). The interrupted response (the one in flight, else the
        last one) gets no follow-up ``response.create`` when its tool outputs come in."""
        sent: list[str] = []
        rid = self.last_response
        if rid in self._responses:
            self._responses[rid].interrupted = True
        self.barge.fire("interrupt")
        self._cut = rid
        if not self.ready:  # the connection is gone: nothing to tell the server
            return []
        if local or not self.config.server_vad:
            sent += self.cancel_response()
        item = self._audio_item
        if item:
            received = self.assistant_audio_ms(item)
            at = received if played_ms is None else min(played_ms, received)
            sent.append(self.truncate(item, at))
            self._audio_item = ""
        return sent

    def close(self) -> None:
        """We are closing the connection."""
        self._fire("close")

    def connection_lost(self) -> None:
        """The connection is gone."""
        self._fire("closed")
        self._active = None
        self.slot.fire("lost")

    # -- server side

    def receive(self, message: str | bytes | Mapping[str, Any]) -> list[ServerEvent]:
        """The events one server message means. Never raises on the message's content."""
        if type(message) is str and self._read_delta is not None:
            # the usual message (an audio delta in the servers' shape) read in one pass; None
            # for anything else, which the checked path below reads
            delta = self._read_delta(message)
            if delta is not None:
                return self._audio_delta(delta)
        if type(message) is not str and isinstance(message, Mapping):  # (str first: cheaper)
            event: Any = message
        else:
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                return [MalformedEvent(f"not JSON ({exc})", _excerpt(message))]
            kind = event.get("type") if type(event) is dict else None
            if type(kind) is str and kind in _AUDIO_DELTA_NAMES and self._plain:
                # the usual message, straight to its handler: what _receive_event does for it
                # (the lifecycle table has no audio delta trigger)
                try:
                    return self._on_audio_delta(event)
                except (KeyError, TypeError, ValueError, binascii.Error) as exc:
                    why = f"{_AUDIO_DELTA}: {type(exc).__name__}: {exc}"
                    return [MalformedEvent(why, _excerpt(message))]
        if not isinstance(event, Mapping):
            return [MalformedEvent("no event type", _excerpt(message))]
        decoded = codec(self.config.dialect).decode_server(event)
        if len(decoded) == 1:
            return self._receive_event(decoded[0], message)
        return [out for ev in decoded for out in self._receive_event(ev, message)]

    def _receive_event(
        self, event: Mapping[str, Any], message: str | bytes | Mapping[str, Any]
    ) -> list[ServerEvent]:
        if not isinstance(event.get("type"), str):
            return [MalformedEvent("no event type", _excerpt(message))]
        name = canonical_event(event["type"])
        handler = _HANDLERS.get(name)
        if handler is None:
            return [IgnoredEvent(name)]
        try:
            out: list[ServerEvent] = handler(self, event)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            return [MalformedEvent(f"{name}: {type(exc).__name__}: {exc}", _excerpt(message))]
        self._fire(name)
        return out

    def _on_session_created(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        session = ev.get("session") or ev.get("conversation") or {}
        return [SessionCreatedEvent(session if isinstance(session, Mapping) else {})]

    def _on_session_updated(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        self._updates_acked += 1
        session = ev.get("session")
        session = session if isinstance(session, Mapping) else {}
        inp, out = session_formats(session)
        return [SessionReadyEvent(session, inp, out)]

    def _on_speech_started(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        out = SpeechStartedEvent(int(ev.get("audio_start_ms") or 0), str(ev.get("item_id") or ""))
        self.turn.fire("speech_started")
        return [out]

    def _on_speech_stopped(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        out = SpeechStoppedEvent(int(ev.get("audio_end_ms") or 0), str(ev.get("item_id") or ""))
        self._input_bytes_uncommitted = 0  # the server commits by itself
        self.turn.fire("speech_stopped")  # server VAD answers a finished turn
        return [out]

    def _on_committed(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        self._input_bytes_uncommitted = 0
        return [InputCommittedEvent(str(ev.get("item_id") or ""))]

    def _on_item_added(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        # A user item may already carry its transcript (LK de-duplicates against the
        # transcription event); function_call items are only announced, never executed here.
        item = ev["item"]
        if item.get("type") == "message" and item.get("role") == "user":
            for part in item.get("content") or ():
                text = part.get("transcript") if isinstance(part, Mapping) else None
                if isinstance(text, str) and text:
                    return self._user_done(str(item.get("id") or ""), text)
        return [IgnoredEvent(ev["type"])]

    def _user_done(self, item_id: str, text: str) -> list[ServerEvent]:
        if item_id and item_id in self._user_final:
            return []
        if item_id:
            self._user_final.add(item_id)
        self._user_partial.pop(item_id, None)
        return [TranscriptDoneEvent("user", text, item_id)]

    def _user_partial_text(self, item_id: str, text: str) -> list[ServerEvent]:
        # Cumulative partials ("what's", "what's the") become deltas.
        if item_id in self._user_final:
            return []
        before = self._user_partial.get(item_id, "")
        self._user_partial[item_id] = text
        delta = text[len(before) :] if text.startswith(before) else text
        return [TranscriptDeltaEvent("user", delta, item_id)] if delta else []

    def _on_transcription_delta(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        item_id = str(ev.get("item_id") or "")
        delta = str(ev["delta"])
        if item_id in self._user_final or not delta:
            return []
        self._user_partial[item_id] = self._user_partial.get(item_id, "") + delta
        return [TranscriptDeltaEvent("user", delta, item_id)]

    def _on_transcription_updated(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        return self._user_partial_text(str(ev.get("item_id") or ""), str(ev["transcript"]))

    def _on_transcription_completed(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        item_id = str(ev.get("item_id") or "")
        text = str(ev["transcript"])
        if ev.get("status") == "in_progress":  # xAI partials (cumulative)
            return self._user_partial_text(item_id, text)
        return self._user_done(item_id, text)

    def _on_transcription_failed(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        info = parse_error(ev) if "error" in ev else ErrorInfo("transcription_failed", "failed")
        return [ErrorEvent("transcription_failed", info.message, info.type)]

    def _on_response_created(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        resp = ev.get("response")
        rid = str((resp.get("id") if isinstance(resp, Mapping) else None) or ev.get("response_id"))
        self._record(rid)
        self._active = rid
        self._last = rid
        self.slot.fire("created")
        self.turn.fire("created")
        if self._cut and rid != self._cut:
            self._cut = ""
            self.barge.fire("created")
        else:
            self.barge.fire("created_cut" if self._cut else "created")
        return [ResponseCreatedEvent(rid)]

    def _on_response_done(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        resp = ev.get("response")
        resp = resp if isinstance(resp, Mapping) else {}
        rid = str(resp.get("id") or ev.get("response_id") or self._active or "")
        status = str(resp.get("status") or "completed")
        details = resp.get("status_details")
        reason = ""
        if isinstance(details, Mapping):
            reason = str(details.get("reason") or details.get("type") or "")
        out: list[ServerEvent] = []
        # Fallback: a function_call item finished without an arguments.done event.
        for item in resp.get("output") or ():
            if (
                isinstance(item, Mapping)
                and item.get("type") == "function_call"
                and item.get("call_id")
                and item.get("status", "completed") == "completed"
            ):
                name, args = str(item.get("name") or ""), str(item.get("arguments") or "{}")
                out += self._call(rid, str(item["call_id"]), name, args, str(item.get("id") or ""))
        record = self._record(rid)
        record.calls.fire("done")
        record.status = status
        out.append(ResponseDoneEvent(rid, status, reason, tuple(record.call_ids)))
        self._follow_up(rid)  # while the slot is busy, its ask joins the queued one
        if self._active == rid or self._active is None:
            self._active = None
            self._ask("done")
            self.barge.fire("done")
        return out

    def _on_audio_delta(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        data = b64.decode_strict(ev["delta"])
        item = str(ev.get("item_id") or "")
        rid = str(ev.get("response_id") or "")
        return self._audio_delta(AudioDeltaEvent(data, rid, item))

    def _audio_delta(self, ev: AudioDeltaEvent) -> list[ServerEvent]:
        """Where the assistant's audio stands after ``ev`` (not yet marked discarded): the
        item's bytes received, the barge-in table moved (``audio``, or ``audio_cut`` for a
        response the user cut, whose audio comes back marked discarded)."""
        item = ev.item_id
        self._audio_item = item
        received = self._audio_bytes
        received[item] = received.get(item, 0) + len(ev.data)
        barge = self.barge
        if self._cut and (ev.response_id or self._last) == self._cut:
            barge.fire("audio_cut")
            return [AudioDeltaEvent(ev.data, ev.response_id, item, True)]
        # (the table lists every server trigger in every state: no KeyError; Machine.fire)
        barge.state = BARGE[barge.state, "audio"]
        return [ev]

    def _on_audio_done(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        return [AudioDoneEvent(str(ev.get("response_id") or ""), str(ev.get("item_id") or ""))]

    def _on_transcript_delta(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        delta = str(ev["delta"])
        if not delta:
            return []
        ids = str(ev.get("item_id") or ""), str(ev.get("response_id") or "")
        return [TranscriptDeltaEvent("assistant", delta, *ids)]

    def _on_transcript_done(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        text = ev.get("transcript", ev.get("text"))
        ids = str(ev.get("item_id") or ""), str(ev.get("response_id") or "")
        return [TranscriptDoneEvent("assistant", str(text or ""), *ids)]

    def _on_arguments_done(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        return self._call(
            str(ev.get("response_id") or self._active or ""),
            str(ev["call_id"]),
            str(ev.get("name") or ""),
            str(ev.get("arguments") or "{}"),
            str(ev.get("item_id") or ""),
        )

    def _call(
        self, response_id: str, call_id: str, name: str, arguments: str, item_id: str
    ) -> list[ServerEvent]:
        if call_id in self._calls:
            return []
        self._calls[call_id] = response_id
        self._call_names[call_id] = name
        record = self._record(response_id)
        record.calls.fire("call")
        record.call_ids.append(call_id)
        return [FunctionCallDoneEvent(call_id, name, arguments, response_id, item_id)]

    def _on_calls_cancelled(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        owed = [str(c) for c in ev["call_ids"] if str(c) in self.pending_calls]
        self._withdrawn.update(owed)
        return [CallsCancelledEvent(tuple((c, self._call_names.get(c, "")) for c in owed))]

    def was_withdrawn(self, call_id: str) -> bool:
        """The model cancelled ``call_id`` (:data:`CALLS_CANCELLED`): its output is not wanted."""
        return call_id in self._withdrawn

    def _on_truncated(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        return [TruncatedEvent(str(ev.get("item_id") or ""), int(ev.get("audio_end_ms") or 0))]

    def _on_rate_limits(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        limits = ev.get("rate_limits") or ()
        return [RateLimitsEvent(tuple(x for x in limits if isinstance(x, Mapping)))]

    def _on_error(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        info = parse_error(ev)
        if info.event_id in self._sync_ids:  # the barrier was refused, but it was handled
            self._sync_ids.discard(info.event_id)
            self._updates_acked += 1
        if info.code == "conversation_already_has_active_response":
            # A response.create of ours lost a race with one the server started (its VAD):
            # ask again once that one is done.
            self._ask("refused")
        return [
            ErrorEvent(
                info.code,
                info.message,
                info.type,
                info.param,
                fatal=is_fatal_error(info),
                benign=info.code in BENIGN_ERROR_CODES,
            )
        ]

    def _on_ignored(self, ev: Mapping[str, Any]) -> list[ServerEvent]:
        return [IgnoredEvent(canonical_event(ev["type"]))]


def _excerpt(message: Any, limit: int = 120) -> str:
    text = message if isinstance(message, str) else repr(message)
    return text if len(text) <= limit else text[:limit] + "..."


_Handler = Any
_HANDLERS: dict[str, _Handler] = {
    "session.created": RealtimeProtocol._on_session_created,
    "conversation.created": RealtimeProtocol._on_session_created,
    "session.updated": RealtimeProtocol._on_session_updated,
    "input_audio_buffer.speech_started": RealtimeProtocol._on_speech_started,
    "input_audio_buffer.speech_stopped": RealtimeProtocol._on_speech_stopped,
    "input_audio_buffer.committed": RealtimeProtocol._on_committed,
    "conversation.item.added": RealtimeProtocol._on_item_added,
    "conversation.item.input_audio_transcription.delta": RealtimeProtocol._on_transcription_delta,
    "conversation.item.input_audio_transcription.updated": (
        RealtimeProtocol._on_transcription_updated
    ),
    "conversation.item.input_audio_transcription.completed": (
        RealtimeProtocol._on_transcription_completed
    ),
    "conversation.item.input_audio_transcription.failed": (
        RealtimeProtocol._on_transcription_failed
    ),
    "response.created": RealtimeProtocol._on_response_created,
    "response.done": RealtimeProtocol._on_response_done,
    "response.output_audio.delta": RealtimeProtocol._on_audio_delta,
    "response.output_audio.done": RealtimeProtocol._on_audio_done,
    "response.output_audio_transcript.delta": RealtimeProtocol._on_transcript_delta,
    "response.output_audio_transcript.done": RealtimeProtocol._on_transcript_done,
    "response.output_text.delta": RealtimeProtocol._on_transcript_delta,
    "response.output_text.done": RealtimeProtocol._on_transcript_done,
    "response.function_call_arguments.done": RealtimeProtocol._on_arguments_done,
    "conversation.item.truncated": RealtimeProtocol._on_truncated,
    CALLS_CANCELLED: RealtimeProtocol._on_calls_cancelled,
    "rate_limits.updated": RealtimeProtocol._on_rate_limits,
    "error": RealtimeProtocol._on_error,
}
for _name in SERVER_EVENTS - _HANDLERS.keys():
    _HANDLERS[_name] = RealtimeProtocol._on_ignored
