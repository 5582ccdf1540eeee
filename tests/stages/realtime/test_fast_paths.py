"""The realtime session's per-frame fast paths give exactly what the general code gives: the
append message character for character (against orjson of the event's dict), the audio delta's
events, errors and state (against the general dispatch), base64 (against the standard library),
the input batcher's pieces (against its general path)."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.frames import BYTES_PER_SAMPLE, Audio, AudioFormat
from stages.realtime import protocol as p
from stages.realtime.buffers import GAP_FILL_MAX_S, AudioBatcher
from stages.realtime.wire import CODECS, b64, fast, gemini
from stages.realtime.wire import client as wc

# ----------------------------------------------------------------------------- base64

B64_CHARS = st.sampled_from(
    [*"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", *' \n-_\\"é\x00']
)


def outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc), str(exc))


@settings(max_examples=3000)
@given(st.lists(B64_CHARS, max_size=16).map("".join))
@example("w6ww==")  # strict binascii takes this, pybase64's validate refuses it
@example("YWJj=")
@example("")
def test_decode_strict_is_binascii_strict(text: str) -> None:
    want = outcome(lambda t: binascii.a2b_base64(t, strict_mode=True), text)
    assert outcome(b64.decode_strict, text) == want
    if text.isascii():
        assert outcome(b64.decode_strict, text.encode()) == want


@given(st.binary(max_size=2000))
def test_decode_strict_reads_what_encode_writes(data: bytes) -> None:
    text = b64.encode(data)
    assert text == base64.b64encode(data).decode()
    assert b64.decode_strict(text) == data


# ----------------------------------------------------------------------------- append


def append_dict(audio: bytes, event_id: str) -> Any:
    return orjson.dumps(
        {
            "type": "input_audio_buffer.append",
            "event_id": event_id,
            "audio": base64.b64encode(audio).decode(),
        }
    ).decode()


@settings(max_examples=500)
@given(st.binary(max_size=4000), st.text(max_size=20))
@example(b"\x00\x01", 'c-"1"')
@example(b"", "c-\\")
@example(b"\xff", "\x7f\u2028é")
@example(b"ab", "\ud800")  # a lone surrogate: orjson refuses it either way
def test_append_message_is_orjson_of_the_event(audio: bytes, event_id: str) -> None:
    want = outcome(append_dict, audio, event_id)
    assert outcome(wc.encode_append, audio, event_id) == want
    assert outcome(fast.encode_append, audio, event_id) == want
    if fast._cwire is not None:
        assert outcome(fast._encode_append_native, audio, event_id) == want
    assert outcome(wc.encode, wc.InputAudioBufferAppend(audio), event_id) == want
    for codec in CODECS.values():
        got = outcome(codec.encode_append, audio, event_id)
        assert got == outcome(codec.encode_client, wc.InputAudioBufferAppend(audio), event_id)


def ready(dialect: p.Dialect = "xai", **config: Any) -> p.RealtimeProtocol:
    proto = p.RealtimeProtocol(p.SessionConfig(dialect=dialect, **config))
    proto.connection_made()
    proto.receive('{"type":"session.updated","session":{}}')
    proto.data_to_send()
    return proto


@pytest.mark.parametrize("dialect", list(CODECS))
def test_protocol_appends_the_event_message(dialect: p.Dialect) -> None:
    fmt = AudioFormat("pcm16", 16000 if dialect == "gemini" else 24000)
    proto = ready(dialect, input_format=fmt)
    audio = bytes(range(256)) * 3
    text = proto.append_audio(audio)
    assert proto.data_to_send() == [text]
    event_id = orjson.loads(text)["event_id"]
    assert text == CODECS[dialect].encode_client(wc.InputAudioBufferAppend(audio), event_id)
    # one count of ids for every message
    proto.sync()
    (barrier,) = proto.data_to_send()
    last = orjson.loads(proto.append_audio(audio))["event_id"]
    assert [event_id, orjson.loads(barrier)["event_id"], last] == [
        f"c-{n}" for n in range(int(event_id[2:]), int(event_id[2:]) + 3)
    ]


# ----------------------------------------------------------------------------- audio delta


def slow(proto: p.RealtimeProtocol) -> p.RealtimeProtocol:
    proto._plain = False  # every message through the general dispatch
    proto._read_delta = None
    return proto


def unread(proto: p.RealtimeProtocol) -> p.RealtimeProtocol:
    proto._read_delta = None  # the audio delta after orjson (the path without the kernel)
    return proto


def state(proto: p.RealtimeProtocol) -> tuple[Any, ...]:
    return (
        proto.state,
        proto.barge.state,
        proto.assistant_item,
        dict(proto._audio_bytes),
        proto.last_response,
        proto.data_to_send(),
    )


def pair(
    fast_path: str = "native", cut: bool = False
) -> tuple[p.RealtimeProtocol, p.RealtimeProtocol]:
    fast, full = ready(), slow(ready())
    if fast_path == "orjson":
        unread(fast)
    for proto in (fast, full):
        proto.receive('{"type":"response.created","response":{"id":"resp_1"}}')
        if cut:  # the user barged in on resp_1: its audio comes back discarded
            proto.interrupt(0, local=True)
    return fast, full


FAST_PATHS = ["native", "orjson"]


def same(message: Any) -> None:
    for fast_path in FAST_PATHS:
        for cut in (False, True):
            fast, full = pair(fast_path, cut)
            assert fast.receive(message) == full.receive(message)
            assert state(fast) == state(full)


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
NAMES = st.sampled_from(
    ["response.output_audio.delta", "response.audio.delta", "response.output_audio_transcript"]
)


@st.composite
def delta_messages(draw: st.DrawFn) -> str:
    """Audio deltas as servers send them, and the odd ones: other fields, nesting, a ``delta``
    elsewhere, the type not first, bad base64, text cut or inserted anywhere."""
    fields: dict[str, Any] = {"type": draw(NAMES)}
    extra = draw(
        st.dictionaries(
            st.sampled_from(["event_id", "response_id", "item_id", "output_index", "x", "delta"]),
            JSON_VALUES,
            max_size=4,
        )
    )
    if draw(st.booleans()):
        fields = {**extra, **fields}  # the type not first
    else:
        fields.update(extra)
    fields.pop("delta", None)
    fields["delta"] = draw(
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
        | st.lists(B64_CHARS, max_size=12).map("".join)
    )
    text = orjson.dumps(fields).decode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = (
            text[:at]
            + draw(st.sampled_from(["", '"', "\\", "}", ",", " ", "A", "{"]))
            + text[at + cut :]
        )
    return text


@settings(max_examples=1500)
@given(delta_messages())
@example('{"type":"response.output_audio.delta","delta":"AAAA"}')
@example('{"type":"response.output_audio.delta","item_id":"i","delta":"AA\\/A"}')  # an escape
@example('{"type":"response.output_audio.delta","delta":"x","delta":"AAAA"}')  # twice
@example('{"type":"response.output_audio.delta","o":{"delta":"AAAA"},"delta":"AAAA"}')
@example('{"type":"response.output_audio.delta","o":{"k":1,"delta":"AAAA"},"delta":"AAAA"}')
@example('{"type":"response.output_audio.delta","delta":"AAA="}  ')
@example('{"type":"response.output_audio.delta","type":"x","delta":"AAAA"}')
@example('{"type":"response.output_audio.delta",,"delta":"AAAA"}')
@example('{"type":"response.output_audio.delta","delta":"AAAA"}}')
@example('{"type":["response.output_audio.delta"],"delta":"AAAA"}')
@example('{"type":"response.output_audio.delta","item_id":"i"}')
@example('{"type":"response.audio.delta","delta":7}')
@example('{"type":"response.output_audio.delta","a":"b,"delta":"AAAA"}')
def test_delta_fast_path_is_the_general_dispatch(message: str) -> None:
    same(message)


@pytest.mark.parametrize("fast_path", FAST_PATHS)
def test_fast_path_reads_the_usual_delta(fast_path: str) -> None:
    if fast_path == "native" and p._DELTA_READER is None:
        pytest.skip("the compiled wire kernel (stages.realtime.wire._cwire) is not built")
    fast, full = pair(fast_path)
    audio = bytes(range(200)) * 4 + bytes(160)
    message = orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "evt_1",
            "response_id": "resp_1",
            "item_id": "item_2",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(audio).decode(),
        }
    ).decode()
    fast._receive_event = None  # type: ignore[assignment,method-assign]  # (not called)
    if fast_path == "native":  # the compiled reader answers: orjson's path is not taken
        fast._on_audio_delta = None  # type: ignore[assignment,method-assign]
    (got,) = fast.receive(message)
    assert got == p.AudioDeltaEvent(audio, "resp_1", "item_2")
    assert full.receive(message) == [got]
    assert state(fast) == state(full)
    assert fast.assistant_audio_ms() == len(audio) * 1000 // 48000


# ----------------------------------------------------------------------------- the compiled kernel

needs_kernel = pytest.mark.skipif(
    fast._cwire is None,
    reason="the compiled wire kernel (stages.realtime.wire._cwire) is not built "
    "(or PIPELINE_PURE_PYTHON is set)",
)
DELTA_NAMES = p._AUDIO_DELTA_NAMES
PLAIN = [d for d in CODECS if d != "gemini"]  # Gemini's messages are not the OpenAI family's


def real_delta(dialect: str, audio: bytes, *, spaced: bool = False, n: int = 7) -> str:
    """An audio delta as the dialect's server sends it (the emulator's way: the canonical event
    through the codec, the event id first)."""
    event = {
        "type": "response.output_audio.delta",
        "response_id": f"resp_{n}",
        "item_id": f"item_{n + 1}",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }
    (wire,) = CODECS[dialect].encode_server(event)  # type: ignore[index]
    message = {"type": wire["type"], "event_id": f"event_{n}", **wire}
    if spaced:  # as json.dumps writes it (the documentation's examples)
        return json.dumps(message)
    return orjson.dumps(message).decode()


def native_read(message: str | bytes) -> p.AudioDeltaEvent | None:
    reader = fast.native_reader(DELTA_NAMES)
    assert reader is not None
    return reader(message)


@needs_kernel
@pytest.mark.parametrize("dialect", PLAIN)
@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 160, 320, 959, 960, 961, 4800])
def test_native_reader_reads_every_dialects_delta(dialect: str, size: int) -> None:
    audio = bytes((i * 7 + 3) % 256 for i in range(size))
    for spaced in (False, True):
        message = real_delta(dialect, audio, spaced=spaced)
        want = fast.read_delta_pure(message, DELTA_NAMES)
        assert want == p.AudioDeltaEvent(audio, "resp_7", "item_8")
        assert native_read(message) == want
        assert native_read(message.encode()) == want


@needs_kernel
@pytest.mark.parametrize("dialect", PLAIN)
def test_the_protocol_takes_every_dialects_delta_through_the_kernel(dialect: str) -> None:
    fmt = AudioFormat("pcm16", 24000)
    proto = ready(dialect, output_format=fmt)
    full = slow(ready(dialect, output_format=fmt))
    proto._on_audio_delta = None  # type: ignore[assignment,method-assign]  # (not called)
    message = real_delta(dialect, bytes(960))
    assert (
        proto.receive(message)
        == full.receive(message)
        == [p.AudioDeltaEvent(bytes(960), "resp_7", "item_8")]
    )
    assert state(proto) == state(full)


EDITS = [*'"\\{}[],: \n\t=A+/-_01é\x00', "null", "true", "1.5", '"x"', "\\u0041"]


def mutations(draw: st.DrawFn, text: str) -> str:
    """``text`` with up to three edits anywhere: a character replaced, inserted or removed."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(EDITS))
        cut = draw(st.integers(0, 2))
        text = text[:at] + piece + text[at + cut :]
    return text


