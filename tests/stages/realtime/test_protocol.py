"""The sans-I/O realtime protocol, tested synchronously against fixtures shaped like the
spec's examples (``fixtures/spec_events.json``). No event loop, no socket."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import SessionLocalError
from pipeline.frames import AudioFormat
from stages.realtime import protocol as p

FIXTURES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "fixtures" / "spec_events.json").read_text()
)


def ev(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of fixture ``name`` with top-level fields changed."""
    out = copy.deepcopy(FIXTURES[name])
    out.update(changes)
    return out


def sent(proto: p.RealtimeProtocol) -> list[dict[str, Any]]:
    return [orjson.loads(m) for m in proto.data_to_send()]


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def ready_proto(**config: Any) -> p.RealtimeProtocol:
    proto = p.RealtimeProtocol(p.SessionConfig(**config))
    proto.connection_made()
    proto.receive(FIXTURES["session.updated.xai"])
    proto.data_to_send()
    return proto


def responding(proto: p.RealtimeProtocol, rid: str = "resp_1") -> None:
    created = ev("response.created")
    created["response"]["id"] = rid
    proto.receive(created)


def done(proto: p.RealtimeProtocol, rid: str = "resp_1", status: str = "completed") -> list[Any]:
    msg = ev("response.done")
    msg["response"]["id"] = rid
    msg["response"]["status"] = status
    return proto.receive(msg)


def call(proto: p.RealtimeProtocol, call_id: str, rid: str = "resp_1") -> list[Any]:
    return proto.receive(ev("function_call_arguments.done", call_id=call_id, response_id=rid))


# ----------------------------------------------------------------------------- tables


def test_seed_voices_all_have_a_home() -> None:
    assert set(p.XAI_VOICES) == {"ara", "rex", "sal", "eve", "leo"}
    assert p.DEFAULT_VOICE["xai"] == "ara"


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("pcm16", "pcm16"),
        ("g711_ulaw", "pcmu"),
        ("g711_alaw", "pcma"),
        ("audio/pcm", "pcm16"),
        ("audio/pcmu", "pcmu"),
        ("audio/pcma", "pcma"),
        ("PCMU", "pcmu"),
    ],
)
def test_every_format_name_current_and_beta(name: str, encoding: str) -> None:
    assert p.normalize_encoding(name) == encoding


def test_unknown_format_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown audio format 'opus'; use one of .*g711_ulaw"):
        p.normalize_encoding("opus")


@pytest.mark.parametrize(
    ("fmt", "dialect", "wire"),
    [
        (AudioFormat("pcm16", 16000), "xai", {"type": "audio/pcm", "rate": 16000}),
        (AudioFormat("pcmu", 8000), "xai", {"type": "audio/pcmu"}),
        (AudioFormat("pcma", 8000), "openai", {"type": "audio/pcma"}),
        (AudioFormat("pcm16", 24000), "openai", {"type": "audio/pcm", "rate": 24000}),
        (AudioFormat("pcm16", 24000), "openai-beta", "pcm16"),
        (AudioFormat("pcmu", 8000), "openai-beta", "g711_ulaw"),
        (AudioFormat("pcma", 8000), "openai-beta", "g711_alaw"),
    ],
)
def test_format_to_wire_and_back(fmt: AudioFormat, dialect: p.Dialect, wire: Any) -> None:
    assert p.format_to_wire(fmt, dialect) == wire
    assert p.format_from_wire(wire) == fmt


def test_format_from_wire_defaults_pcm_to_24k() -> None:
    assert p.format_from_wire({"type": "audio/pcm"}) == AudioFormat("pcm16", 24000)


@pytest.mark.parametrize("bad", [None, 3, {"rate": 8000}, {"type": "audio/pcm", "rate": "16k"}])
def test_format_from_wire_refuses_garbage(bad: Any) -> None:
    with pytest.raises(ValueError):
        p.format_from_wire(bad)


