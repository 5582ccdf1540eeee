"""The realtime wire codec: one module per dialect, shared by the client protocol
(:mod:`stages.realtime.protocol`) and the emulator (:mod:`stages.realtime.emulator`).

Theory of operation
-------------------
Everything a dialect spells its own way lives in its codec (:class:`DialectCodec`; modules
:mod:`.xai`, :mod:`.openai` for OpenAI GA, :mod:`.openai_beta`): the server event names it uses
for the canonical (GA) ones and back, the wire names and rates of audio formats both ways, the
session's ``to_wire`` (what a client sends), ``from_wire`` (what a strict server accepts, with
the real services' error wording) and the server's full session object, and the few places where
its server behaves differently. :class:`SessionConfig` is the one typed session model both sides
hold. Nothing here does I/O or keeps per-connection state.

Both sides speak the canonical model and let the codec translate at the edge: the client
protocol sends typed client events (:mod:`.client`) through ``codec.encode_client`` and reads
server messages through ``codec.decode_server``; the emulator reads client messages through
``codec.decode_client`` and sends its canonical server events through ``codec.encode_server``.
For the OpenAI family these are a rename at most; a dialect of another family (Gemini Live's
``setup`` / ``realtimeInput`` / ``serverContent``) overrides the four hooks and maps its
messages onto the same events.

Adding a dialect: a module with a :class:`DialectCodec` subclass and its ``CODEC``, and an entry
in :mod:`.registry` (``Dialect`` and ``CODECS``).
"""

from __future__ import annotations

from .base import DialectCodec
from .errors import (
    BENIGN_ERROR_CODES,
    FATAL_ERROR_CODES,
    ErrorInfo,
    WireError,
    error_event,
    is_fatal_error,
    parse_error,
)
from .events import CLIENT_EVENT_ALIASES, CLIENT_EVENTS, RESPONSE_STATUSES, SERVER_EVENTS
from .formats import (
    DEFAULT_PCM_RATE,
    FORMAT_ALIASES,
    PCM24K,
    WIRE_FORMATS,
    WireFormat,
    format_from_wire,
    normalize_encoding,
    session_formats,
)
from .openai import OPENAI_VOICES
from .registry import CODECS, DIALECT_ALIASES, DIALECTS, Dialect, codec, normalize_dialect
from .session import SessionConfig, TurnDetection
from .xai import XAI_VOICES

#: Incoming event names of every dialect -> the canonical (OpenAI GA) name.
EVENT_ALIASES: dict[str, str] = {
    wire: canonical for c in CODECS.values() for canonical, wire in c.server_names.items()
}


def canonical_event(name: str) -> str:
    """The canonical (GA) name of an incoming server event name, in any dialect."""
    return EVENT_ALIASES.get(name, name)


__all__ = [
    "BENIGN_ERROR_CODES",
    "CLIENT_EVENTS",
    "CLIENT_EVENT_ALIASES",
    "CODECS",
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
    "Dialect",
    "DialectCodec",
    "ErrorInfo",
    "SessionConfig",
    "TurnDetection",
    "WireError",
    "WireFormat",
    "canonical_event",
    "codec",
    "error_event",
    "format_from_wire",
    "is_fatal_error",
    "normalize_dialect",
    "normalize_encoding",
    "parse_error",
    "session_formats",
]