@st.composite
def mutated_deltas(draw: st.DrawFn) -> str | bytes:
    """Real messages of every dialect, and each field of them changed or doubled, cut anywhere."""
    dialect = draw(st.sampled_from(PLAIN))
    audio = draw(st.binary(max_size=40))
    message = orjson.loads(real_delta(dialect, audio, spaced=draw(st.booleans())))
    for key in draw(st.lists(st.sampled_from(sorted(message)), max_size=2)):
        message[key] = draw(JSON_VALUES | st.sampled_from(["", "QQ==", "QR==", "QUI=", "QUJ="]))
    text = orjson.dumps(message).decode()
    if draw(st.booleans()):  # a key twice (orjson keeps the last)
        key = draw(st.sampled_from(["type", "delta", "item_id", "response_id", "x"]))
        value = orjson.dumps(draw(JSON_VALUES)).decode()
        text = (
            text[:-1] + f',"{key}":{value}}}'
            if draw(st.booleans())
            else ("{" + f'"{key}":{value},' + text[1:])
        )
    text = mutations(draw, text)
    return text.encode("utf-8", "surrogatepass") if draw(st.booleans()) else text


@needs_kernel
@settings(max_examples=3000)
@given(mutated_deltas() | delta_messages())
@example('{"type":"response.output_audio.delta","delta":"QR=="}')  # bits past the last byte
@example('{"type":"response.output_audio.delta","delta":"w6ww=="}')  # binascii takes it
@example('{"type":"response.output_audio.delta","delta":"AAAA","item_id":1}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","item_id":null}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":01}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":1e5}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":12345678901234567890}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":"\\u00e9"}')
@example('{"type":"response.output_audio.delta","delta":"AA\\u0041A"}')
@example('{"type":"response.output_audio.delta","delta":"AAAA"} x')
@example(' \t\r\n{"type" : "response.audio.delta" , "delta" : "AAAA" }\n')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":-}')
@example('{"type":"response.output_audio.delta","delta":"AAAA","x":tru}')
@example('{"type":"response.output_audio.delta","delta":"AAAA",}')
@example(b'{"type":"response.output_audio.delta","delta":"AAAA","x":"\xff"}')
def test_native_reader_answers_only_as_the_checked_path(message: str | bytes) -> None:
    got = native_read(message)
    if got is not None:  # it may leave a message to the checked path, never answer otherwise
        assert got == fast.read_delta_pure(message, DELTA_NAMES)
    if isinstance(message, str):
        same(message)  # and the protocol with it gives the general dispatch's events and state


