"""The realtime voice protocol, without I/O: server messages in, typed events out, client
messages to send.

Theory of operation
-------------------
One :class:`RealtimeProtocol` lives for one WebSocket connection. It imports neither
``websockets`` nor ``asyncio`` (as ``websockets.protocol`` and h11 do): the caller pumps text
frames through it.

* ``receive(message)`` takes one server message (JSON text or an already decoded dict) and
  returns the typed events it means (:class:`AudioDelta`, :class:`FunctionCallDone`, ...). It
  never raises on what the server sends: unknown events and ``ping`` come back as
  :class:`Ignored`, unreadable JSON as :class:`Malformed`.
* Methods such as ``append_audio``, ``tool_output`` or ``interrupt`` build client messages.
  Every client message, including the ones ``receive`` decides to send (the deferred
  ``response.create`` once every tool call of a response has its output), is queued; the caller
  sends what ``data_to_send()`` returns after each call. The methods also return the messages
  they queued, which is what tests look at.

Three dialects share one event model: ``xai`` (Grok Voice Agent API, the default), ``openai``
(OpenAI Realtime GA) and ``openai-beta``. Incoming event names are normalised through
:data:`EVENT_ALIASES` (GA names are canonical); ``session.update`` is built per dialect
(:func:`session_update_payload`). Errors come nested (``{"error": {...}}``) or flat (``code`` and
``message`` at the top level); :func:`parse_error` reads both.

The session lifecycle is the table :data:`TRANSITIONS`::

    connecting --open--> configuring --session.updated--> ready <--> responding
         any --close--> closing --closed--> closed      (connection lost: any --> closed)

Client triggers (``open``, ``close``, ``closed``) are strict: one our side fires where the table
has no entry raises :class:`~pipeline.errors.SessionLocalError`. A server event the table does not
list leaves the state as it is (a server may send anything).

Within a live connection, the response slot, each response's tool calls, barge-in and the user's
turn are the tables of :mod:`stages.realtime.turns`; :attr:`RealtimeProtocol.quiescent` says when
nothing is owed any more (the stage may close).

``rate_limits.updated`` is tolerated (a :class:`RateLimits` event) and never waited for: xAI
does not send it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import orjson

from pipeline.errors import SessionLocalError
from pipeline.frames import AudioFormat, Encoding

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

# ----------------------------------------------------------------------------- tables

Dialect: TypeAlias = Literal["xai", "openai", "openai-beta"]
DIALECTS: tuple[Dialect, ...] = ("xai", "openai", "openai-beta")
#: Other names a dialect goes by (the emulator's ``openai-ga``, ...).
DIALECT_ALIASES: dict[str, Dialect] = {
    "xai": "xai",
    "grok": "xai",
    "openai": "openai",
    "openai-ga": "openai",
    "ga": "openai",
    "openai-beta": "openai-beta",
    "beta": "openai-beta",
}

#: The voices of xAI's Grok voice agent. IDs are case-insensitive on the wire; the server may echo
#: them prefixed (``xai_ara``, ``human_Ara``), and custom voice IDs also work, so a voice outside
#: this list is passed through, not refused.
XAI_VOICES: tuple[str, ...] = ("ara", "rex", "sal", "eve", "leo")
#: OpenAI's realtime voices, for the ``openai`` dialects.
OPENAI_VOICES: tuple[str, ...] = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse",
)  # fmt: skip
DEFAULT_VOICE: dict[Dialect, str] = {"xai": "ara", "openai": "alloy", "openai-beta": "alloy"}

DEFAULT_MODEL: dict[Dialect, str] = {
    "xai": "grok-voice-latest",
    "openai": "gpt-realtime",
    "openai-beta": "gpt-4o-realtime-preview",
}
DEFAULT_URL: dict[Dialect, str] = {
    "xai": "wss://api.x.ai/v1/realtime",
    "openai": "wss://api.openai.com/v1/realtime",
    "openai-beta": "wss://api.openai.com/v1/realtime",
}
DEFAULT_API_KEY_ENV: dict[Dialect, str] = {
    "xai": "XAI_API_KEY",
    "openai": "OPENAI_API_KEY",
    "openai-beta": "OPENAI_API_KEY",
}
DEFAULT_TRANSCRIPTION_MODEL: dict[Dialect, str] = {
    "xai": "",  # documented as optional ("grok-transcribe" is only a third-party claim)
    "openai": "gpt-4o-mini-transcribe",
    "openai-beta": "whisper-1",
}


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One audio encoding by all its names: ours, the current (GA / xAI) ``type`` and the
    OpenAI-beta string. ``fixed_rate`` is set for the G.711 laws (8000 Hz, no rate on the wire)."""

    encoding: Encoding
    ga_type: str
    beta_name: str
    fixed_rate: int | None


