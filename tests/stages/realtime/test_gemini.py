"""Gemini Live (``provider: gemini``): its settings, the two bridges between its messages and
Realtime events, the emulator's Gemini route driven by Google's own ``google-genai`` Live client
(over TLS, which that client insists on), and pipelines on it."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import structlog

from pipeline import VirtualClock
from pipeline.config import load
from pipeline.errors import FormatError
from stages.realtime.emulator import EmulatorConfig, ToolCallScript, run_emulator
from stages.realtime.settings import resolve_settings
from stages.realtime.wire.gemini import (
    GEMINI_PATH,
    GEMINI_URL,
    GeminiClientBridge,
    GeminiServerBridge,
)

ROOT = Path(__file__).resolve().parents[3]
MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"


def test_gemini_resolves_to_its_url_key_and_rates() -> None:
    s = resolve_settings({"provider": "gemini", "input_rate": 16000, "output_rate": 24000})
    assert (s.provider, s.dialect, s.api_key_env) == ("gemini", "gemini", "GEMINI_API_KEY")
    assert s.url == GEMINI_URL  # the model goes in setup, not in the URL
    assert s.session.model == MODEL and s.session.voice == "Puck"
    with pytest.raises(FormatError) as err:
        resolve_settings({"provider": "gemini", "input_rate": 24000, "output_rate": 24000})
    assert "Gemini Live's input is pcm16 16000 Hz" in err.value.message
    assert "input_rate: 16000" in err.value.fix


def msgs(out: list[str]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in out]


def test_client_bridge_setup_audio_turns_and_tools() -> None:
    b = GeminiClientBridge(MODEL)
    update = {
        "type": "session.update",
        "session": {
            "instructions": "Be brief.",
            "voice": "Kore",
            "turn_detection": {"type": None},
            "tools": [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}],
        },
    }
    send, back = b.outgoing(json.dumps(update))
    (setup,) = msgs(send)
    assert setup == {
        "setup": {
            "model": f"models/{MODEL}",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [
                {"name": "get_time", "parameters": {"type": "object"}}
            ]}],
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
            "sessionResumption": {},  # handles are asked for from the start
        }
    }  # fmt: skip
    assert back == []
    assert msgs(b.incoming('{"setupComplete": {}}'))[0]["type"] == "session.updated"
    # a later update cannot change a Gemini session: answered here
    send, back = b.outgoing(json.dumps({"type": "session.update", "session": {}}))
    assert send == [] and msgs(back)[0]["type"] == "session.updated"
    send, _ = b.outgoing(json.dumps({"type": "input_audio_buffer.append", "audio": "AAA="}))
    assert msgs(send) == [
        {"realtimeInput": {"activityStart": {}}},
        {"realtimeInput": {"audio": {"data": "AAA=", "mimeType": "audio/pcm;rate=16000"}}},
    ]
    send, back = b.outgoing(json.dumps({"type": "input_audio_buffer.commit"}))
    assert msgs(send) == [{"realtimeInput": {"activityEnd": {}}}]
    assert msgs(back)[0]["type"] == "input_audio_buffer.committed"
    assert b.outgoing(json.dumps({"type": "response.create"})) == ([], [])
    # the model's turn
    audio = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AQI="}}
    got = msgs(b.incoming(json.dumps({"serverContent": {"inputTranscription": {"text": "hi"}}})))
    assert got == []
    got = msgs(b.incoming(json.dumps({"serverContent": {"modelTurn": {"parts": [audio]}}})))
    assert [g["type"] for g in got] == [
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
    ]
    assert got[0]["transcript"] == "hi" and got[2]["delta"] == "AQI="
    got = msgs(b.incoming(json.dumps({"serverContent": {"outputTranscription": {"text": "Hey"}}})))
    assert got[0]["type"] == "response.output_audio_transcript.delta"
    got = msgs(b.incoming(json.dumps({"serverContent": {"turnComplete": True}})))
    assert [g["type"] for g in got] == ["response.output_audio_transcript.done", "response.done"]
    assert got[0]["transcript"] == "Hey" and got[1]["response"]["status"] == "completed"
    # a tool call and its answer
    call = {
        "toolCall": {"functionCalls": [{"id": "c1", "name": "get_time", "args": {"city": "Oslo"}}]}
    }
    got = msgs(b.incoming(json.dumps(call)))
    assert [g["type"] for g in got] == [
        "response.created", "response.function_call_arguments.done", "response.done",
    ]  # fmt: skip
    assert got[1]["call_id"] == "c1" and json.loads(got[1]["arguments"]) == {"city": "Oslo"}
    output = {"type": "function_call_output", "call_id": "c1", "output": '{"time": "12:00"}'}
    send, _ = b.outgoing(json.dumps({"type": "conversation.item.create", "item": output}))
    assert msgs(send) == [
        {"toolResponse": {"functionResponses": [
            {"id": "c1", "name": "get_time", "response": {"time": "12:00"}}
        ]}}
    ]  # fmt: skip


def test_interrupted_becomes_speech_started_and_a_cancelled_response_at_once() -> None:
    b = GeminiClientBridge(MODEL)
    audio = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": "AQI="}}
    b.incoming(json.dumps({"serverContent": {"modelTurn": {"parts": [audio]}}}))
    got = msgs(b.incoming(json.dumps({"serverContent": {"interrupted": True}})))
    assert [g["type"] for g in got] == ["input_audio_buffer.speech_started", "response.done"]
    assert got[1]["response"]["status"] == "cancelled"
    # Gemini says no more about the caller's turn: it ends where the answer to it starts
    got = msgs(b.incoming(json.dumps({"serverContent": {"modelTurn": {"parts": [audio]}}})))
    assert [g["type"] for g in got] == [
        "input_audio_buffer.speech_stopped", "response.created", "response.output_audio.delta",
    ]  # fmt: skip
    # a cancellation of tool calls, for the protocol
    got = msgs(b.incoming(json.dumps({"toolCallCancellation": {"ids": ["fc_1", "fc_2"]}})))
    assert got == [{"type": "function_calls.cancelled", "call_ids": ["fc_1", "fc_2"]}]


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"realtimeInput": {"audio": {}}}, "the first message must be setup"),
        ({"setup": {}}, "setup.model is required"),
        ({"setup": {"model": "m", "temperature": 1}}, "Unknown name 'temperature' at 'setup'"),
        ({"bogus": {}}, "Unknown name 'bogus'"),
    ],
)
def test_the_emulator_side_refuses_what_gemini_refuses(message: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        GeminiServerBridge().incoming(json.dumps(message))


def test_the_emulator_side_takes_proto_field_names_too() -> None:
    b = GeminiServerBridge()
    setup = {"setup": {"model": "m", "generation_config": {"speech_config": {
        "voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}}}}}  # fmt: skip
    (update,) = msgs(b.incoming(json.dumps(setup)))
    assert update["session"]["voice"] == "Kore"
    (append,) = msgs(
        b.incoming(
            json.dumps({"realtime_input": {"audio": {"data": "AA==", "mime_type": "audio/pcm"}}})
        )
    )
    assert append == {"type": "input_audio_buffer.append", "audio": "AA=="}


genai = pytest.importorskip("google.genai", reason="google-genai is a dev dependency")
pytest.importorskip("cryptography", reason="the TLS test certificate needs cryptography")


def tone(rate: int, ms: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def test_google_genai_live_client_holds_a_turn_and_a_tool_call_with_the_emulator(
    tmp_path: Path,
) -> None:
    from google.genai import types

    from tests.tlsutil import loopback_tls

    server_tls, client_tls = loopback_tls(tmp_path)
    cfg = EmulatorConfig(
        transcripts=("what time is it",),
        reply_text="It is noon.",
        tool_calls=(ToolCallScript(turn=1, name="get_time", arguments={"city": "Oslo"}),),
    )

    async def go() -> None:
        async with run_emulator(cfg, ssl=server_tls) as emu:
            client = genai.Client(
                api_key="gemini-key-test",
                http_options=types.HttpOptions(
                    base_url=f"https://127.0.0.1:{emu.port}",
                    api_version="v1beta",
                    async_client_args={"ssl": client_tls},
                ),
            )
            config = types.LiveConnectConfig(
                response_modalities=["AUDIO"],
                system_instruction="Be brief.",
                speech_config=types.SpeechConfig(
                    voice_config=types.VoiceConfig(
                        prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
                    )
                ),
                tools=[
                    types.Tool(
                        function_declarations=[
                            types.FunctionDeclaration(
                                name="get_time",
                                description="The time in a city",
                                parameters={
                                    "type": "object",
                                    "properties": {"city": {"type": "string"}},
                                },
                            )
                        ]
                    )
                ],
                input_audio_transcription=types.AudioTranscriptionConfig(),
                output_audio_transcription=types.AudioTranscriptionConfig(),
                realtime_input_config=types.RealtimeInputConfig(
                    automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
                ),
            )
            async with client.aio.live.connect(model=MODEL, config=config) as live:
                await live.send_realtime_input(activity_start=types.ActivityStart())
                await live.send_realtime_input(
                    audio=types.Blob(data=tone(16000, 400), mime_type="audio/pcm;rate=16000")
                )
                await live.send_realtime_input(activity_end=types.ActivityEnd())
                heard, audio, said, calls = "", b"", "", []
                async with asyncio.timeout(10):
                    async for msg in live.receive():
                        if msg.tool_call:
                            calls += msg.tool_call.function_calls
                            await live.send_tool_response(
                                function_responses=[
                                    types.FunctionResponse(
                                        id=c.id, name=c.name, response={"time": "12:00"}
                                    )
                                    for c in msg.tool_call.function_calls
                                ]
                            )
                        sc = msg.server_content
                        if sc is None:
                            continue
                        if sc.input_transcription and sc.input_transcription.text:
                            heard += sc.input_transcription.text
                        if sc.output_transcription and sc.output_transcription.text:
                            said += sc.output_transcription.text
                        for part in sc.model_turn.parts if sc.model_turn else []:
                            assert part.inline_data.mime_type == "audio/pcm;rate=24000"
                            audio += part.inline_data.data
                        if sc.turn_complete:
                            break
            assert heard == "what time is it"
            assert [(c.name, c.args) for c in calls] == [("get_time", {"city": "Oslo"})]
            assert said == 'get_time says: {"time": "12:00"}'  # the result reached the model
            assert len(audio) == 400 * 48  # the 400 ms utterance echoed at 24 kHz pcm16
            (conn,) = emu.connections
            assert conn.dialect == "gemini" and conn.path == GEMINI_PATH
            assert conn.headers["x-goog-api-key"] == "gemini-key-test"
            kinds = [e["type"] for e in conn.received]
            assert kinds[0] == "session.update" and "input_audio_buffer.commit" in kinds
            outputs = [e["item"] for e in conn.received if e["type"] == "conversation.item.create"]
            assert outputs == [
                {
                    "type": "function_call_output",
                    "call_id": calls[0].id,
                    "output": '{"time": "12:00"}',
                }
            ]

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_emulator_closes_a_gemini_connection_without_a_key() -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def go() -> None:
        async with run_emulator(EmulatorConfig()) as emu:
            url = f"ws://127.0.0.1:{emu.port}{GEMINI_PATH}"
            async with connect(url) as ws:
                with pytest.raises(ConnectionClosed) as err:
                    await ws.recv()
            assert err.value.rcvd is not None and err.value.rcvd.code == 1008
            assert "unregistered callers" in err.value.rcvd.reason

    asyncio.run(asyncio.wait_for(go(), 30))


def test_a_gemini_pipeline_runs_against_the_emulator_with_a_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-pipeline")
    cfg = EmulatorConfig(
        reply="echo",
        tool_calls=(ToolCallScript(turn=1, name="get_time", arguments={"city": "Tokyo"}),),
    )

    async def go() -> Any:
        clock = VirtualClock()
        async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:
            p = load(
                ROOT / "pipelines.yaml",
                "gemini",
                overrides=[
                    f"agent.url=ws://127.0.0.1:{emu.port}{GEMINI_PATH}",
                    f"reply.path={tmp_path / 'reply.wav'}",
                    f"log.path={tmp_path / 'events.jsonl'}",
                ],
            )
            await p.run_async(clock=clock)
            return emu.connections[0]

    conn = asyncio.run(go())
    assert conn.dialect == "gemini" and conn.headers["x-goog-api-key"] == "gemini-key-pipeline"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    results = [e for e in events if e["type"] == "tool_result"]
    assert results and not results[0]["is_error"] and "Tokyo" in results[0]["output"]
    outputs = [e["item"] for e in conn.received if e["type"] == "conversation.item.create"]
    assert outputs and outputs[0]["type"] == "function_call_output"
    info = sf.info(tmp_path / "reply.wav")
    assert info.samplerate == 8000 and info.frames > 8000


async def _outlive(
    cfg: EmulatorConfig, clock: VirtualClock, caller: Any, **params: Any
) -> tuple[list[Any], Any]:
    """Run a Gemini session against the emulator with the frames of ``caller(emulator)``;
    (output, emulator)."""
    from pipeline.spec import spec_for
    from pipeline.testing import make_context, run_stage_async

    async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:
        ctx = make_context(spec_for("realtime_session"), clock=clock, id="agent")
        out = await run_stage_async(
            "realtime_session", caller(emu), ctx=ctx, provider="gemini",
            url=f"ws://127.0.0.1:{emu.port}{GEMINI_PATH}",
            input_rate=16000, output_rate=24000, turn_detection="none", **params,
        )  # fmt: skip
        return out, emu


def _two_turns(clock: VirtualClock) -> Any:
    from collections.abc import AsyncIterator

    from pipeline.frames import Frame, Text

    async def caller(emu: Any) -> AsyncIterator[Frame]:
        await clock.sleep(1.0)
        yield Text("my order is A123")
        # silence past the limit, in steps of the clock, so that no deadline is skipped: the
        # emulator says goAway 10 s before its 30 s limit
        for _ in range(35):
            await clock.sleep(1.0)
        yield Text("where is it?")
        await clock.sleep(5.0)

    return caller


def test_a_gemini_call_outliving_the_connection_resumes_from_the_latest_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """goAway (with timeLeft) comes 10 s before the emulator's 30 s limit: the session opens a
    new connection whose setup names the latest resumption handle and closes the old one before
    the server does; the server goes on from the conversation the handle holds, so nothing is
    carried over as text."""
    from pipeline.frames import Transcript

    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-test")
    clock = VirtualClock()
    cfg = EmulatorConfig(max_session_s=30, go_away_s=10, reply_text="You said: {user}")
    with structlog.testing.capture_logs() as logs:
        out, emu = asyncio.run(_outlive(cfg, clock, _two_turns(clock)))
    assert len(emu.connections) == 2
    first, second = emu.connections
    # the first connection said goAway and was closed by the client before its limit
    assert [e["time_left_s"] for e in first.sent if e["type"] == "session.closing_soon"] == [10]
    assert not any(e.get("error", {}).get("code") == "session_expired" for e in first.sent)
    # the second resumed: no conversation replayed as text, only the new turn
    assert kinds_of(second.received) == ["session.update", "conversation.item.create",
                                         "response.create"]  # fmt: skip
    handles = [e for e in logs if e["event"] == "emulator.resumed"]
    assert len(handles) == 1 and handles[0]["handle"] in emu.handles
    # the server's conversation holds the first turn, and its turns go on counting
    texts = [
        c.get("text") or c.get("transcript")
        for item in second.session.snapshot().items.values()
        for c in item.get("content") or []
    ]
    assert texts[:2] == ["my order is A123", "You said: my order is A123"]
    assert second.session.snapshot().turn == 2
    said = [f.text for f in out if isinstance(f, Transcript) and f.role == "assistant" and f.final]
    assert said == ["You said: my order is A123", "You said: where is it?"]
    events = [e["event"] for e in logs]
    switch = events.index("Gemini will close the connection (goAway); switching to a new one")
    resumed = next(i for i, e in enumerate(events) if e.startswith("resumed session"))
    assert switch < resumed
    assert not any(e.startswith("renewed session") for e in events)
    assert not [e for e in logs if e["log_level"] == "warning"]


def test_with_no_resumable_handle_the_conversation_is_carried_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handle has expired when the session tries it (a 5 s lifetime here): Gemini closes
    the connection with 1007, and the next one carries the conversation over as text."""
    from pipeline.frames import Transcript

    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-test")
    clock = VirtualClock()
    cfg = EmulatorConfig(
        max_session_s=30, go_away_s=10, resumption_ttl_s=5, reply_text="You said: {user}"
    )
    with structlog.testing.capture_logs() as logs:
        out, emu = asyncio.run(_outlive(cfg, clock, _two_turns(clock)))
    assert len(emu.connections) == 3
    refused, carried = emu.connections[1:]
    assert refused.received == []  # refused at setup: nothing reached the model
    assert kinds_of(carried.received)[:5] == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
        "conversation.item.create",
        "response.create",
    ]
    texts = [e["item"]["content"][0]["text"] for e in carried.received if "item" in e]
    assert texts == ["my order is A123", "You said: my order is A123", "where is it?"]
    said = [f.text for f in out if isinstance(f, Transcript) and f.role == "assistant" and f.final]
    assert said == ["You said: my order is A123", "You said: where is it?"]
    events = [e["event"] for e in logs]
    assert "Gemini refused the session resumption handle; the next session carries the " \
        "conversation over instead" in events  # fmt: skip
    assert any(
        e.startswith("renewed session: the conversation so far carried over") for e in events
    )


