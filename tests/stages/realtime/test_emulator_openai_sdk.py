"""The emulator against a third-party client: the official ``openai`` SDK's realtime
WebSocket clients (GA ``client.realtime`` and beta ``client.beta.realtime``), pointed at the
emulator with a dummy key. Every server event is parsed by the SDK and also validated strictly
against the SDK's own pydantic union (required fields, literal types)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pydantic
import pytest

from stages.realtime.emulator import EmulatorConfig, run_emulator

openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency")
pytest.importorskip("websockets")

from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent  # noqa: E402
from openai.types.realtime import RealtimeServerEvent  # noqa: E402

TIMEOUT = 10.0


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def tone(rate: int, ms: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def client_for(port: int) -> Any:
    return openai.AsyncOpenAI(
        api_key="sk-emulator-test",
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
    )


async def collect(conn: Any, until: str, adapter: pydantic.TypeAdapter[Any]) -> list[Any]:
    """SDK-parsed events up to ``until``; each raw message also strictly validated."""
    out = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await conn.recv_bytes()
            adapter.validate_json(raw)  # raises on a missing field or a wrong literal
            event = conn.parse_event(raw)
            out.append(event)
            if event.type == until:
                return out


async def typed_turn(conn: Any, text: str, adapter: pydantic.TypeAdapter[Any]) -> list[Any]:
    """A typed user message, then a response: the events up to its ``response.done``."""
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await conn.conversation.item.create(item=message)
    await conn.response.create()
    return await collect(conn, "response.done", adapter)


def test_openai_sdk_ga_client_full_turn() -> None:
    strict = pydantic.TypeAdapter(RealtimeServerEvent)
    cfg = EmulatorConfig(
        dialect="auto", transcripts=("hello there",), reply_text="You said: {user}"
    )

    async def go() -> None:
        async with run_emulator(cfg) as emu:
            client = client_for(emu.port)
            async with client.realtime.connect(model="gpt-realtime") as conn:
                first = await collect(conn, "conversation.created", strict)
                assert [e.type for e in first] == ["session.created", "conversation.created"]
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "output_modalities": ["audio"],
                        "instructions": "Be brief.",
                        "audio": {
                            "input": {
                                "format": {"type": "audio/pcm", "rate": 24000},
                                "turn_detection": None,
                                "transcription": {"model": "gpt-4o-mini-transcribe"},
                            },
                            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                        },
                    }
                )
                (updated,) = await collect(conn, "session.updated", strict)
                session = updated.session
                assert session.audio.output.voice == "marin"
                assert session.audio.output.format.type == "audio/pcmu"
                assert session.audio.input.turn_detection is None
                assert session.instructions == "Be brief."
                speech = tone(24000, 400)
                for i in range(0, len(speech), 4800):  # 100 ms appends
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(speech[i : i + 4800]).decode()
                    )
                await conn.input_audio_buffer.commit()
                await conn.response.create()
                events = await collect(conn, "response.done", strict)
                kinds = [e.type for e in events]
                assert kinds[:5] == [
                    "input_audio_buffer.committed",
                    "conversation.item.added",
                    "conversation.item.done",
                    "conversation.item.input_audio_transcription.completed",
                    "response.created",
                ]
                assert events[3].transcript == "hello there"
                deltas = [e for e in events if e.type == "response.output_audio.delta"]
                audio = b"".join(base64.b64decode(e.delta) for e in deltas)
                assert len(audio) == 400 * 8  # the 400 ms utterance echoed as 8 kHz μ-law
                assert len(deltas) == 4
                text = "".join(
                    e.delta for e in events if e.type == "response.output_audio_transcript.delta"
                )
                assert text == "You said: hello there"
                done = events[-1]
                assert done.response.status == "completed"
                assert done.response.output[0].content[0].transcript == text
            got = [e["type"] for e in emu.connections[0].received]
            assert got == ["session.update"] + ["input_audio_buffer.append"] * 4 + [
                "input_audio_buffer.commit",
                "response.create",
            ]
            assert emu.connections[0].dialect == "openai"
            auth = emu.connections[0].headers["Authorization"]
            assert auth == "Bearer sk-emulator-test"

    run(go())


def test_openai_sdk_ga_server_vad_and_errors() -> None:
    strict = pydantic.TypeAdapter(RealtimeServerEvent)

    async def go() -> None:
        cfg = EmulatorConfig(dialect="openai", reply="tone", tone_ms=300)
        async with run_emulator(cfg) as emu:
            conn_manager = client_for(emu.port).realtime.connect(model="gpt-realtime")
            async with conn_manager as conn:
                await collect(conn, "conversation.created", strict)
                await conn.session.update(session={"type": "realtime"})
                await collect(conn, "session.updated", strict)
                await conn.response.cancel()
                (err,) = await collect(conn, "error", strict)
                assert err.error.code == "response_cancel_not_active"
                pcm = np.zeros(24000 * 2, dtype="<i2")
                pcm[24000 * 3 // 10 : 24000 * 13 // 10] = np.frombuffer(tone(24000, 1000), "<i2")
                data = pcm.tobytes()
                for i in range(0, len(data), 9600):
                    await conn.input_audio_buffer.append(
                        audio=base64.b64encode(data[i : i + 9600]).decode()
                    )
                events = await collect(conn, "response.done", strict)
                started = events[0]
                assert started.type == "input_audio_buffer.speech_started"
                assert started.audio_start_ms == 0  # 300 ms onset, 300 ms default padding
                stopped = events[1]
                assert stopped.audio_end_ms == 1300 + 200  # GA default silence: 200 ms
                assert events[-1].response.status == "completed"

    run(go())


def test_openai_sdk_beta_client() -> None:
    strict = pydantic.TypeAdapter(BetaServerEvent)

    async def go() -> None:
        async with run_emulator(EmulatorConfig(dialect="auto", reply="tone", tone_ms=200)) as emu:
            client = client_for(emu.port)
            async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
                await collect(conn, "conversation.created", strict)
                await conn.session.update(
                    session={
                        "turn_detection": None,
                        "input_audio_format": "g711_ulaw",
                        "output_audio_format": "pcm16",
                    }
                )
                (updated,) = await collect(conn, "session.updated", strict)
                assert updated.session.input_audio_format == "g711_ulaw"
                events = await typed_turn(conn, "hi", strict)
                kinds = [e.type for e in events]
                assert kinds[0] == "conversation.item.created"
                audio = b"".join(
                    base64.b64decode(e.delta) for e in events if e.type == "response.audio.delta"
                )
                assert len(audio) == 200 * 48  # 200 ms of 24 kHz PCM16
            assert emu.connections[0].dialect == "openai-beta"
            assert emu.connections[0].headers["OpenAI-Beta"] == "realtime=v1"

    run(go())


def test_openai_sdk_ga_client_against_the_default_settings() -> None:
    """The emulator as ``pipeline emulator`` starts it (no dialect given) takes the GA client:
    it picks the dialect per connection, and GA's ``session.type`` is no unknown parameter."""
    strict = pydantic.TypeAdapter(RealtimeServerEvent)

    async def go() -> None:
        async with run_emulator(EmulatorConfig()) as emu:
            client = client_for(emu.port)
            async with client.realtime.connect(model="gpt-realtime") as conn:
                await collect(conn, "conversation.created", strict)
                await conn.session.update(session={"type": "realtime", "instructions": "Hi."})
                (updated,) = await collect(conn, "session.updated", strict)
                assert updated.session.type == "realtime"
                events = await typed_turn(conn, "Hello", strict)
                (said,) = [e for e in events if e.type == "response.output_audio_transcript.done"]
                assert said.transcript == "You said: Hello"
            assert emu.connections[0].dialect == "openai"

    run(go())
