"""Every carrier's media stream through 'pipeline serve', each against a strict simulator of
that carrier (benchmarks.carriersim with the carrier's side): audio both ways byte for byte,
marks, clear on barge-in, key presses; and each dialect's strictness and wire facts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from benchmarks.carriersim import run_carrier_call
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt
from pipeline.graph import Pipeline
from pipeline.spec import spec_for, stage
from stages.telephony.carriers import CARRIERS, SIDES, CarrierMessageError
from stages.telephony.carriers.base import swap16
from stages.telephony.serve import run_server
from stages.telephony.twilio import Connected, Dtmf, Mark, Media, Start, Stop

STREAMS = [
    ("twilio", AudioFormat("pcmu", 8000)),
    ("telnyx", AudioFormat("pcmu", 8000)),
    ("telnyx", AudioFormat("pcma", 8000)),
    ("telnyx", AudioFormat("pcm16", 16000)),
    ("plivo", AudioFormat("pcmu", 8000)),
    ("plivo", AudioFormat("pcm16", 16000)),
    ("vonage", AudioFormat("pcm16", 16000)),
    ("vonage", AudioFormat("pcm16", 8000)),
    ("exotel", AudioFormat("pcm16", 8000)),
]
IDS = [f"{c}-{f.encoding}-{f.rate}" for c, f in STREAMS]


def audio_for(fmt: AudioFormat, seconds: float = 0.4) -> bytes:
    n = int(fmt.bytes_per_second * seconds)
    return bytes((i * 7 + 3) % 251 for i in range(n))


def phone(carrier: str, fmt: AudioFormat, middle: object = None) -> Pipeline:
    p = Pipeline(f"{carrier}-echo")
    params = {"carrier": carrier, "encoding": fmt.encoding, "rate": fmt.rate}
    p.add("caller", "phone_source", **params)
    ids = ["caller"]
    if middle is not None:
        p.add("mid", middle)
        ids.append("mid")
    p.add("phone", "phone_sink", **params)
    p.link(*ids, "phone")
    return p


@pytest.mark.parametrize(("carrier", "fmt"), STREAMS, ids=IDS)
def test_a_call_on_every_carrier(carrier: str, fmt: AudioFormat) -> None:
    sent = audio_for(fmt)

    async def main() -> None:
        async with run_server(phone(carrier, fmt)) as server:
            rec = await run_carrier_call(server.url + "/media", carrier, fmt, sent)
        assert rec.errors == [] and rec.refused == ""
        assert bytes(rec.received_audio) == sent  # the caller hears themselves, byte for byte
        assert rec.marks and rec.played == rec.marks
        assert server.active == 0

    asyncio.run(main())


@stage("carrier_test_barge", emits=(Interrupt,), passthrough=True, register=False)
async def barge_after_first(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Pass the first audio frame and barge in right behind it (before it can have played);
    drop the rest."""
    seen = 0
    async for f in frames:
        if isinstance(f, Audio):
            seen += 1
            if seen == 1:
                yield f
                yield Interrupt()
            continue
        yield f


@pytest.mark.parametrize(("carrier", "fmt"), STREAMS, ids=IDS)
def test_barge_in_clears_on_every_carrier(carrier: str, fmt: AudioFormat) -> None:
    sent = audio_for(fmt, 0.2)

    async def main() -> None:
        async with run_server(phone(carrier, fmt, barge_after_first)) as server:
            rec = await run_carrier_call(server.url + "/media", carrier, fmt, sent)
        assert rec.errors == []
        # one chunk and its mark went out, then the carrier's clear, read strictly
        assert rec.clears == 1 and len(rec.marks) == 1 and rec.played == []

    asyncio.run(main())


@pytest.mark.parametrize(("carrier", "fmt"), STREAMS, ids=IDS)
def test_each_dialect_reads_what_its_carrier_sends(carrier: str, fmt: AudioFormat) -> None:
    ours = CARRIERS[carrier](fmt)
    side = SIDES[carrier](fmt, "call-1", "stream-1")
    events = [e for m in side.opening({"lang": "fr"}) for e in ours.parse(m)]
    assert [type(e) for e in events] == [Connected, Start]
    start = events[1]
    assert isinstance(start, Start) and start.custom_parameters["lang"] == "fr"
    assert start.call_sid == "call-1"
    frame = audio_for(fmt, 0.02)
    (media,) = ours.parse(side.media(1, 0, frame))
    assert isinstance(media, Media) and media.payload == frame and media.timestamp == 0
    (dtmf,) = ours.parse(side.dtmf("7"))
    assert isinstance(dtmf, Dtmf) and dtmf.digit == "7"
    (mark,) = ours.parse(side.mark_played("12"))
    assert isinstance(mark, Mark) and mark.name == "12"
    stop = side.stop()
    if stop is not None:
        assert [type(e) for e in ours.parse(stop)] == [Stop]
    # and the carrier's side reads ours
    chunk = audio_for(fmt, 0.02 if carrier == "vonage" else 0.1)
    assert side.read(ours.media(start.stream_sid, chunk)) == ("media", chunk)
    assert side.read(ours.mark(start.stream_sid, "3")) == ("mark", "3")
    assert side.read(ours.clear(start.stream_sid)) == ("clear", None)


