"""Telephony over Twilio Media Streams: the message model, the outgoing chunker, and the two
stages of a call leg (``twilio_source``, ``twilio_sink``).

Theory of operation
-------------------
Twilio opens one WebSocket per call (``<Connect><Stream url=...>``) and talks JSON text frames:
``connected``, ``start``, then ``media`` every 20 ms (base64 μ-law, 8 kHz, mono), ``dtmf``,
``mark`` (the echo of a mark we sent, once the audio before it has played) and ``stop``. We send
``media`` (audio to play), ``mark`` (tell me when you get here) and ``clear`` (barge-in: drop what
you have buffered). Every field is checked: a message with a missing, unknown or ill-typed field
is refused with a :class:`TwilioMessageError` naming the field, as Twilio itself does (31950
"Malformed Message" for a binary frame or bad JSON, 31951 "Invalid Message" for the rest).

The pure, synchronous core (no event loop, no socket):

* :func:`parse_incoming` / :func:`parse_outgoing` read one message each way into frozen value
  objects (:class:`Connected`, :class:`Start`, :class:`Media`, :class:`Dtmf`, :class:`Mark`,
  :class:`Stop`; :class:`OutMedia`, :class:`Mark`, :class:`Clear`); ``encode(msg)`` writes one.
* :class:`Playout` cuts outgoing audio into chunks of ``chunk_ms`` (20–50 ms), follows each
  ``media`` with a ``mark``, and keeps the marks not yet echoed. An echo moves the *heard*
  position (media time of the end of the last chunk the caller has heard); ``clear()`` forgets
  every pending mark and the partial chunk, and returns the ``clear`` message and the heard
  position, which the session truncates the assistant's turn at.

The I/O edge: one :class:`TwilioCall` per connection holds the stream's state. The server (see
:mod:`stages.telephony.serve`) creates it, pumps the socket's messages into ``receive()``, and runs
a fresh pipeline with the call bound to the context (:func:`bind_call`): both stages find it with
:func:`current_call`. A context variable is the smallest clean mechanism: ``asyncio`` copies the
context into every task the runner creates, so the stages of one call see that call and no other,
and the runtime needs no new slot. ``twilio_source`` emits the caller's audio (``pcmu`` 8000 Hz,
``pts`` from the media timestamps) and ends on ``stop`` or when the socket closes; ``twilio_sink``
sends audio back and publishes :class:`~pipeline.context.Played` on the bus as marks come back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import orjson

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import FormatError, PipelineError, StageError, UsageError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt, ResponseDone, Text
from pipeline.spec import Interface, stage
from pipeline.tasks import StageTasks

from .control import Playback

if TYPE_CHECKING:
    from .carriers.base import Carrier

__all__ = [
    "CALL",
    "MULAW_FORMAT",
    "AnsweredBy",
    "Clear",
    "Connected",
    "Dtmf",
    "Inbound",
    "LatenessMeter",
    "Mark",
    "Media",
    "MediaFormat",
    "OutMedia",
    "Outbound",
    "Playout",
    "Start",
    "Stop",
    "TwilioCall",
    "TwilioMessageError",
    "answered_by_text",
    "bind_call",
    "current_call",
    "encode",
    "parse_incoming",
    "parse_outgoing",
    "twilio_sink",
    "twilio_source",
]

#: The only audio a bidirectional Twilio stream carries.
MULAW_FORMAT = AudioFormat("pcmu", 8000, 1)
RATE = 8000
MALFORMED = 31950
INVALID = 31951


class TwilioMessageError(PipelineError):
    """A Twilio Media Streams message that breaks the protocol. ``code`` is Twilio's own error
    number for it: 31950 (malformed: not a JSON text frame) or 31951 (invalid: a field missing,
    unknown, ill-typed, or a wrong ``streamSid``)."""

    def __init__(self, message: str, code: int = INVALID) -> None:
        self.code = code
        super().__init__(message)


# ---------------------------------------------------------------------------- message model


@dataclass(frozen=True, slots=True)
class MediaFormat:
    """The ``start.mediaFormat`` of a stream (always μ-law 8 kHz mono for ``<Connect>``)."""

    encoding: str = "audio/x-mulaw"
    sample_rate: int = RATE
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Connected:
    """Twilio's first message on a new stream."""

    event: Literal["connected"] = field(default="connected", init=False)
    protocol: str = "Call"
    version: str = "1.0.0"


@dataclass(frozen=True, slots=True)
class Start:
    """The stream's metadata: who is calling (``call_sid``) and the TwiML ``<Parameter>``s."""

    event: Literal["start"] = field(default="start", init=False)
    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    media_format: MediaFormat = field(default_factory=MediaFormat)
    sequence_number: int = 1


@dataclass(frozen=True, slots=True)
class Media:
    """A chunk of the caller's audio: μ-law bytes, ``timestamp`` in ms since the stream began."""

    event: Literal["media"] = field(default="media", init=False)
    stream_sid: str = ""
    payload: bytes = b""
    timestamp: int = 0
    chunk: int = 1
    track: str = "inbound"
    sequence_number: int = 0

    @property
    def pts(self) -> float:
        return self.timestamp / 1000