@pytest.mark.parametrize(
    ("dialect", "fmt", "problem"),
    [
        ("openai", AudioFormat("pcm16", 16000), "openai takes pcm16 at 24000 Hz, got 16000 Hz"),
        ("openai-beta", AudioFormat("pcm16", 8000), "at 24000 Hz, got 8000"),
        ("xai", AudioFormat("pcm16", 11025), "xai takes pcm16 at 8000, 16000, 22050"),
        ("xai", AudioFormat("pcmu", 16000), "pcmu is 8000 Hz only, got 16000 Hz"),
        ("xai", AudioFormat("pcm16", 16000, 2), "mono"),
    ],
)
def test_check_format_names_the_numbers(dialect: p.Dialect, fmt: AudioFormat, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        p.check_format(dialect, fmt)


@pytest.mark.parametrize("rate", p.PCM_RATES["xai"])
def test_xai_takes_every_listed_rate(rate: int) -> None:
    p.check_format("xai", AudioFormat("pcm16", rate))


def test_alias_table_maps_beta_names_to_ga() -> None:
    assert p.canonical_event("response.audio.delta") == "response.output_audio.delta"
    assert p.canonical_event("response.text.delta") == "response.output_text.delta"
    assert p.canonical_event("conversation.item.created") == "conversation.item.added"
    assert p.canonical_event("response.done") == "response.done"
    for target in p.EVENT_ALIASES.values():
        assert target in p.SERVER_EVENTS


def test_seed_commit_name_is_a_client_alias() -> None:
    assert p.CLIENT_EVENT_ALIASES["conversation.item.commit"] == "input_audio_buffer.commit"
    assert "input_audio_buffer.commit" in p.CLIENT_EVENTS


@pytest.mark.parametrize(("name", "dialect"), [("openai-ga", "openai"), ("XAI", "xai")])
def test_dialect_aliases(name: str, dialect: str) -> None:
    assert p.normalize_dialect(name) == dialect


# ----------------------------------------------------------------------------- session.update


TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def full_config(dialect: p.Dialect, **changes: Any) -> p.SessionConfig:
    rate_in = 16000 if dialect == "xai" else 24000
    base: dict[str, Any] = {
        "dialect": dialect,
        "model": p.DEFAULT_MODEL[dialect],
        "voice": "ara" if dialect == "xai" else "alloy",
        "instructions": "You are a helpful assistant.",
        "input_format": AudioFormat("pcm16", rate_in),
        "output_format": AudioFormat("pcm16", 24000),
        "turn_detection": p.TurnDetection("server_vad", 0.85, 333, 500),
        "tools": (TOOL,),
    }
    base.update(changes)
    return p.SessionConfig(**base)


def test_session_update_xai_is_the_spec_shape() -> None:
    session = p.session_update_payload(full_config("xai"))
    assert session == {
        "instructions": "You are a helpful assistant.",
        "voice": "ara",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.85,
            "prefix_padding_ms": 333,
            "silence_duration_ms": 500,
        },
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}},
        },
        "tools": [TOOL],
    }


def test_session_update_xai_never_sends_temperature_type_or_model() -> None:
    session = p.session_update_payload(full_config("xai"))
    assert not {"temperature", "type", "model", "modalities"} & set(session)


def test_session_update_openai_ga_places_voice_and_vad_under_audio() -> None:
    session = p.session_update_payload(full_config("openai", transcription="whisper-1"))
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"
    assert session["output_modalities"] == ["audio"]
    assert "voice" not in session and "turn_detection" not in session
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "alloy",
    }
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"] == {"model": "whisper-1"}


def test_session_update_openai_beta_uses_beta_names() -> None:
    config = full_config(
        "openai-beta",
        input_format=AudioFormat("pcmu", 8000),
        output_format=AudioFormat("pcma", 8000),
        transcription="whisper-1",
    )
    session = p.session_update_payload(config)
    assert session["input_audio_format"] == "g711_ulaw"
    assert session["output_audio_format"] == "g711_alaw"
    assert session["voice"] == "alloy"
    assert session["modalities"] == ["text", "audio"]
    assert session["input_audio_transcription"] == {"model": "whisper-1"}
    assert session["turn_detection"]["silence_duration_ms"] == 500
    assert "audio" not in session


def test_session_update_telephony_pcmu_both_ways() -> None:
    config = full_config(
        "xai", input_format=AudioFormat("pcmu", 8000), output_format=AudioFormat("pcmu", 8000)
    )
    audio = p.session_update_payload(config)["audio"]
    assert audio == {
        "input": {"format": {"type": "audio/pcmu"}},
        "output": {"format": {"type": "audio/pcmu"}},
    }


@pytest.mark.parametrize(
    ("dialect", "expected"), [("xai", {"type": None}), ("openai", None), ("openai-beta", None)]
)
def test_manual_turns_per_dialect(dialect: p.Dialect, expected: Any) -> None:
    config = full_config(dialect, turn_detection=p.TurnDetection(None))
    session = p.session_update_payload(config)
    td = (
        session["audio"]["input"]["turn_detection"]
        if dialect == "openai"
        else session["turn_detection"]
    )
    assert td == expected