@pytest.mark.parametrize(
    ("carrier", "message", "error"),
    [
        ("telnyx", {"event": "media", "sequence_number": "2", "stream_id": "s",
                    "media": {"chunk": "1", "timestamp": "0", "payload": "AA==", "extra": 1}},
         "unknown field 'extra'"),
        ("telnyx", {"event": "media", "sequence_number": 2, "stream_id": "s",
                    "media": {"chunk": "1", "timestamp": "0", "payload": "AA=="}},
         "field 'sequence_number' must be digits"),
        ("plivo", {"event": "playedStream", "sequenceNumber": 3, "streamId": "s"},
         "missing field 'name'"),
        ("exotel", {"event": "media", "sequence_number": "3", "stream_sid": "s",
                    "media": {"chunk": "1", "timestamp": "0", "payload": "AAAA"}},
         "3 bytes of 16-bit PCM"),
        ("vonage", {"event": "websocket:connected", "content-type": "audio/l16;rate=8000"},
         "this pipeline expects 'audio/l16;rate=16000'"),
        ("exotel", {"event": "hello"}, "unknown event 'hello'"),
    ],
)  # fmt: skip
def test_dialects_are_strict(carrier: str, message: dict[str, object], error: str) -> None:
    ours = CARRIERS[carrier]()
    with pytest.raises(CarrierMessageError, match=error):
        ours.parse(orjson.dumps(message).decode())


def test_wire_facts() -> None:
    # Telnyx L16 is RTP's big-endian linear PCM: swapped at the edge
    telnyx = CARRIERS["telnyx"](AudioFormat("pcm16", 16000))
    wire = orjson.loads(telnyx.media("s", b"\x01\x02\x03\x04"))
    assert wire == {"event": "media", "media": {"payload": "AgEEAw=="}}  # 02 01 04 03
    assert swap16(swap16(b"\x01\x02")) == b"\x01\x02"
    # Vonage: binary frames of exactly 20 ms; a short one is refused both ways
    vonage = CARRIERS["vonage"]()
    assert vonage.media("", bytes(640)) == bytes(640)
    with pytest.raises(ValueError, match="640 bytes"):
        vonage.media("", bytes(320))
    side = SIDES["vonage"](AudioFormat("pcm16", 16000), "c", "s")
    with pytest.raises(CarrierMessageError, match="exactly 640"):
        side.read(bytes(600))
    # Exotel: chunks of at least 100 ms, multiples of 320 bytes
    exo = SIDES["exotel"](AudioFormat("pcm16", 8000), "c", "s")
    with pytest.raises(CarrierMessageError, match="multiples of 320 bytes, at least 1600"):
        exo.read(CARRIERS["exotel"]().media("s", bytes(640)))
    # Plivo: playAudio must name the stream's format
    plivo = SIDES["plivo"](AudioFormat("pcm16", 16000), "c", "s")
    with pytest.raises(CarrierMessageError, match="audio/x-mulaw 8000 Hz on a audio/x-l16"):
        plivo.read(CARRIERS["plivo"]().media("s", bytes(160)))


def test_validate_knows_each_carriers_formats() -> None:
    spec = spec_for("phone_sink")
    assert spec.check is not None
    problems = spec.check({"carrier": "vonage", "encoding": "pcmu"}, None)  # type: ignore[arg-type]
    assert problems == [("encoding", "vonage streams carry pcm16 16000 Hz, pcm16 8000 Hz; "
                                     "not pcmu 16000 Hz")]  # fmt: skip
    assert spec.check({"carrier": "exotel", "chunk_ms": 20}, None) == [  # type: ignore[arg-type]
        ("chunk_ms", "exotel plays chunks of 100 to 200 ms")
    ]
    assert spec.check({"carrier": "telnyx", "encoding": "pcm16", "rate": 16000}, None) == []  # type: ignore[arg-type]
    p = Pipeline("bad")
    p.add("caller", "phone_source", carrier="vonage")
    p.add("phone", "phone_sink", carrier="twilio")
    p.link("caller", "phone")
    with pytest.raises(Exception, match=r"gets pcm16 16000 Hz audio; this twilio stream plays"):
        p.validate()