@needs_kernel
def test_native_reader_answers_for_the_shape_servers_send() -> None:
    # the usual message is read by the kernel, not left to the checked path
    for message in (
        '{"type":"response.output_audio.delta","delta":"AAAA"}',
        '{"type":"response.audio.delta","delta":"","item_id":null,"response_id":"r"}',
        '{"delta":"QUI=","x":[],"type":"response.output_audio.delta"}'.replace("[]", "-0"),
        '{"type":"response.output_audio.delta","a":true,"b":false,"c":null,"d":-12,"delta":"QQ=="}',
    ):
        assert native_read(message) is not None, message
        assert native_read(message) == fast.read_delta_pure(message, DELTA_NAMES)


@needs_kernel
def test_native_kernel_keeps_no_references() -> None:
    import sys

    names = tuple(sorted(DELTA_NAMES))
    cls = p.AudioDeltaEvent
    reader = fast._cwire.DeltaReader(cls, fast.DELTA_FIELDS, names)
    message = real_delta("xai", bytes(960))
    audio = bytes(640)
    before = sys.getrefcount(cls), sys.getrefcount(names), sys.getrefcount(audio)
    for _ in range(1000):
        ev = reader.read(message)
        assert reader.read("{}") is None
        fast._cwire.append(audio, "c-1")
        fast._cwire.audio_delta(message, names)
    # the event's fields are referenced by the event only (and here, by the call's argument)
    data, rid, item = ev.data, ev.response_id, ev.item_id
    counts = sys.getrefcount(data), sys.getrefcount(rid), sys.getrefcount(item)
    assert counts == (3, 3, 3)  # the event's, the local name's, the argument's
    del ev, data, rid, item  # (an instance holds its class)
    assert (sys.getrefcount(cls), sys.getrefcount(names), sys.getrefcount(audio)) == before
    del reader
    assert sys.getrefcount(cls) == before[0] - 1 and sys.getrefcount(names) == before[1] - 1


