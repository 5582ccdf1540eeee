"""Grok features on xAI's dialect: server-side tools declared in YAML, force_message (a greeting,
or an assistant Text frame said verbatim, with its voice and interruptible flag), and a call
that outlives the session limit going on on a new session with the conversation carried over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import structlog

from pipeline import VirtualClock
from pipeline.errors import ConfigError
from pipeline.frames import Frame, Text, Transcript
from pipeline.spec import spec_for
from pipeline.testing import make_context, run_stage_async
from stages.realtime import protocol as p
from stages.realtime.emulator import ConnectionPair, EmulatorConfig, run_emulator
from stages.realtime.settings import check_params, resolve_settings
from stages.realtime.wire import SessionConfig, TurnDetection, WireError, codec

SERVER_TOOLS = [
    "web_search",
    {"type": "x_search", "allowed_x_handles": ["xai"]},
    {"type": "file_search", "vector_store_ids": ["collection_123"], "max_num_results": 5},
    {"type": "mcp", "server_url": "https://mcp.example.com/sse", "server_label": "orders"},
]


def test_server_tools_go_into_the_session_beside_the_functions() -> None:
    fn = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
    s = resolve_settings({"provider": "xai", "server_tools": SERVER_TOOLS}, (fn,))
    wire = codec("xai").session_to_wire(s.session)
    assert [t["type"] for t in wire["tools"]] == [
        "function", "web_search", "x_search", "file_search", "mcp",
    ]  # fmt: skip
    assert wire["tools"][4]["server_label"] == "orders"
    # the emulator reads them strictly, as xAI's server does
    assert len(codec("xai").tools_from_wire(wire["tools"], "session.tools")) == 5
    with pytest.raises(WireError, match='Invalid value: "code_interpreter"'):
        codec("xai").tools_from_wire([{"type": "code_interpreter"}], "session.tools")
    with pytest.raises(WireError, match=r"session\.tools\[0\]\.server_label"):
        codec("xai").tools_from_wire([{"type": "mcp", "server_url": "https://x"}], "session.tools")


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"server_tools": ["web_serch"]}, "did you mean 'web_search'?"),
        ({"server_tools": [{"type": "mcp", "server_url": "https://x"}]}, "needs server_label"),
        ({"server_tools": [{"type": "web_search", "depth": 3}]}, "unknown key(s) depth"),
        (
            {"server_tools": [{"type": "mcp", "server_url": "ftp://x", "server_label": "a"}]},
            "server_url must be an http(s):// address",
        ),
        ({"provider": "openai", "server_tools": ["web_search"]}, "use provider xai"),
        ({"provider": "openai", "greeting": "Hello"}, "xAI's force_message"),
    ],
)
def test_bad_server_tools_and_greetings_are_refused_with_the_fix(
    params: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings(params)
    assert says in str(err.value)


def test_a_function_named_like_an_enabled_builtin_is_refused() -> None:
    fn = {"type": "function", "name": "web_search", "parameters": {"type": "object"}}
    with pytest.raises(ConfigError, match="collides with xAI's built-in web_search tool"):
        resolve_settings({"server_tools": ["web_search"]}, (fn,))
    problems = check_params(
        {"server_tools": ["x_search"], "tools": ["examples.tools:x_keyword_search"]},
        None,  # type: ignore[arg-type]
    )
    assert any("x_keyword_search" in str(p) and "x_search" in str(p) for p in problems)


def test_the_documented_model_names_work() -> None:
    for model in ("grok-voice-think-fast-1.0", "grok-voice-latest"):
        s = resolve_settings({"provider": "xai", "model": model})
        assert s.url.endswith(f"?model={model}") and s.session.model == model


async def _run(
    cfg: EmulatorConfig, frames: AsyncIterator[Frame], clock: VirtualClock, **params: Any
) -> tuple[list[Frame], Any]:
    async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:
        ctx = make_context(spec_for("realtime_session"), clock=clock, id="agent")
        out = await run_stage_async(
            "realtime_session", frames, ctx=ctx, provider="xai", url=emu.url,
            input_rate=16000, output_rate=16000, turn_detection="none", **params,
        )  # fmt: skip
        return out, emu


def test_a_greeting_and_an_assistant_text_are_said_verbatim(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-test")
    clock = VirtualClock()

    async def caller() -> AsyncIterator[Frame]:
        await clock.sleep(2.0)
        yield Text("One moment please.", role="assistant")
        await clock.sleep(2.0)

    greeting = {"text": "Thanks for calling.", "voice": "eve", "interruptible": False}
    out, emu = asyncio.run(_run(EmulatorConfig(dialect="xai"), caller(), clock, greeting=greeting))
    forced = [
        e["item"] for e in emu.connections[0].received if e["type"] == "conversation.item.create"
    ]
    assert forced == [
        {
            "type": "force_message", "role": "assistant", "interruptible": False, "voice": "eve",
            "content": [{"type": "output_text", "text": "Thanks for calling."}],
        },
        {
            "type": "force_message", "role": "assistant", "interruptible": True,
            "content": [{"type": "output_text", "text": "One moment please."}],
        },
    ]  # fmt: skip
    said = [f.text for f in out if isinstance(f, Transcript) and f.role == "assistant" and f.final]
    assert said == ["Thanks for calling.", "One moment please."]
    assert "response.create" not in [e["type"] for e in emu.connections[0].received]


def test_a_call_outliving_the_session_limit_goes_on_with_the_conversation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-test")
    clock = VirtualClock()
    cfg = EmulatorConfig(dialect="xai", max_session_s=30, reply_text="You said: {user}")

    async def caller() -> AsyncIterator[Frame]:
        await clock.sleep(1.0)
        yield Text("my order is A123")
        for _ in range(35):  # past the emulator's 30 s limit, in steps of the clock so that
            await clock.sleep(1.0)  # no deadline is skipped while messages are in flight
        yield Text("where is it?")
        await clock.sleep(5.0)

    with structlog.testing.capture_logs() as logs:
        out, emu = asyncio.run(_run(cfg, caller(), clock))
    assert len(emu.connections) == 2
    second = emu.connections[1].received
    carried = [e["item"] for e in second if e["type"] == "conversation.item.create"][:2]
    assert carried == [
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "my order is A123"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "You said: my order is A123"}]},
    ]  # fmt: skip
    renewed = [e for e in logs if e["event"].startswith("renewed session")]
    assert renewed and renewed[0]["turns"] == 2
    said = [f.text for f in out if isinstance(f, Transcript) and f.role == "assistant" and f.final]
    assert said == ["You said: my order is A123", "You said: where is it?"]


@pytest.mark.parametrize("interruptible", [True, False])
def test_a_forced_message_marked_not_interruptible_is_not_cut_by_the_caller(
    interruptible: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.frames import Interrupt, SpeechStarted

    monkeypatch.setenv("XAI_API_KEY", "xai-test")
    clock = VirtualClock()
    cfg = EmulatorConfig(dialect="xai", reply="tone", tone_ms=3000, pace=1.0)
    greeting = {"text": "Please listen to the following.", "interruptible": interruptible}

    async def go() -> list[Frame]:
        async with run_emulator(cfg, "127.0.0.1", 0, clock=clock) as emu:

            async def caller() -> AsyncIterator[Frame]:
                # the greeting is playing (3 s of it, in real time) when the caller talks over
                # it, heard by a local VAD
                await emu.wait_sent(
                    lambda sent: [e["type"] for e in sent].count("response.output_audio.delta") >= 3
                )
                yield SpeechStarted(pts=1.0)
                await clock.sleep(4.0)

            ctx = make_context(spec_for("realtime_session"), clock=clock, id="agent")
            return await run_stage_async(
                "realtime_session", caller(), ctx=ctx, provider="xai", url=emu.url,
                input_rate=16000, output_rate=16000, turn_detection="none", greeting=greeting,
            )  # fmt: skip

    with structlog.testing.capture_logs() as logs:
        out = asyncio.run(go())
    interrupts = [f for f in out if isinstance(f, Interrupt)]
    assert len(interrupts) == (1 if interruptible else 0)
    kept = [e for e in logs if "interruptible: false" in e["event"]]
    assert len(kept) == (0 if interruptible else 1)


@pytest.mark.parametrize("interruptible", [True, False])
def test_the_emulator_drops_caller_audio_over_a_forced_message_not_interruptible(
    interruptible: bool,
) -> None:
    """xAI: ``interruptible: false`` drops the caller's audio until the forced message has been
    played: no speech_started, no cancellation, and that audio is in no turn; speech after it
    is heard as usual."""
    cfg = EmulatorConfig(dialect="xai", reply="tone", tone_ms=2000, chunk_ms=100, pace=1.0)
    client = SessionConfig(
        dialect="xai", turn_detection=TurnDetection("server_vad", 0.5, 0, 200), transcription=""
    )
    pair = ConnectionPair(client, cfg)
    pair.connect()
    pair.client.force_message("Please listen to the following.", interruptible=interruptible)
    pair.advance(0.5)  # the 2 s message is playing
    pair.client.append_audio(tone(24000, 600) + bytes(24000 * 2 * 3 // 10))  # speech, 300 ms quiet
    events = pair.exchange()
    watched = p.SpeechStartedEvent | p.SpeechStoppedEvent | p.ResponseDoneEvent
    kinds = [type(e).__name__ for e in events if isinstance(e, watched)]
    if interruptible:
        assert kinds[:2] == ["SpeechStartedEvent", "ResponseDoneEvent"]
        assert of_status(events) == ["cancelled"]
        return
    assert kinds == []  # the caller's audio was dropped
    events = pair.advance(2.0)
    assert of_status(events) == ["completed"]  # said to the end
    assert pair.client.assistant_audio_ms() == 2000
    # after it the caller is heard again; their dropped audio is in no turn
    pair.client.append_audio(tone(24000, 600) + bytes(24000 * 2 * 3 // 10))
    events = pair.exchange()
    (started,) = [e for e in events if isinstance(e, p.SpeechStartedEvent)]
    assert started.audio_start_ms == 900  # the dropped 900 ms keep their place on the timeline
    committed = [e for e in pair.to_client if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 1


def tone(rate: int, ms: int, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def of_status(events: list[Any]) -> list[str]:
    return [e.status for e in events if isinstance(e, p.ResponseDoneEvent)]