def test_turn_detection_leaves_unset_numbers_to_the_server() -> None:
    assert p.TurnDetection().to_wire("xai") == {"type": "server_vad"}


def test_input_transcription_xai() -> None:
    config = full_config("xai", transcription="grok-transcribe")
    audio_in = p.session_update_payload(config)["audio"]["input"]
    assert audio_in["transcription"] == {"model": "grok-transcribe"}
    no = p.session_update_payload(full_config("xai"))["audio"]["input"]
    assert "transcription" not in no


def test_connection_made_queues_session_update_first() -> None:
    proto = p.RealtimeProtocol(full_config("xai"))
    assert proto.state == "connecting"
    proto.connection_made()
    assert proto.state == "configuring"
    (msg,) = sent(proto)
    assert msg["type"] == "session.update"
    assert msg["event_id"] == "c-1"
    assert msg["session"]["voice"] == "ara"
    assert sent(proto) == []


# ----------------------------------------------------------------------------- state machine


def test_state_table_walk() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    proto.connection_made()
    proto.receive(FIXTURES["session.created"])
    proto.receive(FIXTURES["conversation.created"])
    assert proto.state == "configuring" and not proto.ready
    proto.receive(FIXTURES["session.updated.xai"])
    assert proto.state == "ready" and proto.ready
    proto.receive(FIXTURES["response.created"])
    assert proto.state == "responding"
    proto.receive(FIXTURES["response.done"])
    assert proto.state == "ready"
    proto.close()
    assert proto.state == "closing"
    proto.connection_lost()
    assert proto.state == "closed"


def test_every_transition_starts_and_ends_in_a_known_state() -> None:
    states = {"connecting", "configuring", "ready", "responding", "closing", "closed"}
    for (src, _), dst in p.TRANSITIONS.items():
        assert src in states and dst in states
    assert all(src != "closed" for src, _ in p.TRANSITIONS)


def test_connection_lost_from_any_live_state() -> None:
    for trigger in ([], ["session.updated.xai"], ["session.updated.xai", "response.created"]):
        proto = p.RealtimeProtocol(p.SessionConfig())
        proto.connection_made()
        for name in trigger:
            proto.receive(FIXTURES[name])
        proto.connection_lost()
        assert proto.state == "closed"
        assert proto.active_response is None


def test_rate_limits_are_tolerated_and_never_waited_for() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    proto.connection_made()
    proto.receive(FIXTURES["session.updated.xai"])
    assert proto.ready  # no rate_limits.updated needed
    (out,) = proto.receive(FIXTURES["rate_limits.updated"])
    assert isinstance(out, p.RateLimitsEvent)
    assert [x["name"] for x in out.limits] == ["requests", "tokens"]
    assert proto.state == "ready"


# ----------------------------------------------------------------------------- client messages


def test_audio_before_session_updated_is_a_local_error() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    proto.connection_made()
    with pytest.raises(SessionLocalError, match=r"before session\.updated"):
        proto.append_audio(b"\x00\x00")


def test_append_audio_is_base64_of_the_bytes() -> None:
    proto = ready_proto()
    proto.append_audio(b"\x01\x02\x03\x04")
    (msg,) = sent(proto)
    assert msg["type"] == "input_audio_buffer.append"
    assert base64.b64decode(msg["audio"]) == b"\x01\x02\x03\x04"


def test_append_audio_refuses_half_samples() -> None:
    with pytest.raises(SessionLocalError, match="3 bytes of pcm16 is not whole samples"):
        ready_proto().append_audio(b"\x00\x00\x00")


def test_commit_without_audio_sends_nothing() -> None:
    proto = ready_proto(turn_detection=p.TurnDetection(None))
    assert proto.commit() == []
    assert proto.user_turn_ended() == []


def test_manual_turn_commit_then_response_create() -> None:
    proto = ready_proto(turn_detection=p.TurnDetection(None))
    proto.append_audio(b"\x00" * 640)
    proto.user_turn_ended()
    assert types(sent(proto)) == [
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "response.create",
    ]
    assert proto.owes  # a response was asked for


def test_send_text_is_item_then_response() -> None:
    proto = ready_proto()
    proto.send_text("Hello!")
    item, create = sent(proto)
    assert item["item"] == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Hello!"}],
    }
    assert create["type"] == "response.create"


