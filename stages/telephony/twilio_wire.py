"""The Twilio Media Streams wire: the message model both ways, strict parsing and encoding.

Pure and synchronous (no event loop, no socket). :func:`parse_incoming` / :func:`parse_outgoing`
read one message each way into frozen value objects (:class:`Connected`, :class:`Start`,
:class:`Media`, :class:`Dtmf`, :class:`Mark`, :class:`Stop`; :class:`OutMedia`, :class:`Mark`,
:class:`Clear`); :func:`encode` writes one. Every field is checked: a message with a missing,
unknown or ill-typed field is refused with a :class:`TwilioMessageError` naming the field, as
Twilio itself does (31950 "Malformed Message" for a binary frame or bad JSON, 31951 "Invalid
Message" for the rest). :func:`read_fast` reads the two messages that make up nearly all the
traffic (``media`` and the ``mark`` echo) without building a message object, and gives way to
:func:`parse_incoming` for anything unusual. :mod:`stages.telephony.twilio` builds the call and
the stages on it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import orjson

from pipeline.errors import PipelineError
from pipeline.frames import AudioFormat
from stages.realtime.wire.b64 import decode_strict as b64_decode

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


class UnsupportedFormat(TwilioMessageError):
    """A ``start`` whose ``mediaFormat`` the pipeline cannot take: the stream is refused."""


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
        try:
            return int(v)
        except ValueError:  # more digits than int() reads (sys.get_int_max_str_digits())
            raise TwilioMessageError(
                f"field '{name}' is a number of {len(v)} digits; Twilio's have at most 20"
            ) from None
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


# The fast paths. A ``media`` message (50 a second per call) and a ``mark`` echo (one per mark
# sent) make up nearly all the traffic; each is read here with a handful of type checks and no
# intermediate objects. Anything unusual (a missing, extra or ill-typed field, bad base64, a
# number too long for the fast path) returns None and takes the checked path, which gives the
# same result or names the fault: tests/stages/telephony/test_twilio_wire.py holds the two
# to the same answer for any message (Hypothesis), against the plain checked parser.

_loads = orjson.loads
_MAX_FAST_DIGITS = 40  # longer numbers (all three of a media together) take the checked path


def read_fast(raw: str | bytes) -> tuple[str, bytes, int] | tuple[str, str] | None:
    """The two messages that make up nearly all of Twilio's traffic, read fast:
    ``(streamSid, audio, timestamp)`` for a well-formed ``media``, ``(streamSid, name)`` for a
    well-formed ``mark`` echo, exactly as :func:`parse_incoming` reads them; None for anything
    else (then call :func:`parse_incoming`, which reads it or names the fault). Never raises."""
    if raw.__class__ is not str:
        return None
    try:
        d = _loads(raw)
    except ValueError:  # orjson.JSONDecodeError
        return None
    return _fast(d)


def _fast(d: Any) -> tuple[str, bytes, int] | tuple[str, str] | None:
    # Few calls and no intermediate objects: every call counts at 50 messages a second per call.
    if d.__class__ is not dict or len(d) != 4:
        return None
    try:
        event = d["event"]
        seq = d["sequenceNumber"]
        sid = d["streamSid"]
        if event == "media":
            m = d["media"]
            if m.__class__ is not dict or len(m) != 4:
                return None
            track = m["track"]
            chunk = m["chunk"]
            ts = m["timestamp"]
            payload = m["payload"]
        elif event == "mark":
            m = d["mark"]
            if m.__class__ is not dict or len(m) != 1:
                return None
            name = m["name"]
            if not (
                seq
                and seq.__class__ is str
                and seq.isdigit()
                and seq.isascii()
                and len(seq) <= _MAX_FAST_DIGITS
                and sid.__class__ is str
                and name.__class__ is str
            ):
                return None
            return sid, name
        else:
            return None
    except KeyError:
        return None
    # seq, chunk and ts are strings of ASCII digits: joined, they are one (str + anything but a
    # str raises TypeError; a list + list is no str), and none is empty
    try:
        digits = seq + chunk + ts
    except TypeError:
        return None
    if not (
        seq
        and chunk
        and ts
        and digits.__class__ is str
        and digits.isdigit()
        and digits.isascii()
        and len(digits) <= _MAX_FAST_DIGITS
        and sid.__class__ is str
        and track.__class__ is str
        and payload.__class__ is str
    ):
        return None
    try:
        audio = b64_decode(payload)  # what b64decode(validate=True) does (a2b_base64 strict)
    except ValueError:  # binascii.Error, or a string that is not ASCII
        return None
    return sid, audio, int(ts)


def parse_incoming(raw: str | bytes) -> Inbound:
    """Read one message from Twilio. Raises :class:`TwilioMessageError` naming the first field
    that is missing, unknown or ill-typed, and for a media format other than μ-law 8 kHz mono."""
    data = _load(raw, "incoming")
    fast = _fast(data)
    if fast is not None:
        seq = int(data["sequenceNumber"])
        if len(fast) == 3:
            m = data["media"]
            return Media(fast[0], fast[1], fast[2], int(m["chunk"]), m["track"], seq)
        return Mark(fast[0], fast[1], seq)
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
                raise UnsupportedFormat(
                    f"start.mediaFormat is {fmt.encoding} {fmt.sample_rate} Hz x{fmt.channels}; "
                    "this pipeline takes audio/x-mulaw 8000 Hz x1 (a bidirectional stream's "
                    "format)"
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
