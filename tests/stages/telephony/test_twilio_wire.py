"""The fast paths of the Twilio wire against the plain checked parser (``twilio_reference``):
for any message, valid, nearly valid or garbage, ``parse_incoming`` gives the same message or
the same error, ``read_fast`` reads only what the reference reads and reads it the same, and
a call fed through ``TwilioCall.take_fast`` ends in the same state as one fed through
``receive`` alone. The outgoing ``media`` and ``mark`` are the exact bytes ``encode`` writes."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.frames import Audio
from stages.telephony.twilio import Playout, TwilioCall
from stages.telephony.twilio_wire import (
    Mark,
    Media,
    OutMedia,
    TwilioMessageError,
    encode,
    parse_incoming,
    read_fast,
)
from tests.stages.telephony import twilio_reference as reference

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA0123456789abcdef0123456789abcdef"

START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "streamSid": SID,
        "accountSid": "AC1",
        "callSid": CALL,
        "tracks": ["inbound"],
        "customParameters": {"k": "v"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def _outcome(parse: Any, raw: str | bytes) -> tuple[Any, ...]:
    try:
        return ("ok", parse(raw))
    except TwilioMessageError as exc:
        return ("error", type(exc).__name__, exc.code, str(exc))
    except ValueError as exc:  # the reference's int() of a number too long for it
        return ("crash", type(exc).__name__)


# ---------------------------------------------------------------------------- messages

_digits = st.integers(0, 10**12).map(str)
_text = st.text(max_size=12)
_b64 = st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())
# values a field may take instead of the right one: near misses first
_NEAR_MISSES = [
    *("", "0", "-1", "+1", "1.5", " 1", "1 ", "١٢", "²", "12a"),  # digits, nearly
    *("AA=", "A", "====", "AA==AA", "no+JhoaJjpzSHxAKBgY", "Zm9v\n", "é"),  # base64, nearly
    *("no+JhoaJjpzSHxAKBgYJ", SID, "media", "mark"),
]
_odd_value = st.one_of(
    st.sampled_from(_NEAR_MISSES),
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    _text,
    st.lists(st.sampled_from(["1", 1]), max_size=3),
    st.dictionaries(st.sampled_from(["name", "payload", "x"]), st.sampled_from(["1", 1])),
)


@st.composite
def _valid(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["media", "media", "mark", "dtmf", "stop", "connected", "start"]))
    seq = draw(_digits)
    sid = draw(st.sampled_from([SID, "MZ1", "", 'MZ"quoted\\é']))
    if kind == "media":
        media = {
            "track": draw(st.sampled_from(["inbound", "outbound", ""])),
            "chunk": draw(_digits),
            "timestamp": draw(_digits),
            "payload": draw(_b64),
        }
        return {"event": "media", "sequenceNumber": seq, "streamSid": sid, "media": media}
    if kind == "mark":
        name = draw(st.one_of(_digits, _text))
        return {"event": "mark", "sequenceNumber": seq, "streamSid": sid, "mark": {"name": name}}
    if kind == "dtmf":
        dtmf = {"track": "inbound_track", "digit": draw(st.sampled_from(["1", "#", "*"]))}
        return {"event": "dtmf", "sequenceNumber": seq, "streamSid": sid, "dtmf": dtmf}
    if kind == "stop":
        stop = {"accountSid": "AC1", "callSid": CALL}
        return {"event": "stop", "sequenceNumber": seq, "streamSid": sid, "stop": stop}
    if kind == "connected":
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    return json.loads(json.dumps(START))


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid message with one to three changes: a field removed, added or given an odd
    value, at the top or inside."""
    d = draw(_valid())
    for _ in range(draw(st.integers(1, 3))):
        inner = [k for k, v in d.items() if isinstance(v, dict)]
        target = d
        if inner and draw(st.booleans()):
            target = d[draw(st.sampled_from(inner))]
        change = draw(st.sampled_from(["delete", "add", "odd"]))
        keys = list(target)
        if change == "delete" and keys:
            del target[draw(st.sampled_from(keys))]
        elif change == "add":
            key = draw(st.sampled_from(["extra", "track", "sequenceNumber", "media", "mark"]))
            target[key] = draw(st.one_of(_odd_value, st.just({"name": "1"})))
        elif keys:
            target[draw(st.sampled_from(keys))] = draw(_odd_value)
    return d


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _compact(d: Any) -> str:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)  # as Twilio (and orjson)


def _serialise(d: Any, style: int) -> str:
    if style == 0:
        return _compact(d)
    if style == 1:
        return json.dumps(d)  # spaces after separators, non-ASCII escaped
    return json.dumps(d, ensure_ascii=False, sort_keys=True, indent=1)