def test_response_create_while_responding_is_deferred_and_sent_once() -> None:
    proto = ready_proto()
    responding(proto)
    proto.send_text("one")
    proto.send_text("two")
    assert types(sent(proto)) == ["conversation.item.create", "conversation.item.create"]
    done(proto)
    assert types(sent(proto)) == ["response.create"]
    done(proto, "resp_x")
    assert sent(proto) == []


def test_response_create_is_not_repeated_before_response_created() -> None:
    proto = ready_proto()
    proto.create_response()
    proto.create_response()
    assert types(sent(proto)) == ["response.create"]
    responding(proto, "resp_2")
    done(proto, "resp_2")
    assert types(sent(proto)) == ["response.create"]  # the deferred second request


def test_race_with_server_response_re_requests_after_it() -> None:
    proto = ready_proto()
    proto.create_response()
    sent(proto)
    responding(proto, "resp_vad")  # the server's own VAD response
    proto.receive(
        {
            "type": "error",
            "error": {"code": "conversation_already_has_active_response", "message": "busy"},
        }
    )
    done(proto, "resp_vad")
    assert types(sent(proto)) == ["response.create"]


def test_cancel_only_when_a_response_is_active() -> None:
    proto = ready_proto()
    assert proto.cancel_response() == []
    responding(proto)
    proto.cancel_response()
    (msg,) = sent(proto)
    assert msg == {"type": "response.cancel", "event_id": msg["event_id"], "response_id": "resp_1"}


def test_truncate_message_shape() -> None:
    proto = ready_proto()
    proto.truncate("item_7", 1250)
    (msg,) = sent(proto)
    assert {k: v for k, v in msg.items() if k != "event_id"} == {
        "type": "conversation.item.truncate",
        "item_id": "item_7",
        "content_index": 0,
        "audio_end_ms": 1250,
    }


def test_event_ids_count_up() -> None:
    proto = ready_proto()
    proto.append_audio(b"\x00\x00")
    proto.append_audio(b"\x00\x00")
    assert [m["event_id"] for m in sent(proto)] == ["c-2", "c-3"]


def test_sync_barrier() -> None:
    proto = ready_proto()
    assert proto.synced
    proto.sync()
    assert not proto.synced
    (msg,) = sent(proto)
    assert (msg["type"], msg["session"]) == ("session.update", {})  # changes nothing
    proto.receive(FIXTURES["session.updated.xai"])
    assert proto.synced


def test_sync_barrier_ga_names_its_type() -> None:
    proto = ready_proto(dialect="openai")
    proto.sync()
    assert sent(proto)[0]["session"] == {"type": "realtime"}


def test_sync_barrier_refused_still_counts_as_handled() -> None:
    proto = ready_proto()
    proto.sync()
    (msg,) = sent(proto)
    refusal = ev("error.nested")
    refusal["error"]["event_id"] = msg["event_id"]
    proto.receive(refusal)
    assert proto.synced


# ----------------------------------------------------------------------------- server events


def test_session_ready_reads_formats_xai() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    (out,) = proto.receive(FIXTURES["session.updated.xai"])
    assert out == p.SessionReadyEvent(
        FIXTURES["session.updated.xai"]["session"],
        AudioFormat("pcm16", 16000),
        AudioFormat("pcm16", 24000),
    )


def test_session_ready_reads_formats_beta() -> None:
    (out,) = p.RealtimeProtocol(p.SessionConfig()).receive(FIXTURES["session.updated.beta"])
    assert isinstance(out, p.SessionReadyEvent)
    assert (out.input_format, out.output_format) == (
        AudioFormat("pcm16", 24000),
        AudioFormat("pcmu", 8000),
    )


def test_session_and_conversation_created() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    (a,) = proto.receive(FIXTURES["session.created"])
    (b,) = proto.receive(FIXTURES["conversation.created"])
    assert isinstance(a, p.SessionCreatedEvent) and a.session["voice"] == "xai_ara"
    assert isinstance(b, p.SessionCreatedEvent)


@pytest.mark.parametrize("name", ["response.output_audio.delta", "response.audio.delta"])
def test_audio_delta_under_both_names(name: str) -> None:
    proto = ready_proto()
    (out,) = proto.receive(ev("output_audio.delta", type=name))
    assert out == p.AudioDeltaEvent(b"\x00\x00\x01\x00\x02\x00\x03\x00", "resp_1", "item_2")


