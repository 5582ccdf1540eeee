"""The wire codec: each dialect's forms both ways, checked by round trips (property tests) and
against the literal wire forms the providers document."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.frames import AudioFormat
from stages.realtime import wire
from stages.realtime.wire import CODECS, SessionConfig, TurnDetection, WireError


def formats(dialect: wire.Dialect) -> st.SearchStrategy[AudioFormat]:
    rates = CODECS[dialect].pcm_rates
    return st.one_of(
        st.sampled_from(rates).map(lambda r: AudioFormat("pcm16", r)),
        st.sampled_from([AudioFormat("pcmu", 8000), AudioFormat("pcma", 8000)]),
    )


def turn_detections(dialect: wire.Dialect) -> st.SearchStrategy[TurnDetection]:
    c = CODECS[dialect]
    lo, hi = c.threshold_range
    vad = st.builds(
        TurnDetection,
        type=st.sampled_from(c.vad_types),
        threshold=st.none() | st.floats(lo, hi),
        prefix_padding_ms=st.none() | st.integers(0, 10000),
        silence_duration_ms=st.none() | st.integers(0, 10000),
    )
    return st.just(TurnDetection(None)) | vad


@st.composite
def configs(draw: st.DrawFn) -> SessionConfig:
    dialect: wire.Dialect = draw(st.sampled_from(wire.DIALECTS))
    tool = st.fixed_dictionaries(
        {"type": st.just("function"), "name": st.text("abcxyz_", min_size=1, max_size=8)}
    )
    return SessionConfig(
        dialect=dialect,
        model=CODECS[dialect].default_model,
        voice=draw(st.sampled_from(CODECS[dialect].voices)),
        instructions=draw(st.none() | st.text(max_size=20)),
        input_format=draw(formats(dialect)),
        output_format=draw(formats(dialect)),
        turn_detection=draw(turn_detections(dialect)),
        tools=tuple(draw(st.lists(tool, max_size=3))),
        transcription=draw(st.none() | st.sampled_from(["", "whisper-1"])),
    )


@given(configs())
def test_session_to_wire_then_from_wire_is_the_same_session(config: SessionConfig) -> None:
    c = CODECS[config.dialect]
    base = c.default_session()
    back = SessionConfig.from_wire(config.to_wire(), base)
    assert back.input_format == config.input_format
    assert back.output_format == config.output_format
    assert back.voice == config.voice
    assert back.instructions == config.instructions
    assert back.tools == config.tools
    assert back.transcription == config.transcription
    assert back.turn_detection == c.resolve_turn_detection(config.turn_detection)
    # and the server's own session object reads back to the same formats
    shown = back.server_object("sess_0001")
    assert wire.session_formats(shown) == (config.input_format, config.output_format)


@pytest.mark.parametrize("dialect", wire.DIALECTS)
def test_format_names_both_ways(dialect: wire.Dialect) -> None:
    c = CODECS[dialect]
    for fmt in [AudioFormat("pcm16", r) for r in c.pcm_rates] + [
        AudioFormat("pcmu", 8000),
        AudioFormat("pcma", 8000),
    ]:
        on_wire = c.format_to_wire(fmt)
        assert c.format_from_wire(on_wire, "f") == fmt
        assert wire.format_from_wire(on_wire) == fmt


def test_format_wire_forms_as_documented() -> None:
    pcm16k = AudioFormat("pcm16", 16000)
    assert CODECS["xai"].format_to_wire(pcm16k) == {"type": "audio/pcm", "rate": 16000}
    assert CODECS["openai"].format_to_wire(AudioFormat("pcmu", 8000)) == {"type": "audio/pcmu"}
    assert CODECS["openai-beta"].format_to_wire(AudioFormat("pcma", 8000)) == "g711_alaw"
    with pytest.raises(WireError, match=r"Invalid value: 16000\. Supported values are: 24000"):
        CODECS["openai"].format_from_wire({"type": "audio/pcm", "rate": 16000}, "f")


@pytest.mark.parametrize("dialect", wire.DIALECTS)
def test_event_names_both_ways(dialect: wire.Dialect) -> None:
    c = CODECS[dialect]
    for name in wire.SERVER_EVENTS:
        assert c.canonical_event(c.server_event(name)) == name
        assert wire.canonical_event(c.server_event(name)) == name


def test_event_aliases_are_every_dialects_spellings() -> None:
    assert wire.EVENT_ALIASES == {
        "response.audio.delta": "response.output_audio.delta",
        "response.audio.done": "response.output_audio.done",
        "response.audio_transcript.delta": "response.output_audio_transcript.delta",
        "response.audio_transcript.done": "response.output_audio_transcript.done",
        "response.text.delta": "response.output_text.delta",
        "response.text.done": "response.output_text.done",
        "conversation.item.created": "conversation.item.added",
    }
    assert CODECS["xai"].server_event("response.output_text.delta") == "response.text.delta"
    assert CODECS["openai"].server_event("response.output_text.delta") == (
        "response.output_text.delta"
    )


@pytest.mark.parametrize(
    ("dialect", "session", "code", "param"),
    [
        ("openai", {"instructions": "x"}, "missing_required_parameter", "session.type"),
        ("openai", {"type": "realtime", "voice": "ash"}, "unknown_parameter", "session.voice"),
        ("xai", {"type": "realtime"}, "unknown_parameter", "session.type"),
        ("xai", {"turn_detection": {"type": "semantic_vad"}}, "invalid_value", None),
        ("xai", {"turn_detection": {"threshold": 0.95}}, "decimal_out_of_range", None),
        ("openai-beta", {"input_audio_format": "mp3"}, "invalid_value", None),
        (
            "openai-beta",
            {"tools": [{"type": "function", "function": {}}]},
            "unknown_parameter",
            None,
        ),
    ],
)
def test_from_wire_refuses_what_the_dialect_refuses(
    dialect: wire.Dialect, session: dict[str, Any], code: str, param: str | None
) -> None:
    base = CODECS[dialect].default_session()
    with pytest.raises(WireError) as info:
        SessionConfig.from_wire(session, base)
    assert info.value.code == code
    if param is not None:
        assert info.value.param == param


def test_server_session_object_shows_the_dialects_defaults() -> None:
    xai = CODECS["xai"].default_session().server_object("sess_1")
    assert xai["turn_detection"] == {"type": None}
    ga = CODECS["openai"].default_session().server_object("sess_1")
    assert ga["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": None,
    }
    beta = CODECS["openai-beta"].default_session().server_object("sess_1")
    assert beta["modalities"] == ["text", "audio"]
    assert beta["input_audio_format"] == "pcm16"


def test_dialect_names() -> None:
    assert wire.normalize_dialect("openai-ga") == "openai"
    assert wire.normalize_dialect("Grok") == "xai"
    assert wire.normalize_dialect("gemini-live") == "gemini"
    with pytest.raises(ValueError, match="use one of xai, openai, openai-beta, gemini"):
        wire.normalize_dialect("azure")


# ----------------------------------------------------------------------------- client events

from stages.realtime.wire import client as wc  # noqa: E402

client_events = st.one_of(
    st.builds(wc.SessionUpdate, st.just({"voice": "ara"})),
    st.builds(
        wc.InputAudioBufferAppend, st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2])
    ),
    st.just(wc.InputAudioBufferCommit()),
    st.just(wc.InputAudioBufferClear()),
    st.builds(wc.ConversationItemCreate, st.just({"type": "message", "role": "user"})),
    st.builds(wc.ConversationItemTruncate, st.text(max_size=8), st.integers(0, 10**6)),
    st.builds(wc.ConversationItemDelete, st.text(max_size=8)),
    st.builds(wc.ResponseCreate, st.just({}) | st.just({"modalities": ["text"]})),
    st.builds(wc.ResponseCancel, st.none() | st.text(max_size=8)),
)


@given(client_events)
def test_client_events_encode_then_decode(event: wc.ClientEvent) -> None:
    text = wc.encode(event, "c-1")
    message = orjson.loads(text)
    assert list(message)[:2] == ["type", "event_id"]
    assert wc.decode(message, SessionConfig()) == event


def test_client_event_bytes_on_the_wire() -> None:
    assert wc.encode(wc.InputAudioBufferAppend(b"\x01\x02"), "c-7") == (
        '{"type":"input_audio_buffer.append","event_id":"c-7","audio":"AQI="}'
    )
    assert wc.encode(wc.ConversationItemTruncate("item_1", 450), "c-8") == (
        '{"type":"conversation.item.truncate","event_id":"c-8","item_id":"item_1",'
        '"content_index":0,"audio_end_ms":450}'
    )


@pytest.mark.parametrize(
    ("message", "fmt", "text"),
    [
        ({"audio": "AQ=="}, AudioFormat("pcm16", 16000), "(mono PCM16 at 16kHz)"),
        ({"audio": "not base64!"}, AudioFormat("pcmu", 8000), "(mono pcmu at 8kHz)"),
        ({"audio": 12}, AudioFormat("pcm16", 22050), "(mono PCM16 at 22.05kHz)"),
    ],
)
def test_bad_audio_is_refused_naming_the_sessions_format(
    message: dict[str, Any], fmt: AudioFormat, text: str
) -> None:
    with pytest.raises(WireError) as info:
        wc.decode({"type": "input_audio_buffer.append", **message}, SessionConfig(input_format=fmt))
    assert (info.value.code, info.value.param) == ("invalid_value", "audio")
    assert text in info.value.message
