"""One interface for every carrier's media stream.

A carrier (Twilio, Telnyx, Plivo, Vonage, Exotel) opens one WebSocket per call and speaks its
own dialect: JSON with base64 audio or binary frames, its own names for the stream's metadata,
for "tell me when this has played" (Twilio's ``mark``, Plivo's ``checkpoint``, Vonage's
``notify``) and for "drop what you have buffered" (``clear``, ``clearAudio``). A
:class:`Carrier` reads the carrier's messages into the neutral events of
:mod:`stages.telephony.twilio` (``Connected``, ``Start``, ``Media``, ``Dtmf``, ``Mark``,
``Stop``) and writes ours (media, mark, clear) in its dialect; everything else (chunking,
marks, barge-in, the stages, the server) is shared. Its wire facts (the audio formats it
carries, whether media is binary, the chunk sizes it accepts) are class attributes that
``pipeline validate`` reads through the ``phone_source``/``phone_sink`` parameters.

:class:`CarrierSide` is the other end, for simulators and tests: what the carrier sends, and a
strict reading of what we send (each message checked against the carrier's documented shape).

Pure code: no sockets, no event loop.
"""

from __future__ import annotations

import base64
import binascii
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import orjson

from pipeline.frames import AudioFormat

from ..twilio import Inbound, TwilioMessageError

__all__ = [
    "Carrier",
    "CarrierMessageError",
    "CarrierSide",
    "Outgoing",
    "b64",
    "check_fields",
    "dumps",
    "envelope",
    "load_json",
    "unb64",
]

#: A message our side reads from or sends to a carrier (text or binary frame).
Wire = str | bytes
#: What a simulator reads from our messages.
Outgoing = tuple[Literal["media", "mark", "clear"], Any]

#: Errors in a carrier's messages carry the carrier's own code when it has one (Twilio:
#: 31950 malformed, 31951 invalid).
CarrierMessageError = TwilioMessageError


def load_json(raw: Wire, carrier: str) -> dict[str, Any]:
    """A JSON object from a text frame; CarrierMessageError naming the carrier otherwise."""
    if not isinstance(raw, str):
        raise CarrierMessageError(
            f"{carrier}: a binary frame of {len(raw)} bytes where a JSON text frame belongs",
            31950,
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CarrierMessageError(f"{carrier}: not valid JSON ({exc})", 31950) from None
    if not isinstance(data, dict):
        raise CarrierMessageError(f"{carrier}: a JSON {type(data).__name__}, not an object", 31950)
    return data


_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "dict": (dict,),
    "list": (list,),
    "num": (int, float),
}


def check_fields(obj: Any, schema: Mapping[str, str], where: str) -> dict[str, Any]:
    """Check ``obj`` has exactly these fields (a name ending in ``?`` is optional; kinds
    ``str``, ``int``, ``dict``, ``list``, ``num``, ``digits`` = a string of digits) and return
    it. Raises CarrierMessageError naming the first field that is missing, unknown or
    ill-typed."""
    if not isinstance(obj, dict):
        raise CarrierMessageError(f"{where} must be an object")
    names = {k.rstrip("?"): k for k in schema}
    for key in obj:
        if key not in names:
            raise CarrierMessageError(
                f"{where}: unknown field '{key}' (allowed: {', '.join(names)})"
            )
    for name, key in names.items():
        if name not in obj:
            if not key.endswith("?"):
                raise CarrierMessageError(f"{where}: missing field '{name}'")
            continue
        kind = schema[key]
        value = obj[name]
        if kind == "digits":
            ok = isinstance(value, str) and value.isascii() and value.isdigit()
        else:
            ok = isinstance(value, _KINDS[kind]) and not isinstance(value, bool)
        if not ok:
            raise CarrierMessageError(
                f"{where}: field '{name}' must be {kind}, got {type(value).__name__}"
            )
    return obj


def envelope(
    d: dict[str, Any], top: Mapping[str, str], key: str, schema: Mapping[str, str]
) -> dict[str, Any]:
    """The object under ``key`` of a message ``{...top fields, key: {...}}``, both levels
    checked with :func:`check_fields` (named ``key`` and ``key.key`` in errors, as the
    carriers' own field paths read)."""
    check_fields(d, {**top, key: "dict"}, key)
    return check_fields(d[key], schema, f"{key}.{key}")


def dumps(message: Mapping[str, Any]) -> str:
    """One JSON text frame."""
    return orjson.dumps(message).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise CarrierMessageError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CarrierMessageError(f"{where} is not valid base64 ({len(text)} characters)") from None