def test_a_tool_call_gemini_cancels_is_stopped_and_answered_by_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller barges in while the model's tool call is outstanding: the emulator says
    ``interrupted`` and ``toolCallCancellation`` with the call's id (as Gemini does when a client
    interrupts a server turn); the session interrupts at once, then emits a ``tool_cancel`` for
    the call, and a result that still comes for it is not sent (no ``toolResponse``)."""
    from pipeline.frames import Audio, ToolCall, ToolCancel, ToolResult
    from tests.stages.realtime.test_emulator import ManualClock
    from tests.stages.realtime.test_session import Feed, Run, context

    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-test")
    clock = ManualClock()
    say = ToolCallScript(turn=1, name="get_time", arguments={"city": "Oslo"}, say="One moment.")
    cfg = EmulatorConfig(reply="tone", tone_ms=2000, pace=1.0, tool_calls=(say,))
    get_time = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}

    def audio(pcm: bytes, pts: float) -> Audio:
        return Audio(pcm, "pcm16", 16000, pts=pts)

    async def go() -> tuple[list[Any], Any, list[Any]]:
        async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:
            ctx = context(clock=clock)
            run = Run(
                ctx, provider="gemini", url=f"ws://127.0.0.1:{emu.port}{GEMINI_PATH}",
                input_rate=16000, output_rate=24000, tools=[get_time],
            )  # fmt: skip
            assert isinstance(run.feed, Feed)
            quiet = bytes(16000 * 2 * 2)  # 2 s
            run.feed.put(audio(tone(16000, 400), 0.0), audio(quiet, 0.4))
            called = await run.until(ToolCall)
            assert isinstance(called, ToolCall) and called.name == "get_time"
            await run.until(Audio)  # "One moment." is playing
            run.feed.put(audio(tone(16000, 300), 2.4), audio(quiet, 2.7))  # cuts in
            await run.until(ToolCancel)
            run.feed.put(ToolResult(called.call_id, '{"time": "12:00"}'))  # too late
            # the caller's new turn is answered (a 2 s reply, paced): let it play out
            await emu.wait_sent(lambda sent: kinds_of(sent).count("response.created") == 2)
            clock.advance(3.0)
            await emu.wait_sent(lambda sent: kinds_of(sent).count("response.done") == 2)
            run.feed.end()
            await run.rest()
            return run.out, emu.connections[0], []

    with structlog.testing.capture_logs() as logs:
        out, conn, _ = asyncio.run(asyncio.wait_for(go(), 30))
    kinds = [f.type for f in out if f.type in ("tool_call", "interrupt", "tool_cancel")]
    assert kinds == ["tool_call", "interrupt", "tool_cancel"]
    (cancel,) = [f for f in out if isinstance(f, ToolCancel)]
    (call,) = [f for f in out if isinstance(f, ToolCall)]
    assert (cancel.call_id, cancel.name) == (call.call_id, "get_time")
    # Gemini was sent no toolResponse for it, and expected none
    assert conn.bridge.withdrawn == {call.call_id} and conn.bridge.warnings == []
    items = [e["item"]["type"] for e in conn.received if e["type"] == "conversation.item.create"]
    assert "function_call_output" not in items
    said = [e for e in logs if e["event"].startswith("the model cancelled tool calls")]
    assert said and said[0]["calls"] == [f"get_time {call.call_id}"]
    assert not [e for e in logs if e["log_level"] == "warning"]


def kinds_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_the_protocol_owes_no_output_for_a_withdrawn_call() -> None:
    from stages.realtime import protocol as p
    from stages.realtime.wire import SessionConfig

    proto = p.RealtimeProtocol(SessionConfig(dialect="gemini"))
    proto.connection_made()
    proto.receive({"type": "session.updated", "session": {}})
    proto.receive({"type": "response.created", "response": {"id": "r1"}})
    for cid in ("fc_1", "fc_2"):
        proto.receive(
            {"type": "response.function_call_arguments.done", "response_id": "r1",
             "call_id": cid, "name": "get_time", "arguments": "{}"}
        )  # fmt: skip
    proto.receive({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    proto.data_to_send()
    (ev,) = proto.receive({"type": "function_calls.cancelled", "call_ids": ["fc_1", "fc_9"]})
    assert ev == p.CallsCancelledEvent((("fc_1", "get_time"),))  # fc_9: never asked for
    assert proto.pending_calls == ("fc_2",) and proto.was_withdrawn("fc_1")
    assert proto.tool_output("fc_1", "{}") == []  # nothing is sent for it
    assert len(proto.tool_output("fc_2", "{}")) == 1
    assert not proto.owes


def test_caller_audio_across_the_switch_reaches_the_resumed_session_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller is speaking when goAway comes: the audio sent on the old connection since
    the latest handle is sent again on the resumed one, then the rest of the turn follows, so
    the model hears the whole 8 s utterance (the emulator's echo of it is 8 s long)."""
    from collections.abc import AsyncIterator

    from pipeline.frames import Audio, Frame, SpeechStarted, SpeechStopped

    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-test")
    # time moves on only once the loop has been idle for 64 turns: the handle on the wire is
    # read before the caller's sleep ends
    clock = VirtualClock(settle_turns=64)
    cfg = EmulatorConfig(max_session_s=30, go_away_s=10, reply="echo")
    speech = tone(16000, 8000)
    step = 16000 * 2 // 50  # 20 ms

    async def caller(emu: Any) -> AsyncIterator[Frame]:
        # the handle given with setupComplete stands (nothing is answered before the switch);
        # the caller speaks once it is given (audio on the wire as a handle is made is not in
        # it: see docs/gemini.md)
        await emu.wait(lambda emu: len(emu.handles) == 1)
        await clock.sleep(15.0)
        yield SpeechStarted(pts=15.0)
        for i in range(0, len(speech), step):  # 15 s to 23 s: goAway comes at 20 s
            yield Audio(speech[i : i + step], "pcm16", 16000, pts=15.0 + i / 32000)
            await clock.sleep(0.02)
        yield SpeechStopped(pts=23.0)
        await clock.sleep(5.0)

    with structlog.testing.capture_logs() as logs:
        out, emu = asyncio.run(_outlive(cfg, clock, caller))
    assert len(emu.connections) == 2
    first, second = emu.connections
    sent_first = sum(len(base64.b64decode(e["audio"])) for e in first.received if "audio" in e)
    sent_second = sum(len(base64.b64decode(e["audio"])) for e in second.received if "audio" in e)
    assert 0 < sent_first < len(speech)  # the turn was cut by the switch ...
    assert sent_second == len(speech)  # ... and the resumed session heard all of it
    (resumed,) = [e for e in logs if e["event"].startswith("resumed session")]
    assert resumed["replayed_s"] == sent_first / 32000
    reply = b"".join(f.data for f in out if isinstance(f, Audio))
    assert len(reply) == 8 * 24000 * 2  # the echo of the whole utterance, at 24 kHz