@dataclass(frozen=True, slots=True)
class Dtmf:
    """The caller pressed a key."""

    event: Literal["dtmf"] = field(default="dtmf", init=False)
    stream_sid: str = ""
    digit: str = ""
    track: str = "inbound_track"
    sequence_number: int = 0


@dataclass(frozen=True, slots=True)
class Mark:
    """A named point in the outgoing audio. Sent by us (``sequence_number`` None); echoed by
    Twilio (with its ``sequenceNumber``) once everything sent before it has played."""

    event: Literal["mark"] = field(default="mark", init=False)
    stream_sid: str = ""
    name: str = ""
    sequence_number: int | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The call ended (the caller hung up, or the stream was stopped)."""

    event: Literal["stop"] = field(default="stop", init=False)
    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    sequence_number: int = 0


@dataclass(frozen=True, slots=True)
class OutMedia:
    """Audio for Twilio to play: μ-law 8 kHz bytes (sent base64, no header)."""

    event: Literal["media"] = field(default="media", init=False)
    stream_sid: str = ""
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Clear:
    """Drop every buffered outgoing sample (barge-in)."""

    event: Literal["clear"] = field(default="clear", init=False)
    stream_sid: str = ""


Inbound: TypeAlias = Connected | Start | Media | Dtmf | Mark | Stop
Outbound: TypeAlias = OutMedia | Mark | Clear

# A schema is a mapping of field name -> kind; a name ending in "?" is optional. A kind is a
# nested schema, or one of: "str", "digits" (a string of decimal digits), "base64", "int",
# "strmap" (string -> string object), "strlist" (list of strings).
_Schema: TypeAlias = Mapping[str, Any]

_SEQ = {"sequenceNumber": "digits"}
_IN_SCHEMAS: dict[str, _Schema] = {
    "connected": {"event": "str", "protocol": "str", "version": "str"},
    "start": {
        "event": "str",
        **_SEQ,
        "streamSid": "str",
        "start": {
            "streamSid": "str",
            "accountSid?": "str",
            "callSid": "str",
            "tracks?": "strlist",
            "customParameters?": "strmap",
            "mediaFormat": {"encoding": "str", "sampleRate": "int", "channels": "int"},
        },
    },
    "media": {
        "event": "str",
        **_SEQ,
        "streamSid": "str",
        "media": {"track?": "str", "chunk": "digits", "timestamp": "digits", "payload": "base64"},
    },
    "dtmf": {
        "event": "str",
        **_SEQ,
        "streamSid": "str",
        "dtmf": {"track?": "str", "digit": "str"},
    },
    "mark": {"event": "str", **_SEQ, "streamSid": "str", "mark": {"name": "str"}},
    "stop": {
        "event": "str",
        **_SEQ,
        "streamSid": "str",
        "stop": {"accountSid?": "str", "callSid": "str"},
    },
}
_OUT_SCHEMAS: dict[str, _Schema] = {
    "media": {"event": "str", "streamSid": "str", "media": {"payload": "base64"}},
    "mark": {"event": "str", "streamSid": "str", "mark": {"name": "str"}},
    "clear": {"event": "str", "streamSid": "str"},
}


def _load(raw: str | bytes, direction: str) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise TwilioMessageError(
            f"{direction} message is a binary frame of {len(raw)} bytes; "
            "Twilio Media Streams messages are JSON text frames",
            MALFORMED,
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise TwilioMessageError(
            f"{direction} message of {len(raw)} characters is not valid JSON ({exc})", MALFORMED
        ) from None
    if not isinstance(data, dict):
        raise TwilioMessageError(
            f"{direction} message must be a JSON object, got {type(data).__name__}", MALFORMED
        )
    return data


class _Compiled:
    """A schema made ready for checking many messages fast: the key sets are computed once,
    so a well-formed message costs two set comparisons and one conversion per field."""

    __slots__ = ("allowed", "fields", "required", "where")

    def __init__(self, schema: _Schema, where: str) -> None:
        self.where = where
        self.fields: list[tuple[str, Any, str]] = []
        required = []
        for key, kind in schema.items():
            name = key.rstrip("?")
            path = f"{where}.{name}" if where else name
            sub = _Compiled(kind, path) if isinstance(kind, Mapping) else kind
            self.fields.append((name, sub, path))
            if not key.endswith("?"):
                required.append(name)
        self.allowed = frozenset(f[0] for f in self.fields)
        self.required = frozenset(required)


def _check(obj: Mapping[str, Any], schema: _Compiled) -> dict[str, Any]:
    """Check ``obj`` against ``schema`` (exact key set) and return the converted values."""
    keys = obj.keys()
    if not keys <= schema.allowed:
        extra = next(k for k in obj if k not in schema.allowed)
        allowed = ", ".join(f[0] for f in schema.fields)
        raise TwilioMessageError(f"{schema.where}: unknown field '{extra}' (allowed: {allowed})")
    if not schema.required <= keys:
        missing = next(f[2] for f in schema.fields if f[0] in schema.required and f[0] not in obj)
        raise TwilioMessageError(f"missing field '{missing}'")
    out: dict[str, Any] = {}
    for key, kind, path in schema.fields:
        if key in obj:
            out[key] = _value(obj[key], kind, path)
    return out


def _value(v: Any, kind: Any, name: str) -> Any:
    if type(kind) is _Compiled:
        if not isinstance(v, dict):
            raise TwilioMessageError(f"field '{name}' must be an object, got {_kind(v)}")
        return _check(v, kind)
    if kind == "str":
        if type(v) is not str:
            raise TwilioMessageError(f"field '{name}' must be a string, got {_kind(v)} {v!r}")
        return v
    if kind == "digits":
        if type(v) is not str or not v.isdigit() or not v.isascii():
            raise TwilioMessageError(
                f"field '{name}' must be a string of digits (Twilio sends numbers as strings), "
                f"got {_kind(v)} {v!r}"
            )
        return int(v)
    if kind == "base64":
        if type(v) is not str:
            raise TwilioMessageError(f"field '{name}' must be a base64 string, got {_kind(v)}")
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise TwilioMessageError(
                f"field '{name}' is not valid base64 ({len(v)} characters)"
            ) from None
    if kind == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise TwilioMessageError(f"field '{name}' must be an integer, got {_kind(v)} {v!r}")
        return v
    if kind == "strmap":  # values are never quoted: a <Parameter> may hold a secret
        if not isinstance(v, dict):
            raise TwilioMessageError(f"field '{name}' must be an object of strings, got {_kind(v)}")
        for key, x in v.items():
            if not isinstance(x, str):
                raise TwilioMessageError(
                    f"field '{name}.{key}' must be a string (an object of strings), got {_kind(x)}"
                )
        return dict(v)
    if kind == "strlist":
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise TwilioMessageError(
                f"field '{name}' must be a list of strings, got {_kind(v)} {v!r}"
            )
        return tuple(v)
    raise AssertionError(kind)


_IN = {event: _Compiled(schema, "") for event, schema in _IN_SCHEMAS.items()}
_OUT = {event: _Compiled(schema, "") for event, schema in _OUT_SCHEMAS.items()}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(v), type(v).__name__
    )


def _event(data: Mapping[str, Any], schemas: Mapping[str, _Schema], direction: str) -> str:
    event = data.get("event")
    if not isinstance(event, str):
        raise TwilioMessageError(
            f"{direction} message has no 'event' string (its fields: {', '.join(map(str, data))})"
        )
    if event not in schemas:
        raise TwilioMessageError(
            f"unknown {direction} event '{event}' (expected one of {', '.join(schemas)})"
        )
    return event


_MEDIA_TOP = frozenset(("event", "sequenceNumber", "streamSid", "media"))
_MEDIA_KEYS = frozenset(("track", "chunk", "timestamp", "payload"))


def _fast_media(data: dict[str, Any]) -> Media | None:
    """A well-formed ``media`` message (50 a second per call) read without the general
    checker; anything unusual returns None and takes the checked path, which names the fault."""
    if data.keys() != _MEDIA_TOP or data["event"] != "media":
        return None
    m = data["media"]
    if type(m) is not dict or m.keys() != _MEDIA_KEYS:
        return None
    seq, chunk, ts, sid, track, payload = (
        data["sequenceNumber"], m["chunk"], m["timestamp"], data["streamSid"], m["track"],
        m["payload"],
    )  # fmt: skip
    for v in (seq, chunk, ts):
        if type(v) is not str or not v.isdigit() or not v.isascii():
            return None
    if type(sid) is not str or type(track) is not str or type(payload) is not str:
        return None
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Media(sid, audio, int(ts), int(chunk), track, int(seq))


def parse_incoming(raw: str | bytes) -> Inbound:
    """Read one message from Twilio. Raises :class:`TwilioMessageError` naming the first field
    that is missing, unknown or ill-typed, and for a media format other than μ-law 8 kHz mono."""
    data = _load(raw, "incoming")
    fast = _fast_media(data)
    if fast is not None:
        return fast
    event = _event(data, _IN_SCHEMAS, "incoming")
    v = _check(data, _IN[event])
    seq = v.get("sequenceNumber", 0)
    match event:
        case "connected":
            return Connected(protocol=v["protocol"], version=v["version"])
        case "start":
            s = v["start"]
            mf = s["mediaFormat"]
            fmt = MediaFormat(mf["encoding"], mf["sampleRate"], mf["channels"])
            if fmt != MediaFormat():
                raise TwilioMessageError(
                    f"start.mediaFormat is {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels}; "
                    "a bidirectional stream carries audio/x-mulaw 8000 Hz x1"
                )
            if s["streamSid"] != v["streamSid"]:
                raise TwilioMessageError(
                    f"start.streamSid {s['streamSid']!r} differs from streamSid {v['streamSid']!r}"
                )
            return Start(
                stream_sid=v["streamSid"],
                call_sid=s["callSid"],
                account_sid=s.get("accountSid", ""),
                tracks=s.get("tracks", ("inbound",)),
                custom_parameters=s.get("customParameters", {}),
                media_format=fmt,
                sequence_number=seq,
            )
        case "media":
            m = v["media"]
            return Media(
                stream_sid=v["streamSid"],
                payload=m["payload"],
                timestamp=m["timestamp"],
                chunk=m["chunk"],
                track=m.get("track", "inbound"),
                sequence_number=seq,
            )
        case "dtmf":
            d = v["dtmf"]
            return Dtmf(v["streamSid"], d["digit"], d.get("track", "inbound_track"), seq)
        case "mark":
            return Mark(v["streamSid"], v["mark"]["name"], seq)
        case _:
            s = v["stop"]
            return Stop(v["streamSid"], s["callSid"], s.get("accountSid", ""), seq)


def parse_outgoing(raw: str | bytes) -> Outbound:
    """Read one message sent to Twilio (what a Twilio emulator checks): ``media``, ``mark`` or
    ``clear``, with exactly their fields."""
    data = _load(raw, "outgoing")
    event = _event(data, _OUT_SCHEMAS, "outgoing")
    v = _check(data, _OUT[event])
    if event == "media":
        return OutMedia(v["streamSid"], v["media"]["payload"])
    if event == "mark":
        return Mark(v["streamSid"], v["mark"]["name"])
    return Clear(v["streamSid"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode(msg: Inbound | Outbound) -> str:
    """One message as the JSON text Twilio sends or expects (numbers as strings)."""
    seq = str(getattr(msg, "sequence_number", None) or "")
    d: dict[str, Any]
    match msg:
        case Connected():
            d = {"event": "connected", "protocol": msg.protocol, "version": msg.version}
        case Start():
            mf = msg.media_format
            d = {
                "event": "start",
                "sequenceNumber": seq,
                "streamSid": msg.stream_sid,
                "start": {
                    "streamSid": msg.stream_sid,
                    "accountSid": msg.account_sid,
                    "callSid": msg.call_sid,
                    "tracks": list(msg.tracks),
                    "customParameters": dict(msg.custom_parameters),
                    "mediaFormat": {
                        "encoding": mf.encoding,
                        "sampleRate": mf.sample_rate,
                        "channels": mf.channels,
                    },
                },
            }
        case Media():
            d = {
                "event": "media",
                "sequenceNumber": seq,
                "streamSid": msg.stream_sid,
                "media": {
                    "track": msg.track,
                    "chunk": str(msg.chunk),
                    "timestamp": str(msg.timestamp),
                    "payload": _b64(msg.payload),
                },
            }
        case Dtmf():
            d = {
                "event": "dtmf",
                "sequenceNumber": seq,
                "streamSid": msg.stream_sid,
                "dtmf": {"track": msg.track, "digit": msg.digit},
            }
        case Mark():
            d = {"event": "mark", "streamSid": msg.stream_sid, "mark": {"name": msg.name}}
            if msg.sequence_number is not None:
                d = {"event": "mark", "sequenceNumber": seq, **d}
        case Stop():
            d = {
                "event": "stop",
                "sequenceNumber": seq,
                "streamSid": msg.stream_sid,
                "stop": {"accountSid": msg.account_sid, "callSid": msg.call_sid},
            }
        case OutMedia():
            d = {
                "event": "media",
                "streamSid": msg.stream_sid,
                "media": {"payload": _b64(msg.payload)},
            }
        case Clear():
            d = {"event": "clear", "streamSid": msg.stream_sid}
    return orjson.dumps(d).decode()


# ---------------------------------------------------------------------------- outgoing audio


class LatenessMeter:
    """How late each outgoing chunk is for a caller who plays audio as it arrives.

    The caller's player starts a chunk when it arrives or when the previous one has finished,
    whichever is later. A chunk that continues a stretch of audio (its media time follows on
    from the previous chunk) and arrives after the player ran dry is late by the gap the caller
    hears; the first chunk of a stretch is never late (when a reply starts is a matter of
    response latency, not of lateness)."""

    __slots__ = ("play_end",)

    def __init__(self) -> None:
        self.play_end: float | None = None

    def chunk(self, now: float, duration: float, continues: bool) -> float:
        """Account a chunk of ``duration`` s sent at ``now``; return its lateness in seconds."""
        late = 0.0
        start = now
        if continues and self.play_end is not None:
            late = max(0.0, now - self.play_end)
            start = max(now, self.play_end)
        self.play_end = start + duration
        return late

    def reset(self) -> None:
        self.play_end = None


class Playout:
    """The outgoing side of a stream: audio in, ``media`` + ``mark`` messages out, and what the
    caller has heard so far.

    ``push(data, pts, now)`` buffers μ-law bytes and returns the messages for every full chunk
    (``chunk_ms`` of audio each, 20–50 ms). ``flush(now)`` sends the partial chunk left over (at
    the end of a response). A chunk whose media time does not follow on from the buffered audio
    flushes the buffer first, so a chunk never spans two stretches of audio. Each ``media`` is
    followed by a ``mark`` named ``"<n>"``; :meth:`mark_echoed` takes Twilio's echo and returns
    the new heard position (the media time at the end of that chunk). :meth:`clear` (barge-in)
    drops the partial chunk and every pending mark and returns the ``clear`` message (if anything
    was still unplayed) and the heard position.
    """

    def __init__(
        self,
        stream_sid: str,
        *,
        chunk_ms: int = 20,
        on_chunk: Callable[[float], None] | None = None,
        on_sent: Callable[[str, bytes], None] | None = None,
        carrier: Carrier | None = None,
    ) -> None:
        if not 20 <= chunk_ms <= 200:
            raise UsageError(f"chunk_ms must be between 20 and 200, got {chunk_ms}")
        fmt = carrier.format if carrier is not None else MULAW_FORMAT
        if carrier is not None and carrier.frame_ms is not None and chunk_ms != carrier.frame_ms:
            raise UsageError(f"{carrier.name} takes media in {carrier.frame_ms} ms frames only")
        self.stream_sid = stream_sid
        self.carrier = carrier  # None: Twilio, written by encode()
        self.bps = fmt.bytes_per_second
        self.sample_bytes = fmt.bytes_per_second // fmt.rate
        self.chunk_bytes = self.bps * chunk_ms // 1000
        # a partial chunk is padded with silence up to this (carriers with a minimum or a frame)
        self.pad_bytes = 0
        if carrier is not None:
            self.pad_bytes = self.bps * (carrier.frame_ms or carrier.min_chunk_ms) // 1000
        self.on_chunk = on_chunk
        self.on_sent = on_sent  # (mark name, chunk): a recorder's view of what was sent
        self._buf = bytearray()
        self._buf_pts = 0.0
        self._next_pts: float | None = None  # media time right after the last chunk sent
        self._mark_seq = 0
        self.pending: deque[tuple[str, float]] = deque()  # (mark name, end pts), oldest first
        self.heard_pts: float | None = None
        self.meter = LatenessMeter()
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.clears_sent = 0

    @property
    def buffered(self) -> int:
        """Bytes held back until a full chunk (or a flush)."""
        return len(self._buf)

    def push(self, data: bytes, pts: float, now: float = 0.0) -> list[Any]:
        """Buffer ``data`` (the stream's format, media time ``pts``); the messages for every
        full chunk."""
        out: list[Any] = []
        if self._buf and abs(pts - (self._buf_pts + len(self._buf) / self.bps)) > 0.5e-3:
            out += self.flush(now)
        if not self._buf:
            self._buf_pts = pts
        self._buf += data
        n = self.chunk_bytes
        if len(data) % self.sample_bytes:
            raise ValueError(f"{len(data)} bytes is not a whole number of samples")
        while len(self._buf) >= n:
            self._send(bytes(self._buf[:n]), now, out)
            del self._buf[:n]
        return out

    def flush(self, now: float = 0.0) -> list[Any]:
        """The messages for the partial chunk, if any."""
        out: list[Any] = []
        if self._buf:
            self._send(bytes(self._buf), now, out)
            self._buf.clear()
        return out

    def _send(self, chunk: bytes, now: float, out: list[Any]) -> None:
        pts = self._buf_pts
        if len(chunk) < self.pad_bytes and self.carrier is not None:
            chunk += self.carrier.silence(self.pad_bytes - len(chunk))
        dur = len(chunk) / self.bps
        continues = self._next_pts is not None and abs(pts - self._next_pts) <= 0.5e-3
        late = self.meter.chunk(now, dur, continues)
        if self.on_chunk is not None:
            self.on_chunk(late)
        self._mark_seq += 1
        name = str(self._mark_seq)
        end = pts + dur
        self._buf_pts = end
        self._next_pts = end
        self.pending.append((name, end))
        if self.on_sent is not None:
            self.on_sent(name, chunk)
        if self.carrier is None:
            out.append(encode(OutMedia(self.stream_sid, chunk)))
            out.append(encode(Mark(self.stream_sid, name)))
        else:
            out.append(self.carrier.media(self.stream_sid, chunk))
            out.append(self.carrier.mark(self.stream_sid, name))
        self.bytes_sent += len(chunk)
        self.chunks_sent += 1

    def mark_echoed(self, name: str) -> float | None:
        """Twilio played up to mark ``name``: the new heard position, or None for a mark that
        is not pending (an echo after a ``clear``)."""
        if not any(n == name for n, _ in self.pending):
            return None
        while self.pending:
            n, end = self.pending.popleft()
            if n == name:
                self.heard_pts = end
                return end
        raise AssertionError("unreachable")

    def clear(self) -> tuple[list[Any], float | None]:
        """Barge-in: forget the partial chunk and the pending marks. Returns the ``clear``
        message (none if nothing was unplayed) and the heard position."""
        out: list[Any] = []
        if self.pending or self._buf:
            if self.carrier is None:
                out.append(encode(Clear(self.stream_sid)))
            else:
                out.append(self.carrier.clear(self.stream_sid))
            self.clears_sent += 1
        self.pending.clear()
        self._buf.clear()
        self._next_pts = None
        self.meter.reset()
        return out, self.heard_pts


# ---------------------------------------------------------------------------- the call


class _Closed:
    """The socket closed without a ``stop``."""


@dataclass(frozen=True, slots=True)
class AnsweredBy:
    """Answering-machine detection's verdict for this call (Twilio's ``AnsweredBy``:
    ``human``, ``machine_start``, ``machine_end_beep``, ``fax``, ``unknown``...)."""

    value: str


def answered_by_text(value: str) -> str:
    """The text the model reads for a verdict of answering-machine detection."""
    if value.startswith("machine_end"):
        hint = "the greeting has ended: leave your message now, then end the call"
    elif value.startswith("machine"):
        hint = "an answering machine is playing its greeting"
    elif value == "human":
        hint = "a person answered"
    else:
        hint = "it is not known who answered"
    return f"[call answered by: {value}] {hint}"


_CLOSED = _Closed()
#: sink reports kept for a recorder that has not attached yet (a few seconds of audio)
_JOURNAL_MAX = 512
SendFn = Callable[[Any], Awaitable[None]]


class TwilioCall:
    """One phone call's media stream, shared by its ``twilio_source`` and ``twilio_sink``.

    The server creates it with the connection's ``send`` and feeds every message it reads to
    :meth:`receive`, then runs the call's pipeline under :func:`bind_call`. ``started`` is set by
    the ``start`` message (``start`` then holds the call's metadata). Media, dtmf and stop wait
    in a bounded queue for the source (back-pressure: the reader waits when it is full, so no
    audio is dropped); mark echoes go straight to the sink's handler. Bad messages are logged,
    counted in ``bad_messages`` and skipped, as Twilio does with ours.
    """

    def __init__(
        self,
        send: SendFn,
        *,
        queue_size: int = 64,
        log: Any = None,
        on_lateness: Callable[[float], None] | None = None,
        carrier: Carrier | None = None,
    ) -> None:
        import structlog

        self._send = send
        #: the carrier's dialect (None: Twilio's, read by parse_incoming)
        self.carrier = carrier
        self.format = carrier.format if carrier is not None else MULAW_FORMAT
        self.log = log if log is not None else structlog.get_logger("pipeline.twilio")
        self.start: Start | None = None
        self.started = asyncio.Event()
        self.ended = asyncio.Event()  # stop received or socket closed
        self.inbound: asyncio.Queue[Media | Dtmf | Stop | AnsweredBy | _Closed] = asyncio.Queue(
            queue_size
        )
        #: what the caller has heard of the replies (fed by twilio_sink, read by end_call)
        self.playback = Playback()
        #: end of the caller audio received so far, ms on the stream's clock
        self.media_end_ms = 0
        #: recorders of the call (see attach_tap)
        self.taps: list[Any] = []
        # what the sink reported before a recorder attached (stages start in any order)
        self._journal: list[tuple[str, tuple[Any, ...]]] | None = []
        self.on_mark: Callable[[str], None] | None = None
        self.on_lateness = on_lateness
        self.connected = False
        self.closed = False
        self.bad_messages = 0
        self.sent_after_close = 0
        self.messages_in = 0
        self.messages_out = 0
        self._send_lock = asyncio.Lock()

    @property
    def stream_sid(self) -> str:
        return self.start.stream_sid if self.start is not None else ""

    @property
    def call_sid(self) -> str:
        return self.start.call_sid if self.start is not None else ""

    def check(self, msg: Inbound) -> None:
        """Stream-level rules: ``connected`` then ``start`` first, one ``streamSid`` after."""
        if isinstance(msg, Connected):
            if self.connected or self.start is not None:
                raise TwilioMessageError("'connected' arrived twice or after 'start'")
            return
        if isinstance(msg, Start):
            if self.start is not None:
                raise TwilioMessageError("'start' arrived twice")
            return
        if self.start is None:
            raise TwilioMessageError(f"'{msg.event}' arrived before 'start'")
        if msg.stream_sid != self.start.stream_sid:
            raise TwilioMessageError(
                f"'{msg.event}' has streamSid {msg.stream_sid!r}; "
                f"this stream is {self.start.stream_sid!r}"
            )

    async def receive(self, raw: str | bytes) -> None:
        """Take one message read from the socket."""
        self.messages_in += 1
        try:
            if self.carrier is None:
                msgs: list[Inbound] = [parse_incoming(raw)]
            else:
                msgs = self.carrier.parse(raw)
        except TwilioMessageError as exc:
            self.bad_messages += 1
            self.log.warning("bad twilio message skipped", code=exc.code, error=str(exc))
            return
        for msg in msgs:
            try:
                self.check(msg)
            except TwilioMessageError as exc:
                self.bad_messages += 1
                self.log.warning("bad twilio message skipped", code=exc.code, error=str(exc))
                continue
            await self._take(msg)

    async def _take(self, msg: Inbound) -> None:
        match msg:
            case Media():
                self.media_end_ms = (
                    msg.timestamp + len(msg.payload) * 1000 // self.format.bytes_per_second
                )
                await self.inbound.put(msg)
            case Dtmf():
                await self.inbound.put(msg)
            case Mark():
                if self.on_mark is not None:
                    self.on_mark(msg.name)
            case Stop():
                self.ended.set()
                await self.inbound.put(msg)
            case Start():
                self.start = msg
                self.started.set()
            case Connected():
                self.connected = True

    def connection_closed(self) -> None:
        """The socket is gone: the source ends, and what the sink sends is discarded."""
        self.closed = True
        self.ended.set()
        with contextlib.suppress(Exception):
            self.inbound.put_nowait(_CLOSED)

    def attach_tap(self, tap: Any) -> None:
        """Add a recorder: it gets ``sent(name, payload, at_ms)``, ``echoed(name)`` and
        ``cleared(at_ms)`` from the sink, starting with what happened before it attached."""
        for method, args in self._journal or ():
            getattr(tap, method)(*args)
        self._journal = None
        self.taps.append(tap)

    def _tap(self, method: str, *args: Any) -> None:
        if self.taps:
            for tap in self.taps:
                getattr(tap, method)(*args)
        elif self._journal is not None:
            self._journal.append((method, args))
            if len(self._journal) > _JOURNAL_MAX:  # no recorder is coming
                self._journal = None

    def tap_sent(self, name: str, payload: bytes) -> None:
        self._tap("sent", name, payload, self.media_end_ms)

    def tap_echoed(self, name: str) -> None:
        self._tap("echoed", name)

    def tap_cleared(self) -> None:
        self._tap("cleared", self.media_end_ms)

    def end(self) -> None:
        """The call is over on the carrier's side (the agent hung up or transferred it): the
        source ends now, without waiting for Twilio's ``stop``."""
        self.ended.set()
        with contextlib.suppress(Exception):
            self.inbound.put_nowait(_CLOSED)

    def deliver_answered_by(self, value: str) -> bool:
        """Hand answering-machine detection's verdict to the source; False if it cannot take
        it (the call has ended, or its queue is full)."""
        if self.ended.is_set():
            return False
        try:
            self.inbound.put_nowait(AnsweredBy(value))
        except asyncio.QueueFull:
            return False
        return True

    async def next_inbound(self) -> Media | Dtmf | Stop | AnsweredBy | None:
        """The next caller message for the source; None once the socket has closed."""
        item = await self.inbound.get()
        return None if isinstance(item, _Closed) else item

    async def send(self, messages: list[Any]) -> None:
        """Send messages in order (one batch is never interleaved with another); after the
        socket has closed they are counted and dropped."""
        if not messages:
            return
        async with self._send_lock:
            await self._send_all(messages)

    async def _send_all(self, messages: list[Any]) -> None:
        for text in messages:
            if self.closed:
                self.sent_after_close += 1
                continue
            try:
                await self._send(text)
                self.messages_out += 1
            except Exception as exc:  # the connection went away under us
                self.log.debug("send failed; call closed", error=str(exc))
                self.closed = True
                self.sent_after_close += 1


#: What the two stages of a call leg take from the host running the pipeline: the call of one
#: connection, bound by ``pipeline serve`` (:func:`bind_call`).
CALL: Interface[TwilioCall] = Interface(
    "twilio call", "the phone call of one connection, bound by pipeline serve"
)

_CURRENT: contextvars.ContextVar[TwilioCall | None] = contextvars.ContextVar(
    "twilio_call", default=None
)


@contextlib.contextmanager
def bind_call(call: TwilioCall) -> Iterator[TwilioCall]:
    """Run a pipeline for ``call``: tasks started inside (the runner's) see it."""
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)


