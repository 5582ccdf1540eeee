"""Telnyx media streaming (Call Control ``streaming_start`` with ``stream_bidirectional_mode:
rtp``, or TeXML ``<Stream bidirectionalMode="rtp">``).

Wire facts, from Telnyx's documentation of the Media Streaming WebSocket: JSON text frames with
snake_case fields (``stream_id``, ``sequence_number``); ``connected`` (``version``), ``start``
(``call_control_id``, ``from``, ``to``, ``custom_parameters``, ``media_format: {encoding,
sample_rate, channels}``, numbers as numbers), ``media`` (``media: {track, chunk, timestamp,
payload}``, base64 RTP payloads), ``dtmf``, ``mark`` (the echo), ``stop``, ``error``. We send
``media`` (``{"event": "media", "media": {"payload": ...}}``, 20 ms to 30 s per message),
``mark`` and ``clear``. Bidirectional RTP codecs here: PCMU and PCMA at 8 kHz, L16 at 8 or 16
kHz. L16 is RTP's linear PCM, which is big-endian (RFC 3551): it is swapped to and from the
pipeline's little-endian pcm16 at the edge.
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
    swap16,
    unb64,
)

__all__ = ["Telnyx", "TelnyxSide"]

_ENCODING = {"pcmu": "PCMU", "pcma": "PCMA", "pcm16": "L16"}
_FROM_ENCODING = {v: k for k, v in _ENCODING.items()}

_START = {
    "user_id?": "str",
    "call_control_id": "str",
    "call_session_id?": "str",
    "from?": "str",
    "to?": "str",
    "tags?": "list",
    "client_state?": "str",
    "custom_parameters?": "dict",
    "media_format": "dict",
}
_FORMAT = {"encoding": "str", "sample_rate": "int", "channels": "int"}
_MEDIA = {"track?": "str", "chunk": "digits", "timestamp": "digits", "payload": "str"}
_TOP = {"event": "str", "sequence_number": "digits", "stream_id": "str"}
#: what we send: the event, the stream's id optional
_OUT = {"event": "str", "stream_id?": "str"}


class Telnyx(Carrier):
    name: ClassVar[str] = "telnyx"
    formats: ClassVar[tuple[AudioFormat, ...]] = (
        AudioFormat("pcmu", 8000),
        AudioFormat("pcma", 8000),
        AudioFormat("pcm16", 8000),
        AudioFormat("pcm16", 16000),
    )

    def _audio_in(self, payload: bytes) -> bytes:
        return swap16(payload) if self.format.encoding == "pcm16" else payload

    def parse(self, raw: Wire) -> list[Inbound]:
        d = load_json(raw, "telnyx")
        event = d.get("event")
        match event:
            case "connected":
                check_fields(d, {"event": "str", "version": "str"}, "connected")
                return [Connected("Call", d["version"])]
            case "start":
                s = envelope(d, _TOP, "start", _START)
                mf = check_fields(s["media_format"], _FORMAT, "start.start.media_format")
                fmt = AudioFormat(
                    _FROM_ENCODING.get(mf["encoding"], mf["encoding"]),
                    mf["sample_rate"],
                    mf["channels"],
                )
                if fmt != self.format:
                    raise CarrierMessageError(
                        f"telnyx: the stream carries {mf['encoding']} {mf['sample_rate']} Hz "
                        f"x{mf['channels']}; this pipeline expects {self.format}"
                    )
                params = {str(k): str(v) for k, v in (s.get("custom_parameters") or {}).items()}
                for key in ("from", "to"):
                    if key in s:
                        params.setdefault(key, s[key])
                return [
                    Start(
                        d["stream_id"],
                        s["call_control_id"],
                        s.get("user_id", ""),
                        custom_parameters=params,
                        media_format=MediaFormat(mf["encoding"], mf["sample_rate"], mf["channels"]),
                        sequence_number=int(d["sequence_number"]),
                    )
                ]
            case "media":
                m = envelope(d, _TOP, "media", _MEDIA)
                payload = self._audio_in(unb64(m["payload"], "media.media.payload"))
                return [
                    Media(
                        d["stream_id"],
                        payload,
                        int(m["timestamp"]),
                        int(m["chunk"]),
                        m.get("track", "inbound"),
                        int(d["sequence_number"]),
                    )
                ]
            case "dtmf":
                top = {**_TOP, "occurred_at?": "str"}
                digit = envelope(d, top, "dtmf", {"digit": "str"})["digit"]
                return [Dtmf(d["stream_id"], digit, "inbound", int(d["sequence_number"]))]
            case "mark":
                name = envelope(d, _TOP, "mark", {"name": "str"})["name"]
                return [Mark(d["stream_id"], name, int(d["sequence_number"]))]
            case "stop":
                s = envelope(d, _TOP, "stop", {"user_id?": "str", "call_control_id": "str"})
                return [Stop(d["stream_id"], s["call_control_id"], "", int(d["sequence_number"]))]
            case "error":
                check_fields(d, {**_TOP, "payload": "dict"}, "error")
                raise CarrierMessageError(f"telnyx reported an error: {d['payload']}")
        raise CarrierMessageError(f"telnyx: unknown event {event!r}")

    def media(self, stream_id: str, chunk: bytes) -> Wire:
        payload = swap16(chunk) if self.format.encoding == "pcm16" else chunk
        return dumps({"event": "media", "media": {"payload": b64(payload)}})

    def mark(self, stream_id: str, name: str) -> Wire:
        return dumps({"event": "mark", "mark": {"name": name}})

    def clear(self, stream_id: str) -> Wire:
        return '{"event":"clear"}'


class TelnyxSide(CarrierSide):
    carrier = Telnyx

    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        fmt = self.format
        start = {
            "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
            "call_control_id": self.call_id,
            "from": "+13122010094",
            "to": "+13122123456",
            "custom_parameters": dict(parameters),
            "media_format": {
                "encoding": _ENCODING[fmt.encoding],
                "sample_rate": fmt.rate,
                "channels": 1,
            },
        }
        return [dumps({"event": "connected", "version": "1.0.0"}), self.frame("start", start=start)]

    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        if self.format.encoding == "pcm16":
            payload = swap16(payload)
        media = {
            "track": "inbound",
            "chunk": str(chunk),
            "timestamp": str(timestamp_ms),
            "payload": b64(payload),
        }
        return self.frame("media", media=media)

    def dtmf(self, digit: str) -> Wire:
        return self.frame("dtmf", dtmf={"digit": digit})

    def mark_played(self, name: str) -> Wire:
        return self.frame("mark", mark={"name": name})

    def stop(self) -> Wire | None:
        return self.frame("stop", stop={"call_control_id": self.call_id})

    def read(self, raw: Wire) -> Outgoing:
        d = load_json(raw, "telnyx")
        match d.get("event"):
            case "media":
                m = envelope(d, _OUT, "media", {"payload": "str"})
                payload = unb64(m["payload"], "media.media.payload")
                ms = len(payload) * 1000 / self.format.bytes_per_second
                if not 20 <= ms <= 30_000:
                    raise CarrierMessageError(f"telnyx: media of {ms:g} ms; 20 ms to 30 s")
                if self.format.encoding == "pcm16":
                    payload = swap16(payload)
                return ("media", payload)
            case "mark":
                return ("mark", envelope(d, _OUT, "mark", {"name": "str"})["name"])
            case "clear":
                check_fields(d, _OUT, "clear")
                return ("clear", None)
        raise CarrierMessageError(f"telnyx: unknown outgoing event {d.get('event')!r}")