def test_google_genai_live_client_resumes_a_session_with_the_emulator(tmp_path: Path) -> None:
    """Google's client asks for session resumption, reads the handles and the goAway the
    emulator sends (with ``timeLeft``), and resumes on a new connection from the latest handle:
    the emulator's conversation there holds the first connection's turn."""
    from google.genai import types

    from tests.stages.realtime.test_emulator import ManualClock
    from tests.tlsutil import loopback_tls

    server_tls, client_tls = loopback_tls(tmp_path)
    clock = ManualClock()
    cfg = EmulatorConfig(max_session_s=30, go_away_s=10, reply_text="You said: {user}")

    async def turn(live: Any, text: str) -> tuple[str, list[Any]]:
        await live.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text=text)]), turn_complete=True
        )
        said, updates = "", []
        async with asyncio.timeout(10):
            async for msg in live.receive():  # until turnComplete
                if msg.session_resumption_update:
                    updates.append(msg.session_resumption_update)
                sc = msg.server_content
                if sc and sc.output_transcription and sc.output_transcription.text:
                    said += sc.output_transcription.text
            msg = await anext(aiter(live.receive()))  # the handle given at the end of the turn
            updates.append(msg.session_resumption_update)
        return said, updates

    async def go() -> None:
        async with run_emulator(cfg, ssl=server_tls, clock=clock) as emu:
            client = genai.Client(
                api_key="gemini-key-test",
                http_options=types.HttpOptions(
                    base_url=f"https://127.0.0.1:{emu.port}",
                    api_version="v1beta",
                    async_client_args={"ssl": client_tls},
                ),
            )

            def config(handle: str | None) -> types.LiveConnectConfig:
                return types.LiveConnectConfig(
                    response_modalities=["AUDIO"],
                    output_audio_transcription=types.AudioTranscriptionConfig(),
                    session_resumption=types.SessionResumptionConfig(handle=handle),
                )

            async with client.aio.live.connect(model=MODEL, config=config(None)) as live:
                said, updates = await turn(live, "my order is A123")
                assert said == "You said: my order is A123"
                # a handle with setupComplete, none while generating, a new one at the end
                assert [(u.resumable, bool(u.new_handle)) for u in updates] == [
                    (True, True), (None, False), (True, True),
                ]  # fmt: skip
                handle = updates[-1].new_handle
                clock.advance(20.0)  # 10 s before the limit
                async with asyncio.timeout(10):
                    msg = await anext(aiter(live.receive()))
                assert msg.go_away is not None and msg.go_away.time_left == "10s"
            async with client.aio.live.connect(model=MODEL, config=config(handle)) as live:
                said, _ = await turn(live, "where is it?")
                assert said == "You said: where is it?"
            _, second = emu.connections
            items = second.session.snapshot().items.values()
            texts = [
                c.get("text") or c.get("transcript")
                for item in items
                for c in item.get("content") or []
            ]
            assert texts == [
                "my order is A123", "You said: my order is A123", "where is it?",
                "You said: where is it?",
            ]  # fmt: skip
            assert second.session.snapshot().turn == 2

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_client_bridge_keeps_what_was_sent_since_the_latest_handle() -> None:
    """Sans I/O: setup asks for handles; a resumable update takes the handle and forgets what
    was sent before it, an empty one (generating) changes nothing; goAway's timeLeft is read;
    a bridge for the next connection names the handle and, once set up, has the rest to send
    again, first."""
    from stages.realtime.wire.gemini import Resumption

    r = Resumption()
    b = GeminiClientBridge(MODEL, r)
    update = {"type": "session.update", "session": {"turn_detection": {"type": None}}}
    (setup,), _ = b.outgoing(json.dumps(update))
    assert json.loads(setup)["setup"]["sessionResumption"] == {}
    b.incoming(json.dumps({"setupComplete": {}}))
    chunk = base64.b64encode(bytes(640)).decode()
    append = {"type": "input_audio_buffer.append", "audio": chunk}
    b.outgoing(json.dumps(append))  # activityStart, then the audio
    b.incoming(json.dumps({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}}))
    assert (r.handle, r.replay, r.replay_bytes) == ("h1", [], 0)
    sent, _ = b.outgoing(json.dumps(append))
    b.incoming(json.dumps({"sessionResumptionUpdate": {}}))  # generating: h1 stands
    assert r.handle == "h1" and r.replay == sent and r.replay_s == 0.02
    got = msgs(b.incoming(json.dumps({"goAway": {"timeLeft": "9.5s"}})))
    assert r.time_left_s == 9.5 and got[0]["type"] == "gemini.go_away"
    nxt = GeminiClientBridge(MODEL, r)
    (setup,), _ = nxt.outgoing(json.dumps(update))
    assert json.loads(setup)["setup"]["sessionResumption"] == {"handle": "h1"}
    assert r.time_left_s is None  # a new connection has no goAway yet
    nxt.incoming(json.dumps({"setupComplete": {}}))
    assert nxt.resumed and nxt.to_send == sent and nxt.replayed_s == 0.02


