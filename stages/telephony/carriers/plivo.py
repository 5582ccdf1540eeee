"""Plivo audio streams (``<Stream bidirectional="true">``).

Wire facts, from Plivo's documentation of the AudioStream XML element and its WebSocket events:
JSON text frames with camelCase fields; Plivo sends ``start`` (``start: {callId, streamId,
accountId, tracks, mediaFormat: {encoding, sampleRate}}``), ``media`` (``media: {track,
timestamp, chunk, payload}``), ``dtmf``, ``playedStream`` (the answer to our ``checkpoint``:
everything sent before it has played) and ``clearedAudio``; each may carry ``extra_headers``
(the ``extraHeaders`` of the XML). We send ``playAudio`` (``media: {contentType,
sampleRate, payload}``), ``checkpoint`` (``streamId``, ``name``) and ``clearAudio``
(``streamId``). Formats (``contentType``): ``audio/x-mulaw;rate=8000``, ``audio/x-l16;rate=8000``
and ``audio/x-l16;rate=16000`` (little-endian PCM16). Plivo sends no stop message: the socket
closes when the call or the stream ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pipeline.frames import AudioFormat

from ..twilio import Connected, Dtmf, Inbound, Mark, Media, MediaFormat, Start
from .base import (
    Carrier,
    CarrierMessageError,
    CarrierSide,
    Outgoing,
    Wire,
    b64,
    check_fields,
    dumps,
    envelope,
    load_json,
    unb64,
)

__all__ = ["Plivo", "PlivoSide"]

_TYPE = {"pcmu": "audio/x-mulaw", "pcm16": "audio/x-l16"}
_FROM_TYPE = {v: k for k, v in _TYPE.items()}
_EXTRA = {"extra_headers?": "str"}
#: the envelope of every message Plivo sends after start
_TOP = {"event": "str", "sequenceNumber": "int", "streamId": "str", **_EXTRA}


class Plivo(Carrier):
    name: ClassVar[str] = "plivo"
    formats: ClassVar[tuple[AudioFormat, ...]] = (
        AudioFormat("pcmu", 8000),
        AudioFormat("pcm16", 8000),
        AudioFormat("pcm16", 16000),
    )

    def __init__(self, fmt: AudioFormat | None = None) -> None:
        super().__init__(fmt)
        self._stream = ""

    def parse(self, raw: Wire) -> list[Inbound]:
        d = load_json(raw, "plivo")
        event = d.get("event")
        match event:
            case "start":
                check_fields(
                    d, {"event": "str", "sequenceNumber": "int", "start": "dict", **_EXTRA}, "start"
                )
                s = check_fields(
                    d["start"],
                    {
                        "callId": "str",
                        "streamId": "str",
                        "accountId": "str",
                        "tracks": "list",
                        "mediaFormat": "dict",
                    },
                    "start.start",
                )
                mf = check_fields(
                    s["mediaFormat"], {"encoding": "str", "sampleRate": "int"}, "mediaFormat"
                )
                fmt = AudioFormat(_FROM_TYPE.get(mf["encoding"], mf["encoding"]), mf["sampleRate"])
                if fmt != self.format:
                    raise CarrierMessageError(
                        f"plivo: the stream carries {mf['encoding']} {mf['sampleRate']} Hz; "
                        f"this pipeline expects {self.format}"
                    )
                self._stream = s["streamId"]
                params = _headers(d.get("extra_headers", ""))
                return [
                    Connected("Call", "plivo"),
                    Start(
                        s["streamId"],
                        s["callId"],
                        s["accountId"],
                        tuple(s["tracks"]),
                        params,
                        MediaFormat(mf["encoding"], mf["sampleRate"], 1),
                        d["sequenceNumber"],
                    ),
                ]
            case "media":
                m = envelope(
                    d,
                    _TOP,
                    "media",
                    {"track": "str", "timestamp": "digits", "chunk": "int", "payload": "str"},
                )
                payload = unb64(m["payload"], "media.media.payload")
                return [
                    Media(
                        d["streamId"],
                        payload,
                        int(m["timestamp"]),
                        m["chunk"],
                        m["track"],
                        d["sequenceNumber"],
                    )
                ]
            case "dtmf":
                t = envelope(d, _TOP, "dtmf", {"track?": "str", "digit": "str"})
                return [Dtmf(d["streamId"], t["digit"], "inbound", d["sequenceNumber"])]
            case "playedStream":
                check_fields(d, {**_TOP, "name": "str"}, "playedStream")
                return [Mark(d["streamId"], d["name"], d["sequenceNumber"])]
            case "clearedAudio":
                check_fields(d, _TOP, "clearedAudio")
                return []
        raise CarrierMessageError(f"plivo: unknown event {event!r}")

    def media(self, stream_id: str, chunk: bytes) -> Wire:
        media = {
            "contentType": _TYPE[self.format.encoding],
            "sampleRate": self.format.rate,
            "payload": b64(chunk),
        }
        return dumps({"event": "playAudio", "media": media})

    def mark(self, stream_id: str, name: str) -> Wire:
        return dumps({"event": "checkpoint", "streamId": stream_id, "name": name})

    def clear(self, stream_id: str) -> Wire:
        return dumps({"event": "clearAudio", "streamId": stream_id})


def _headers(text: str) -> dict[str, str]:
    """``extraHeaders`` (``k1=v1,k2=v2``) as a mapping."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


