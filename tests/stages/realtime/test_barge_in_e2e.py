"""End to end: the default phone pipeline (caller WAV -> decode -> resample -> gate -> session
-> resample -> encode -> WAV, tool router in a cycle, event log) against the emulator, where the
caller speaks over the assistant's reply while a tool call is still running.

The emulator's first response calls ``slow_time`` and then says "One moment..." (3 s of tone,
paced on the run's VirtualClock); the caller's second utterance (4.35 s into the WAV) starts
over it. The tool only answers once a barge-in happened (``on_interrupt: finish``) or is
cancelled by it (``cancel``). Before the fixes this run waited ``response_timeout_s`` at the end
of the input for a result the router had dropped.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pipeline.clock import VirtualClock
from pipeline.context import StageContext
from pipeline.frames import (
    FRAME_TYPES,
    Audio,
    Frame,
    Interrupt,
    ResponseStarted,
    ToolCall,
)
from pipeline.graph import Pipeline
from pipeline.spec import stage
from stages.realtime import emulator
from stages.tools import cancelled_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CALLER = ROOT / "examples" / "caller_8k_ulaw.wav"
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))
barge_tools = importlib.import_module("barge_tools")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(not CALLER.exists(), reason=f"{CALLER} is missing"),
]

SAY = "One moment, let me check."
SEEN: list[Frame] = []


@stage("watch", accepts=FRAME_TYPES, emits=(), register=False)
async def watch(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Records what reaches the end of the chain, in order; lets the tool answer once the
    interrupt got here (``finish``: the call completes after the barge-in)."""
    async for frame in frames:
        SEEN.append(frame)
        if isinstance(frame, Interrupt):
            barge_tools.STATE["release"].set()
    return
    yield


def run_call(tmp: Path, mode: str) -> tuple[Any, list[dict[str, Any]], list[Any], list[Any]]:
    """Run the graph; returns the summary, the event log, what the emulator received and the
    session's log lines."""
    config = emulator.EmulatorConfig(
        think_ms=0,
        pace=1.0,
        reply="tone",
        tone_ms=3000,
        tool_calls=(
            emulator.ToolCallScript(turn=1, name="slow_time", arguments={"city": "Tokyo"}, say=SAY),
        ),
    )
    events = tmp / "events.jsonl"

    async def go() -> tuple[Any, list[Any]]:
        barge_tools.reset()
        SEEN.clear()
        clock = VirtualClock()
        async with emulator.run_emulator(config, clock=clock) as emu:
            p = Pipeline("barge-in", base_dir=HERE)
            p.add("caller", "wav_source", path=str(CALLER), pace="realtime")
            p.add("decode", "g711_decode")
            p.add("up", "resample", rate=16000)
            p.add("gate", "vad_gate", engine="silero", prefix_ms=300, hangover_ms=400)
            p.add(
                "agent",
                "realtime_session",
                provider="xai",
                url=emu.url,
                api_key_env="BARGE_TEST_KEY",
                input_rate=16000,
                output_rate=24000,
            )
            p.add("tools", "tool_router", tools=["barge_tools:slow_time"], on_interrupt=mode)
            p.add("down", "resample", rate=8000)
            p.add("encode", "g711_encode", law="ulaw")
            p.add("reply", "wav_sink", path=str(tmp / "reply.wav"))
            p.add("log", "jsonl_sink", path=str(events))
            p.add("watch", watch)
            p.chain("caller -> decode -> up -> gate -> agent -> down -> encode -> reply")
            p.chain("agent -> tools -> agent")
            p.chain("encode -> log", capacity=64)
            p.chain("tools -> log")
            p.chain("encode -> watch", capacity=64)
            summary = await asyncio.wait_for(p.run_async(clock=clock), 60)
            return summary, list(emu.received)

    with structlog.testing.capture_logs() as logs:
        summary, received = asyncio.run(go())
    log = [json.loads(line) for line in events.read_text().splitlines()]
    return summary, log, received, logs


@pytest.mark.parametrize("mode", ["cancel", "finish"])
def test_barge_in_while_a_tool_call_runs_ends_promptly_and_answers_the_call(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BARGE_TEST_KEY", "test-key")
    started = time.monotonic()
    summary, log, received, logs = run_call(tmp_path, mode)
    wall_s = time.monotonic() - started
    assert summary.status == "completed"

    # promptly: the session never waited out response_timeout_s (30 s) for an owed result;
    # the wall clock is only an upper bound (the media is ~8 s on a virtual clock)
    assert not [e for e in logs if "stopped waiting" in e["event"]]
    assert wall_s < 10

    # the event log: the call, then the barge-in, then its result from the router
    kinds = [e["type"] for e in log]
    (call,) = [e for e in log if e["type"] == "tool_call"]
    (result,) = [e for e in log if e["type"] == "tool_result"]
    cut = kinds.index("interrupt")
    assert log[cut]["response_id"] == call["response_id"] == "resp_0001"
    assert log.index(call) < cut < log.index(result)
    assert result["call_id"] == call["call_id"]
    if mode == "cancel":
        assert (result["is_error"], result["output"]) == (True, cancelled_text("slow_time"))
    else:
        assert (result["is_error"], result["output"]) == (False, "It is 12:00 in Tokyo.")
    assert {"type": "response_done", "response_id": "resp_0001", "status": "cancelled"}.items() <= (
        log[kinds.index("response_done")].items()
    )

    # at the end of the chain: the tool call before the interrupt, and no audio between the
    # interrupt and the next response
    first = next(i for i, f in enumerate(SEEN) if isinstance(f, Interrupt))
    assert any(isinstance(f, ToolCall) for f in SEEN[:first])
    assert any(isinstance(f, Audio) for f in SEEN[:first])  # "One moment..." was playing
    after = [f for f in SEEN[first + 1 :] if isinstance(f, Audio | ResponseStarted)]
    assert after and isinstance(after[0], ResponseStarted)
    assert after[0].response_id == "resp_0002"

    # what the emulator recorded: truncation at the played position, then one output per call,
    # and no response.create of ours (server VAD and the caller's turn drive the responses)
    types = [m["type"] for m in received]
    (truncate,) = [m for m in received if m["type"] == "conversation.item.truncate"]
    assert 0 < truncate["audio_end_ms"] < 3000
    outputs = [
        m["item"]
        for m in received
        if m["type"] == "conversation.item.create" and m["item"]["type"] == "function_call_output"
    ]
    assert outputs == [
        {"type": "function_call_output", "call_id": call["call_id"], "output": result["output"]}
    ]
    assert types.index("conversation.item.truncate") < received.index(
        next(m for m in received if m["type"] == "conversation.item.create")
    )
    assert "response.create" not in types
    # the caller's next turn is answered with the call's output in the conversation
    spoken = [e["text"] for e in log if e["type"] == "transcript" and e["final"]]
    assert spoken[-1] == f"slow_time says: {result['output']}"
