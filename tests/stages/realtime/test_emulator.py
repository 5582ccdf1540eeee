"""Conformance of the realtime emulator over a real loopback WebSocket, with ``websockets`` as
the client: handshake, auth, dialects, every validation error (both shapes), server VAD, echo
and tone replies (sample-exact), manual turns, text turns, scripted tool calls, barge-in,
cancel, truncate, pacing on a manual clock, pings and fault injection. No sleeps: every wait is
on a message or on the emulator's ``wait`` helpers, with a timeout only as a safety net."""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import math
import warnings
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus

from stages import g711
from stages.realtime.emulator import (
    Emulator,
    EmulatorConfig,
    EmulatorSession,
    EnergyVad,
    add_parser,
    config_from_args,
    run_emulator,
    vad_level_dbfs,
)
from stages.realtime.emulator.core import LATENESS_BOUNDS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop  # 3.11/3.12 only: an independent G.711 reference
    except ImportError:  # pragma: no cover
        audioop = None  # type: ignore[assignment]

Json = dict[str, Any]
AUTH = {"Authorization": "Bearer test-key"}
TIMEOUT = 5.0


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- helpers


class ManualClock:
    """Time moves only when the test says so (``advance``)."""

    def __init__(self) -> None:
        self.t = 0.0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self.t:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (deadline, next(self._seq), fut))
        await fut

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.t + seconds)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        while self._heap and self._heap[0][0] <= self.t + 1e-9:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)


