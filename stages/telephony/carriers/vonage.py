"""Vonage Voice API WebSockets (an NCCO ``connect`` to an endpoint of ``type: websocket``).

Wire facts, from Vonage's documentation of WebSockets in the Voice API: the first message is a
JSON text frame ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000",
...}`` whose other fields are the ``headers`` given in the NCCO; audio then flows both ways as
**binary** frames of 16-bit little-endian linear PCM, mono, 20 ms each (640 bytes at 16 kHz,
320 at 8 kHz), and every frame we send must be exactly that size. Control is JSON text:
``{"action": "notify", "payload": {...}}`` is answered with ``{"event": "websocket:notify",
"payload": {...}}`` once the audio sent before it has played (our marks ride in the payload),
``{"action": "clear"}`` with ``{"event": "websocket:cleared"}``; key presses arrive as
``{"event": "websocket:dtmf", "digit": "5", "duration": 260}``. There is no stop message: the
socket closes when the call ends. Frames carry no timestamps: they are 20 ms each, in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pipeline.frames import AudioFormat

from ..twilio import Connected, Dtmf, Inbound, Mark, Media, MediaFormat, Start
from .base import Carrier, CarrierMessageError, CarrierSide, Outgoing, Wire, dumps, load_json

__all__ = ["Vonage", "VonageSide"]

FRAME_MS = 20


class Vonage(Carrier):
    name: ClassVar[str] = "vonage"
    formats: ClassVar[tuple[AudioFormat, ...]] = (
        AudioFormat("pcm16", 16000),
        AudioFormat("pcm16", 8000),
    )
    binary_media: ClassVar[bool] = True
    frame_ms: ClassVar[int | None] = FRAME_MS

    def __init__(self, fmt: AudioFormat | None = None) -> None:
        super().__init__(fmt)
        self.frame_bytes = self.format.bytes_per_second * FRAME_MS // 1000
        self._frames = 0
        self._call = ""

    def parse(self, raw: Wire) -> list[Inbound]:
        if isinstance(raw, bytes):
            if len(raw) != self.frame_bytes:
                raise CarrierMessageError(
                    f"vonage: an audio frame of {len(raw)} bytes; {FRAME_MS} ms of "
                    f"{self.format} is {self.frame_bytes}"
                )
            self._frames += 1
            ts = (self._frames - 1) * FRAME_MS
            return [Media(self._call, raw, ts, self._frames, "inbound", self._frames)]
        d = load_json(raw, "vonage")
        event = d.get("event")
        match event:
            case "websocket:connected":
                ctype = d.get("content-type")
                want = f"audio/l16;rate={self.format.rate}"
                if ctype != want:
                    raise CarrierMessageError(
                        f"vonage: content-type {ctype!r}; this pipeline expects {want!r}"
                    )
                headers = {k: str(v) for k, v in d.items() if k not in ("event", "content-type")}
                self._call = headers.get("uuid", headers.get("call_id", ""))
                start = Start(
                    self._call,
                    self._call,
                    "",
                    ("inbound",),
                    headers,
                    MediaFormat(want, self.format.rate, 1),
                    1,
                )
                return [Connected("Call", "vonage"), start]
            case "websocket:dtmf":
                if not isinstance(d.get("digit"), str):
                    raise CarrierMessageError("vonage: websocket:dtmf without a 'digit' string")
                return [Dtmf(self._call, d["digit"], "inbound", 0)]
            case "websocket:notify":
                payload = d.get("payload")
                if not isinstance(payload, dict) or not isinstance(payload.get("mark"), str):
                    raise CarrierMessageError("vonage: websocket:notify without our payload.mark")
                return [Mark(self._call, payload["mark"], 0)]
            case "websocket:cleared":
                return []
            case "websocket:error":
                raise CarrierMessageError(f"vonage reported an error: {d}")
        raise CarrierMessageError(f"vonage: unknown event {event!r}")

    def media(self, stream_id: str, chunk: bytes) -> Wire:
        if len(chunk) != self.frame_bytes:
            raise ValueError(f"vonage frames are {self.frame_bytes} bytes, got {len(chunk)}")
        return chunk

    def mark(self, stream_id: str, name: str) -> Wire:
        return dumps({"action": "notify", "payload": {"mark": name}})

    def clear(self, stream_id: str) -> Wire:
        return '{"action":"clear"}'


class VonageSide(CarrierSide):
    carrier = Vonage

    def __init__(self, fmt: AudioFormat, call_id: str, stream_id: str) -> None:
        super().__init__(fmt, call_id, stream_id)
        self.frame_bytes = fmt.bytes_per_second * FRAME_MS // 1000

    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        hello = {
            "event": "websocket:connected",
            "content-type": f"audio/l16;rate={self.format.rate}",
            "uuid": self.call_id,
            **parameters,
        }
        return [dumps(hello)]

    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        return payload

    def dtmf(self, digit: str) -> Wire:
        return dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def mark_played(self, name: str) -> Wire:
        return dumps({"event": "websocket:notify", "payload": {"mark": name}})

    def stop(self) -> Wire | None:
        return None

    def read(self, raw: Wire) -> Outgoing:
        if isinstance(raw, bytes):
            if len(raw) != self.frame_bytes:
                raise CarrierMessageError(
                    f"vonage: we sent an audio frame of {len(raw)} bytes; frames are exactly "
                    f"{self.frame_bytes} ({FRAME_MS} ms)"
                )
            return ("media", raw)
        d = load_json(raw, "vonage")
        match d.get("action"):
            case "notify":
                if set(d) != {"action", "payload"} or not isinstance(d["payload"], dict):
                    raise CarrierMessageError(f"vonage: notify must be action+payload, got {d}")
                return ("mark", d["payload"].get("mark"))
            case "clear":
                if set(d) != {"action"}:
                    raise CarrierMessageError(f"vonage: clear takes no fields, got {d}")
                return ("clear", None)
        raise CarrierMessageError(f"vonage: unknown action {d.get('action')!r}")
