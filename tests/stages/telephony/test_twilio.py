"""Twilio Media Streams: message conformance both ways, the chunker and marks, the stages."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clock import VirtualClock
from pipeline.context import PLAYED, StageContext
from pipeline.errors import FormatError, StageError
from pipeline.frames import Audio, Frame, Interrupt, ResponseDone
from pipeline.graph import Pipeline
from pipeline.runtime import Runner
from pipeline.testing import run_stage_async
from stages.telephony.twilio import (
    Clear,
    Connected,
    Dtmf,
    LatenessMeter,
    Mark,
    Media,
    MediaFormat,
    OutMedia,
    Playout,
    Start,
    Stop,
    TwilioCall,
    TwilioMessageError,
    bind_call,
    current_call,
    encode,
    parse_incoming,
    parse_outgoing,
    twilio_sink,
    twilio_source,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA0123456789abcdef0123456789abcdef"

# The messages as Twilio's docs show them (realtime-protocol.md section 5).
DOC_IN = {
    "connected": {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    "start": {
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
    },
    "media": {
        "event": "media",
        "sequenceNumber": "3",
        "streamSid": SID,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": "no+JhoaJjpzSHxAKBgYJ",
        },
    },
    "dtmf": {
        "event": "dtmf",
        "sequenceNumber": "5",
        "streamSid": SID,
        "dtmf": {"track": "inbound_track", "digit": "1"},
    },
    "mark": {
        "event": "mark",
        "sequenceNumber": "4",
        "streamSid": SID,
        "mark": {"name": "resp_1:42"},
    },
    "stop": {
        "event": "stop",
        "sequenceNumber": "5",
        "streamSid": SID,
        "stop": {"accountSid": "AC1", "callSid": CALL},
    },
}


def dumps(d: dict[str, Any]) -> str:
    return json.dumps(d)


# ---------------------------------------------------------------------------- incoming


def test_parse_every_documented_incoming_message() -> None:
    assert parse_incoming(dumps(DOC_IN["connected"])) == Connected("Call", "1.0.0")
    start = parse_incoming(dumps(DOC_IN["start"]))
    assert start == Start(
        stream_sid=SID,
        call_sid=CALL,
        account_sid="AC1",
        tracks=("inbound",),
        custom_parameters={"k": "v"},
        media_format=MediaFormat("audio/x-mulaw", 8000, 1),
        sequence_number=1,
    )
    media = parse_incoming(dumps(DOC_IN["media"]))
    assert isinstance(media, Media)
    assert media.payload == base64.b64decode("no+JhoaJjpzSHxAKBgYJ")
    assert (media.timestamp, media.chunk, media.sequence_number, media.pts) == (5, 1, 3, 0.005)
    assert parse_incoming(dumps(DOC_IN["dtmf"])) == Dtmf(SID, "1", "inbound_track", 5)
    assert parse_incoming(dumps(DOC_IN["mark"])) == Mark(SID, "resp_1:42", 4)
    assert parse_incoming(dumps(DOC_IN["stop"])) == Stop(SID, CALL, "AC1", 5)


@pytest.mark.parametrize("event", list(DOC_IN))
def test_encode_writes_exactly_the_documented_shape(event: str) -> None:
    msg = parse_incoming(dumps(DOC_IN[event]))
    assert json.loads(encode(msg)) == DOC_IN[event]


@given(
    payload=st.binary(min_size=0, max_size=400),
    ts=st.integers(0, 10**9),
    chunk=st.integers(1, 10**6),
    seq=st.integers(1, 10**6),
)
def test_media_round_trip(payload: bytes, ts: int, chunk: int, seq: int) -> None:
    msg = Media(stream_sid=SID, payload=payload, timestamp=ts, chunk=chunk, sequence_number=seq)
    text = encode(msg)
    raw = json.loads(text)
    for key in ("chunk", "timestamp"):
        assert isinstance(raw["media"][key], str)
    assert raw["sequenceNumber"] == str(seq)
    assert parse_incoming(text) == msg


def _with(event: str, path: tuple[str, ...], value: Any) -> str:
    d = json.loads(json.dumps(DOC_IN[event]))
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(d)


_DELETE = object()


@pytest.mark.parametrize(
    ("event", "path", "value", "expected"),
    [
        ("media", ("playload",), "x", "unknown field 'playload'"),
        ("media", ("media", "extra"), 1, "media: unknown field 'extra'"),
        ("start", ("start", "foo"), 1, "start: unknown field 'foo'"),
        ("media", ("sequenceNumber",), 3, "'sequenceNumber' must be a string of digits"),
        ("media", ("media", "timestamp"), 5, "'media.timestamp' must be a string of digits"),
        ("media", ("media", "chunk"), "one", "'media.chunk' must be a string of digits"),
        ("media", ("media", "payload"), "not base64!", "'media.payload' is not valid base64"),
        ("media", ("media", "payload"), _DELETE, "missing field 'media.payload'"),
        ("media", ("streamSid",), _DELETE, "missing field 'streamSid'"),
        ("start", ("start", "callSid"), _DELETE, "missing field 'start.callSid'"),
        ("start", ("start", "mediaFormat", "sampleRate"), 16000, "audio/x-mulaw 8000 Hz x1"),
        ("start", ("start", "mediaFormat", "sampleRate"), "8000", "must be an integer"),
        ("start", ("start", "customParameters"), {"k": 1}, "'start.customParameters.k' must be"),
        ("start", ("start", "customParameters"), ["secret"], "must be an object of strings, got"),
        ("start", ("start", "streamSid"), "MZother", "differs from streamSid"),
        ("mark", ("mark",), "x", "'mark' must be an object"),
        ("stop", ("stop", "callSid"), None, "'stop.callSid' must be a string, got null"),
        ("connected", ("version",), 1, "'version' must be a string"),
    ],
)
def test_incoming_refused_with_the_field_named(
    event: str, path: tuple[str, ...], value: Any, expected: str
) -> None:
    with pytest.raises(TwilioMessageError) as err:
        parse_incoming(_with(event, path, value))
    assert expected in str(err.value)
    assert err.value.code == 31951


def test_binary_frames_and_bad_json_are_malformed() -> None:
    for raw, text in [
        (b'{"event":"media"}', "binary frame of 17 bytes"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ]:
        with pytest.raises(TwilioMessageError) as err:
            parse_incoming(raw)
        assert text in str(err.value)
        assert err.value.code == 31950


def test_unknown_event_is_named() -> None:
    with pytest.raises(TwilioMessageError, match="unknown incoming event 'clear'"):
        parse_incoming('{"event": "clear", "streamSid": "MZ1"}')
    with pytest.raises(TwilioMessageError, match="no 'event' string"):
        parse_incoming('{"streamSid": "MZ1"}')


# ---------------------------------------------------------------------------- outgoing


def test_outgoing_shapes_are_exact() -> None:
    assert json.loads(encode(OutMedia(SID, b"\xff\x7f"))) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "/38="},
    }
    assert json.loads(encode(Mark(SID, "7"))) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "7"},
    }
    assert json.loads(encode(Clear(SID))) == {"event": "clear", "streamSid": SID}
    for msg in (OutMedia(SID, b"abc"), Mark(SID, "7"), Clear(SID)):
        assert parse_outgoing(encode(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"event": "media", "streamSid": SID, "media": {"payload": "", "track": "x"}}, "'track'"),
        (
            {"event": "mark", "sequenceNumber": "1", "streamSid": SID, "mark": {"name": "a"}},
            "'sequenceNumber'",
        ),
        ({"event": "clear"}, "missing field 'streamSid'"),
        ({"event": "stop", "streamSid": SID}, "unknown outgoing event 'stop'"),
        ({"event": "media", "streamSid": SID, "media": {"payload": 5}}, "must be a base64 string"),
    ],
)  # fmt: skip
def test_outgoing_refused(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(TwilioMessageError, match=expected):
        parse_outgoing(json.dumps(raw))


# ---------------------------------------------------------------------------- playout


def _media_and_marks(messages: list[str]) -> tuple[list[bytes], list[str]]:
    payloads, marks = [], []
    for i, text in enumerate(messages):
        msg = parse_outgoing(text)
        if isinstance(msg, OutMedia):
            payloads.append(msg.payload)
            nxt = parse_outgoing(messages[i + 1])  # every media is followed by its mark
            assert isinstance(nxt, Mark)
        elif isinstance(msg, Mark):
            marks.append(msg.name)
    return payloads, marks


@settings(max_examples=60)
@given(
    data=st.binary(min_size=0, max_size=3000),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
    chunk_ms=st.sampled_from([20, 30, 40, 50]),
)
def test_chunking_does_not_depend_on_how_audio_arrives(
    data: bytes, cuts: list[int], chunk_ms: int
) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    p = Playout(SID, chunk_ms=chunk_ms)
    out: list[str] = []
    for a, b in itertools.pairwise(bounds):
        out += p.push(data[a:b], a / 8000)
    out += p.flush()
    payloads, marks = _media_and_marks(out)
    size = 8 * chunk_ms
    assert b"".join(payloads) == data
    assert all(len(x) == size for x in payloads[:-1])
    assert payloads == [data[i : i + size] for i in range(0, len(data), size)]
    assert marks == [str(i + 1) for i in range(len(payloads))]
    assert p.bytes_sent == len(data)


def test_marks_move_the_heard_position_and_clear_resets() -> None:
    p = Playout(SID, chunk_ms=20)
    out = p.push(bytes(480), 1.0)  # three chunks: 1.00-1.02, 1.02-1.04, 1.04-1.06
    assert [n for n, _ in p.pending] == ["1", "2", "3"]
    assert _media_and_marks(out)[1] == ["1", "2", "3"]
    assert p.mark_echoed("2") == pytest.approx(1.04)  # "1" implied: played in order
    assert [n for n, _ in p.pending] == ["3"]
    assert p.mark_echoed("nope") is None
    assert p.push(bytes(100), 1.06) == []  # partial chunk held
    msgs, heard = p.clear()
    assert [json.loads(m) for m in msgs] == [{"event": "clear", "streamSid": SID}]
    assert heard == pytest.approx(1.04)
    assert not p.pending and p.buffered == 0
    assert p.mark_echoed("3") is None  # Twilio may echo cleared marks: ignored
    assert p.clear() == ([], pytest.approx(1.04))  # nothing unplayed: no clear sent


def test_a_gap_in_media_time_flushes_the_partial_chunk() -> None:
    p = Playout(SID, chunk_ms=20)
    assert p.push(bytes(100), 0.0) == []
    out = p.push(bytes(160), 5.0)  # a new stretch: the 100 bytes go out alone first
    payloads, _ = _media_and_marks(out)
    assert [len(x) for x in payloads] == [100, 160]
    assert [round(end, 4) for _, end in p.pending] == [0.0125, 5.02]


def test_lateness_is_the_gap_heard_within_a_stretch() -> None:
    lates: list[float] = []
    p = Playout(SID, chunk_ms=20, on_chunk=lates.append)
    p.push(bytes(160), 0.0, now=10.0)  # first chunk of a stretch: never late
    p.push(bytes(160), 0.02, now=10.005)  # early: the player is still busy
    p.push(bytes(160), 0.04, now=10.07)  # player ran dry at 10.04: 30 ms gap
    p.push(bytes(160), 3.0, now=20.0)  # a new stretch (media time jumps): not late
    assert lates == pytest.approx([0.0, 0.0, 0.03, 0.0])
    m = LatenessMeter()
    assert m.chunk(0.0, 0.02, continues=True) == 0.0  # nothing before it


def test_chunk_ms_range() -> None:
    with pytest.raises(ValueError, match="between 20 and 200"):
        Playout(SID, chunk_ms=10)


# ---------------------------------------------------------------------------- the call


def _call(sent: list[str] | None = None) -> TwilioCall:
    async def send(text: str) -> None:
        if sent is not None:
            sent.append(text)

    return TwilioCall(send)


async def _start(call: TwilioCall) -> None:
    await call.receive(dumps(DOC_IN["connected"]))
    await call.receive(dumps(DOC_IN["start"]))


def test_call_checks_order_and_stream_sid() -> None:
    async def main() -> TwilioCall:
        call = _call()
        await call.receive(dumps(DOC_IN["media"]))  # before start: skipped
        await _start(call)
        await call.receive(_with("media", ("streamSid",), "MZother"))
        await call.receive(dumps(DOC_IN["start"]))  # twice
        await call.receive(b"\x00\x01")  # binary
        await call.receive(dumps(DOC_IN["media"]))  # fine
        return call

    call = asyncio.run(main())
    assert call.bad_messages == 4
    assert call.call_sid == CALL and call.stream_sid == SID
    assert call.inbound.qsize() == 1


def test_no_call_bound_is_a_clear_error() -> None:
    with pytest.raises(StageError, match="run inside 'pipeline serve"):
        current_call("caller")


def _media(i: int, payload: bytes) -> str:
    return encode(Media(SID, payload, timestamp=20 * i, chunk=i + 1, sequence_number=i + 3))


def test_source_emits_pcmu_with_pts_from_timestamps_and_ends_on_stop() -> None:
    async def main() -> list[Frame]:
        call = _call()
        await _start(call)
        await call.receive(_media(0, b"\x01" * 160))
        await call.receive(dumps(DOC_IN["dtmf"]))
        await call.receive(_media(1, b"\x02" * 160))
        await call.receive(dumps(DOC_IN["stop"]))
        await call.receive(_media(2, b"\x03" * 160))  # after stop: never read
        with bind_call(call):
            return await run_stage_async(twilio_source, dtmf="text")

    out = asyncio.run(main())
    assert [type(f).__name__ for f in out] == ["Audio", "Text", "Audio"]
    a, t, b = out
    assert isinstance(a, Audio) and isinstance(b, Audio)
    assert (a.data, a.encoding, a.rate, a.pts) == (b"\x01" * 160, "pcmu", 8000, 0.0)
    assert (b.data, b.pts) == (b"\x02" * 160, 0.02)
    assert t.text == "DTMF 1"  # type: ignore[union-attr]


def test_source_ends_when_the_socket_closes() -> None:
    async def main() -> list[Frame]:
        call = _call()
        await _start(call)
        await call.receive(_media(0, b"\x01" * 160))
        call.connection_closed()
        with bind_call(call):
            return await run_stage_async(twilio_source)

    assert len(asyncio.run(main())) == 1


def _ulaw(n: int, pts: float, fill: int = 0x55) -> Audio:
    return Audio(bytes([fill]) * n, "pcmu", 8000, 1, pts)


def test_sink_sends_media_and_marks_and_clear_on_interrupt() -> None:
    sent: list[str] = []
    played: list[float] = []

    async def drive() -> None:
        call = _call(sent)
        await _start(call)
        ctx = StageContext("phone", clock=VirtualClock())
        ctx.bus.subscribe(PLAYED, lambda v: played.append(v.pts))

        async def frames() -> AsyncIterator[Frame]:
            yield _ulaw(320, 0.0)
            await call.receive(encode(Mark(SID, "1", 9)))
            yield _ulaw(100, 0.04)
            yield Interrupt()
            yield _ulaw(160, 7.0, fill=0x66)
            yield ResponseDone("r2")

        with bind_call(call):
            gen = twilio_sink(frames(), chunk_ms=20, ctx=ctx)
            async for _ in gen:
                pass

    asyncio.run(drive())
    events = [json.loads(m) for m in sent]
    kinds = [e["event"] for e in events]
    assert kinds == ["media", "mark", "media", "mark", "clear", "media", "mark"]
    assert all(e["streamSid"] == SID for e in events)
    assert base64.b64decode(events[0]["media"]["payload"]) == b"\x55" * 160
    assert events[3]["mark"]["name"] == "2"
    assert base64.b64decode(events[5]["media"]["payload"]) == b"\x66" * 160
    assert played == pytest.approx([0.02, 0.02])  # the echo, then the heard position at clear


def test_sink_refuses_other_formats_before_running() -> None:
    p = Pipeline("bad")
    p.add("src", "tests.stagekit:source")
    p.add("phone", "twilio_sink")
    p.link("src", "phone")
    problems = p.check().problems
    assert len(problems) == 1
    assert "a Twilio stream plays pcmu 8000 Hz mono" in problems[0].message
    assert "g711_encode" in problems[0].fix


@pytest.mark.parametrize(
    ("frame", "shown"),
    [
        (Audio(bytes(320), "pcm16", 8000), "pcm16 8000 Hz"),
        (Audio(bytes(160), "pcma", 8000), "pcma 8000 Hz"),
        (Audio(bytes(320), "pcmu", 16000), "pcmu 16000 Hz"),
        (Audio(bytes(320), "pcmu", 8000, 2), "pcmu 8000 Hz x2"),
    ],
)
def test_sink_refuses_other_formats_while_running(frame: Audio, shown: str) -> None:
    # the encoding, the rate and the channels are each checked, after a frame that passed
    async def main() -> None:
        call = _call([])
        await _start(call)
        with bind_call(call):
            await run_stage_async(twilio_sink, [Audio(bytes(160), "pcmu", 8000), frame])

    with pytest.raises(FormatError, match=f"got {shown} audio; the call's stream plays pcmu"):
        asyncio.run(main())


def test_loopback_pipeline_returns_the_callers_audio() -> None:
    """twilio_source -> twilio_sink in a real Runner with a virtual clock: every byte back,
    in 20 ms chunks, the last partial chunk flushed after the hold (the caller hangs up only
    once it has all come back, so the end of the stream flushes nothing)."""
    sent: list[str] = []
    audio = bytes(range(256)) * 3  # 768 bytes: 4 full chunks + 128
    all_back = asyncio.Event()

    async def main() -> None:
        async def send(text: str) -> None:
            sent.append(text)
            back = sum(len(m.payload) for m in map(parse_outgoing, sent) if isinstance(m, OutMedia))
            if back == len(audio):
                all_back.set()

        call = TwilioCall(send)
        await _start(call)
        for i in range(0, len(audio), 160):
            await call.receive(_media(i // 160, audio[i : i + 160]))
        p = Pipeline("loop")
        p.add("caller", "twilio_source")
        p.add("phone", "twilio_sink")
        p.link("caller", "phone")
        p.validate()

        async def hang_up_later() -> None:
            async with asyncio.timeout(10):
                await all_back.wait()
            await call.receive(dumps(DOC_IN["stop"]))

        with bind_call(call):
            task = asyncio.create_task(hang_up_later())
            await Runner(p, clock=VirtualClock()).run()
            await task

    asyncio.run(main())
    back = [parse_outgoing(m) for m in sent]
    payloads = [m.payload for m in back if isinstance(m, OutMedia)]
    assert b"".join(payloads) == audio
    assert [len(x) for x in payloads] == [160, 160, 160, 160, 128]


def test_sink_passes_the_stage_conformance_checks() -> None:
    from pipeline.testing import check_stage

    sent: list[str] = []
    call = _call(sent)

    async def started() -> None:
        await _start(call)

    asyncio.run(started())
    frames: list[Frame] = [_ulaw(400, 0.0), Interrupt(), _ulaw(160, 1.0), ResponseDone("r")]
    with bind_call(call):
        assert check_stage("twilio_sink", frames) == []
    assert sent and all(parse_outgoing(m).stream_sid == SID for m in sent)


def test_errors_never_quote_parameter_values() -> None:
    bad = _with("start", ("start", "customParameters"), {"token": "s3cret", "n": 5})
    with pytest.raises(TwilioMessageError) as err:
        parse_incoming(bad)
    assert "s3cret" not in str(err.value)
    assert "'start.customParameters.n'" in str(err.value)


# ---------------------------------------------------------------------------- reading the socket


class _Socket:
    """A connection's receiving end in memory: ``recv`` hands out what the test feeds, in
    order, and raises ConnectionClosed once it is closed and empty; it counts the reads that
    each task made."""

    def __init__(self) -> None:
        self._q: asyncio.Queue[str | None] = asyncio.Queue()
        self.readers: list[str] = []

    def feed(self, *messages: str) -> None:
        for m in messages:
            self._q.put_nowait(m)

    def close(self) -> None:
        self._q.put_nowait(None)

    async def recv(self) -> str:
        from websockets.exceptions import ConnectionClosedOK
        from websockets.frames import Close

        task = asyncio.current_task()
        self.readers.append(task.get_name() if task is not None else "")
        m = await self._q.get()
        if m is None:
            self._q.put_nowait(None)  # closed stays closed
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
        return m


def _mark_echo(name: str) -> str:
    return dumps({"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}})


def test_the_source_reads_the_socket_itself_and_the_reader_takes_over_after_it() -> None:
    """Before the source reads, the reader task does (connected, start); once the source
    reads, the reader steps aside after its pending read and the source reads the socket
    itself (marks handled in their place between media); after the source is done, the reader
    task reads again (a late mark echo) until the socket closes."""
    marks: list[str] = []
    got: list[Any] = []

    async def main() -> tuple[_Socket, TwilioCall]:
        sock = _Socket()
        call = _call()
        call.on_mark = marks.append
        reader = asyncio.create_task(call.read_socket(sock.recv), name="reader")
        sock.feed(dumps(DOC_IN["connected"]), dumps(DOC_IN["start"]))
        await call.started.wait()

        async def source() -> None:
            with call.source_reads():
                sock.feed(_media(0, b"\x01" * 160))
                got.append(await call.next_inbound())  # the reader's pending read brings it
                sock.feed(_mark_echo("a"), _media(1, b"\x02" * 160))
                got.append(await call.next_inbound())
                assert marks == ["a"]
                sock.feed(_mark_echo("b"), dumps(DOC_IN["stop"]))
                got.append(await call.next_inbound())

        await asyncio.create_task(source(), name="source")
        sock.feed(_mark_echo("c"))
        sock.close()
        await reader  # the reader took over again: the late echo, then the close
        return sock, call

    sock, call = asyncio.run(main())
    assert [m.data if isinstance(m, Audio) else type(m).__name__ for m in got] == [
        b"\x01" * 160,
        b"\x02" * 160,
        "Stop",
    ]
    assert marks == ["a", "b", "c"]
    assert call.closed and call.ended.is_set()
    assert sock.readers == [
        *["reader"] * 3,  # connected, start, and the read pending when the source began
        *["source"] * 4,  # mark a, media 1, mark b, stop
        *["reader"] * 2,  # mark c, the close
    ]


def test_the_source_ends_when_the_socket_closes_under_its_own_read() -> None:
    async def main() -> tuple[list[Frame], TwilioCall]:
        sock = _Socket()
        call = _call()
        reader = asyncio.create_task(call.read_socket(sock.recv), name="reader")
        sock.feed(dumps(DOC_IN["connected"]), dumps(DOC_IN["start"]))
        await call.started.wait()
        sock.feed(_media(0, b"\x01" * 160), _media(1, b"\x02" * 160))

        async def source() -> list[Frame]:
            with bind_call(call):
                return await run_stage_async(twilio_source)

        task = asyncio.create_task(source(), name="source")
        while len(sock.readers) < 5:  # the source is waiting in its own read
            await asyncio.sleep(0)
        sock.close()
        frames = await task
        await reader  # sees the call closed and ends
        return frames, call

    frames, call = asyncio.run(main())
    assert [f.data for f in frames if isinstance(f, Audio)] == [b"\x01" * 160, b"\x02" * 160]
    assert call.closed


def test_sink_lateness_restarts_with_each_reply_and_counts_late_deltas() -> None:
    """The realtime session's output media time runs on across replies: the next reply's
    first chunk follows on from the last one's end but is not late (response latency). Within
    a reply paced in real time (100 ms deltas, 40 ms chunks: the 20 ms left over goes out one
    chunk later), a delta 30 ms late is 30 ms of lateness, once."""
    lates: list[float] = []

    async def main() -> None:
        call = TwilioCall(_noop_send, on_lateness=lates.append)
        await _start(call)
        clock = VirtualClock()
        ctx = StageContext("phone", clock=clock)

        async def frames() -> AsyncIterator[Frame]:
            yield _ulaw(800, 0.0)
            await clock.sleep(0.1)
            yield _ulaw(800, 0.1)
            await clock.sleep(0.1)
            yield ResponseDone("r1")
            await clock.sleep(4.0)  # the caller's next turn; the media time runs on
            yield _ulaw(800, 0.2)
            await clock.sleep(0.13)  # 30 ms late
            yield _ulaw(800, 0.3)
            await clock.sleep(0.1)
            yield ResponseDone("r2")

        with bind_call(call):
            await run_stage_async(twilio_sink, frames(), chunk_ms=40, ctx=ctx)

    asyncio.run(main())
    # per reply: 40 + 40 (+ 20 from the flusher) ms per delta
    assert lates == pytest.approx([0.0] * 6 + [0.0] * 3 + [0.03, 0.0, 0.0])


async def _noop_send(text: str) -> None:
    return None


def test_batched_sends_keep_media_then_mark_per_chunk_and_count_every_message() -> None:
    """With a batch sender (the server's connection), the sink's chunks leave as batches of
    whole chunks, each media followed by its mark, and the call counts each message."""
    batches: list[list[str]] = []

    async def main() -> TwilioCall:
        async def send(text: str) -> None:
            batches.append([text])

        async def send_batch(texts: list[str]) -> None:
            batches.append(list(texts))

        call = TwilioCall(send, send_batch=send_batch)
        await _start(call)
        frames = [_ulaw(800, 0.0), _ulaw(800, 0.1), ResponseDone("r")]  # 100 ms each
        with bind_call(call):
            ctx = StageContext("phone", clock=VirtualClock())
            await run_stage_async(twilio_sink, frames, chunk_ms=40, ctx=ctx)
        return call

    call = asyncio.run(main())
    flat = [m for b in batches for m in b]
    payloads, marks = _media_and_marks(flat)
    assert b"".join(payloads) == _ulaw(800, 0.0).data + _ulaw(800, 0.1).data
    assert marks == [str(i) for i in range(1, len(marks) + 1)]
    for b in batches:  # whole chunks only: media, mark, media, mark...
        kinds = [type(parse_outgoing(m)).__name__ for m in b]
        assert kinds == ["OutMedia", "Mark"] * (len(b) // 2)
    assert any(len(b) >= 4 for b in batches)  # a 100 ms frame: two chunks in one write
    assert call.messages_out == len(flat)


# ---------------------------------------------------------------------------- sparse marks


def test_mark_ms_marks_every_n_ms_of_audio_and_the_end_of_each_reply() -> None:
    sent: list[tuple[str, int]] = []
    p = Playout(SID, chunk_ms=40, mark_ms=200, on_sent=lambda n, c: sent.append((n, len(c))))
    out = p.push(bytes(8 * 460), 0.0)  # 460 ms: eleven 40 ms chunks, 20 ms buffered
    kinds = [type(parse_outgoing(m)).__name__ for m in out]
    assert kinds == (["OutMedia"] * 4 + ["OutMedia", "Mark"]) * 2 + ["OutMedia"]
    assert [n for n, _ in p.pending] == ["1", "2"]
    assert [end for _, end in p.pending] == pytest.approx([0.2, 0.4])
    assert p.unmarked == 320
    out = p.end_reply()  # the 20 ms left, then a mark for the 60 ms sent unmarked
    assert [type(parse_outgoing(m)).__name__ for m in out] == ["OutMedia", "Mark"]
    assert p.pending[-1] == ("3", pytest.approx(0.46))
    assert p.end_reply() == []  # nothing unmarked: no mark
    # the recorder sees every chunk, named when a mark follows it, and a mark on its own
    assert sent == [("", 320)] * 4 + [("1", 320)] + [("", 320)] * 4 + [("2", 320)] + [
        ("", 320),
        ("", 160),
        ("3", 0),
    ]


def test_mark_ms_every_chunk_is_the_default_and_marks_stay_after_each_chunk() -> None:
    a, b = Playout(SID, chunk_ms=40), Playout(SID, chunk_ms=40, mark_ms=40)
    assert (
        a.push(bytes(8 * 460), 0.0) + a.end_reply() == b.push(bytes(8 * 460), 0.0) + b.end_reply()
    )
    assert not a.interpolates and not b.interpolates


def test_mark_ms_range_is_checked() -> None:
    with pytest.raises(ValueError, match="mark_ms must be between chunk_ms \\(40\\) and 1000"):
        Playout(SID, chunk_ms=40, mark_ms=20)
    p = Pipeline("p")
    p.add("caller", "twilio_source")
    p.add("phone", "twilio_sink", chunk_ms=40, mark_ms=5000)
    p.link("caller", "phone")
    [problem] = p.check().problems
    assert "must be from chunk_ms (40) to 1000 ms of audio per mark, got 5000" in problem.message


def test_heard_position_follows_the_clock_between_sparse_marks() -> None:
    """The caller's player plays each chunk when it arrives or when the previous one ends: the
    heard position is what was sent less what is left to play, and each echo sets it right."""
    p = Playout(SID, chunk_ms=40, mark_ms=200)
    assert p.heard_at(5.0) is None  # nothing sent, nothing heard
    p.push(bytes(8 * 1000), 0.0, now=10.0)  # a whole second at once: plays 10.0 to 11.0
    assert p.heard_at(10.0) == pytest.approx(0.0)
    assert p.heard_at(10.25) == pytest.approx(0.25)
    assert p.heard_at(12.0) == pytest.approx(1.0)  # capped at what was sent
    # the echo of the mark at 0.2 s comes late (at 10.3): the player was held up by 0.1 s
    assert p.mark_echoed("1", now=10.3) == pytest.approx(0.2)
    assert p.heard_at(10.3) == pytest.approx(0.2)
    assert p.heard_at(10.55) == pytest.approx(0.45)
    assert p.heard_at(11.5) == pytest.approx(1.0)
    # the player ran dry; the next audio starts playing when it arrives
    p.push(bytes(8 * 200), 1.0, now=20.0)
    assert p.heard_at(20.0) == pytest.approx(1.0)
    assert p.heard_at(20.1) == pytest.approx(1.1)
    msgs, heard = p.clear(20.1)  # barge-in: the heard position is the clock's
    assert [json.loads(m)["event"] for m in msgs] == ["clear"]
    assert heard == pytest.approx(1.1)
    assert p.heard_at(25.0) == pytest.approx(1.1)  # nothing plays after a clear
    # marks after every chunk: the heard position is the last echo's, as always
    q = Playout(SID, chunk_ms=40)
    q.push(bytes(8 * 1000), 0.0, now=10.0)
    assert q.heard_at(10.5) is None
    q.mark_echoed("3", now=10.13)
    assert q.heard_at(10.5) == pytest.approx(0.12)


def _heard_at_barge_in(
    mark_ms: int | None, barge_in_at: float, *, paced: bool
) -> tuple[float, float]:
    """A 2 s reply (100 ms deltas, all at once or paced in real time) played by a model of
    Twilio's player on a virtual clock (each chunk plays when it arrives or when the one
    before ends; a mark is echoed 10 ms after the audio before it has played). The caller's
    frames arrive every 20 ms (the source's hook). Returns the heard position the session
    holds right after the caller frame at ``barge_in_at`` (the last ``played`` published),
    and what the player had really played by then."""
    played: list[float] = []
    truth: list[tuple[float, float]] = []  # (start time, duration) of each chunk played

    async def main() -> float:
        clock = VirtualClock()
        pending_echoes: set[asyncio.Task[None]] = set()
        play_end = [0.0]

        async def echo(name: str, due: float) -> None:
            await clock.sleep_until(due)
            await call.receive(encode(Mark(SID, name, 1)))

        async def send(text: str) -> None:
            msg = parse_outgoing(text)
            now = clock.now()
            if isinstance(msg, OutMedia):
                start = max(now, play_end[0])
                dur = len(msg.payload) / 8000
                play_end[0] = start + dur
                truth.append((start, dur))
            elif isinstance(msg, Mark):
                task = asyncio.create_task(echo(msg.name, max(now, play_end[0]) + 0.01))
                pending_echoes.add(task)

        call = TwilioCall(send)
        await _start(call)
        ctx = StageContext("phone", clock=clock)
        ctx.bus.subscribe(PLAYED, lambda v: played.append(v.pts))
        heard_then: list[float] = []

        async def reply() -> AsyncIterator[Frame]:
            for i in range(20):
                yield _ulaw(800, i / 10)
                if paced:
                    await clock.sleep(0.1)
            await clock.sleep_until(barge_in_at + 0.5)
            yield ResponseDone("r1")

        async def caller() -> None:
            k = 0
            while clock.now() < barge_in_at + 0.3:
                await clock.sleep_until(k * 0.02)
                if call.on_caller_audio is not None:
                    call.on_caller_audio()
                if abs(clock.now() - barge_in_at) < 1e-9:
                    heard_then.append(played[-1] if played else 0.0)
                k += 1

        with bind_call(call):
            task = asyncio.create_task(caller())
            await run_stage_async(twilio_sink, reply(), chunk_ms=40, mark_ms=mark_ms, ctx=ctx)
            await task
        for t in pending_echoes:
            t.cancel()
        [heard] = heard_then
        return heard

    heard = asyncio.run(main())
    real = sum(min(max(barge_in_at - start, 0.0), dur) for start, dur in truth)
    return heard, real


@pytest.mark.parametrize("paced", [False, True])
@pytest.mark.parametrize("barge_in_at", [0.06, 0.48, 0.9, 1.22, 1.7, 2.4])
def test_with_marks_every_200_ms_the_truncation_point_is_within_a_chunk_of_every_chunk(
    barge_in_at: float, paced: bool
) -> None:
    every_chunk, real = _heard_at_barge_in(None, barge_in_at, paced=paced)
    sparse, real2 = _heard_at_barge_in(200, barge_in_at, paced=paced)
    assert real == pytest.approx(real2)
    assert abs(sparse - every_chunk) <= 0.04 + 1e-9
    assert real - 0.04 - 0.01 - 1e-9 <= every_chunk <= real + 1e-9  # one chunk + the echo behind
    assert real - 0.01 - 1e-9 <= sparse <= real + 1e-9  # the echo's latency behind at most