class Client:
    """A bare websockets client speaking JSON."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[Json] = []
        self._n = 0

    async def send(self, event: Json | str) -> None:
        if isinstance(event, dict) and "event_id" not in event:
            self._n += 1
            event = {**event, "event_id": f"c-{self._n}"}
        await self.ws.send(event if isinstance(event, str) else json.dumps(event))

    async def recv(self) -> Json:
        async with asyncio.timeout(TIMEOUT):
            raw = await self.ws.recv()
        event: Json = json.loads(raw)
        self.seen.append(event)
        return event

    async def until(self, kind: str) -> list[Json]:
        """Events up to and including the first of type ``kind``."""
        out = []
        while True:
            event = await self.recv()
            out.append(event)
            if event["type"] == kind:
                return out

    async def handshake(self, session: Json | None = None) -> Json:
        await self.until("conversation.created")
        await self.send({"type": "session.update", "session": session or {}})
        return (await self.until("session.updated"))[-1]


@asynccontextmanager
async def emulator(config: EmulatorConfig | None = None, **kw: Any) -> AsyncIterator[Emulator]:
    async with run_emulator(config or EmulatorConfig(), **kw) as emu:
        yield emu


@asynccontextmanager
async def client(
    emu: Emulator,
    model: str = "grok-voice-latest",
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> AsyncIterator[Client]:
    url = f"{emu.url}?model={model}"
    async with connect(url, additional_headers=headers or AUTH, max_size=None, **kw) as ws:
        yield Client(ws)


def types_of(events: list[Json]) -> list[str]:
    return [e["type"] for e in events]


def tone(rate: int, ms: int, hz: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(amp * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def silence(rate: int, ms: int) -> np.ndarray:
    return np.zeros(rate * ms // 1000, dtype="<i2")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def append_chunks(c: Client, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), chunk):
        await c.send({"type": "input_audio_buffer.append", "audio": b64(data[i : i + chunk])})


def audio_of(events: list[Json], kind: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)


RESPONSE_AUDIO_TAIL = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]

VAD_SESSION: Json = {
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    },
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 16000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}
MANUAL_SESSION: Json = {
    "turn_detection": {"type": None},
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}


# ----------------------------------------------------------------------------- handshake


def test_handshake_xai_session_shapes_and_ids() -> None:
    async def go() -> None:
        async with emulator() as emu, client(emu) as c:
            first = await c.until("conversation.created")
            assert types_of(first) == ["session.created", "conversation.created"]
            created = first[0]
            assert created["event_id"] == "evt_0001"
            assert created["session"]["id"] == "sess_0001"
            assert created["session"]["model"] == "grok-voice-latest"
            assert created["session"]["turn_detection"] == {"type": None}  # xAI's default
            assert first[1]["conversation"] == {
                "id": "conv_0001",
                "object": "realtime.conversation",
            }
            session = {
                "instructions": "Be brief.",
                "voice": "eve",
                **VAD_SESSION,
                "tools": [{"type": "function", "name": "get_time", "parameters": {}}],
            }
            await c.send({"type": "session.update", "session": session})
            (updated,) = await c.until("session.updated")
            s = updated["session"]
            assert updated["event_id"] == "evt_0003"
            assert s["voice"] == "eve" and s["instructions"] == "Be brief."
            assert s["turn_detection"] == VAD_SESSION["turn_detection"]
            assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
            assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
            assert s["tools"][0]["name"] == "get_time"
            assert emu.connections[0].dialect == "xai"
            assert emu.received == [
                {**{"type": "session.update", "session": session}, "event_id": "c-1"}
            ]

    run(go())


def test_handshake_switches_and_no_ack() -> None:
    cfg = EmulatorConfig(
        send_session_created=False, send_conversation_created=False, ack_session_update=False
    )

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu) as c:
            await c.send({"type": "session.update", "session": {"voice": "rex"}})
            await c.send({"type": "bogus"})  # a marker: its error is the first thing we get
            (event,) = await c.until("error")
            assert event["error"]["event_id"] == "c-2"
            assert emu.connections[0].session.state.voice == "rex"

    run(go())


def test_session_updated_delay_on_manual_clock() -> None:
    clock = ManualClock()

    async def go() -> None:
        cfg = EmulatorConfig(session_updated_delay_ms=3000)
        async with emulator(cfg, clock=clock) as emu, client(emu) as c:
            await c.until("conversation.created")
            await c.send({"type": "session.update", "session": {}})
            await emu.wait_for(lambda r: len(r) == 1)
            await c.send({"type": "input_audio_buffer.append", "audio": b64(b"\0\0" * 240)})
            (err,) = await c.until("error")
            assert err["error"]["code"] == "audio_before_session_updated"
            clock.advance(3.0)
            (updated,) = await c.until("session.updated")
            assert updated["event_id"] == "evt_0004"

    run(go())


# ----------------------------------------------------------------------------- auth and dialects


def test_auth_rejections_and_subprotocol() -> None:
    async def go() -> None:
        async with emulator() as emu:
            with pytest.raises(InvalidStatus) as info:
                async with client(emu, headers={"X-Other": "1"}):
                    pass
            assert info.value.response.status_code == 401
            assert b"Bearer" in info.value.response.body
            with pytest.raises(InvalidStatus) as info:
                async with client(emu, headers={"Authorization": "Bearer "}):
                    pass
            assert info.value.response.status_code == 401
            url = emu.url.replace("/v1/realtime", "/v1/other")
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=AUTH):
                    pass
            assert info.value.response.status_code == 404
            async with connect(
                emu.url,
                subprotocols=["xai-client-secret.abc123"],  # type: ignore[list-item]
            ) as ws:
                assert ws.subprotocol == "xai-client-secret.abc123"
                assert json.loads(await ws.recv())["type"] == "session.created"
        async with emulator(EmulatorConfig(reject_status=403)) as emu:
            with pytest.raises(InvalidStatus) as info:
                async with client(emu):
                    pass
            assert info.value.response.status_code == 403
        open_emu = emulator(EmulatorConfig(require_auth=False))
        async with open_emu as emu, client(emu, headers={"X-Other": "1"}) as c:
            assert (await c.recv())["type"] == "session.created"

    run(go())


def test_dialect_auto_selects_beta_by_header_and_ga_by_model() -> None:
    async def go() -> None:
        async with emulator(EmulatorConfig(dialect="auto")) as emu:
            beta = {**AUTH, "OpenAI-Beta": "realtime=v1"}
            async with client(emu, model="gpt-4o-realtime-preview", headers=beta) as c:
                s = (await c.recv())["session"]
                assert s["input_audio_format"] == "pcm16" and s["voice"] == "alloy"
                assert s["turn_detection"]["type"] == "server_vad"
            async with client(emu, model="gpt-realtime") as c:
                s = (await c.recv())["session"]
                assert s["type"] == "realtime"
                assert s["audio"]["output"]["voice"] == "alloy"
                assert s["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
            async with client(emu, model="grok-voice-latest") as c:
                assert "voice" in (await c.recv())["session"]
            assert [k.dialect for k in emu.connections] == ["openai-beta", "openai", "xai"]
            assert emu.connections[0].model == "gpt-4o-realtime-preview"

    run(go())


# ----------------------------------------------------------------------------- validation errors


async def _error_for(c: Client, event: Json | str) -> Json:
    await c.send(event)
    return (await c.until("error"))[-1]


def test_validation_errors_nested() -> None:
    async def go() -> None:
        async with emulator() as emu, client(emu) as c:
            await c.until("conversation.created")
            err = await _error_for(c, {"type": "input_audio_buffer.append", "audio": b64(b"\0\0")})
            assert err["error"]["code"] == "audio_before_session_updated"
            assert "wait for session.updated" in err["error"]["message"]
            err = await _error_for(c, {"type": "response.bogus", "event_id": "mine"})
            assert err["error"] == {
                "type": "invalid_request_error",
                "code": "invalid_value",
                "message": err["error"]["message"],
                "param": "type",
                "event_id": "mine",
            }
            assert err["error"]["message"].startswith('Invalid value: "response.bogus".')
            assert "'session.update'" in err["error"]["message"]
            err = await _error_for(c, "{not json")
            assert err["error"]["code"] == "invalid_json"
            err = await _error_for(
                c, {"type": "session.update", "session": {"input_audio_format": "pcm16"}}
            )
            assert err["error"]["code"] == "unknown_parameter"
            assert err["error"]["message"] == "Unknown parameter: 'session.input_audio_format'."
            bad_rate = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 11025}}}}
            err = await _error_for(c, {"type": "session.update", "session": bad_rate})
            assert err["error"]["param"] == "session.audio.input.format.rate"
            assert "8000, 16000, 22050, 24000, 32000, 44100, 48000" in err["error"]["message"]
            err = await _error_for(
                c,
                {
                    "type": "session.update",
                    "session": {"turn_detection": {"type": "server_vad", "threshold": 0.95}},
                },
            )
            assert err["error"]["param"] == "session.turn_detection.threshold"
            await c.send({"type": "session.update", "session": VAD_SESSION})
            await c.until("session.updated")
            err = await _error_for(
                c, {"type": "input_audio_buffer.append", "audio": "@@not base64@@"}
            )
            assert err["error"]["code"] == "invalid_value" and err["error"]["param"] == "audio"
            assert (
                "Expected base64-encoded audio bytes (mono PCM16 at 16kHz)"
                in err["error"]["message"]
            )
            err = await _error_for(c, {"type": "input_audio_buffer.commit"})
            assert "only available when turn_detection type is null" in err["error"]["message"]
            err = await _error_for(c, {"type": "response.cancel"})
            assert err["error"]["code"] == "response_cancel_not_active"
            assert err["error"]["message"] == "Cancellation failed: no active response found"
            await c.send(
                {"type": "input_audio_buffer.append", "audio": b64(silence(16000, 100).tobytes())}
            )
            change = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}
            err = await _error_for(c, {"type": "session.update", "session": change})
            assert err["error"]["code"] == "internal_error"
            assert (
                err["error"]["message"]
                == "Multiple frame rates in the concatenated frames: {16000, 24000}"
            )
            err = await _error_for(
                c,
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": "call_9", "output": "x"},
                },
            )
            assert err["error"]["message"] == "Tool call ID 'call_9' not found in conversation."
            err = await _error_for(
                c,
                {
                    "type": "conversation.item.truncate",
                    "item_id": "item_9",
                    "content_index": 0,
                    "audio_end_ms": 10,
                },
            )
            assert err["error"]["param"] == "item_id"
            # nothing but errors came back after session.updated: the session stays open
            assert emu.connections[0].session.state.input_format.rate == 16000

    run(go())


def test_validation_errors_flat_shape() -> None:
    async def go() -> None:
        async with emulator(EmulatorConfig(error_shape="flat")) as emu, client(emu) as c:
            await c.handshake(VAD_SESSION)
            err = await _error_for(c, {"type": "nope"})
            assert set(err) == {"type", "event_id", "code", "message", "params", "previous_item_id"}
            assert err["code"] == "invalid_value" and err["params"] == "type"
            await c.send(
                {"type": "input_audio_buffer.append", "audio": b64(silence(16000, 100).tobytes())}
            )
            change = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}}
            err = await _error_for(c, {"type": "session.update", "session": change})
            # the shape seen on the wire (pipecat PR #3276)
            assert err["code"] == "internal_error" and err["message"] == "ValueError"
            assert (
                err["params"] == "Multiple frame rates in the concatenated frames: {16000, 24000}"
            )

    run(go())


def test_openai_ga_requires_session_type_and_24k() -> None:
    async def go() -> None:
        async with (
            emulator(EmulatorConfig(dialect="openai")) as emu,
            client(emu, model="gpt-realtime") as c,
        ):
            await c.until("conversation.created")
            err = await _error_for(c, {"type": "session.update", "session": {"instructions": "x"}})
            assert err["error"]["code"] == "missing_required_parameter"
            assert err["error"]["message"] == "Missing required parameter: 'session.type'."
            fmt = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}
            err = await _error_for(
                c, {"type": "session.update", "session": {"type": "realtime", **fmt}}
            )
            assert err["error"]["message"] == "Invalid value: 16000. Supported values are: 24000."
            err = await _error_for(
                c, {"type": "session.update", "session": {"type": "realtime", "voice": "alloy"}}
            )
            assert err["error"]["message"] == "Unknown parameter: 'session.voice'."

    run(go())


# ----------------------------------------------------------------------------- server VAD


def _vad_turn_audio(rate: int) -> bytes:
    return np.concatenate([silence(rate, 500), tone(rate, 1000), silence(rate, 700)]).tobytes()


def test_server_vad_turn_echo_pcm16_resampled() -> None:
    async def go() -> None:
        cfg = EmulatorConfig(transcripts=("what time is it",), reply_text="Echo: {user}")
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake(VAD_SESSION)
            data = _vad_turn_audio(16000)
            await append_chunks(c, data, 640)  # 20 ms
            events = await c.until("response.done")
            kinds = types_of(events)
            assert kinds[:7] == [
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.input_audio_transcription.completed",
                "response.created",
                "response.output_item.added",
            ]
            assert kinds[7] == "response.content_part.added"
            body = "".join("A" if k == "response.output_audio.delta" else "T" for k in kinds[8:-5])
            assert body.replace("AT", "A").replace("A", "") == ""  # each delta, then its words
            assert body.startswith("AT") and body.count("T") == 5  # five words over 13 deltas
            assert kinds[-5:] == RESPONSE_AUDIO_TAIL
            started, stopped, committed, added, transcript = events[:5]
            assert started["audio_start_ms"] == 500 - 300  # onset minus prefix padding
            assert stopped["audio_end_ms"] == 1500 + 500  # end of speech plus the silence
            assert started["item_id"] == stopped["item_id"] == committed["item_id"] == "item_0001"
            assert committed["previous_item_id"] is None  # xAI: always null
            assert added["item"]["role"] == "user"
            assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
            assert transcript["transcript"] == "what time is it"
            # the echo: the utterance (prefix padding to the end of speech) at 24 kHz
            x = np.frombuffer(data, dtype="<i2")[200 * 16 : 1500 * 16]
            expected = np.asarray(soxr.resample(x, 16000, 24000), dtype="<i2").tobytes()
            assert audio_of(events) == expected
            deltas = [
                base64.b64decode(e["delta"])
                for e in events
                if e["type"] == "response.output_audio.delta"
            ]
            assert all(len(d) == 4800 for d in deltas[:-1])  # 100 ms at 24 kHz
            text = "".join(
                e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
            )
            assert text == "Echo: what time is it"
            done = events[-1]["response"]
            assert done["status"] == "completed" and done["id"] == "resp_0001"
            assert done["output"][0]["content"][0] == {"type": "audio", "transcript": text}
            # no more events follow: the next thing is the answer to a marker
            assert (await _error_for(c, {"type": "x"}))["type"] == "error"

    run(go())


def test_server_vad_pcmu_echo_is_byte_exact() -> None:
    session = {
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 100,
            "silence_duration_ms": 300,
        },
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    }

    async def go() -> None:
        async with emulator() as emu, client(emu) as c:
            s = (await c.handshake(session))["session"]
            assert s["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            pcm = np.concatenate([silence(8000, 400), tone(8000, 600), silence(8000, 400)])
            codes = g711.encode_ulaw(pcm.tobytes())
            await append_chunks(c, codes, 160)
            events = await c.until("response.done")
            started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
            assert started["audio_start_ms"] == 300
            assert audio_of(events) == codes[300 * 8 : 1000 * 8]

    run(go())


@pytest.mark.skipif(
    audioop is None, reason="audioop (the independent G.711 reference) is gone in 3.13"
)
def test_pcm16_in_pcma_out_matches_audioop_reference() -> None:
    session = {
        **MANUAL_SESSION,
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}},
            "output": {"format": {"type": "audio/pcma"}},
        },
    }

    async def go() -> None:
        async with emulator() as emu, client(emu) as c:
            await c.handshake(session)
            x = tone(16000, 500, hz=300)
            await append_chunks(c, x.tobytes(), 3200)
            await c.send({"type": "input_audio_buffer.commit"})
            await c.until("conversation.item.input_audio_transcription.completed")
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            ref = np.asarray(soxr.resample(x, 16000, 8000), dtype="<i2").tobytes()
            assert audio_of(events) == audioop.lin2alaw(ref, 2)

    run(go())


CALLER = Path(__file__).resolve().parents[3] / "examples" / "caller_8k_ulaw.wav"


@pytest.mark.skipif(not CALLER.exists(), reason=f"{CALLER} is absent")
def test_example_caller_two_turns_at_xai_threshold() -> None:
    """The project's example caller (two spoken questions) gives two turns and two echoes
    under xAI's default threshold (0.85)."""
    raw = CALLER.read_bytes()
    at = raw.index(b"data")
    codes = raw[at + 8 : at + 8 + int.from_bytes(raw[at + 4 : at + 8], "little")]
    session = {
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.85,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        },
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    }

    async def go() -> None:
        async with emulator(EmulatorConfig(transcripts=("one", "two"))) as emu, client(emu) as c:
            await c.handshake(session)
            await append_chunks(c, codes, 160)
            first = await c.until("response.done")
            second = await c.until("response.done")
            for events, (start, stop) in zip(
                (first, second), ((180, 2990), (4040, 7090)), strict=True
            ):
                started = next(
                    e for e in events if e["type"] == "input_audio_buffer.speech_started"
                )
                stopped = next(
                    e for e in events if e["type"] == "input_audio_buffer.speech_stopped"
                )
                assert (started["audio_start_ms"], stopped["audio_end_ms"]) == (start, stop)
                assert events[-1]["response"]["status"] == "completed"
                # the echo is the caller's own μ-law bytes, from the padded onset to the speech end
                echo = audio_of(events)
                assert echo == codes[start * 8 : start * 8 + len(echo)]
                assert (stop - 500) * 8 - 80 <= start * 8 + len(echo) <= (stop - 500) * 8

    run(go())


