"""Exotel AgentStream (the Voicebot applet: a bidirectional stream).

Wire facts, from Exotel's documentation of the AgentStream WebSocket protocol: JSON text
frames with snake_case fields (``stream_sid``, ``sequence_number``); Exotel sends ``connected``,
``start`` (``start: {stream_sid, call_sid, account_sid, from, to, custom_parameters,
media_format: {encoding, sample_rate, bit_rate}}``, the rate as a string), ``media`` (``media:
{chunk, timestamp, payload}``), ``dtmf`` (``digit``, ``duration``), ``mark`` (the echo) and
``stop``. Audio is raw 16-bit little-endian PCM, mono, base64, at 8 kHz (16 or 24 kHz when
asked with ``?sample-rate=``). We send ``media``, ``mark`` and ``clear``, each with
``stream_sid``; media chunks are multiples of 320 bytes and at least 100 ms long (the
documentation's "3.2k [100 ms]"; 1600 bytes at 8 kHz): a shorter tail is padded with silence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pipeline.frames import AudioFormat

from ..twilio import Connected, Dtmf, Inbound, Mark, Media, MediaFormat, Start, Stop
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

__all__ = ["Exotel", "ExotelSide"]

_TOP = {"event": "str", "sequence_number": "digits", "stream_sid": "str"}
#: what we send: the event and the stream's id
_OUT = {"event": "str", "stream_sid": "str"}
MIN_CHUNK_MS = 100
CHUNK_MULTIPLE = 320


class Exotel(Carrier):
    name: ClassVar[str] = "exotel"
    formats: ClassVar[tuple[AudioFormat, ...]] = (
        AudioFormat("pcm16", 8000),
        AudioFormat("pcm16", 16000),
        AudioFormat("pcm16", 24000),
    )
    min_chunk_ms: ClassVar[int] = MIN_CHUNK_MS

    def parse(self, raw: Wire) -> list[Inbound]:
        d = load_json(raw, "exotel")
        event = d.get("event")
        match event:
            case "connected":
                check_fields(d, {"event": "str"}, "connected")
                return [Connected("Call", "exotel")]
            case "start":
                s = envelope(
                    d,
                    _TOP,
                    "start",
                    {
                        "stream_sid": "str",
                        "call_sid": "str",
                        "account_sid": "str",
                        "from?": "str",
                        "to?": "str",
                        "custom_parameters?": "dict",
                        "media_format": "dict",
                    },
                )
                mf = check_fields(
                    s["media_format"],
                    {"encoding": "str", "sample_rate": "digits", "bit_rate": "str"},
                    "start.start.media_format",
                )
                rate = int(mf["sample_rate"])
                if rate != self.format.rate:
                    raise CarrierMessageError(
                        f"exotel: the stream carries {rate} Hz; this pipeline expects "
                        f"{self.format.rate} Hz (set ?sample-rate= on the applet's URL)"
                    )
                params = {str(k): str(v) for k, v in (s.get("custom_parameters") or {}).items()}
                for key in ("from", "to"):
                    if key in s:
                        params.setdefault(key, s[key])
                return [
                    Start(
                        d["stream_sid"],
                        s["call_sid"],
                        s["account_sid"],
                        ("inbound",),
                        params,
                        MediaFormat(mf["encoding"], rate, 1),
                        int(d["sequence_number"]),
                    )
                ]
            case "media":
                m = envelope(
                    d, _TOP, "media", {"chunk": "digits", "timestamp": "digits", "payload": "str"}
                )
                payload = unb64(m["payload"], "media.media.payload")
                if len(payload) % 2:
                    raise CarrierMessageError(f"exotel: {len(payload)} bytes of 16-bit PCM")
                return [
                    Media(
                        d["stream_sid"],
                        payload,
                        int(m["timestamp"]),
                        int(m["chunk"]),
                        "inbound",
                        int(d["sequence_number"]),
                    )
                ]
            case "dtmf":
                t = envelope(d, _TOP, "dtmf", {"digit": "str", "duration?": "digits"})
                return [Dtmf(d["stream_sid"], t["digit"], "inbound", int(d["sequence_number"]))]
            case "mark":
                name = envelope(d, _TOP, "mark", {"name": "str"})["name"]
                return [Mark(d["stream_sid"], name, int(d["sequence_number"]))]
            case "stop":
                s = envelope(
                    d, _TOP, "stop", {"call_sid": "str", "account_sid": "str", "reason?": "str"}
                )
                return [
                    Stop(
                        d["stream_sid"], s["call_sid"], s["account_sid"], int(d["sequence_number"])
                    )
                ]
        raise CarrierMessageError(f"exotel: unknown event {event!r}")

    def media(self, stream_id: str, chunk: bytes) -> Wire:
        return dumps({"event": "media", "stream_sid": stream_id, "media": {"payload": b64(chunk)}})

    def mark(self, stream_id: str, name: str) -> Wire:
        return dumps({"event": "mark", "stream_sid": stream_id, "mark": {"name": name}})

    def clear(self, stream_id: str) -> Wire:
        return dumps({"event": "clear", "stream_sid": stream_id})


class ExotelSide(CarrierSide):
    carrier = Exotel
    stream_key = "stream_sid"

    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        start = {
            "stream_sid": self.stream_id,
            "call_sid": self.call_id,
            "account_sid": "exotel-account",
            "from": "+919876543210",
            "to": "+918047491899",
            "custom_parameters": dict(parameters),
            "media_format": {
                "encoding": "base64",
                "sample_rate": str(self.format.rate),
                "bit_rate": "128kbps",
            },
        }
        return [dumps({"event": "connected"}), self.frame("start", start=start)]

    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        media = {"chunk": str(chunk), "timestamp": str(timestamp_ms), "payload": b64(payload)}
        return self.frame("media", media=media)

    def dtmf(self, digit: str) -> Wire:
        return self.frame("dtmf", dtmf={"digit": digit, "duration": "100"})

    def mark_played(self, name: str) -> Wire:
        return self.frame("mark", mark={"name": name})

    def stop(self) -> Wire | None:
        stop = {"call_sid": self.call_id, "account_sid": "exotel-account", "reason": "callended"}
        return self.frame("stop", stop=stop)

    def read(self, raw: Wire) -> Outgoing:
        d = load_json(raw, "exotel")
        event = d.get("event")
        if d.get("stream_sid") != self.stream_id:
            raise CarrierMessageError(f"exotel: {event} for stream {d.get('stream_sid')!r}")
        match event:
            case "media":
                m = envelope(d, _OUT, "media", {"payload": "str"})
                payload = unb64(m["payload"], "media.media.payload")
                minimum = self.format.bytes_per_second * MIN_CHUNK_MS // 1000
                if len(payload) % CHUNK_MULTIPLE or len(payload) < minimum:
                    raise CarrierMessageError(
                        f"exotel: a media chunk of {len(payload)} bytes; chunks are multiples "
                        f"of {CHUNK_MULTIPLE} bytes, at least {minimum}"
                    )
                return ("media", payload)
            case "mark":
                return ("mark", envelope(d, _OUT, "mark", {"name": "str"})["name"])
            case "clear":
                check_fields(d, _OUT, "clear")
                return ("clear", None)
        raise CarrierMessageError(f"exotel: unknown outgoing event {event!r}")