@needs_kernel
def test_native_kernel_refuses_bad_arguments_with_the_fix() -> None:
    cwire = fast._cwire
    with pytest.raises(TypeError, match="has no slot 'audio'"):
        cwire.DeltaReader(p.AudioDeltaEvent, ("audio", "response_id", "item_id", "discarded"), ())
    with pytest.raises(ValueError, match=r"4 slot names expected .* got 2"):
        cwire.DeltaReader(p.AudioDeltaEvent, ("data", "item_id"), ())
    with pytest.raises(TypeError, match=r"names\[0\] is 1; event names are ASCII str"):
        cwire.DeltaReader(p.AudioDeltaEvent, fast.DELTA_FIELDS, (1,))
    with pytest.raises(TypeError, match="takes 2 arguments"):
        cwire.append(b"")
    with pytest.raises(TypeError, match=r"takes 2 arguments \(message, names\), got 1"):
        cwire.audio_delta("{}")
    with pytest.raises(TypeError, match="names must be a tuple of ASCII str, not list"):
        cwire.audio_delta("{}", ["response.audio.delta"])


@needs_kernel
@given(
    st.binary(max_size=8) | st.none() | st.integers() | st.text(max_size=4) | st.just([1]),
    st.text(max_size=6) | st.none() | st.integers() | st.binary(max_size=4),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_native_append_fails_as_the_pure_one(audio: Any, event_id: Any, kind: type) -> None:
    if isinstance(audio, bytes):
        audio = kind(audio)
    assert outcome(fast._encode_append_native, audio, event_id) == outcome(
        wc.encode_append, audio, event_id
    )


# ----------------------------------------------------------------------------- reply playout


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["audio", "audio", "audio", "take", "take", "interrupt", "played"]),
            st.integers(0, 400),
            st.sampled_from(["item_1", "item_2"]),
        ),
        max_size=30,
    )
)
def test_playout_takes_a_delta_event_as_its_reply_audio(
    steps: list[tuple[str, int, str]],
) -> None:
    from pipeline.context import Played
    from pipeline.frames import Interrupt
    from stages.realtime.buffers import ReplyAudio, ReplyPlayout

    fmt = AudioFormat("pcm16", 24000)
    events, tuples = ReplyPlayout(fmt), ReplyPlayout(fmt)
    for i, (op, n, item) in enumerate(steps):
        data = bytes([i % 256]) * (2 * n)
        if op == "audio":
            events.put(p.AudioDeltaEvent(data, "resp_1", item))
            tuples.put(ReplyAudio(data, item, "resp_1"))
        elif op == "take":
            assert events.take() == tuples.take()
        elif op == "interrupt":
            frame = Interrupt(pts=events.pts, response_id="resp_1")
            assert events.interrupt(frame) == tuples.interrupt(frame)
        else:
            events.on_played(Played("sink", events.pts / 2))
            tuples.on_played(Played("sink", tuples.pts / 2))
        assert events.has_audio() == tuples.has_audio()
        assert (events.pts, events.heard_ms(item), len(events)) == (
            tuples.pts,
            tuples.heard_ms(item),
            len(tuples),
        )


