"""Per-turn voice-to-voice latency (the histogram in /metrics, the list in the 'call ended' log
line) and OpenTelemetry traces (a span per call, turn and tool call), checked with the SDK's
in-memory exporter on a real call over loopback."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
import structlog

from benchmarks.callsim import run_call
from pipeline.frames import (
    Audio,
    Frame,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolResult,
)
from pipeline.graph import Pipeline
from pipeline.spec import stage
from pipeline.tracing import TurnTimer
from stages.telephony.serve import run_server
from tests.stages.telephony.test_serve import http_get

AUDIO = bytes(range(256)) * 10  # 16 frames of 20 ms, 0.32 s


@stage(
    "serve_test_one_turn",
    passthrough=True,
    emits=(SpeechStarted, SpeechStopped, ToolCall, ToolResult),
    register=False,
)
async def one_turn(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Echo, but hold the audio back until the caller's 'speech' (0-0.1 s) has ended and a tool
    has run: the reply's first byte goes out after the frame at 0.2 s arrives."""
    held: list[Frame] = []
    async for f in frames:
        if isinstance(f, Audio) and f.pts < 0.2 - 1e-6:
            if f.pts == 0.0:
                yield SpeechStarted(pts=0.0)
            held.append(f)
            continue
        if held:
            yield SpeechStopped(pts=0.1)
            yield ToolCall(call_id="call_1", name="lookup_order", arguments='{"id": 7}')
            yield ToolResult(call_id="call_1", output='{"status": "shipped"}', name="lookup_order")
            for h in held:
                yield h
            held = []
        yield f


def turn_pipeline() -> Pipeline:
    p = Pipeline("turns")
    p.add("caller", "twilio_source")
    p.add("turn", one_turn)
    p.add("phone", "twilio_sink")
    p.link("caller", "turn", "phone")
    return p


def test_turn_timer_on_the_callers_clock() -> None:
    seen: list[float] = []
    t = TurnTimer(seen.append)
    t.reply_sent(100.0)  # no speech yet: not a turn
    t.on_event(SpeechStarted(pts=1.0))
    t.on_event(SpeechStopped(pts=2.0))
    t.on_event(SpeechStopped(pts=2.3))  # the model's VAD, later: the first one counts
    t.reply_sent(2750.0)
    t.reply_sent(2770.0)  # the same reply
    t.on_event(SpeechStopped(pts=5.0))
    t.on_event(SpeechStarted(pts=5.2))  # speaking again before any reply: no turn yet
    t.on_event(SpeechStopped(pts=6.0))
    t.reply_sent(6400.0)
    assert seen == pytest.approx([0.75, 0.4]) and t.latencies_s == seen


def test_voice_to_voice_histogram_log_and_spans() -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def main() -> tuple[str, list[dict[str, object]]]:
        with structlog.testing.capture_logs() as logs:
            async with run_server(turn_pipeline(), tracer=tracer) as server:
                rec = await run_call(
                    server.url + "/media", AUDIO, call_sid="CAturn", stream_sid="MZturn",
                    quiet_s=0.15, tail_s=3.0,
                )  # fmt: skip
                assert rec.ok and bytes(rec.received_audio) == AUDIO
                text = (await http_get(server.port, "/metrics"))[2]
        return text, logs

    text, logs = asyncio.run(main())
    # one turn: speech ended at 0.1 s; the reply went out once the frame at 0.2 s had arrived,
    # so the caller had sent at least 0.22 s: at least 120 ms of waiting
    assert "pipeline_voice_to_voice_seconds_count 1.0" in text
    total = float(re.search(r"pipeline_voice_to_voice_seconds_sum (\S+)", text).group(1))  # type: ignore[union-attr]
    assert 0.12 <= total < 1.0
    ended = [e for e in logs if e["event"] == "call ended"]
    assert ended[0]["voice_to_voice_ms"] == [round(total * 1000)]

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"call", "turn", "tool_call"}
    call, turn, tool = spans["call"], spans["turn"], spans["tool_call"]
    assert dict(call.attributes) == {
        "call.sid": "CAturn", "call.stream_sid": "MZturn", "pipeline": "turns",
        "call.outcome": "completed", "call.turns": 1,
    }  # fmt: skip
    for child in (turn, tool):
        assert child.parent is not None and child.parent.span_id == call.context.span_id
        assert child.context.trace_id == call.context.trace_id
    assert turn.attributes["turn.voice_to_voice_ms"] == pytest.approx(total * 1000)
    assert turn.end_time - turn.start_time == pytest.approx(total * 1e9, abs=2)
    assert dict(tool.attributes) == {
        "tool.name": "lookup_order", "tool.call_id": "call_1", "tool.is_error": False,
    }  # fmt: skip
    assert call.start_time <= tool.start_time <= tool.end_time <= call.end_time
    json.dumps(ended[0])  # the log line stays JSON-able