class PlivoSide(CarrierSide):
    carrier = Plivo
    seq_key = "sequenceNumber"
    stream_key = "streamId"
    seq_as_text = False

    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        start = {
            "event": "start",
            "sequenceNumber": self.next_seq(),
            "start": {
                "callId": self.call_id,
                "streamId": self.stream_id,
                "accountId": "MAXXXXXXXXXXXXXXXXXX",
                "tracks": ["inbound"],
                "mediaFormat": {
                    "encoding": _TYPE[self.format.encoding],
                    "sampleRate": self.format.rate,
                },
            },
            "extra_headers": ",".join(f"{k}={v}" for k, v in parameters.items()),
        }
        return [dumps(start)]

    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        media = {
            "track": "inbound",
            "timestamp": str(timestamp_ms),
            "chunk": chunk,
            "payload": b64(payload),
        }
        return self.frame("media", media=media)

    def dtmf(self, digit: str) -> Wire:
        return self.frame("dtmf", dtmf={"track": "inbound", "digit": digit})

    def mark_played(self, name: str) -> Wire:
        return self.frame("playedStream", name=name)

    def stop(self) -> Wire | None:
        return None

    def read(self, raw: Wire) -> Outgoing:
        d = load_json(raw, "plivo")
        match d.get("event"):
            case "playAudio":
                check_fields(d, {"event": "str", "media": "dict"}, "playAudio")
                m = check_fields(
                    d["media"],
                    {"contentType": "str", "sampleRate": "int", "payload": "str"},
                    "playAudio.media",
                )
                want = (_TYPE[self.format.encoding], self.format.rate)
                if (m["contentType"], m["sampleRate"]) != want:
                    raise CarrierMessageError(
                        f"plivo: playAudio of {m['contentType']} {m['sampleRate']} Hz on a "
                        f"{want[0]} {want[1]} Hz stream"
                    )
                return ("media", unb64(m["payload"], "playAudio.media.payload"))
            case "checkpoint":
                check_fields(d, {"event": "str", "streamId": "str", "name": "str"}, "checkpoint")
                if d["streamId"] != self.stream_id:
                    raise CarrierMessageError(f"plivo: checkpoint for stream {d['streamId']!r}")
                return ("mark", d["name"])
            case "clearAudio":
                check_fields(d, {"event": "str", "streamId": "str"}, "clearAudio")
                if d["streamId"] != self.stream_id:
                    raise CarrierMessageError(f"plivo: clearAudio for stream {d['streamId']!r}")
                return ("clear", None)
        raise CarrierMessageError(f"plivo: unknown outgoing event {d.get('event')!r}")