@pytest.mark.parametrize(
    "name", ["response.output_audio_transcript.delta", "response.audio_transcript.delta"]
)
def test_assistant_transcript_delta_under_both_names(name: str) -> None:
    (out,) = ready_proto().receive(ev("output_audio_transcript.delta", type=name))
    assert out == p.TranscriptDeltaEvent("assistant", "It's sunny", "item_2", "resp_1")


@pytest.mark.parametrize("name", ["response.text.delta", "response.output_text.delta"])
def test_text_delta_under_both_names(name: str) -> None:
    (out,) = ready_proto().receive(ev("text.delta", type=name))
    assert out == p.TranscriptDeltaEvent("assistant", "Hi", "item_2", "resp_1")


def test_transcript_done_and_text_done() -> None:
    proto = ready_proto()
    (a,) = proto.receive(FIXTURES["output_audio_transcript.done"])
    (b,) = proto.receive(FIXTURES["text.done"])
    assert a == p.TranscriptDoneEvent("assistant", "It's sunny in Paris.", "item_2", "resp_1")
    assert b == p.TranscriptDoneEvent("assistant", "Hi there", "item_2", "resp_1")


def test_item_created_beta_name_is_item_added() -> None:
    item = ev("item.added.user", type="conversation.item.created")
    item["item"]["content"][0]["transcript"] = "hello"
    assert ready_proto().receive(item) == [p.TranscriptDoneEvent("user", "hello", "item_1")]


def test_speech_started_and_stopped() -> None:
    proto = ready_proto()
    assert proto.receive(FIXTURES["speech_started"]) == [p.SpeechStartedEvent(1020, "item_1")]
    assert proto.receive(FIXTURES["speech_stopped"]) == [p.SpeechStoppedEvent(2310, "item_1")]
    assert proto.receive(FIXTURES["committed"]) == [p.InputCommittedEvent("item_1")]


def test_response_lifecycle_events() -> None:
    proto = ready_proto()
    assert proto.receive(FIXTURES["response.created"]) == [p.ResponseCreatedEvent("resp_1")]
    assert proto.active_response == "resp_1"
    assert proto.receive(FIXTURES["response.done.cancelled"]) == [
        p.ResponseDoneEvent("resp_1", "cancelled", "turn_detected")
    ]
    assert proto.active_response is None


def test_response_done_with_usage_top_level_or_missing() -> None:
    msg = ev("response.done")
    del msg["response"]["usage"]
    assert ready_proto().receive(msg) == [p.ResponseDoneEvent("resp_1", "completed")]


def test_truncated() -> None:
    assert ready_proto().receive(FIXTURES["item.truncated"]) == [p.TruncatedEvent("item_2", 1500)]


@pytest.mark.parametrize(
    "name",
    [
        "ping",
        "cleared",
        "output_item.added",
        "content_part.added",
        "content_part.done",
        "output_item.done",
        "item.deleted",
        "timeout_triggered",
        "dtmf",
        "mcp_list_tools.completed",
        "function_call_arguments.delta",
    ],
)
def test_informational_and_unknown_events_are_ignored(name: str) -> None:
    proto = ready_proto()
    out = proto.receive(FIXTURES[name])
    assert len(out) == 1 and isinstance(out[0], p.IgnoredEvent)
    assert proto.state == "ready"
    assert sent(proto) == []