def current_call(stage_id: str = "") -> TwilioCall:
    """The call this pipeline runs for (see :func:`bind_call`)."""
    call = _CURRENT.get()
    if call is None:
        raise StageError(
            stage_id or "twilio",
            "no phone call to attach to: twilio_source/twilio_sink run inside "
            "'pipeline serve FILE NAME', one pipeline per call",
        )
    return call


# ---------------------------------------------------------------------------- stages


def _source_format(_params: Mapping[str, Any], _fmt: AudioFormat | None) -> AudioFormat:
    return MULAW_FORMAT


@stage("twilio_source", emits=(Audio, Text), output_format=_source_format, uses=(CALL,))
async def twilio_source(
    *, dtmf: Literal["ignore", "text"] = "ignore", ctx: StageContext
) -> AsyncIterator[Frame]:
    """The caller's audio from a Twilio Media Stream (pcmu 8000 Hz, pts from Twilio's
    timestamps); ends when the call stops or the socket closes.

    Parameters:
        dtmf: ignore key presses (logged only), or pass each as text "DTMF <digit>" (role user)
    """
    async for frame in call_audio(ctx, dtmf, MULAW_FORMAT, "twilio_source"):
        yield frame


async def call_audio(
    ctx: StageContext, dtmf: str, fmt: AudioFormat, stage_type: str
) -> AsyncIterator[Frame]:
    """The body of a call's source stage: the caller's audio in ``fmt`` (checked against the
    call's), key presses, answering-machine verdicts; ends with the call."""
    call = current_call(ctx.id)
    if call.format != fmt:
        raise StageError(
            ctx.id,
            f"{stage_type} expects {fmt} audio but this call's stream carries {call.format}; "
            "set the stage's carrier/encoding/rate to match the carrier's stream",
        )
    answered = call.start.custom_parameters.get("answered_by") if call.start else None
    if answered:  # detection ran before the answer (MachineDetection without AsyncAmd)
        ctx.log.info("answered by", answered_by=answered)
        yield Text(answered_by_text(answered), "system")
    encoding, rate = fmt.encoding, fmt.rate
    while True:
        with ctx.waiting():  # waiting for the carrier is not work
            msg = await call.next_inbound()
        match msg:
            case Media():
                yield Audio(msg.payload, encoding, rate, 1, msg.pts)
            case AnsweredBy():
                ctx.log.info("answered by", answered_by=msg.value)
                yield Text(answered_by_text(msg.value), "system")
            case Dtmf():
                ctx.log.info("dtmf", digit=msg.digit)
                if dtmf == "text":
                    yield Text(f"DTMF {msg.digit}", "user")
            case _:  # Stop, or the socket closed
                return