_message = st.one_of(
    st.tuples(st.one_of(_valid(), _near_valid()), st.integers(0, 2)).map(lambda t: _serialise(*t)),
    _json.map(_compact),
    st.text(max_size=60),  # mostly not JSON
    st.binary(max_size=40),  # a binary frame
    _valid().map(lambda d: _compact(d).encode()),  # valid JSON, but in a binary frame
    _valid().map(lambda d: _compact(d)[:-1]),  # cut short
)


# ---------------------------------------------------------------------------- parsing


@settings(max_examples=1500, deadline=None)
@given(raw=_message)
def test_parse_incoming_gives_the_reference_message_or_its_error(raw: str | bytes) -> None:
    assert _outcome(parse_incoming, raw) == _outcome(reference.parse_incoming, raw)


@settings(max_examples=1500, deadline=None)
@given(raw=_message)
def test_read_fast_reads_only_what_the_reference_reads_and_the_same(raw: str | bytes) -> None:
    fast = read_fast(raw)
    if fast is None:
        return
    msg = reference.parse_incoming(raw)
    if len(fast) == 3:
        assert isinstance(msg, Media)
        assert fast == (msg.stream_sid, msg.payload, msg.timestamp)
    else:
        assert isinstance(msg, Mark)
        assert fast == (msg.stream_sid, msg.name)


@given(
    payload=st.binary(max_size=400),
    ts=st.integers(0, 10**12),
    chunk=st.integers(0, 10**9),
    seq=st.integers(1, 10**9),  # (encode writes 0 as "")
    name=st.text(max_size=20),
)
def test_read_fast_takes_every_well_formed_media_and_mark(
    payload: bytes, ts: int, chunk: int, seq: int, name: str
) -> None:
    media = Media(SID, payload, ts, chunk, "inbound", seq)
    assert read_fast(encode(media)) == (SID, payload, ts)
    assert read_fast(encode(Mark(SID, name, seq))) == (SID, name)


def test_a_number_longer_than_int_reads_is_refused_not_a_crash() -> None:
    """The reference let int()'s ValueError out (a caller could end its own call's reader
    with a 5,000-digit sequenceNumber); now it is a bad message like any other."""
    d = {"event": "mark", "sequenceNumber": "9" * 5000, "streamSid": SID, "mark": {"name": "1"}}
    raw = json.dumps(d)
    assert _outcome(reference.parse_incoming, raw) == ("crash", "ValueError")
    with pytest.raises(TwilioMessageError, match="'sequenceNumber' is a number of 5000 digits"):
        parse_incoming(raw)
    assert read_fast(raw) is None


# ---------------------------------------------------------------------------- the call


def _fed(messages: list[str | bytes], *, fast: bool) -> dict[str, Any]:
    """A started call fed ``messages``: what reached the source, the mark handler, the
    counters."""
    marks: list[str] = []

    async def main() -> dict[str, Any]:
        async def send(_text: str) -> None:
            pass

        call = TwilioCall(send, queue_size=1000)
        call.on_mark = marks.append
        await call.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        await call.receive(json.dumps(START))
        for raw in messages:
            if not (fast and call.take_fast(raw)):
                await call.receive(raw)
        items = []
        while not call.inbound.empty():
            item = call.inbound.get_nowait()
            assert not isinstance(item, Media)  # the source gets frames, not messages
            items.append(item)
        return {
            "items": items,
            "marks": marks,
            "bad": call.bad_messages,
            "in": call.messages_in,
            "media_end_ms": call.media_end_ms,
            "stopped": call.stopped,
        }

    return asyncio.run(main())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(_message, max_size=12))
def test_a_call_fed_through_take_fast_ends_as_one_fed_through_receive(
    messages: list[str | bytes],
) -> None:
    assert _fed(messages, fast=True) == _fed(messages, fast=False)


def test_take_fast_hands_the_source_its_audio_frame() -> None:
    raw = encode(Media(SID, b"\x7f" * 160, 1240, 63, "inbound", 65))
    got = _fed([raw], fast=True)
    assert got["items"] == [Audio(b"\x7f" * 160, "pcmu", 8000, 1, 1.24)]
    assert got["media_end_ms"] == 1260


# ---------------------------------------------------------------------------- outgoing


@given(
    sid=st.one_of(st.just(SID), st.text(max_size=40)),
    chunks=st.lists(st.binary(min_size=1, max_size=400), min_size=1, max_size=6),
)
def test_the_sinks_media_and_marks_are_the_bytes_encode_writes(
    sid: str, chunks: list[bytes]
) -> None:
    playout = Playout(sid, chunk_ms=20)
    pts = 0.0
    n = 0
    for data in chunks:
        msgs = playout.push(data, pts) + playout.flush()
        pts += len(data) / 8000
        want = []
        for i in range(0, len(data), 160):
            n += 1
            want += [encode(OutMedia(sid, data[i : i + 160])), encode(Mark(sid, str(n)))]
        assert [m.encode() for m in msgs] == [w.encode() for w in want]