def test_ping_is_ignored_by_name() -> None:
    assert ready_proto().receive(FIXTURES["ping"]) == [p.IgnoredEvent("ping")]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "no event type"),
        ('{"no": "type"}', "no event type"),
        ('{"type": 5}', "no event type"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_messages_do_not_raise(message: str | bytes, reason: str) -> None:
    proto = ready_proto()
    (out,) = proto.receive(message)
    assert isinstance(out, p.MalformedEvent) and reason in out.reason
    assert proto.state == "ready"


def test_bad_base64_audio_is_malformed() -> None:
    proto = ready_proto()
    (out,) = proto.receive(ev("output_audio.delta", delta="**not base64**"))
    assert isinstance(out, p.MalformedEvent) and "response.output_audio.delta" in out.reason


def test_missing_field_is_malformed_not_a_crash() -> None:
    msg = ev("function_call_arguments.done")
    del msg["call_id"]
    (out,) = ready_proto().receive(msg)
    assert isinstance(out, p.MalformedEvent)


def test_text_and_dict_give_the_same_events() -> None:
    a = ready_proto().receive(json.dumps(FIXTURES["output_audio.delta"]))
    b = ready_proto().receive(FIXTURES["output_audio.delta"])
    assert a == b


# ----------------------------------------------------------------------------- errors


def test_nested_error() -> None:
    (out,) = ready_proto().receive(FIXTURES["error.nested"])
    assert out == p.ErrorEvent(
        "invalid_value", "Invalid value", "invalid_request_error", "session.voice"
    )
    assert not out.fatal and not out.benign


def test_flat_error() -> None:
    (out,) = ready_proto().receive(FIXTURES["error.flat"])
    assert out == p.ErrorEvent(
        "internal_error",
        "ValueError",
        "",
        "Multiple frame rates in the concatenated frames: {24000, 16000}",
    )


def test_seed_error_shape_without_code() -> None:
    info = p.parse_error(FIXTURES["error.seed"])
    assert (info.code, info.type, info.message) == (
        "invalid_request",
        "invalid_request",
        "Bad request",
    )


def test_benign_error() -> None:
    (out,) = ready_proto().receive(FIXTURES["error.cancel_not_active"])
    assert isinstance(out, p.ErrorEvent) and out.benign and not out.fatal


def test_fatal_error() -> None:
    (out,) = ready_proto().receive(FIXTURES["error.invalid_api_key"])
    assert isinstance(out, p.ErrorEvent) and out.fatal


def test_session_expired_is_not_fatal() -> None:
    (out,) = ready_proto().receive(FIXTURES["error.session_expired"])
    assert isinstance(out, p.ErrorEvent) and out.code == "session_expired" and not out.fatal


def test_error_with_string_error_field() -> None:
    info = p.parse_error({"type": "error", "error": "something broke", "code": "x"})
    assert (info.code, info.message) == ("x", "something broke")


# ----------------------------------------------------------------------------- transcription


def test_user_transcript_final() -> None:
    assert ready_proto().receive(FIXTURES["transcription.completed"]) == [
        p.TranscriptDoneEvent("user", "what's the weather", "item_1")
    ]


def test_xai_cumulative_partials_become_deltas() -> None:
    proto = ready_proto()
    partial = ev("transcription.completed", status="in_progress", transcript="what's")
    assert proto.receive(partial) == [p.TranscriptDeltaEvent("user", "what's", "item_1")]
    partial["transcript"] = "what's the"
    assert proto.receive(partial) == [p.TranscriptDeltaEvent("user", " the", "item_1")]
    assert proto.receive(ev("transcription.completed", status="completed")) == [
        p.TranscriptDoneEvent("user", "what's the weather", "item_1")
    ]


def test_updated_event_is_cumulative() -> None:
    proto = ready_proto()
    assert proto.receive(FIXTURES["transcription.updated"]) == [
        p.TranscriptDeltaEvent("user", "what's the", "item_1")
    ]
    assert proto.receive(ev("transcription.updated", transcript="what's the weather")) == [
        p.TranscriptDeltaEvent("user", " weather", "item_1")
    ]


def test_openai_transcription_deltas() -> None:
    proto = ready_proto()
    msg = {
        "type": "conversation.item.input_audio_transcription.delta",
        "item_id": "item_1",
        "delta": "what",
    }
    assert proto.receive(msg) == [p.TranscriptDeltaEvent("user", "what", "item_1")]


def test_user_transcript_in_item_and_event_is_reported_once() -> None:
    proto = ready_proto()
    item = ev("item.added.user")
    item["item"]["content"][0]["transcript"] = "what's the weather"
    assert proto.receive(item) == [p.TranscriptDoneEvent("user", "what's the weather", "item_1")]
    assert proto.receive(FIXTURES["transcription.completed"]) == []


def test_transcription_failed_is_a_non_fatal_error() -> None:
    msg = {
        "type": "conversation.item.input_audio_transcription.failed",
        "item_id": "item_1",
        "error": {"type": "transcription_error", "message": "audio unreadable"},
    }
    (out,) = ready_proto().receive(msg)
    assert out == p.ErrorEvent("transcription_failed", "audio unreadable", "transcription_error")


# ----------------------------------------------------------------------------- function calls


def test_call_emitted_only_after_arguments_done() -> None:
    proto = ready_proto()
    responding(proto)
    assert isinstance(proto.receive(FIXTURES["item.added.function_call"])[0], p.IgnoredEvent)
    assert isinstance(proto.receive(FIXTURES["function_call_arguments.delta"])[0], p.IgnoredEvent)
    assert proto.receive(FIXTURES["function_call_arguments.done"]) == [
        p.FunctionCallDoneEvent("call_123", "get_weather", '{"city":"Paris"}', "resp_1", "item_3")
    ]
    assert proto.pending_calls == ("call_123",)


def test_call_deduplicated_by_call_id() -> None:
    proto = ready_proto()
    responding(proto)
    proto.receive(FIXTURES["item.added.function_call"])
    proto.receive(FIXTURES["item.added.function_call"])  # Grok repeats conversation.item.added
    assert len(proto.receive(FIXTURES["function_call_arguments.done"])) == 1
    assert proto.receive(FIXTURES["function_call_arguments.done"]) == []


def test_call_from_response_done_output_when_no_arguments_done() -> None:
    proto = ready_proto()
    responding(proto)
    msg = ev("response.done")
    msg["response"]["output"] = [
        {
            "id": "item_3",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_9",
            "name": "f",
            "arguments": "{}",
        }
    ]
    out = proto.receive(msg)
    assert out == [
        p.FunctionCallDoneEvent("call_9", "f", "{}", "resp_1", "item_3"),
        p.ResponseDoneEvent("resp_1", "completed", "", ("call_9",)),
    ]


def test_response_done_does_not_repeat_a_call_already_emitted() -> None:
    proto = ready_proto()
    responding(proto)
    call(proto, "call_123")
    msg = ev("response.done")
    msg["response"]["output"] = [
        {"type": "function_call", "call_id": "call_123", "name": "get_weather"}
    ]
    assert proto.receive(msg) == [p.ResponseDoneEvent("resp_1", "completed", "", ("call_123",))]


def test_one_output_per_call_then_exactly_one_response_create() -> None:
    proto = ready_proto()
    responding(proto)
    call(proto, "call_a")
    call(proto, "call_b")
    done(proto)
    assert sent(proto) == []
    proto.tool_output("call_a", '{"temp_c": 21}')
    (a,) = sent(proto)
    assert a["item"] == {
        "type": "function_call_output",
        "call_id": "call_a",
        "output": '{"temp_c": 21}',
    }
    assert proto.owes
    proto.tool_output("call_b", "ok")
    assert types(sent(proto)) == ["conversation.item.create", "response.create"]
    assert proto.tool_output("call_b", "again") == []
    assert sent(proto) == []


def test_outputs_before_response_done_wait_for_it() -> None:
    proto = ready_proto()
    responding(proto)
    call(proto, "call_a")
    proto.tool_output("call_a", "ok")
    assert types(sent(proto)) == ["conversation.item.create"]
    done(proto)
    assert types(sent(proto)) == ["response.create"]


def test_no_response_create_after_a_cancelled_response() -> None:
    proto = ready_proto()
    responding(proto)
    call(proto, "call_a")
    done(proto, status="cancelled")
    proto.tool_output("call_a", "ok")
    assert types(sent(proto)) == ["conversation.item.create"]
    assert not proto.owes


def test_output_for_an_unknown_call_sends_nothing() -> None:
    proto = ready_proto()
    assert proto.tool_output("call_from_before_reconnect", "x") == []
    assert sent(proto) == []


def test_calls_of_two_responses_are_counted_apart() -> None:
    proto = ready_proto()
    responding(proto, "r1")
    call(proto, "a", "r1")
    done(proto, "r1")
    proto.tool_output("a", "1")
    assert types(sent(proto)) == ["conversation.item.create", "response.create"]
    responding(proto, "r2")
    call(proto, "b", "r2")
    call(proto, "c", "r2")
    done(proto, "r2")
    proto.tool_output("c", "3")
    assert types(sent(proto)) == ["conversation.item.create"]
    proto.tool_output("b", "2")
    assert types(sent(proto)) == ["conversation.item.create", "response.create"]


def test_calls_of_a_cancelled_response_are_owed_until_answered() -> None:
    """The protocol does not forget a call when its response is cancelled: the server holds a
    function_call item that needs its output. The tool router answers dropped calls with an
    error result; that output closes the books, with no response.create."""
    proto = ready_proto()
    responding(proto)
    call(proto, "call_a")
    done(proto, status="cancelled")
    assert proto.pending_calls == ("call_a",) and proto.owes
    proto.tool_output("call_a", "get_time was cancelled by barge-in")
    (out,) = sent(proto)
    assert out["item"] == {
        "type": "function_call_output",
        "call_id": "call_a",
        "output": "get_time was cancelled by barge-in",
    }
    assert proto.pending_calls == () and not proto.owes


def test_barge_in_on_a_completed_response_with_calls_asks_for_no_follow_up() -> None:
    """The response finished (its calls out, its audio still playing) and the caller spoke
    over it: outputs that arrive later (``on_interrupt: finish``) are sent, and the caller's
    turn, not a response.create of ours, drives what the model says next."""
    proto = ready_proto()
    responding(proto)
    audio_item(proto, 1000)
    call(proto, "call_a")
    done(proto)  # completed
    proto.interrupt(400, local=False)
    assert types(sent(proto)) == ["conversation.item.truncate"]
    assert proto.owes
    proto.tool_output("call_a", "12:00")
    assert types(sent(proto)) == ["conversation.item.create"]
    assert not proto.owes
    responding(proto, "resp_2")  # the next response (the caller's turn) is followed up as usual
    call(proto, "call_b", "resp_2")
    done(proto, "resp_2")
    proto.tool_output("call_b", "ok")
    assert types(sent(proto)) == ["conversation.item.create", "response.create"]


# ----------------------------------------------------------------------------- barge-in


def audio_item(proto: p.RealtimeProtocol, ms: int, item: str = "item_2") -> None:
    rate = proto.config.output_format.rate
    data = b"\x00\x00" * (rate * ms // 1000)
    proto.receive(ev("output_audio.delta", item_id=item, delta=base64.b64encode(data).decode()))


def test_local_barge_in_cancels_and_truncates_at_played() -> None:
    proto = ready_proto()
    responding(proto)
    audio_item(proto, 2000)
    assert proto.assistant_audio_ms() == 2000
    proto.interrupt(750, local=True)
    cancel, trunc = sent(proto)
    assert cancel["type"] == "response.cancel"
    assert (trunc["type"], trunc["item_id"], trunc["audio_end_ms"]) == (
        "conversation.item.truncate",
        "item_2",
        750,
    )


def test_server_vad_barge_in_only_truncates() -> None:
    proto = ready_proto()
    responding(proto)
    audio_item(proto, 500)
    proto.interrupt(None, local=False)
    (trunc,) = sent(proto)
    assert trunc["type"] == "conversation.item.truncate" and trunc["audio_end_ms"] == 500


def test_truncate_never_past_the_audio_received() -> None:
    proto = ready_proto()
    responding(proto)
    audio_item(proto, 300)
    proto.interrupt(5000, local=True)
    assert sent(proto)[-1]["audio_end_ms"] == 300


def test_manual_turns_barge_in_cancels_even_from_server_side() -> None:
    proto = ready_proto(turn_detection=p.TurnDetection(None))
    responding(proto)
    proto.interrupt(None, local=False)
    assert types(sent(proto)) == ["response.cancel"]


def test_barge_in_with_nothing_playing_sends_nothing() -> None:
    proto = ready_proto()
    assert proto.interrupt(100, local=True) == []


# ----------------------------------------------------------------------------- properties


@given(st.lists(st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2]), max_size=20))
def test_audio_deltas_round_trip_and_add_up(chunks: list[bytes]) -> None:
    proto = ready_proto()
    got = b""
    for c in chunks:
        (out,) = proto.receive(ev("output_audio.delta", delta=base64.b64encode(c).decode()))
        assert isinstance(out, p.AudioDeltaEvent)
        got += out.data
    assert got == b"".join(chunks)
    assert proto.assistant_audio_ms("item_2") == len(got) * 1000 // (24000 * 2)


@given(st.lists(st.sampled_from(sorted(k for k in FIXTURES if not k.startswith("_"))), max_size=30))
def test_any_sequence_of_spec_events_never_raises(names: list[str]) -> None:
    proto = ready_proto()
    for name in names:
        proto.receive(FIXTURES[name])
        proto.data_to_send()
    assert proto.state in ("ready", "responding")


def test_input_transcription_on_with_the_servers_model() -> None:
    audio_in = p.session_update_payload(full_config("xai", transcription=""))["audio"]["input"]
    assert audio_in["transcription"] == {}
    beta = p.session_update_payload(full_config("openai-beta", transcription=""))
    assert beta["input_audio_transcription"] == {}