def _sink_format(_params: Mapping[str, Any], fmt: AudioFormat | None) -> None:
    if fmt is not None and fmt != MULAW_FORMAT:
        fix = "add {type: g711_encode, law: ulaw} before it"
        if fmt.rate != RATE:
            fix = "add {type: resample, rate: 8000} and {type: g711_encode, law: ulaw} before it"
        elif fmt.encoding == "pcmu":
            fix = "mix it down to one channel"
        raise FormatError(f"gets {fmt} audio; a Twilio stream plays pcmu 8000 Hz mono (μ-law)", fix)


@stage(
    "twilio_sink",
    accepts=(Audio, Interrupt, ResponseDone),
    output_format=_sink_format,
    publishes=(PLAYED,),
    uses=(CALL,),
)
async def twilio_sink(
    frames: AsyncIterator[Frame],
    *,
    chunk_ms: Literal[20, 30, 40, 50] = 20,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Audio back to the caller over the Twilio Media Stream, each chunk followed by a mark;
    ``interrupt`` sends ``clear``. Publishes what the caller has heard (``played``) as marks
    come back, so the session can truncate its turn there.

    Parameters:
        chunk_ms: milliseconds of audio per media message (20 to 50)
    """
    await play_to_call(frames, ctx, chunk_ms, MULAW_FORMAT, "twilio_sink")
    return
    yield  # an async generator that yields nothing


async def play_to_call(
    frames: AsyncIterator[Frame],
    ctx: StageContext,
    chunk_ms: int,
    fmt: AudioFormat,
    stage_type: str,
) -> None:
    """The body of a call's sink stage: audio in ``fmt`` to the caller in ``chunk_ms`` chunks,
    each followed by a mark; ``interrupt`` clears; ``played`` published as marks come back."""
    call = current_call(ctx.id)
    clock = ctx.clock
    if call.format != fmt:
        raise StageError(
            ctx.id,
            f"{stage_type} plays {fmt} audio but this call's stream carries {call.format}; "
            "set the stage's carrier/encoding/rate to match the carrier's stream",
        )
    playout = Playout(
        call.stream_sid,
        chunk_ms=chunk_ms,
        on_chunk=call.on_lateness,
        on_sent=call.tap_sent,
        carrier=call.carrier,
    )
    hold_s = chunk_ms / 1000
    last_push = [0.0]
    wake = asyncio.Event()

    def on_mark(name: str) -> None:
        heard = playout.mark_echoed(name)
        if heard is not None:
            ctx.bus.publish(PLAYED, Played(ctx.id, heard))
            call.playback.changed()
            call.tap_echoed(name)

    call.playback.attach(lambda: not playout.pending and not playout.buffered)

    async def flusher() -> None:
        # A partial chunk waits at most one chunk's duration for more audio, then goes out
        # short: the end of a reply is not held back until the next one.
        while True:
            await wake.wait()
            wake.clear()
            while playout.buffered:
                due = last_push[0] + hold_s
                if clock.now() < due:
                    await clock.sleep_until(due)
                    continue
                await call.send(playout.flush(clock.now()))

    call.on_mark = on_mark
    try:
        async with StageTasks[None](ctx) as tasks:
            tasks.start(flusher(), name="flush")
            async for frame in frames:
                tasks.check()  # a failed flush (the socket went away) fails the stage
                match frame:
                    case Audio():
                        if frame.format != fmt:
                            raise FormatError(
                                f"stage '{ctx.id}' ({stage_type}) got {frame.format} audio; "
                                f"the call's stream plays {fmt}",
                                "convert it before the stage (resample, g711_encode/decode)",
                            )
                        now = clock.now()
                        await call.send(playout.push(frame.data, frame.pts, now))
                        if playout.buffered:
                            last_push[0] = now
                            wake.set()
                    case Interrupt():
                        msgs, heard = playout.clear()
                        await call.send(msgs)
                        if msgs:
                            ctx.log.debug("barge-in: clear sent", heard_pts=heard)
                        if heard is not None:
                            ctx.bus.publish(PLAYED, Played(ctx.id, heard))
                        call.playback.changed()
                        call.tap_cleared()
                    case ResponseDone():
                        await call.send(playout.flush(clock.now()))
                        call.playback.response_done(frame.response_id)
            await call.send(playout.flush(clock.now()))
    finally:
        call.on_mark = None
        ctx.report("chunks_sent", playout.chunks_sent)
        ctx.report("clears_sent", playout.clears_sent)