# ----------------------------------------------------------------------------- input batching


class ReferenceBatcher(AudioBatcher):
    """:meth:`AudioBatcher.push` as written before its in-line path for the usual frame."""

    def push(self, frame: Audio) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        data, pts = frame.data, frame.pts
        if self.fill_gaps and self.next_pts is not None:
            gap = pts - self.next_pts
            if gap > 0.005:
                out += self._add(self.silence_bytes(min(gap, GAP_FILL_MAX_S)), self.next_pts)
            elif gap < -0.0005:
                width = BYTES_PER_SAMPLE[self.fmt.encoding] * frame.channels
                skip = min(len(data), round(-gap * frame.rate) * width)
                data, pts = data[skip:], self.next_pts
                if not data:
                    return out
        out += self._add(data, pts)
        self.next_pts = max(frame.end_pts, self.next_pts or 0.0)
        return out


@settings(max_examples=300)
@given(
    st.sampled_from([AudioFormat("pcm16", 16000), AudioFormat("pcmu", 8000)]),
    st.booleans(),
    st.sampled_from([20, 40, 60, 100]),
    st.lists(
        st.tuples(
            st.integers(0, 2000),  # bytes
            st.sampled_from([0.0, 0.0, 0.0, 0.0004, -0.0004, 0.003, 0.01, -0.01, 0.5, 2.0]),
            st.sampled_from(["push", "push", "push", "pad", "flush"]),
        ),
        max_size=40,
    ),
)
def test_batcher_is_the_reference(
    fmt: AudioFormat, fill_gaps: bool, min_ms: int, steps: list[tuple[int, float, str]]
) -> None:
    ours = AudioBatcher(fmt, fill_gaps=fill_gaps, min_ms=min_ms)
    ref = ReferenceBatcher(fmt, fill_gaps=fill_gaps, min_ms=min_ms)
    width = BYTES_PER_SAMPLE[fmt.encoding]
    pts = 1.0
    for i, (n, jump, op) in enumerate(steps):
        if op == "pad":
            assert ours.pad(0.1) == ref.pad(0.1)
        elif op == "flush":
            assert ours.flush() == ref.flush()
        else:
            data = bytes([i % 256]) * (n - n % width)
            pts = max(0.0, pts + jump)
            frame = Audio(data, fmt.encoding, fmt.rate, 1, pts)
            assert ours.push(frame) == ref.push(frame)
            pts = frame.end_pts
        assert (ours.next_pts, ours._buf_pts, bytes(ours._buf)) == (
            ref.next_pts,
            ref._buf_pts,
            bytes(ref._buf),
        )


# ----------------------------------------------------------------------------- Gemini's JSON

ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(ANY_JSON)
def test_gemini_dumps_is_json_dumps(value: Any) -> None:
    assert outcome(gemini._dumps, value) == outcome(
        lambda v: json.dumps(v, separators=(",", ":")), value
    )


@settings(max_examples=500)
@given(
    ANY_JSON.map(lambda v: outcome(orjson.dumps, v)[-1])  # what orjson writes (or its error)
    | st.sampled_from(['{"a":1,"a":2}', "1e400", '"\\ud800"', "NaN", "[1,]", " {} "])
    | st.text(max_size=12),
    st.booleans(),
)
def test_gemini_reads_our_messages_as_json_does(text: Any, as_bytes: bool) -> None:
    if isinstance(text, bytes):
        text = text.decode()
    elif not isinstance(text, str):
        return  # orjson refused the value: no message of ours holds it
    message: Any = text.encode("utf-8", "surrogatepass") if as_bytes else text
    got, want = outcome(gemini._loads_ours, message), outcome(json.loads, message)
    assert repr(got) == repr(want)  # (repr: NaN is not equal to itself)