def test_conversation_item_commit_alias_warns() -> None:
    async def go() -> None:
        async with emulator() as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            await c.send(
                {"type": "input_audio_buffer.append", "audio": b64(tone(24000, 200).tobytes())}
            )
            await c.send({"type": "conversation.item.commit"})
            events = await c.until("conversation.item.input_audio_transcription.completed")
            assert types_of(events) == [
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.input_audio_transcription.completed",
            ]
            assert events[-1]["transcript"] == "utterance 1 (0.20 s)"
            assert emu.connections[0].session.warnings == [
                "'conversation.item.commit' is not a current event name; handled as "
                "'input_audio_buffer.commit'"
            ]
            err = await _error_for(c, {"type": "input_audio_buffer.commit"})
            assert err["error"]["code"] == "input_audio_buffer_commit_empty"
            assert err["error"]["message"].endswith("but buffer only has 0.00ms of audio.")
            await c.send({"type": "input_audio_buffer.clear"})
            assert (await c.recv())["type"] == "input_audio_buffer.cleared"

    run(go())


# ----------------------------------------------------------------------------- responses


def test_manual_turn_tone_reply_chunks_and_transcript() -> None:
    cfg = EmulatorConfig(
        reply="tone", tone_ms=450, chunk_ms=100, reply_text="one two three four five six"
    )

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            await c.send(
                {"type": "input_audio_buffer.append", "audio": b64(tone(24000, 300).tobytes())}
            )
            await c.send({"type": "input_audio_buffer.commit"})
            await c.until("conversation.item.input_audio_transcription.completed")
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            deltas = [
                base64.b64decode(e["delta"])
                for e in events
                if e["type"] == "response.output_audio.delta"
            ]
            assert [len(d) for d in deltas] == [4800, 4800, 4800, 4800, 2400]
            x = np.frombuffer(b"".join(deltas), dtype="<i2")
            ref = np.round(0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(10800) / 24000))
            assert np.array_equal(x, ref.astype("<i2"))
            pieces = [
                e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
            ]
            assert "".join(pieces) == "one two three four five six" and len(pieces) == 5
            tdone = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
            assert tdone["transcript"] == "one two three four five six"
            created = events[0]
            assert created["type"] == "response.created"
            assert created["response"]["status"] == "in_progress"
            added = events[1]["item"]
            assert added["role"] == "assistant" and added["status"] == "in_progress"
            assert all(e["response_id"] == "resp_0001" for e in events[1:-1])

    run(go())