#: Our encoding name -> its wire names.
WIRE_FORMATS: dict[Encoding, WireFormat] = {
    "pcm16": WireFormat("pcm16", "audio/pcm", "pcm16", None),
    "pcmu": WireFormat("pcmu", "audio/pcmu", "g711_ulaw", 8000),
    "pcma": WireFormat("pcma", "audio/pcma", "g711_alaw", 8000),
}

#: Every name a format goes by (ours, GA/xAI ``type``, OpenAI beta, short) -> our encoding.
FORMAT_ALIASES: dict[str, Encoding] = {
    "pcm16": "pcm16",
    "pcm": "pcm16",
    "audio/pcm": "pcm16",
    "pcmu": "pcmu",
    "ulaw": "pcmu",
    "g711_ulaw": "pcmu",
    "audio/pcmu": "pcmu",
    "pcma": "pcma",
    "alaw": "pcma",
    "g711_alaw": "pcma",
    "audio/pcma": "pcma",
}

#: PCM rates each dialect accepts (G.711 is always 8000 Hz). OpenAI's ``audio/pcm`` and beta
#: ``pcm16`` are 24 kHz only.
PCM_RATES: dict[Dialect, tuple[int, ...]] = {
    "xai": (8000, 16000, 22050, 24000, 32000, 44100, 48000),
    "openai": (24000,),
    "openai-beta": (24000,),
}
#: The rate a PCM stream has when no rate is given (the servers' default).
DEFAULT_PCM_RATE = 24000
PCM24K = AudioFormat("pcm16", DEFAULT_PCM_RATE)

#: Incoming event names -> the canonical (OpenAI GA) name. Applied before dispatch.
EVENT_ALIASES: dict[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",  # xAI and OpenAI beta
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

#: Client event names a strict server accepts. ``conversation.item.commit`` appears only in an
#: early xAI docs table; :data:`CLIENT_EVENT_ALIASES` maps it to the real name.
CLIENT_EVENTS: frozenset[str] = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)
CLIENT_EVENT_ALIASES: dict[str, str] = {"conversation.item.commit": "input_audio_buffer.commit"}

#: Server events the client understands (canonical names, after :data:`EVENT_ALIASES`).
SERVER_EVENTS: frozenset[str] = frozenset(
    {
        "session.created",
        "session.updated",
        "conversation.created",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.updated",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
        "error",
        "ping",
    }
)

#: Error codes that are part of normal operation (a cancel racing the server's own cancel, a
#: response.create racing the server's VAD): logged at debug level, not reported as errors.
BENIGN_ERROR_CODES: frozenset[str] = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)
#: Error codes and types after which the session cannot go on.
FATAL_ERROR_CODES: frozenset[str] = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "unauthorized",
        "forbidden",
        "permission_denied",
        "insufficient_quota",
        "model_not_found",
    }
)

#: Response statuses (``response.done``).
RESPONSE_STATUSES: tuple[str, ...] = (
    "completed",
    "in_progress",
    "incomplete",
    "cancelled",
    "failed",
)


def canonical_event(name: str) -> str:
    """The canonical (GA) name of an incoming server event name."""
    return EVENT_ALIASES.get(name, name)


def normalize_dialect(name: str) -> Dialect:
    """Our dialect for any of its names (``openai-ga`` is ``openai``). Raises ValueError."""
    try:
        return DIALECT_ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown dialect '{name}'; use one of {', '.join(DIALECTS)}") from None


def normalize_encoding(name: str) -> Encoding:
    """Our encoding for any of a format's names (``pcm16``, ``g711_ulaw``, ``audio/pcma``, ...).

    Raises ValueError naming the accepted names."""
    try:
        return FORMAT_ALIASES[name.strip().lower()]
    except KeyError:
        names = ", ".join(sorted(FORMAT_ALIASES))
        raise ValueError(f"unknown audio format '{name}'; use one of {names}") from None


