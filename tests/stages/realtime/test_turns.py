"""The turn, response and barge-in tables (``stages.realtime.turns``), alone and as the protocol
drives them, and ``to_frames``. Synchronous: no socket, no event loop."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import SessionLocalError
from pipeline.frames import (
    ErrorReport,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    Transcript,
)
from stages.realtime import protocol as p
from stages.realtime import turns as t
from stages.realtime.buffers import ReplyAudio
from stages.realtime.outputs import to_frames

TABLES: list[tuple[str, Mapping[tuple[Any, str], Any], tuple[str, ...]]] = [
    ("response", t.RESPONSE, t.RESPONSE_SERVER_TRIGGERS),
    ("calls", t.CALLS, t.CALLS_SERVER_TRIGGERS),
    ("barge", t.BARGE, t.BARGE_SERVER_TRIGGERS),
    ("turn", t.TURN, t.TURN_SERVER_TRIGGERS),
]


@pytest.mark.parametrize(("name", "table", "server"), TABLES, ids=[x[0] for x in TABLES])
def test_every_server_trigger_is_listed_in_every_state(
    name: str, table: Mapping[tuple[Any, str], Any], server: tuple[str, ...]
) -> None:
    states = t.states_of(table)
    missing = [(s, trig) for s in states for trig in server if (s, trig) not in table]
    assert missing == []


def test_a_local_trigger_out_of_place_is_a_local_error() -> None:
    m = t.Machine("tool calls", t.CALLS, "active")
    with pytest.raises(SessionLocalError) as info:
        m.fire("answered")  # a response still running cannot have been answered
    assert str(info.value) == "tool calls: 'answered' is not allowed in state 'active'"
    assert info.value.code == "bad_transition"
    assert m.state == "active"


def test_response_create_goes_out_only_on_the_listed_transitions() -> None:
    for (state, trigger), nxt in t.RESPONSE.items():
        if (state, trigger) in t.RESPONSE_SENDS_CREATE:
            assert nxt == "requested"
    assert {nxt for (_, trig), nxt in t.RESPONSE.items() if trig == "lost"} == {"idle"}


def test_connection_open_twice_is_a_local_error() -> None:
    proto = p.RealtimeProtocol(p.SessionConfig())
    proto.connection_made()
    with pytest.raises(SessionLocalError, match="'open' is not allowed in state 'configuring'"):
        proto.connection_made()


# ----------------------------------------------------------------------------- as the protocol runs


def ready(**config: Any) -> p.RealtimeProtocol:
    proto = p.RealtimeProtocol(p.SessionConfig(**config))
    proto.connection_made()
    proto.receive({"type": "session.updated", "session": {}})
    proto.data_to_send()
    return proto


def created(proto: p.RealtimeProtocol, rid: str) -> None:
    proto.receive({"type": "response.created", "response": {"id": rid}})


def done(proto: p.RealtimeProtocol, rid: str, status: str = "completed") -> None:
    proto.receive({"type": "response.done", "response": {"id": rid, "status": status}})


def audio(proto: p.RealtimeProtocol, rid: str, ms: int = 100) -> list[p.ServerEvent]:
    data = base64.b64encode(b"\x01\x00" * (24 * ms)).decode()
    return proto.receive(
        {"type": "response.output_audio.delta", "response_id": rid, "item_id": "it", "delta": data}
    )


def test_slot_walk_with_a_queued_ask() -> None:
    proto = ready()
    assert proto.slot.state == "idle" and proto.quiescent
    proto.create_response()
    assert proto.slot.state == "requested"
    proto.create_response()
    assert proto.slot.state == "requested+queued"
    created(proto, "r1")
    assert proto.slot.state == "active+queued"
    assert [m for m in proto.data_to_send() if "response.create" in m] != []
    done(proto, "r1")
    assert proto.slot.state == "requested"
    assert len([m for m in proto.data_to_send() if "response.create" in m]) == 1
    created(proto, "r2")
    done(proto, "r2")
    assert proto.slot.state == "idle" and proto.quiescent


def test_calls_followed_up_once_then_settled_when_cut() -> None:
    proto = ready()
    created(proto, "r1")
    proto.receive(
        {"type": "response.function_call_arguments.done", "response_id": "r1", "call_id": "c1"}
    )
    done(proto, "r1")
    assert proto._responses["r1"].calls.state == "done"
    proto.tool_output("c1", "ok")
    assert proto._responses["r1"].calls.state == "followed_up"
    created(proto, "r2")
    proto.receive(
        {"type": "response.function_call_arguments.done", "response_id": "r2", "call_id": "c2"}
    )
    proto.interrupt(None, local=True)
    done(proto, "r2", "cancelled")
    proto.tool_output("c2", "late")
    assert proto._responses["r2"].calls.state == "settled"


def test_barge_in_discards_the_cut_response_until_another_starts() -> None:
    proto = ready()
    created(proto, "r1")
    assert proto.barge.state == "quiet" and not proto.assistant_playing
    (delta,) = audio(proto, "r1")
    assert isinstance(delta, p.AudioDeltaEvent) and not delta.discarded
    assert proto.barge.state == "playing" and proto.assistant_playing
    proto.interrupt(50, local=False)
    assert proto.barge.state == "cut" and proto.last_response == "r1"
    (late,) = audio(proto, "r1")
    assert isinstance(late, p.AudioDeltaEvent) and late.discarded
    assert to_frames(late) == ()
    done(proto, "r1", "cancelled")
    created(proto, "r1")  # a repeated created of the cut response changes nothing
    assert proto.barge.state == "cut"
    created(proto, "r2")
    assert proto.barge.state == "quiet"
    (fresh,) = audio(proto, "r2")
    assert isinstance(fresh, p.AudioDeltaEvent) and not fresh.discarded


def test_user_turn_under_server_vad_is_owed_its_answer() -> None:
    proto = ready()
    proto.receive({"type": "input_audio_buffer.speech_started", "audio_start_ms": 100})
    assert proto.turn.state == "speaking" and not proto.quiescent
    proto.receive({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900})
    assert proto.turn.state == "answer_due" and not proto.quiescent
    created(proto, "r1")
    assert proto.turn.state == "listening"
    done(proto, "r1")
    assert proto.quiescent


def test_connection_lost_frees_the_slot() -> None:
    proto = ready()
    proto.create_response()
    proto.create_response()
    proto.connection_lost()
    assert proto.slot.state == "idle" and proto.state == "closed"


SERVER_EVENTS: list[dict[str, Any]] = [
    {"type": "response.created", "response": {"id": "r1"}},
    {"type": "response.created", "response": {"id": "r2"}},
    {"type": "response.done", "response": {"id": "r1", "status": "completed"}},
    {"type": "response.done", "response": {"id": "r2", "status": "cancelled"}},
    {"type": "response.done", "response": {"id": "rX"}},
    {"type": "response.output_audio.delta", "response_id": "r1", "delta": "AAA="},
    {"type": "response.output_audio.delta", "response_id": "r2", "delta": "AAA="},
    {"type": "response.function_call_arguments.done", "response_id": "r1", "call_id": "c1"},
    {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1},
    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2},
    {"type": "error", "error": {"code": "conversation_already_has_active_response"}},
]
CLIENT_ACTIONS = ["ask", "interrupt_local", "interrupt_server", "output"]


@given(
    st.lists(
        st.one_of(st.sampled_from(range(len(SERVER_EVENTS))), st.sampled_from(CLIENT_ACTIONS)),
        max_size=40,
    )
)
def test_any_interleaving_of_server_events_and_our_calls_never_raises(steps: list[Any]) -> None:
    proto = ready()
    for step in steps:
        match step:
            case int():
                proto.receive(SERVER_EVENTS[step])
            case "ask":
                proto.create_response()
            case "interrupt_local":
                proto.interrupt(10, local=True)
            case "interrupt_server":
                proto.interrupt(None, local=False)
            case "output":
                proto.tool_output("c1", "x")
        sent = [m for m in proto.data_to_send() if '"response.create"' in m]
        assert len(sent) <= 1  # never two asks at once
    assert proto.slot.state in t.states_of(t.RESPONSE)


# ----------------------------------------------------------------------------- to_frames


@pytest.mark.parametrize(
    ("event", "frames"),
    [
        (p.SpeechStartedEvent(1020, "i"), (SpeechStarted(pts=4.02),)),
        (p.SpeechStoppedEvent(2310, "i"), (SpeechStopped(pts=5.31),)),
        (p.ResponseCreatedEvent("r"), (ResponseStarted("r"),)),
        (p.ResponseDoneEvent("r", "cancelled"), (ResponseDone("r", "cancelled"),)),
        (p.AudioDeltaEvent(b"\x00\x01", "r", "i"), (ReplyAudio(b"\x00\x01", "i", "r"),)),
        (p.AudioDeltaEvent(b"\x00\x01", "r", "i", discarded=True), ()),
        (
            p.TranscriptDeltaEvent("user", "he", "i"),
            (Transcript("user", "he", False, item_id="i"),),
        ),
        (
            p.TranscriptDoneEvent("assistant", "hi", "i"),
            (Transcript("assistant", "hi", True, item_id="i"),),
        ),
        (p.FunctionCallDoneEvent("c", "f", "{}", "r"), (ToolCall("c", "f", "{}", "r"),)),
        (p.ErrorEvent("bad", "no"), (ErrorReport("bad", "no"),)),
        (p.ErrorEvent("invalid_api_key", "no", fatal=True), ()),
        (p.ErrorEvent("response_cancel_not_active", "no", benign=True), ()),
        (
            p.MalformedEvent("not JSON"),
            (ErrorReport("malformed_message", "unreadable server message: not JSON"),),
        ),
        (p.SessionReadyEvent(), ()),
        (p.IgnoredEvent("ping"), ()),
    ],
)
def test_to_frames(event: p.ServerEvent, frames: tuple[Any, ...]) -> None:
    assert to_frames(event, input_origin=3.0) == frames


def test_to_frames_vad_times_without_audio_sent_yet() -> None:
    assert to_frames(p.SpeechStartedEvent(250)) == (SpeechStarted(pts=0.25),)


@pytest.mark.parametrize(
    "call",
    [
        lambda proto: proto.send_text("hi"),
        lambda proto: proto.create_response(),
        lambda proto: proto.commit(),
        lambda proto: proto.tool_output("c1", "ok"),
    ],
    ids=["send_text", "create_response", "commit", "tool_output"],
)
def test_conversation_messages_need_a_ready_session(call: Any) -> None:
    fresh = p.RealtimeProtocol(p.SessionConfig())
    fresh.connection_made()
    with pytest.raises(SessionLocalError, match="in state 'configuring'; send it once") as info:
        call(fresh)
    assert info.value.code == "not_ready"
    assert [m for m in fresh.data_to_send() if "session.update" not in m] == []
    gone = ready()
    gone.connection_lost()
    with pytest.raises(SessionLocalError, match="in state 'closed'"):
        call(gone)


def test_a_late_response_done_on_a_closing_session_never_raises() -> None:
    proto = ready()
    created(proto, "r1")
    proto.receive(
        {"type": "response.function_call_arguments.done", "response_id": "r1", "call_id": "c1"}
    )
    proto.tool_output("c1", "ok")  # answered before the response is done
    proto.close()
    done(proto, "r1")  # the follow-up is decided inside receive(): no local error
    assert proto._responses["r1"].calls.state == "followed_up"