def test_text_turn_and_text_only_response_names_per_dialect() -> None:
    async def one(dialect: str, model: str, headers: dict[str, str]) -> list[Json]:
        cfg = EmulatorConfig(dialect=dialect, reply_text="Hi {user}")  # type: ignore[arg-type]
        async with emulator(cfg) as emu, client(emu, model=model, headers=headers) as c:
            session: Json = {"type": "realtime"} if dialect == "openai" else {}
            await c.handshake(session)
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "there"}],
            }
            await c.send({"type": "conversation.item.create", "item": item})
            added = await c.recv()
            key = "output_modalities" if dialect == "openai" else "modalities"
            await c.send({"type": "response.create", "response": {key: ["text"]}})
            return [added, *await c.until("response.done")]

    async def go() -> None:
        xai = await one("xai", "grok-voice-latest", AUTH)
        assert xai[0]["type"] == "conversation.item.added"
        assert xai[0]["item"]["content"][0]["text"] == "there"
        kinds = types_of(xai)
        assert "response.text.delta" in kinds and "response.text.done" in kinds
        assert "".join(e["delta"] for e in xai if e["type"] == "response.text.delta") == "Hi there"
        assert "rate_limits.updated" not in kinds  # xAI does not send it
        ga = await one("openai", "gpt-realtime", AUTH)
        assert types_of(ga)[3] == "rate_limits.updated"  # right after response.created
        assert types_of(ga)[:2] == ["conversation.item.added", "conversation.item.done"]
        assert "response.output_text.delta" in types_of(ga)
        part = next(e for e in ga if e["type"] == "response.content_part.added")["part"]
        assert part["type"] == "text"  # the event says text; the item says output_text
        assert ga[-1]["response"]["output"][0]["content"][0]["type"] == "output_text"
        beta = await one(
            "openai-beta", "gpt-4o-realtime-preview", {**AUTH, "OpenAI-Beta": "realtime=v1"}
        )
        assert beta[0]["type"] == "conversation.item.created"
        assert "response.text.delta" in types_of(beta)

    run(go())


