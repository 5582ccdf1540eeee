"""The Twilio ``parse_incoming`` as it was before its fast paths: a schema checker for every
message, with a short cut for a well-formed ``media`` read from the parsed object. Kept
unchanged as the reference that ``read_fast`` and today's ``parse_incoming`` are tested against
(tests/stages/telephony/test_twilio_wire.py); it builds the same message objects."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, TypeAlias

import orjson

from stages.telephony.twilio_wire import (
    MALFORMED,
    Connected,
    Dtmf,
    Inbound,
    Mark,
    Media,
    MediaFormat,
    Start,
    Stop,
    TwilioMessageError,
    UnsupportedFormat,
)

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