def test_with_manual_turns_activity_start_interrupts_and_cancels_the_calls() -> None:
    """Gemini's default activityHandling: the caller's ``activityStart`` interrupts the model's
    turn (``interrupted``) and cancels its outstanding tool calls (``toolCallCancellation``),
    sent at once, before anything the model's core says next."""
    b = GeminiServerBridge()
    b.incoming(json.dumps({"setup": {"model": "m", "realtimeInputConfig": {
        "automaticActivityDetection": {"disabled": True}}}}))  # fmt: skip
    b.outgoing(json.dumps({"type": "response.created", "response": {"id": "r1"}}))
    call = {"type": "response.function_call_arguments.done", "call_id": "c1", "name": "f",
            "arguments": "{}"}  # fmt: skip
    b.outgoing(json.dumps(call))
    got = msgs(b.incoming(json.dumps({"realtimeInput": {"activityStart": {}}})))
    assert got == [{"type": "response.cancel"}]  # the core cancels the response in flight
    assert b.to_client == [
        {"serverContent": {"interrupted": True}},
        {"toolCallCancellation": {"ids": ["c1"]}},
    ]
    b.to_client.clear()
    b.outgoing(json.dumps({"type": "response.done", "response": {"status": "cancelled"}}))
    got = msgs(b.incoming(json.dumps({"realtimeInput": {"activityStart": {}}})))
    assert got == [] and b.to_client == []  # nothing in flight, nothing owed
    # a late response for the cancelled call is not passed on
    reply = {"toolResponse": {"functionResponses": [{"id": "c1", "response": {}}]}}
    assert b.incoming(json.dumps(reply)) == []
    assert b.warnings == ["toolResponse for call c1, which was cancelled"]