def test_beta_audio_event_names() -> None:
    async def go() -> None:
        cfg = EmulatorConfig(dialect="openai-beta", reply="tone", tone_ms=200)
        async with emulator(cfg) as emu, client(emu, model="gpt-4o-realtime-preview") as c:
            await c.handshake(
                {
                    "turn_detection": None,
                    "input_audio_format": "g711_ulaw",
                    "output_audio_format": "g711_alaw",
                }
            )
            await c.send({"type": "input_audio_buffer.append", "audio": b64(bytes(800))})
            await c.send({"type": "input_audio_buffer.commit"})
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            kinds = types_of(events)
            assert kinds[:2] == ["input_audio_buffer.committed", "conversation.item.created"]
            assert committed_prev(events) is None
            assert "response.audio.delta" in kinds and "response.audio_transcript.delta" in kinds
            assert kinds[-5:] == [
                "response.audio.done",
                "response.audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.done",
            ]
            assert len(audio_of(events, "response.audio.delta")) == 1600  # 200 ms of A-law

    run(go())


def committed_prev(events: list[Json]) -> Any:
    return next(e for e in events if e["type"] == "input_audio_buffer.committed")[
        "previous_item_id"
    ]


def test_conflicting_response_create_and_cancel_on_manual_clock() -> None:
    clock = ManualClock()
    cfg = EmulatorConfig(reply="tone", tone_ms=500, think_ms=200, pace=1.0)

    async def go() -> None:
        async with emulator(cfg, clock=clock) as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            await c.send({"type": "response.create"})
            await c.until("response.created")
            err = await _error_for(c, {"type": "response.create"})
            assert err["error"]["code"] == "conversation_already_has_active_response"
            assert err["error"]["message"] == (
                "Conversation already has an active response in progress: resp_0001. "
                "Wait until the response is finished before creating a new one."
            )
            clock.advance(0.2)  # think time over: item, part and the first 100 ms
            first = await c.until("response.output_audio_transcript.delta")
            assert types_of(first)[:3] == [
                "response.output_item.added",
                "response.content_part.added",
                "response.output_audio.delta",
            ]
            clock.advance(0.1)
            second = await c.until("response.output_audio.delta")
            assert len(second) == 1
            await c.send({"type": "response.cancel"})
            done = await c.until("response.done")
            assert types_of(done)[-2:] == ["response.output_item.done", "response.done"]
            resp = done[-1]["response"]
            assert resp["status"] == "cancelled"
            assert resp["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
            assert resp["output"][0]["status"] == "incomplete"
            item_id = resp["output"][0]["id"]
            clock.advance(10)  # nothing of the cancelled response comes any more
            await c.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": 150,
                }
            )
            (trunc,) = await c.until("conversation.item.truncated")
            assert trunc == {**trunc, "item_id": item_id, "content_index": 0, "audio_end_ms": 150}
            err = await _error_for(
                c,
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": 250,
                },
            )
            assert (
                err["error"]["message"]
                == "Audio content of 200ms is shorter than requested audio_end_ms 250ms"
            )
            sent = emu.connections[0].sent
            assert sum(e["type"] == "response.output_audio.delta" for e in sent) == 2

    run(go())


def test_pacing_think_ms_and_real_time_delivery() -> None:
    clock = ManualClock()
    cfg = EmulatorConfig(reply="tone", tone_ms=300, think_ms=500, pace=1.0)

    async def go() -> None:
        async with emulator(cfg, clock=clock) as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            await c.send({"type": "response.create"})
            await c.until("response.created")
            await emu.wait_sent(lambda s: s[-1]["type"] == "response.created")
            clock.advance(0.499)
            clock.advance(0.001)
            got = await c.until("response.output_audio_transcript.delta")
            assert types_of(got)[-2:] == [
                "response.output_audio.delta",
                "response.output_audio_transcript.delta",
            ]
            for _ in range(2):
                await emu.wait_sent(lambda s: s[-1]["type"].endswith("transcript.delta"))
                n = len(emu.sent)
                clock.advance(0.1)
                await emu.wait_sent(lambda s, n=n: len(s) > n)
            rest = await c.until("response.done")
            assert types_of(rest)[-5:] == RESPONSE_AUDIO_TAIL
            assert clock.now() == pytest.approx(0.7)

    run(go())


# ----------------------------------------------------------------------------- tools and barge-in


def test_scripted_tool_call_then_follow_up() -> None:
    cfg = EmulatorConfig(
        tool_calls=({"turn": 1, "name": "get_time", "arguments": {"city": "Tokyo"}},),  # type: ignore[arg-type]
        reply="tone",
        tone_ms=100,
    )
    tools = [
        {
            "type": "function",
            "name": "get_time",
            "description": "time",
            "parameters": {"type": "object"},
        }
    ]

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake({**MANUAL_SESSION, "tools": tools})
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "time?"}],
            }
            await c.send({"type": "conversation.item.create", "item": item})
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            assert types_of(events)[1:] == [
                "response.created",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.done",
            ]
            added = events[2]["item"]
            assert added["type"] == "function_call" and added["call_id"] == "call_0001"
            args = "".join(
                e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
            )
            done = events[5]
            assert done["call_id"] == "call_0001" and done["name"] == "get_time"
            assert done["arguments"] == args == '{"city":"Tokyo"}'
            assert events[-1]["response"]["output"][0]["arguments"] == args
            out = {
                "type": "function_call_output",
                "call_id": "call_0001",
                "output": '{"time":"09:00"}',
            }
            await c.send({"type": "conversation.item.create", "item": out})
            assert (await c.recv())["item"]["call_id"] == "call_0001"
            await c.send({"type": "response.create"})
            follow = await c.until("response.done")
            tdone = next(e for e in follow if e["type"] == "response.output_audio_transcript.done")
            assert tdone["transcript"] == 'get_time says: {"time":"09:00"}'
            assert follow[-1]["response"]["id"] == "resp_0002"

    run(go())


