"""Twilio Media Streams as a :class:`~.base.Carrier` (the message model itself lives in
:mod:`stages.telephony.twilio`): JSON text frames, base64 μ-law 8 kHz, ``mark`` and ``clear``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from pipeline.frames import AudioFormat

from .. import twilio as tw
from .base import Carrier, CarrierSide, Outgoing, Wire

__all__ = ["Twilio", "TwilioSide"]


class Twilio(Carrier):
    name: ClassVar[str] = "twilio"
    formats: ClassVar[tuple[AudioFormat, ...]] = (tw.MULAW_FORMAT,)

    def parse(self, raw: Wire) -> list[tw.Inbound]:
        return [tw.parse_incoming(raw)]

    def media(self, stream_id: str, chunk: bytes) -> Wire:
        return tw.encode(tw.OutMedia(stream_id, chunk))

    def mark(self, stream_id: str, name: str) -> Wire:
        return tw.encode(tw.Mark(stream_id, name))

    def clear(self, stream_id: str) -> Wire:
        return tw.encode(tw.Clear(stream_id))


class TwilioSide(CarrierSide):
    carrier = Twilio

    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        start = tw.Start(
            self.stream_id,
            self.call_id,
            "AC" + "0" * 32,
            custom_parameters=dict(parameters),
            sequence_number=self.next_seq(),
        )
        return [tw.encode(tw.Connected()), tw.encode(start)]

    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        msg = tw.Media(self.stream_id, payload, timestamp_ms, chunk, "inbound", self.next_seq())
        return tw.encode(msg)

    def dtmf(self, digit: str) -> Wire:
        return tw.encode(tw.Dtmf(self.stream_id, digit, sequence_number=self.next_seq()))

    def mark_played(self, name: str) -> Wire:
        return tw.encode(tw.Mark(self.stream_id, name, self.next_seq()))

    def stop(self) -> Wire | None:
        return tw.encode(tw.Stop(self.stream_id, self.call_id, "AC" + "0" * 32, self.next_seq()))

    def read(self, raw: Wire) -> Outgoing:
        msg = tw.parse_outgoing(raw)
        if msg.stream_sid != self.stream_id:
            raise tw.TwilioMessageError(f"streamSid {msg.stream_sid!r} is not this stream's")
        match msg:
            case tw.OutMedia():
                return ("media", msg.payload)
            case tw.Mark():
                return ("mark", msg.name)
            case _:
                return ("clear", None)