def swap16(data: bytes) -> bytes:
    """Big-endian 16-bit samples to little-endian (and back)."""
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


class Carrier(ABC):
    """Our side of one call's media stream with a carrier, in a given audio format."""

    #: the name used in YAML (``phone_source: {carrier: NAME}``) and by ``serve --carrier``
    name: ClassVar[str]
    #: the formats the stream can carry (the first is the default)
    formats: ClassVar[tuple[AudioFormat, ...]]
    #: outgoing media is binary frames (else JSON with base64)
    binary_media: ClassVar[bool] = False
    #: outgoing media must come in frames of exactly this many ms (None: any length)
    frame_ms: ClassVar[int | None] = None
    #: the smallest outgoing media chunk the carrier plays well, ms
    min_chunk_ms: ClassVar[int] = 20

    def __init__(self, fmt: AudioFormat | None = None) -> None:
        fmt = fmt or self.formats[0]
        if fmt not in self.formats:
            allowed = ", ".join(str(f) for f in self.formats)
            raise ValueError(f"{self.name} streams carry {allowed}; not {fmt}")
        self.format = fmt

    @classmethod
    def check_format(cls, encoding: str, rate: int) -> str:
        """'' if the carrier carries ``encoding`` at ``rate``, else the problem."""
        if AudioFormat(encoding, rate, 1) in cls.formats:  # type: ignore[arg-type]
            return ""
        allowed = ", ".join(str(f) for f in cls.formats)
        return f"{cls.name} streams carry {allowed}; not {encoding} {rate} Hz"

    @abstractmethod
    def parse(self, raw: Wire) -> list[Inbound]:
        """The neutral events in one message from the carrier (CarrierMessageError if it
        breaks the carrier's protocol)."""

    @abstractmethod
    def media(self, stream_id: str, chunk: bytes) -> Wire:
        """Audio (in :attr:`format`, little-endian PCM for pcm16) to play to the caller."""

    @abstractmethod
    def mark(self, stream_id: str, name: str) -> Wire:
        """Ask to be told when everything sent so far has played."""

    @abstractmethod
    def clear(self, stream_id: str) -> Wire:
        """Drop the audio buffered and not yet played (barge-in)."""

    def silence(self, n: int) -> bytes:
        """``n`` bytes of silence in :attr:`format` (to pad a fixed-size frame)."""
        byte = {"pcmu": b"\xff", "pcma": b"\xd5"}.get(self.format.encoding, b"\0")
        return byte * n


class CarrierSide(ABC):
    """The carrier's end of a stream, for simulators: the messages it sends, and a strict
    reading of ours."""

    carrier: ClassVar[type[Carrier]]
    #: the envelope of the carrier's JSON messages (see :meth:`frame`): the names of the
    #: sequence number and of the stream's id, and whether the number is sent as a string
    seq_key: ClassVar[str] = "sequence_number"
    stream_key: ClassVar[str] = "stream_id"
    seq_as_text: ClassVar[bool] = True

    def __init__(self, fmt: AudioFormat, call_id: str, stream_id: str) -> None:
        self.format = fmt
        self.call_id = call_id
        self.stream_id = stream_id
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def frame(self, event: str, **body: Any) -> str:
        """A JSON message in the carrier's envelope: ``event``, the next sequence number, the
        stream's id, then ``body``."""
        seq = self.next_seq()
        head = {"event": event, self.seq_key: str(seq) if self.seq_as_text else seq}
        return dumps({**head, self.stream_key: self.stream_id, **body})

    @abstractmethod
    def opening(self, parameters: Mapping[str, str]) -> Sequence[Wire]:
        """The messages that open the stream (connected, start...)."""

    @abstractmethod
    def media(self, chunk: int, timestamp_ms: int, payload: bytes) -> Wire:
        """One frame of the caller's audio (``payload`` little-endian for pcm16)."""

    @abstractmethod
    def dtmf(self, digit: str) -> Wire: ...

    @abstractmethod
    def mark_played(self, name: str) -> Wire:
        """The carrier's report that everything before mark ``name`` has played."""

    @abstractmethod
    def stop(self) -> Wire | None:
        """The end of the stream (None: the carrier just closes the socket)."""

    @abstractmethod
    def read(self, raw: Wire) -> Outgoing:
        """Our message, checked strictly: ("media", bytes) | ("mark", name) | ("clear", None).
        Raises CarrierMessageError for anything the carrier would refuse."""