def check_format(dialect: Dialect, fmt: AudioFormat) -> None:
    """Raise ValueError (with the accepted values) if ``dialect`` cannot carry ``fmt``."""
    wire = WIRE_FORMATS[fmt.encoding]
    if fmt.channels != 1:
        raise ValueError(f"realtime audio is mono, got {fmt.channels} channels")
    if wire.fixed_rate is not None:
        if fmt.rate != wire.fixed_rate:
            raise ValueError(f"{fmt.encoding} is {wire.fixed_rate} Hz only, got {fmt.rate} Hz")
        return
    rates = PCM_RATES[dialect]
    if fmt.rate not in rates:
        listed = ", ".join(str(r) for r in rates)
        raise ValueError(f"{dialect} takes pcm16 at {listed} Hz, got {fmt.rate} Hz")


def format_to_wire(fmt: AudioFormat, dialect: Dialect) -> dict[str, Any] | str:
    """The wire form of an audio format: ``{"type": "audio/pcm", "rate": 16000}`` (xai, openai)
    or ``"pcm16"`` / ``"g711_ulaw"`` (openai-beta)."""
    wire = WIRE_FORMATS[fmt.encoding]
    if dialect == "openai-beta":
        return wire.beta_name
    if wire.fixed_rate is None:
        return {"type": wire.ga_type, "rate": fmt.rate}
    return {"type": wire.ga_type}


def format_from_wire(value: Any) -> AudioFormat:
    """Read an audio format in any dialect's form (dict with ``type``/``rate``, or a beta
    string). Raises ValueError for something else."""
    if isinstance(value, str):
        enc = normalize_encoding(value)
        rate = None
    elif isinstance(value, Mapping) and isinstance(value.get("type"), str):
        enc = normalize_encoding(value["type"])
        raw = value.get("rate")
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool)):
            raise ValueError(f"audio format rate must be an integer, got {raw!r}")
        rate = raw
    else:
        raise ValueError(f"not an audio format: {value!r}")
    fixed = WIRE_FORMATS[enc].fixed_rate
    return AudioFormat(enc, fixed or rate or DEFAULT_PCM_RATE)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Server-side voice activity detection. ``type`` None means manual turns (the client
    commits and asks for responses)."""

    type: Literal["server_vad", "semantic_vad"] | None = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None

    def to_wire(self, dialect: Dialect) -> dict[str, Any] | None:
        if self.type is None:
            # xAI reads {"type": null} as "no VAD"; OpenAI wants the field null.
            return {"type": None} if dialect == "xai" else None
        out: dict[str, Any] = {"type": self.type}
        for key in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What one realtime session is asked to be. Build with the stage's parameters; the
    protocol turns it into the dialect's ``session.update``."""

    dialect: Dialect = "xai"
    model: str = "grok-voice-latest"
    voice: str = "ara"
    instructions: str | None = None
    input_format: AudioFormat = PCM24K
    output_format: AudioFormat = PCM24K
    turn_detection: TurnDetection = TurnDetection()
    tools: tuple[Mapping[str, Any], ...] = ()
    #: input transcription: None off; "" on with the server's default model; else the model
    transcription: str | None = None

    @property
    def server_vad(self) -> bool:
        return self.turn_detection.type is not None