def test_scripted_tool_call_that_also_speaks_and_is_barged_in_on() -> None:
    """``say``: the response calls the tool first, then speaks (paced); speech over it cancels
    the response, whose output keeps the function_call item (status incomplete), and the
    function_call_output sent afterwards is accepted (the server holds that call)."""
    clock = ManualClock()
    script = {"turn": 1, "name": "get_time", "arguments": {"city": "Tokyo"}, "say": "One moment."}
    cfg = EmulatorConfig(tool_calls=(script,), reply="tone", tone_ms=1000, pace=1.0)  # type: ignore[arg-type]
    tools = [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}]

    async def go() -> None:
        async with emulator(cfg, clock=clock) as emu, client(emu) as c:
            await c.handshake({**VAD_SESSION, "tools": tools})
            await append_chunks(c, _vad_turn_audio(16000), 640)
            events = await c.until("response.output_audio.delta")
            kinds = types_of(events)
            start = kinds.index("response.created")
            assert kinds[start:] == [
                "response.created",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_audio.delta",
            ]
            call_id = events[start + 4]["call_id"]
            assert events[start + 6]["output_index"] == 1  # the message after the call
            await append_chunks(c, tone(16000, 200).tobytes(), 640)
            events = await c.until("response.done")
            resp = events[-1]["response"]
            assert resp["status"] == "cancelled"
            assert [(i["type"], i["status"]) for i in resp["output"]] == [
                ("function_call", "completed"),
                ("message", "incomplete"),
            ]
            out = {"type": "function_call_output", "call_id": call_id, "output": "cancelled"}
            await c.send({"type": "conversation.item.create", "item": out})
            added = await c.until("conversation.item.added")
            assert added[-1]["item"]["call_id"] == call_id

    run(go())


def test_function_call_item_added_copies() -> None:
    call = {"turn": 1, "name": "get_time"}
    cfg = EmulatorConfig(tool_calls=(call,), function_call_item_added=2)  # type: ignore[arg-type]
    tools = [{"type": "function", "name": "get_time", "parameters": {}}]

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake({**MANUAL_SESSION, "tools": tools})
            text = [{"type": "input_text", "text": "x"}]
            msg = {"type": "message", "role": "user", "content": text}
            await c.send({"type": "conversation.item.create", "item": msg})
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            copies = [e for e in events[1:] if e["type"] == "conversation.item.added"]
            assert [e["item"]["call_id"] for e in copies] == ["call_0001", "call_0001"]
            assert types_of(events).count("response.function_call_arguments.done") == 1

    run(go())


def test_undeclared_scripted_tool_is_not_called() -> None:
    cfg = EmulatorConfig(tool_calls=({"turn": 1, "name": "get_time"},), reply="tone", tone_ms=100)  # type: ignore[arg-type]

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x"}],
            }
            await c.send({"type": "conversation.item.create", "item": item})
            await c.send({"type": "response.create"})
            events = await c.until("response.done")
            assert "response.function_call_arguments.done" not in types_of(events)
            assert "not in the session's tools" in emu.connections[0].session.warnings[0]

    run(go())


def test_barge_in_cancels_with_turn_detected() -> None:
    clock = ManualClock()
    cfg = EmulatorConfig(reply="tone", tone_ms=2000, pace=1.0)

    async def go() -> None:
        async with emulator(cfg, clock=clock) as emu, client(emu) as c:
            await c.handshake(VAD_SESSION)
            await append_chunks(c, _vad_turn_audio(16000), 640)
            await c.until("response.output_audio.delta")  # 1 of 20 chunks; the rest wait for time
            await append_chunks(c, tone(16000, 200).tobytes(), 640)
            events = await c.until("response.done")
            kinds = types_of(events)
            start = kinds.index("input_audio_buffer.speech_started")
            assert kinds[start:] == [
                "input_audio_buffer.speech_started",
                "response.output_item.done",
                "response.done",
            ]
            # speech at 2200 ms; the padding stops at the last commit (2000 ms)
            assert events[start]["audio_start_ms"] == 2000
            resp = events[-1]["response"]
            assert resp["status"] == "cancelled"
            assert resp["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
            clock.advance(5)
            await c.send({"type": "x"})
            assert types_of(await c.until("error")) == ["error"]  # no audio after response.done

    run(go())


# ----------------------------------------------------------------------------- pings and faults


def test_ping_keepalive() -> None:
    clock = ManualClock()

    async def go() -> None:
        async with (
            emulator(EmulatorConfig(ping_interval_ms=1000), clock=clock) as emu,
            client(emu) as c,
        ):
            await c.until("conversation.created")
            clock.advance(1.0)
            assert await c.recv() == {"type": "ping", "timestamp": 1000}

    run(go())


def test_max_session_expires_with_error_then_1001() -> None:
    clock = ManualClock()
    cfg = EmulatorConfig(max_session_s=1800, dialect="openai")

    async def go() -> None:
        async with emulator(cfg, clock=clock) as emu, client(emu, model="gpt-realtime") as c:
            await c.until("conversation.created")
            clock.advance(1799.9)
            await c.send({"type": "x"})
            await c.until("error")
            clock.advance(0.1)
            (err,) = await c.until("error")
            assert err["error"]["code"] == "session_expired"
            assert err["error"]["message"] == "Your session hit the maximum duration of 30 minutes."
            with pytest.raises(ConnectionClosedOK) as info:
                await c.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001

    run(go())


def test_fault_close_after_events_is_abnormal() -> None:
    async def go() -> None:
        async with emulator(EmulatorConfig(close_after_events=2)) as emu, client(emu) as c:
            await c.until("conversation.created")
            await c.send({"type": "session.update", "session": {}})
            with pytest.raises(ConnectionClosedError) as info:
                await c.recv()
            assert info.value.rcvd is None  # no close frame: 1006
            await emu.wait(lambda e: e.connections[0].closed)

    run(go())


def test_fault_malformed_message() -> None:
    async def go() -> None:
        async with emulator(EmulatorConfig(malformed_after_events=1)) as emu, client(emu) as c:
            assert (await c.recv())["type"] == "session.created"
            async with asyncio.timeout(TIMEOUT):
                raw = await c.ws.recv()
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
            assert (await c.recv())["type"] == "conversation.created"

    run(go())


def test_received_is_recorded_per_connection() -> None:
    async def go() -> None:
        async with emulator() as emu:
            for n in range(2):
                async with client(emu) as c:
                    await c.handshake({"voice": f"v{n}"})
            await emu.wait(lambda e: all(k.closed for k in e.connections))
            assert [k.received[0]["session"]["voice"] for k in emu.connections] == ["v0", "v1"]
            assert len(emu.received) == 2
            # ids go on across connections (a reconnecting client never sees a repeated call_id)
            first, second = (k.sent[0]["event_id"] for k in emu.connections)
            assert first == "evt_0001"
            assert int(second.removeprefix("evt_")) > len(emu.connections[0].sent)

    run(go())


# ----------------------------------------------------------------------------- pure parts


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 900), min_size=1, max_size=40))
def test_energy_vad_is_chunk_size_invariant(sizes: list[int]) -> None:
    x = np.concatenate(
        [
            silence(8000, 300),
            tone(8000, 400),
            silence(8000, 300),
            tone(8000, 200),
            silence(8000, 600),
        ]
    )

    def events(chunks: list[int]) -> list[Any]:
        vad = EnergyVad(8000, 0.5, 100, 250)
        out, i = [], 0
        for n in itertools.cycle(chunks):
            if i >= x.size:
                return out
            out += vad.feed(x[i : i + n])
            i += n
        return out

    reference = events([x.size])
    assert [(e.kind, e.ms) for e in reference] == [
        ("start", 200),
        ("stop", 950),
        ("start", 900),
        ("stop", 1450),
    ]
    assert events(sizes) == reference