def test_a_local_barge_in_on_a_pending_tool_call_cancels_it_with_manual_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Manual turns (a VAD upstream): the caller cuts in while the model says "One moment."
    over its outstanding tool call; the session interrupts at once, its audio starts a new
    activity, and Gemini's answer, ``interrupted`` and ``toolCallCancellation``, becomes a
    ``tool_cancel`` after the ``interrupt``."""
    from pipeline.frames import Audio, SpeechStarted, SpeechStopped, ToolCall, ToolCancel
    from tests.stages.realtime.test_emulator import ManualClock
    from tests.stages.realtime.test_session import Run, context

    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-test")
    clock = ManualClock()
    say = ToolCallScript(turn=1, name="get_time", arguments={}, say="One moment.")
    cfg = EmulatorConfig(reply="tone", tone_ms=2000, pace=1.0, tool_calls=(say,))
    get_time = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}

    async def go() -> tuple[list[Any], Any]:
        async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:
            run = Run(
                context(clock=clock), provider="gemini", turn_detection="none",
                url=f"ws://127.0.0.1:{emu.port}{GEMINI_PATH}", input_rate=16000,
                output_rate=24000, tools=[get_time],
            )  # fmt: skip
            speech = Audio(tone(16000, 400), "pcm16", 16000, pts=0.0)
            run.feed.put(SpeechStarted(pts=0.0), speech, SpeechStopped(pts=0.4))
            await run.until(ToolCall)
            await run.until(Audio)  # "One moment." is playing
            cut_in = Audio(tone(16000, 300), "pcm16", 16000, pts=1.0)
            run.feed.put(SpeechStarted(pts=1.0), cut_in)
            await run.until(ToolCancel)
            run.feed.put(SpeechStopped(pts=1.3))
            await emu.wait_sent(lambda sent: kinds_of(sent).count("response.created") == 2)
            clock.advance(3.0)
            run.feed.end()
            await run.rest()
            return run.out, emu.connections[0]

    out, conn = asyncio.run(asyncio.wait_for(go(), 30))
    kinds = [f.type for f in out if f.type in ("tool_call", "interrupt", "tool_cancel")]
    assert kinds == ["tool_call", "interrupt", "tool_cancel"]
    assert conn.bridge.warnings == []
    items = [e["item"]["type"] for e in conn.received if e["type"] == "conversation.item.create"]
    assert "function_call_output" not in items