def session_update_payload(config: SessionConfig) -> dict[str, Any]:
    """The ``session`` object of a ``session.update`` in ``config.dialect`` (spec 2.2 / 3.4)."""
    d = config.dialect
    td = config.turn_detection.to_wire(d)
    tools = [dict(t) for t in config.tools]
    transcription: dict[str, Any] | None = None
    if config.transcription is not None:
        transcription = {"model": config.transcription} if config.transcription else {}
    session: dict[str, Any]
    if d == "openai-beta":
        session = {"modalities": ["text", "audio"]}
        if config.instructions is not None:
            session["instructions"] = config.instructions
        session["voice"] = config.voice
        session["input_audio_format"] = format_to_wire(config.input_format, d)
        session["output_audio_format"] = format_to_wire(config.output_format, d)
        session["input_audio_transcription"] = transcription
        session["turn_detection"] = td
        session["tools"] = tools
        return session
    audio_in: dict[str, Any] = {"format": format_to_wire(config.input_format, d)}
    audio_out: dict[str, Any] = {"format": format_to_wire(config.output_format, d)}
    if d == "openai":
        session = {"type": "realtime", "model": config.model, "output_modalities": ["audio"]}
        if config.instructions is not None:
            session["instructions"] = config.instructions
        audio_in["transcription"] = transcription
        audio_in["turn_detection"] = td
        audio_out["voice"] = config.voice
        session["audio"] = {"input": audio_in, "output": audio_out}
        session["tools"] = tools
        return session
    # xai: voice and turn_detection at the top level; no type, model or temperature.
    session = {}
    if config.instructions is not None:
        session["instructions"] = config.instructions
    session["voice"] = config.voice
    session["turn_detection"] = td
    if transcription is not None:
        audio_in["transcription"] = transcription
    session["audio"] = {"input": audio_in, "output": audio_out}
    session["tools"] = tools
    return session


def session_formats(session: Mapping[str, Any]) -> tuple[AudioFormat | None, AudioFormat | None]:
    """The (input, output) audio formats in a session object of any dialect (None if absent)."""
    inp: Any = None
    out: Any = None
    audio = session.get("audio")
    if isinstance(audio, Mapping):
        a_in, a_out = audio.get("input"), audio.get("output")
        inp = a_in.get("format") if isinstance(a_in, Mapping) else None
        out = a_out.get("format") if isinstance(a_out, Mapping) else None
    inp = inp if inp is not None else session.get("input_audio_format")
    out = out if out is not None else session.get("output_audio_format")

    def read(v: Any) -> AudioFormat | None:
        if v is None:
            return None
        try:
            return format_from_wire(v)
        except ValueError:
            return None

    return read(inp), read(out)


# ----------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A server error, whatever its shape."""

    code: str
    message: str
    type: str = ""
    param: str | None = None
    event_id: str | None = None


def parse_error(event: Mapping[str, Any]) -> ErrorInfo:
    """Read an ``error`` event, nested (``{"error": {...}}``) or flat (fields at the top)."""
    err = event.get("error")
    src: Mapping[str, Any] = err if isinstance(err, Mapping) else event
    code = src.get("code")
    etype = src.get("type") if src is not event else None
    message = src.get("message")
    param = src.get("param", src.get("params"))
    if not isinstance(message, str) or not message:
        message = err if isinstance(err, str) and err else "no message"
    return ErrorInfo(
        code=str(code) if code else str(etype or "error"),
        message=str(message),
        type=str(etype or ""),
        param=None if param is None else str(param),
        event_id=src.get("event_id") if isinstance(src.get("event_id"), str) else None,
    )


def is_fatal_error(info: ErrorInfo) -> bool:
    """True for errors after which the session cannot go on (bad key, no quota, ...)."""
    return info.code in FATAL_ERROR_CODES or info.type in FATAL_ERROR_CODES


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """The server opened a session (``session.created`` or ``conversation.created``)."""

    session: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionReady:
    """``session.updated``: the configuration took effect; audio may flow."""

    session: Mapping[str, Any] = field(default_factory=dict)
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Server VAD heard speech start, ``audio_start_ms`` into the input audio."""

    audio_start_ms: int
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Server VAD heard speech end, ``audio_end_ms`` into the input audio."""

    audio_end_ms: int
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """The input buffer became user item ``item_id``."""

    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    """The model started response ``response_id``."""

    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """Response ``response_id`` ended with ``status`` (completed, cancelled, failed, ...)."""

    response_id: str
    status: str
    reason: str = ""
    call_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """Assistant audio, decoded from base64, in the session's output format. ``discarded``: the
    user barged in on this response; its audio is not to be played."""

    data: bytes
    response_id: str = ""
    item_id: str = ""
    discarded: bool = False