def test_vad_threshold_maps_to_level() -> None:
    assert vad_level_dbfs(0.5) == -45.0
    assert vad_level_dbfs(0.85) == pytest.approx(-27.5)
    quiet = tone(16000, 200, amp=10 ** (-40 / 20) * math.sqrt(2))  # -40 dBFS RMS
    assert [e.kind for e in EnergyVad(16000, 0.5, 0, 100).feed(quiet)] == ["start"]
    assert EnergyVad(16000, 0.85, 0, 100).feed(quiet) == []


def test_session_core_runs_without_io() -> None:
    core = EmulatorSession(EmulatorConfig(reply="tone", tone_ms=100), dialect="xai")
    core.open(0.0)
    core.receive(json.dumps({"type": "session.update", "session": MANUAL_SESSION}), 0.0)
    core.receive(json.dumps({"type": "response.create"}), 0.0)
    kinds = [e["type"] for e in core.release(0.0)]
    assert kinds[:3] == ["session.created", "conversation.created", "session.updated"]
    assert kinds[-1] == "response.done" and core.next_deadline() is None


def test_core_counts_how_late_each_audio_delta_left() -> None:
    """300 ms of reply in 100 ms deltas paced in real time: released at 0.0 and 0.1 they are
    on time; the third, due at 0.2 and released at 0.23, is 30 ms late (the 40 ms bucket)."""
    core = EmulatorSession(EmulatorConfig(reply="tone", tone_ms=300, pace=1.0), dialect="xai")
    core.open(0.0)
    core.receive(json.dumps({"type": "session.update", "session": MANUAL_SESSION}), 0.0)
    core.receive(json.dumps({"type": "response.create"}), 0.0)
    deltas = []
    for now in (0.0, 0.1, 0.23):
        deltas += [e for e in core.release(now) if e["type"] == "response.output_audio.delta"]
    assert len(deltas) == 3
    assert LATENESS_BOUNDS[6] == 0.04
    assert core.delta_lateness == [2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_stats_route_answers_the_delta_lateness_histogram() -> None:
    async def main() -> tuple[bytes, dict[str, int]]:
        async with run_emulator(EmulatorConfig(reply="tone", tone_ms=300, pace=1.0)) as emu:
            async with connect(emu.url, additional_headers=AUTH) as ws:
                await ws.send(json.dumps({"type": "session.update", "session": MANUAL_SESSION}))
                await ws.send(json.dumps({"type": "response.create"}))
                while json.loads(await ws.recv())["type"] != "response.done":
                    pass
            reader, writer = await asyncio.open_connection("127.0.0.1", emu.port)
            writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            writer.close()
            return head, json.loads(body)["audio_delta_lateness_seconds"]

    head, hist = asyncio.run(main())
    assert head.startswith(b"HTTP/1.1 200")
    assert list(hist) == [*map(str, LATENESS_BOUNDS), "+Inf"]
    assert hist["+Inf"] == 3  # every delta of the reply, however late the machine made it
    assert all(a <= b for a, b in itertools.pairwise(hist.values()))


def test_stats_route_adds_the_gc_pauses_when_counted() -> None:
    import gc

    from pipeline.heap import PAUSE_BUCKETS, GcPauses

    async def main() -> dict[str, Any]:
        async with run_emulator(EmulatorConfig()) as emu:
            assert "gc_pause_seconds" not in emu.stats()  # not counted unless asked
            emu.gc_pauses = GcPauses()
            emu.gc_pauses.attach()
            try:
                gc.collect(2)
            finally:
                emu.gc_pauses.detach()
            return emu.stats()

    stats = asyncio.run(main())
    assert set(stats["gc_pause_seconds"]) == {"0", "1", "2"}
    full = stats["gc_pause_seconds"]["2"]
    assert list(full) == [*map(str, PAUSE_BUCKETS), "+Inf"] and full["+Inf"] == 1
    assert stats["gc_pause_seconds_total"]["2"] > 0


def test_cli_parser_builds_config() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["emulator", "--port", "0", "--dialect", "openai", "--think-ms", "250", "--no-auth",
         "--transcript", "hello", "--tool-call", '2:get_time:{"city": "Tokyo"}']
    )  # fmt: skip
    cfg = config_from_args(args)
    assert args.handler.__name__ == "run_command"
    assert cfg.dialect == "openai" and cfg.think_ms == 250 and not cfg.require_auth
    assert cfg.transcripts == ("hello",)
    assert cfg.tool_calls[0].turn == 2 and cfg.tool_calls[0].arguments == {"city": "Tokyo"}


