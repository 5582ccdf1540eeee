"""Our client protocol against the emulator in memory (:class:`ConnectionPair`): no socket, no
event loop, the clock moved by hand. Audio is compared sample for sample."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.frames import AudioFormat
from stages.realtime import protocol as p
from stages.realtime.emulator import ConnectionPair, EmulatorConfig, ToolCallScript
from stages.realtime.wire import CODECS, DIALECTS, Dialect, SessionConfig, TurnDetection
from stages.realtime.wire import client as wc
from stages.realtime.wire.openai import OpenAICodec


def tone(rate: int, ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def manual(dialect: Dialect, **changes: object) -> SessionConfig:
    c = CODECS[dialect]
    return SessionConfig(
        dialect=dialect,
        model=c.default_model,
        voice=c.default_voice,
        turn_detection=TurnDetection(None),
        transcription="",
    ).replace(**changes)


def of(events: list[p.ServerEvent], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_manual_turn_is_echoed_sample_for_sample(dialect: Dialect) -> None:
    pair = ConnectionPair(manual(dialect), EmulatorConfig(transcripts=("hello there",)))
    events = pair.connect()
    (ready,) = of(events, p.SessionReadyEvent)
    assert (ready.input_format, ready.output_format) == (p.PCM24K, p.PCM24K)
    assert pair.client.ready
    speech = tone(24000, 400)
    for i in range(0, len(speech), 4800):
        pair.client.append_audio(speech[i : i + 4800])
    pair.client.user_turn_ended()
    events = pair.exchange()
    kinds = [type(e) for e in events if not isinstance(e, p.IgnoredEvent | p.RateLimitsEvent)]
    assert kinds[:3] == [
        p.InputCommittedEvent,
        p.TranscriptDoneEvent,
        p.ResponseCreatedEvent,
    ]
    assert of(events, p.TranscriptDoneEvent)[0].text == "hello there"
    assert b"".join(e.data for e in of(events, p.AudioDeltaEvent)) == speech
    (done,) = of(events, p.ResponseDoneEvent)
    assert done.status == "completed"
    said = "".join(e.text for e in of(events, p.TranscriptDeltaEvent) if e.role == "assistant")
    assert said == "You said: hello there"
    assert not pair.client.owes
    # the wire each way, in order, in the dialect's own names
    sent = [orjson.loads(m)["type"] for m in pair.to_server]
    assert sent == [
        "session.update",
        *(["input_audio_buffer.append"] * 4),
        "input_audio_buffer.commit",
        "response.create",
    ]
    names = {e["type"] for e in pair.to_client}
    assert CODECS[dialect].server_event("response.output_audio.delta") in names


@pytest.mark.parametrize("dialect", DIALECTS)
def test_g711_at_8k_both_ways(dialect: Dialect) -> None:
    ulaw = AudioFormat("pcmu", 8000)
    pair = ConnectionPair(manual(dialect, input_format=ulaw, output_format=ulaw))
    (ready,) = of(pair.connect(), p.SessionReadyEvent)
    assert ready.input_format == ready.output_format == ulaw
    data = bytes(range(256)) * 4  # 128 ms of μ-law
    pair.client.append_audio(data)
    pair.client.user_turn_ended()
    audio = b"".join(e.data for e in of(pair.exchange(), p.AudioDeltaEvent))
    # μ-law -> pcm16 -> μ-law: every code but the two zeros (0x7f and 0xff decode alike) returns
    assert len(audio) == len(data)
    assert sum(a != b for a, b in zip(audio, data, strict=True)) == 4


def test_scripted_tool_call_then_one_follow_up_response() -> None:
    tools = ({"type": "function", "name": "get_time", "parameters": {"type": "object"}},)
    cfg = EmulatorConfig(
        tool_calls=(ToolCallScript(turn=1, name="get_time", arguments={"city": "Tokyo"}),),
        reply="tone",
        tone_ms=200,
    )
    pair = ConnectionPair(manual("openai", tools=tools), cfg)
    pair.connect()
    pair.client.send_text("what time is it in Tokyo?")
    events = pair.exchange()
    (call,) = of(events, p.FunctionCallDoneEvent)
    assert (call.name, orjson.loads(call.arguments)) == ("get_time", {"city": "Tokyo"})
    assert of(events, p.ResponseDoneEvent)[0].call_ids == (call.call_id,)
    assert pair.client.pending_calls == (call.call_id,)
    pair.client.tool_output(call.call_id, "10:30")
    events = pair.exchange()
    # the output went in, then exactly one response.create; the answer quotes the tool
    tail = [orjson.loads(m)["type"] for m in pair.to_server[-2:]]
    assert tail == ["conversation.item.create", "response.create"]
    said = of(events, p.TranscriptDoneEvent)[-1].text
    assert said == "get_time says: 10:30"
    assert of(events, p.ResponseDoneEvent)[-1].status == "completed"
    assert not pair.client.owes


def test_think_ms_and_pace_run_on_the_pairs_clock() -> None:
    cfg = EmulatorConfig(reply="tone", tone_ms=500, chunk_ms=100, think_ms=300, pace=1.0)
    pair = ConnectionPair(manual("xai"), cfg)
    pair.connect()
    pair.client.send_text("hi")
    events = pair.exchange()
    assert of(events, p.ResponseCreatedEvent) and not of(events, p.AudioDeltaEvent)
    assert pair.server.next_deadline() == pytest.approx(0.3)
    assert not of(pair.advance(0.299), p.AudioDeltaEvent)
    assert len(of(pair.advance(0.001), p.AudioDeltaEvent)) == 1  # the first 100 ms chunk at 300 ms
    assert len(of(pair.advance(0.4), p.AudioDeltaEvent)) == 4  # one chunk per 100 ms after it
    assert of(pair.events, p.ResponseDoneEvent)[-1].status == "completed"
    assert pair.now == pytest.approx(0.7)


def test_server_vad_barge_in_cancels_and_truncates() -> None:
    cfg = EmulatorConfig(reply="tone", tone_ms=2000, chunk_ms=100, pace=1.0)
    client = manual("openai", turn_detection=TurnDetection("server_vad", 0.5, 0, 200))
    pair = ConnectionPair(client, cfg)
    pair.connect()
    silence = bytes(24000 * 2 // 10)  # 100 ms
    pair.client.append_audio(tone(24000, 500) + silence * 3)
    events = pair.exchange()
    assert [e.audio_start_ms for e in of(events, p.SpeechStartedEvent)] == [0]
    assert [e.audio_end_ms for e in of(events, p.SpeechStoppedEvent)] == [700]
    assert of(events, p.ResponseCreatedEvent)
    pair.advance(0.5)  # 600 ms of the 2 s reply has arrived
    assert pair.client.assistant_audio_ms() == 600
    pair.client.append_audio(tone(24000, 100))  # the caller talks over it
    events = pair.exchange()
    assert of(events, p.SpeechStartedEvent)
    (done,) = of(events, p.ResponseDoneEvent)
    assert done.status == "cancelled"
    pair.client.interrupt(played_ms=450, local=False)
    (cut,) = of(pair.exchange(), p.TruncatedEvent)
    assert cut.audio_end_ms == 450
    # nothing of the cancelled response arrives later
    assert not of(pair.advance(5.0), p.AudioDeltaEvent)


def test_what_the_client_sends_the_emulator_refuses_is_an_error_event() -> None:
    pair = ConnectionPair(manual("xai"))
    pair.connect()
    pair.client.commit()  # nothing appended: the client sends nothing
    assert pair.exchange() == []
    pair.client.append_audio(bytes(480))  # 10 ms: too short to commit
    pair.client.commit()
    (err,) = of(pair.exchange(), p.ErrorEvent)
    assert err.code == "input_audio_buffer_commit_empty"
    assert "buffer only has 10.00ms of audio" in err.message


def test_audio_from_the_pair_is_what_the_wire_carried() -> None:
    pair = ConnectionPair(manual("openai-beta"), EmulatorConfig(reply="tone", tone_ms=100))
    pair.connect()
    pair.client.send_text("hi")
    events = pair.exchange()
    wire_audio = b"".join(
        base64.b64decode(e["delta"]) for e in pair.to_client if e["type"] == "response.audio.delta"
    )
    assert b"".join(e.data for e in of(events, p.AudioDeltaEvent)) == wire_audio == tone(24000, 100)


class EnvelopeCodec(OpenAICodec):
    """A dialect of another family, for the test: every message both ways travels inside an
    envelope of its own shape. Only the four message hooks differ from OpenAI GA."""

    name = "envelope"  # type: ignore[assignment]

    def encode_client(self, event: wc.ClientEvent, event_id: str) -> str:
        body = {"kind": event.type, "id": event_id, "body": event.to_wire()}
        return orjson.dumps({"envelope": body}).decode()

    def decode_client(self, message: Mapping[str, Any], session: SessionConfig) -> wc.ClientEvent:
        env = message["envelope"]
        return super().decode_client({"type": env["kind"], **env["body"]}, session)

    def encode_server(self, event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [{"type": "envelope", "inner": e} for e in super().encode_server(event)]

    def decode_server(self, message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [message["inner"]] if message.get("type") == "envelope" else [message]


def test_a_dialect_is_one_codec_plus_a_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CODECS, "envelope", EnvelopeCodec())  # type: ignore[misc]
    config = manual("openai").replace(dialect="envelope")
    pair = ConnectionPair(config, EmulatorConfig(reply="tone", tone_ms=100))
    assert of(pair.connect(), p.SessionReadyEvent)
    pair.client.send_text("hi")
    events = pair.exchange()
    assert b"".join(e.data for e in of(events, p.AudioDeltaEvent)) == tone(24000, 100)
    assert of(events, p.ResponseDoneEvent)[0].status == "completed"
    # both directions went through the codec's own shape
    assert all("envelope" in orjson.loads(m) for m in pair.to_server)
    assert {e["type"] for e in pair.to_client} == {"envelope"}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 2400), min_size=1, max_size=8))
def test_server_vad_does_not_depend_on_how_the_audio_is_cut(sizes: list[int]) -> None:
    """The same audio in appends of any sizes (whole samples) gives the same turns."""
    silence_200ms, silence_1s = bytes(24000 * 2 // 5), bytes(24000 * 2)
    pcm = (silence_200ms + tone(24000, 600) + silence_1s) * 2

    def turns(cuts: list[int]) -> list[int]:
        client = manual("openai", turn_detection=TurnDetection("server_vad", 0.5, 100, 300))
        pair = ConnectionPair(client, EmulatorConfig(reply="tone", tone_ms=100))
        pair.connect()
        at, i = 0, 0
        while at < len(pcm):
            n = 2 * cuts[i % len(cuts)]
            pair.client.append_audio(pcm[at : at + n])
            at, i = at + n, i + 1
        pair.exchange()
        starts = [e.audio_start_ms for e in of(pair.events, p.SpeechStartedEvent)]
        stops = [e.audio_end_ms for e in of(pair.events, p.SpeechStoppedEvent)]
        return starts + stops

    # speech 200-800 ms and 2000-2600 ms; 100 ms prefix padding, 300 ms of silence to stop
    assert turns(sizes) == turns([4800]) == [100, 1900, 1100, 2900]
