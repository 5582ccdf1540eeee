"""Typed server events, as a client reads them in any dialect (canonical names, decoded audio,
one :class:`FunctionCallDoneEvent` per call).

:class:`~stages.realtime.protocol.RealtimeProtocol` turns each server message into these. Every
name ends in ``Event`` so none is mistaken for a frame of the same idea
(:class:`pipeline.frames.SpeechStarted` is what a stage emits; :class:`SpeechStartedEvent` is
what the server said), and :class:`ErrorEvent` is data, not an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from pipeline.frames import AudioFormat

#: The event a bridge hands the protocol when the model withdraws tool calls (``call_ids``):
#: Gemini's ``toolCallCancellation`` (:mod:`stages.realtime.wire.gemini`). No Realtime service
#: sends it; it is the bridge's name.
CALLS_CANCELLED = "function_calls.cancelled"


@dataclass(frozen=True, slots=True)
class SessionCreatedEvent:
    """The server opened a session (``session.created`` or ``conversation.created``)."""

    session: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionReadyEvent:
    """``session.updated``: the configuration took effect; audio may flow."""

    session: Mapping[str, Any] = field(default_factory=dict)
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None


@dataclass(frozen=True, slots=True)
class SpeechStartedEvent:
    """Server VAD heard speech start, ``audio_start_ms`` into the input audio."""

    audio_start_ms: int
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStoppedEvent:
    """Server VAD heard speech end, ``audio_end_ms`` into the input audio."""

    audio_end_ms: int
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class InputCommittedEvent:
    """The input buffer became user item ``item_id``."""

    item_id: str


@dataclass(frozen=True, slots=True)
class ResponseCreatedEvent:
    """The model started response ``response_id``."""

    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseDoneEvent:
    """Response ``response_id`` ended with ``status`` (completed, cancelled, failed, ...)."""

    response_id: str
    status: str
    reason: str = ""
    call_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AudioDeltaEvent:
    """Assistant audio, decoded from base64, in the session's output format. ``discarded``: the
    user barged in on this response; its audio is not to be played."""

    data: bytes
    response_id: str = ""
    item_id: str = ""
    discarded: bool = False


@dataclass(frozen=True, slots=True)
class AudioDoneEvent:
    """No more audio for item ``item_id``."""

    response_id: str = ""
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptDeltaEvent:
    """A piece of a transcript: the user's (input transcription) or the assistant's."""

    role: Literal["user", "assistant"]
    text: str
    item_id: str = ""
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptDoneEvent:
    """A whole transcript of one item."""

    role: Literal["user", "assistant"]
    text: str
    item_id: str = ""
    response_id: str = ""


@dataclass(frozen=True, slots=True)
class FunctionCallDoneEvent:
    """The model wants ``name`` called with ``arguments`` (JSON text). Emitted once per
    ``call_id``, after the arguments are complete."""

    call_id: str
    name: str
    arguments: str
    response_id: str = ""
    item_id: str = ""


@dataclass(frozen=True, slots=True)
class CallsCancelledEvent:
    """The model withdrew tool calls it had asked for (Gemini's ``toolCallCancellation``, when
    the caller interrupts): no output is owed for them. ``calls`` holds (call_id, name) of the
    calls still owed; ids already answered or unknown are left out."""

    calls: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class TruncatedEvent:
    """The server cut item ``item_id`` at ``audio_end_ms``."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class RateLimitsEvent:
    """``rate_limits.updated`` (OpenAI only; informative, never waited for)."""

    limits: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An ``error`` event. ``fatal``: the session cannot go on; ``benign``: a known race (cancel
    with nothing active), worth a debug line only."""

    code: str
    message: str
    type: str = ""
    param: str | None = None
    fatal: bool = False
    benign: bool = False


@dataclass(frozen=True, slots=True)
class MalformedEvent:
    """A server message we cannot read (bad JSON, no type, bad base64). The session goes on."""

    reason: str
    excerpt: str = ""


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """A message with no meaning for us (``ping``, an unknown or informational event)."""

    type: str


ServerEvent: TypeAlias = (
    SessionCreatedEvent
    | SessionReadyEvent
    | SpeechStartedEvent
    | SpeechStoppedEvent
    | InputCommittedEvent
    | ResponseCreatedEvent
    | ResponseDoneEvent
    | AudioDeltaEvent
    | AudioDoneEvent
    | TranscriptDeltaEvent
    | TranscriptDoneEvent
    | FunctionCallDoneEvent
    | CallsCancelledEvent
    | TruncatedEvent
    | RateLimitsEvent
    | ErrorEvent
    | MalformedEvent
    | IgnoredEvent
)