# ----------------------------------------------------------------------------- our client core


@pytest.mark.parametrize(
    ("dialect", "model"),
    [("xai", "grok-voice-latest"), ("openai", "gpt-realtime"), ("openai-beta", "gpt-4o-realtime")],
)
def test_protocol_core_against_emulator(dialect: str, model: str) -> None:
    """The client's sans-I/O core (``protocol.RealtimeProtocol``) and the emulator agree: a
    manual audio turn echoed back, then a typed turn with a tool call and its follow-up."""
    from pipeline.frames import AudioFormat
    from stages.realtime import protocol as p

    tools = ({"type": "function", "name": "get_time", "description": "t", "parameters": {}},)
    config = p.SessionConfig(
        dialect=dialect,  # type: ignore[arg-type]
        model=model,
        voice="alloy" if dialect != "xai" else "ara",
        input_format=AudioFormat("pcmu", 8000),
        output_format=AudioFormat("pcmu", 8000),
        turn_detection=p.TurnDetection(type=None),
        tools=tools,
    )
    cfg = EmulatorConfig(
        dialect="auto",
        tool_calls=({"turn": 2, "name": "get_time", "arguments": {"tz": "UTC"}},),  # type: ignore[arg-type]
    )
    headers = {**AUTH, **({"OpenAI-Beta": "realtime=v1"} if dialect == "openai-beta" else {})}

    async def go() -> None:
        async with emulator(cfg) as emu, client(emu, model=model, headers=headers) as c:
            proto = p.RealtimeProtocol(config)

            async def flush() -> None:
                for text in proto.data_to_send():
                    await c.send(text)

            async def until(kind: type) -> list[Any]:
                got: list[Any] = []
                while not any(isinstance(e, kind) for e in got):
                    got += proto.receive(json.dumps(await c.recv()))
                    await flush()
                assert not [e for e in got if isinstance(e, p.ErrorEvent)], got
                return got

            proto.connection_made()
            await flush()
            await until(p.SessionReadyEvent)
            codes = g711.encode_ulaw(tone(8000, 300).tobytes())
            for i in range(0, len(codes), 160):
                proto.append_audio(codes[i : i + 160])
            proto.user_turn_ended()
            await flush()
            got = await until(p.ResponseDoneEvent)
            audio = b"".join(e.data for e in got if isinstance(e, p.AudioDeltaEvent))
            assert audio == codes
            assert got[-1].status == "completed"
            proto.send_text("what time is it?")
            await flush()
            got = await until(p.FunctionCallDoneEvent)
            call = next(e for e in got if isinstance(e, p.FunctionCallDoneEvent))
            assert (call.name, call.arguments) == ("get_time", '{"tz":"UTC"}')
            got = await until(p.ResponseDoneEvent)
            proto.tool_output(call.call_id, "12:00")
            await flush()
            got = await until(p.ResponseDoneEvent)
            said = [
                e.text
                for e in got
                if isinstance(e, p.TranscriptDoneEvent) and e.role == "assistant"
            ]
            assert said == ["get_time says: 12:00"]
            assert emu.connections[0].dialect == dialect

    run(go())


def test_energy_vad_times_do_not_drift_at_22050() -> None:
    rate = 22050
    x = np.concatenate([silence(rate, 60_000), tone(rate, 1000), silence(rate, 700)])
    events = EnergyVad(rate, 0.5, 300, 500).feed(x)
    # within one 10 ms frame (counting frames of 220 samples would drift by 136 ms here)
    assert [e.kind for e in events] == ["start", "stop"]
    assert abs(events[0].ms - 59_700) <= 10 and abs(events[1].ms - 61_500) <= 10
    assert abs(events[1].speech_end_ms - 61_000) <= 10


def test_force_message_delete_and_retrieve() -> None:
    async def go() -> None:
        cfg = EmulatorConfig(reply="tone", tone_ms=200)
        async with emulator(cfg) as emu, client(emu) as c:
            await c.handshake(MANUAL_SESSION)
            item = {
                "type": "force_message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Please hold."}],
            }
            await c.send({"type": "conversation.item.create", "item": item})
            events = await c.until("response.done")
            assert events[0]["type"] == "conversation.item.added"
            tdone = next(e for e in events if e["type"].endswith("transcript.done"))
            assert tdone["transcript"] == "Please hold."
            forced = events[0]["item"]["id"]
            await c.send({"type": "conversation.item.delete", "item_id": forced})
            assert await c.recv() == {
                "type": "conversation.item.deleted",
                "event_id": c.seen[-1]["event_id"],
                "item_id": forced,
            }
            err = await _error_for(c, {"type": "conversation.item.retrieve", "item_id": forced})
            assert err["error"]["param"] == "type"  # not an xAI event
        ga = EmulatorConfig(dialect="openai")
        async with emulator(ga) as emu, client(emu, model="gpt-realtime") as c:
            await c.handshake({"type": "realtime"})
            text = [{"type": "input_text", "text": "hi"}]
            msg = {"id": "mine", "type": "message", "role": "user", "content": text}
            await c.send({"type": "conversation.item.create", "item": msg})
            await c.until("conversation.item.done")
            await c.send({"type": "conversation.item.retrieve", "item_id": "mine"})
            (got,) = await c.until("conversation.item.retrieved")
            assert got["item"]["content"] == text
            err = await _error_for(c, {"type": "conversation.item.create", "item": msg})
            assert err["error"]["code"] == "item_id_already_exists"
            item = {"type": "force_message", "content": []}
            err = await _error_for(c, {"type": "conversation.item.create", "item": item})
            assert err["error"]["param"] == "item.type"  # xAI only

    run(go())
