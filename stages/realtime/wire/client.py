"""Typed client events: what a client sends, the same in every dialect (only the ``session`` of
``session.update`` differs, and :class:`~.session.SessionConfig` writes it).

A client builds one and sends ``encode(event, event_id)``; a strict server reads a message with
:func:`decode`, which raises :class:`~.errors.WireError` with the real services' wording for
what cannot be one (no item, bad base64, half a sample, a negative ``audio_end_ms``). What
depends on the conversation (does that item exist?) is the server's to check.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import orjson

from . import b64
from .errors import WireError, bad_value, missing_parameter
from .session import SessionConfig

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """``session.update``: ``session`` in the dialect's shape (``SessionConfig.to_wire()``)."""

    type: ClassVar[str] = "session.update"
    session: Mapping[str, Any]

    def to_wire(self) -> Json:
        return {"session": dict(self.session)}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> SessionUpdate:
        value = event.get("session")
        if not isinstance(value, Mapping):
            raise missing_parameter("session")
        return cls(value)


@dataclass(frozen=True, slots=True)
class InputAudioBufferAppend:
    """``input_audio_buffer.append``: raw bytes in the session's input format."""

    type: ClassVar[str] = "input_audio_buffer.append"
    audio: bytes

    def to_wire(self) -> Json:
        return {"audio": b64.encode(self.audio)}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> InputAudioBufferAppend:
        audio = event.get("audio")
        fmt = session.input_format
        try:
            if not isinstance(audio, str):
                raise ValueError
            data = base64.b64decode(audio, validate=True)
            if fmt.encoding == "pcm16" and len(data) % 2:
                raise ValueError
        except (binascii.Error, ValueError):
            what = "mono PCM16" if fmt.encoding == "pcm16" else f"mono {fmt.encoding}"
            khz = fmt.rate // 1000 if fmt.rate % 1000 == 0 else fmt.rate / 1000
            raise WireError(
                "invalid_value",
                f"Invalid 'audio'. Expected base64-encoded audio bytes ({what} at {khz}kHz) but "
                "got an invalid value.",
                "audio",
            ) from None
        return cls(data)


@dataclass(frozen=True, slots=True)
class InputAudioBufferCommit:
    """``input_audio_buffer.commit``: the buffer becomes a user item (manual turns)."""

    type: ClassVar[str] = "input_audio_buffer.commit"

    def to_wire(self) -> Json:
        return {}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> InputAudioBufferCommit:
        return cls()


@dataclass(frozen=True, slots=True)
class InputAudioBufferClear:
    """``input_audio_buffer.clear``: drop the uncommitted input."""

    type: ClassVar[str] = "input_audio_buffer.clear"

    def to_wire(self) -> Json:
        return {}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> InputAudioBufferClear:
        return cls()


@dataclass(frozen=True, slots=True)
class ConversationItemCreate:
    """``conversation.item.create``: a message, a function call or a function call's output."""

    type: ClassVar[str] = "conversation.item.create"
    item: Mapping[str, Any]

    def to_wire(self) -> Json:
        return {"item": dict(self.item)}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> ConversationItemCreate:
        item = event.get("item")
        if not isinstance(item, Mapping):
            raise missing_parameter("item")
        return cls(item)


@dataclass(frozen=True, slots=True)
class ConversationItemTruncate:
    """``conversation.item.truncate``: the assistant item was heard up to ``audio_end_ms``."""

    type: ClassVar[str] = "conversation.item.truncate"
    item_id: str
    audio_end_ms: int
    content_index: int = 0

    def to_wire(self) -> Json:
        return {
            "item_id": self.item_id,
            "content_index": self.content_index,
            "audio_end_ms": self.audio_end_ms,
        }

    @classmethod
    def from_wire(
        cls, event: Mapping[str, Any], session: SessionConfig
    ) -> ConversationItemTruncate:
        end = event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise bad_value("audio_end_ms", end)
        index = event.get("content_index", 0)
        return cls(str(event.get("item_id")), end, index if isinstance(index, int) else 0)


@dataclass(frozen=True, slots=True)
class ConversationItemDelete:
    """``conversation.item.delete``."""

    type: ClassVar[str] = "conversation.item.delete"
    item_id: str

    def to_wire(self) -> Json:
        return {"item_id": self.item_id}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> ConversationItemDelete:
        return cls(str(event.get("item_id")))


@dataclass(frozen=True, slots=True)
class ConversationItemRetrieve:
    """``conversation.item.retrieve`` (OpenAI only)."""

    type: ClassVar[str] = "conversation.item.retrieve"
    item_id: str

    def to_wire(self) -> Json:
        return {"item_id": self.item_id}

    @classmethod
    def from_wire(
        cls, event: Mapping[str, Any], session: SessionConfig
    ) -> ConversationItemRetrieve:
        return cls(str(event.get("item_id")))


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    """``response.create``; ``response`` overrides for this response (modalities, ...)."""

    type: ClassVar[str] = "response.create"
    response: Mapping[str, Any] = field(default_factory=dict)

    def to_wire(self) -> Json:
        return {"response": dict(self.response)} if self.response else {}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> ResponseCreate:
        params = event.get("response") or {}
        if not isinstance(params, Mapping):
            raise bad_value("response", params)
        return cls(params)


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    """``response.cancel``: of ``response_id``, or of whatever response is in flight."""

    type: ClassVar[str] = "response.cancel"
    response_id: str | None = None

    def to_wire(self) -> Json:
        return {} if self.response_id is None else {"response_id": self.response_id}

    @classmethod
    def from_wire(cls, event: Mapping[str, Any], session: SessionConfig) -> ResponseCancel:
        rid = event.get("response_id")
        return cls(None if rid is None else str(rid))


ClientEvent: TypeAlias = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemTruncate
    | ConversationItemDelete
    | ConversationItemRetrieve
    | ResponseCreate
    | ResponseCancel
)

_Reader = Callable[[Mapping[str, Any], SessionConfig], ClientEvent]
#: wire name -> the reader of that event
READERS: dict[str, _Reader] = {
    cls.type: cls.from_wire
    for cls in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemTruncate,
        ConversationItemDelete,
        ConversationItemRetrieve,
        ResponseCreate,
        ResponseCancel,
    )
}


def encode(event: ClientEvent, event_id: str) -> str:
    """The message text of ``event`` with ``event_id`` (compact JSON: type, event_id, fields)."""
    return orjson.dumps({"type": event.type, "event_id": event_id, **event.to_wire()}).decode()


_APPEND_HEAD = '{"type":"input_audio_buffer.append","event_id":'


def encode_append(audio: bytes, event_id: str) -> str:
    """``encode(InputAudioBufferAppend(audio), event_id)``, character for character, without the
    event object and the dict: the message is a fixed head, the id, and the base64 (which needs
    no JSON escaping). An id JSON would escape (a quote, a backslash, a control character) is
    quoted by orjson, as in the dict."""
    if event_id.isprintable() and '"' not in event_id and "\\" not in event_id:
        return f'{_APPEND_HEAD}"{event_id}","audio":"{b64.encode(audio)}"}}'
    quoted = orjson.dumps(event_id).decode()
    return f'{_APPEND_HEAD}{quoted},"audio":"{b64.encode(audio)}"}}'


def decode(event: Mapping[str, Any], session: SessionConfig) -> ClientEvent:
    """The typed event of a decoded client message whose ``type`` the server takes (check that
    first, against the dialect's ``client_events``), read in the context of ``session``."""
    return READERS[str(event["type"])](event, session)