@dataclass(frozen=True, slots=True)
class AudioDone:
    """No more audio for item ``item_id``."""

    response_id: str = ""
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """A piece of a transcript: the user's (input transcription) or the assistant's."""

    role: Literal["user", "assistant"]
    text: str
    item_id: str = ""
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    """A whole transcript of one item."""

    role: Literal["user", "assistant"]
    text: str
    item_id: str = ""
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCallDone:
    """The model wants ``name`` called with ``arguments`` (JSON text). Emitted once per
    ``call_id``, after the arguments are complete."""

    call_id: str
    name: str
    arguments: str
    response_id: str = ""
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class Truncated:
    """The server cut item ``item_id`` at ``audio_end_ms``."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class RateLimits:
    """``rate_limits.updated`` (OpenAI only; informative, never waited for)."""

    limits: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` event. ``fatal``: the session cannot go on; ``benign``: a known race (cancel
    with nothing active), worth a debug line only."""

    code: str
    message: str
    type: str = ""
    param: str | None = None
    fatal: bool = False
    benign: bool = False


@dataclass(frozen=True, slots=True)
class Malformed:
    """A server message we cannot read (bad JSON, no type, bad base64). The session goes on."""

    reason: str
    excerpt: str = ""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message with no meaning for us (``ping``, an unknown or informational event)."""

    type: str


ProtocolEvent: TypeAlias = (
    SessionCreated
    | SessionReady
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | ResponseCreated
    | ResponseDone
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | FunctionCallDone
    | Truncated
    | RateLimits
    | ServerError
    | Malformed
    | Ignored
)

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
        self._outputs: set[str] = set()
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
            return [self._send({"type": "response.create"})]
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
        return tuple(c for c in self._calls if c not in self._outputs)

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

    def _send(self, message: dict[str, Any]) -> str:
        self._seq += 1
        text = dumps({"type": message.pop("type"), "event_id": f"c-{self._seq}", **message})
        self._outbox.append(text)
        return text

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
        self._updates_sent += 1
        return self._send(
            {"type": "session.update", "session": session_update_payload(self.config)}
        )

    def sync(self) -> str:
        """Queue a barrier: a ``session.update`` that changes nothing (an empty session; GA
        needs its ``type``). Servers handle client events in order, so once :attr:`synced` is
        true again every message sent before it was handled (the server's VAD has seen all the
        audio). An error answering it counts as the answer. Used at the end of the input."""
        session: dict[str, Any] = {"type": "realtime"} if self.config.dialect == "openai" else {}
        self._updates_sent += 1
        text = self._send({"type": "session.update", "session": session})
        self._sync_ids.add(f"c-{self._seq}")
        return text

    @property
    def synced(self) -> bool:
        """Every ``session.update`` sent has its ``session.updated``."""
        return self._updates_acked >= self._updates_sent

    def append_audio(self, data: bytes) -> str:
        """Queue ``input_audio_buffer.append`` with ``data`` (raw bytes in the input format).

        Raises SessionLocalError before ``session.updated`` (servers read such audio at their
        default rate) and for a byte count that is not whole samples."""
        if not self.ready:
            raise SessionLocalError(
                f"audio sent in state '{self.state}', before session.updated; hold it until the "
                "session is ready",
                code="audio_before_ready",
            )
        width = 2 if self.config.input_format.encoding == "pcm16" else 1
        if len(data) % width:
            raise SessionLocalError(
                f"{len(data)} bytes of {self.config.input_format.encoding} is not whole samples",
                code="partial_sample",
            )
        self._input_bytes_uncommitted += len(data)
        return self._send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()}
        )

    def commit(self) -> list[str]:
        """Queue ``input_audio_buffer.commit`` (manual turns). Nothing if no audio was appended
        since the last commit: the server would answer with an error."""
        if self._input_bytes_uncommitted == 0:
            return []
        self._input_bytes_uncommitted = 0
        return [self._send({"type": "input_audio_buffer.commit"})]

    def clear_input(self) -> str:
        """Queue ``input_audio_buffer.clear``."""
        self._input_bytes_uncommitted = 0
        return self._send({"type": "input_audio_buffer.clear"})

    def create_response(self) -> list[str]:
        """Ask for a response: ``response.create`` now, or once the response in flight is done
        (at most one is ever queued)."""
        return self._ask("ask")

    def send_text(
        self, text: str, role: Literal["user", "system", "assistant"] = "user"
    ) -> list[str]:
        """A typed turn: ``conversation.item.create`` (a message) then a response."""
        kind = "output_text" if role == "assistant" else "input_text"
        item = {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
        sent = [self._send({"type": "conversation.item.create", "item": item})]
        return sent + self.create_response()

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

        An output for a call this connection never emitted (e.g. from before a reconnect) or a
        second output for the same call sends nothing and returns []."""
        if call_id not in self._calls or call_id in self._outputs:
            return []
        self._outputs.add(call_id)
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        sent = [self._send({"type": "conversation.item.create", "item": item})]
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
        return self.create_response()

    def cancel_response(self) -> list[str]:
        """Queue ``response.cancel`` if a response is in flight."""
        if self._active is None:
            return []
        return [self._send({"type": "response.cancel", "response_id": self._active})]

    def truncate(self, item_id: str, audio_end_ms: int) -> str:
        """Queue ``conversation.item.truncate``: the assistant item was heard up to
        ``audio_end_ms``."""
        return self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": max(0, int(audio_end_ms)),
            }
        )

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

    def receive(self, message: str | bytes | Mapping[str, Any]) -> list[ProtocolEvent]:
        """The events one server message means. Never raises on the message's content."""
        if isinstance(message, Mapping):
            event: Any = message
        else:
            try:
                event = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                return [Malformed(f"not JSON ({exc})", _excerpt(message))]
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            return [Malformed("no event type", _excerpt(message))]
        name = canonical_event(event["type"])
        handler = _HANDLERS.get(name)
        if handler is None:
            return [Ignored(name)]
        try:
            out: list[ProtocolEvent] = handler(self, event)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            return [Malformed(f"{name}: {type(exc).__name__}: {exc}", _excerpt(message))]
        self._fire(name)
        return out

    def _on_session_created(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        session = ev.get("session") or ev.get("conversation") or {}
        return [SessionCreated(session if isinstance(session, Mapping) else {})]

    def _on_session_updated(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        self._updates_acked += 1
        session = ev.get("session")
        session = session if isinstance(session, Mapping) else {}
        inp, out = session_formats(session)
        return [SessionReady(session, inp, out)]

    def _on_speech_started(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        out = SpeechStarted(int(ev.get("audio_start_ms") or 0), str(ev.get("item_id") or ""))
        self.turn.fire("speech_started")
        return [out]

    def _on_speech_stopped(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        out = SpeechStopped(int(ev.get("audio_end_ms") or 0), str(ev.get("item_id") or ""))
        self._input_bytes_uncommitted = 0  # the server commits by itself
        self.turn.fire("speech_stopped")  # server VAD answers a finished turn
        return [out]

    def _on_committed(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        self._input_bytes_uncommitted = 0
        return [InputCommitted(str(ev.get("item_id") or ""))]

    def _on_item_added(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        # A user item may already carry its transcript (LK de-duplicates against the
        # transcription event); function_call items are only announced, never executed here.
        item = ev["item"]
        if item.get("type") == "message" and item.get("role") == "user":
            for part in item.get("content") or ():
                text = part.get("transcript") if isinstance(part, Mapping) else None
                if isinstance(text, str) and text:
                    return self._user_done(str(item.get("id") or ""), text)
        return [Ignored(ev["type"])]

    def _user_done(self, item_id: str, text: str) -> list[ProtocolEvent]:
        if item_id and item_id in self._user_final:
            return []
        if item_id:
            self._user_final.add(item_id)
        self._user_partial.pop(item_id, None)
        return [TranscriptDone("user", text, item_id)]

    def _user_partial_text(self, item_id: str, text: str) -> list[ProtocolEvent]:
        # Cumulative partials ("what's", "what's the") become deltas.
        if item_id in self._user_final:
            return []
        before = self._user_partial.get(item_id, "")
        self._user_partial[item_id] = text
        delta = text[len(before) :] if text.startswith(before) else text
        return [TranscriptDelta("user", delta, item_id)] if delta else []

    def _on_transcription_delta(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        item_id = str(ev.get("item_id") or "")
        delta = str(ev["delta"])
        if item_id in self._user_final or not delta:
            return []
        self._user_partial[item_id] = self._user_partial.get(item_id, "") + delta
        return [TranscriptDelta("user", delta, item_id)]

    def _on_transcription_updated(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        return self._user_partial_text(str(ev.get("item_id") or ""), str(ev["transcript"]))

    def _on_transcription_completed(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        item_id = str(ev.get("item_id") or "")
        text = str(ev["transcript"])
        if ev.get("status") == "in_progress":  # xAI partials (cumulative)
            return self._user_partial_text(item_id, text)
        return self._user_done(item_id, text)

    def _on_transcription_failed(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        info = parse_error(ev) if "error" in ev else ErrorInfo("transcription_failed", "failed")
        return [ServerError("transcription_failed", info.message, info.type)]

    def _on_response_created(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
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
        return [ResponseCreated(rid)]

    def _on_response_done(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        resp = ev.get("response")
        resp = resp if isinstance(resp, Mapping) else {}
        rid = str(resp.get("id") or ev.get("response_id") or self._active or "")
        status = str(resp.get("status") or "completed")
        details = resp.get("status_details")
        reason = ""
        if isinstance(details, Mapping):
            reason = str(details.get("reason") or details.get("type") or "")
        out: list[ProtocolEvent] = []
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
        out.append(ResponseDone(rid, status, reason, tuple(record.call_ids)))
        self._follow_up(rid)  # while the slot is busy, its ask joins the queued one
        if self._active == rid or self._active is None:
            self._active = None
            self._ask("done")
            self.barge.fire("done")
        return out

    def _on_audio_delta(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        data = binascii.a2b_base64(ev["delta"], strict_mode=True)
        item = str(ev.get("item_id") or "")
        self._audio_item = item
        self._audio_bytes[item] = self._audio_bytes.get(item, 0) + len(data)
        rid = str(ev.get("response_id") or "")
        cut = bool(self._cut) and (rid or self._last) == self._cut
        self.barge.fire("audio_cut" if cut else "audio")
        return [AudioDelta(data, rid, item, discarded=cut)]

    def _on_audio_done(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        return [AudioDone(str(ev.get("response_id") or ""), str(ev.get("item_id") or ""))]

    def _on_transcript_delta(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        delta = str(ev["delta"])
        if not delta:
            return []
        ids = str(ev.get("item_id") or ""), str(ev.get("response_id") or "")
        return [TranscriptDelta("assistant", delta, *ids)]

    def _on_transcript_done(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        text = ev.get("transcript", ev.get("text"))
        ids = str(ev.get("item_id") or ""), str(ev.get("response_id") or "")
        return [TranscriptDone("assistant", str(text or ""), *ids)]

    def _on_arguments_done(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        return self._call(
            str(ev.get("response_id") or self._active or ""),
            str(ev["call_id"]),
            str(ev.get("name") or ""),
            str(ev.get("arguments") or "{}"),
            str(ev.get("item_id") or ""),
        )

    def _call(
        self, response_id: str, call_id: str, name: str, arguments: str, item_id: str
    ) -> list[ProtocolEvent]:
        if call_id in self._calls:
            return []
        self._calls[call_id] = response_id
        record = self._record(response_id)
        record.calls.fire("call")
        record.call_ids.append(call_id)
        return [FunctionCallDone(call_id, name, arguments, response_id, item_id)]

    def _on_truncated(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        return [Truncated(str(ev.get("item_id") or ""), int(ev.get("audio_end_ms") or 0))]

    def _on_rate_limits(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        limits = ev.get("rate_limits") or ()
        return [RateLimits(tuple(x for x in limits if isinstance(x, Mapping)))]

    def _on_error(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        info = parse_error(ev)
        if info.event_id in self._sync_ids:  # the barrier was refused, but it was handled
            self._sync_ids.discard(info.event_id)
            self._updates_acked += 1
        if info.code == "conversation_already_has_active_response":
            # A response.create of ours lost a race with one the server started (its VAD):
            # ask again once that one is done.
            self._ask("refused")
        return [
            ServerError(
                info.code,
                info.message,
                info.type,
                info.param,
                fatal=is_fatal_error(info),
                benign=info.code in BENIGN_ERROR_CODES,
            )
        ]

    def _on_ignored(self, ev: Mapping[str, Any]) -> list[ProtocolEvent]:
        return [Ignored(canonical_event(ev["type"]))]


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
    "rate_limits.updated": RealtimeProtocol._on_rate_limits,
    "error": RealtimeProtocol._on_error,
}
for _name in SERVER_EVENTS - _HANDLERS.keys():
    _HANDLERS[_name] = RealtimeProtocol._on_ignored
