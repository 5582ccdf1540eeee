"""The turn detector in front of a realtime session with manual turns (``turn_detection: none``):
a caller who pauses mid-sentence gets one answer, after the whole sentence, not two."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import VirtualClock
from pipeline.frames import Audio, Frame, ResponseStarted, SpeechStarted, SpeechStopped
from pipeline.spec import spec_for
from pipeline.testing import make_context, run_stage_async
from stages.realtime.emulator import EmulatorConfig, run_emulator
from stages.turn import SmartTurnModel
from stages.vad.quality import read_wav


def frames_of(x: np.ndarray, start: float) -> list[Audio]:
    return [
        Audio.from_samples(x[i : i + 320], 16000, pts=start + i / 16000)
        for i in range(0, x.size, 320)
    ]


@pytest.fixture(scope="module")
def paused_call(speech_set: Path) -> list[Frame]:
    """A caller says the start of a sentence, pauses 0.6 s, then says it whole: VAD events
    around both, for a pair the model judges right (cut-off: incomplete; whole: complete)."""
    folder = speech_set / "turn"
    labels = json.loads((folder / "labels.json").read_text())
    model = SmartTurnModel()

    def clip(name: str) -> np.ndarray:
        x, _ = read_wav(folder / name)
        return x[: round((labels[name]["speech_end"] + 0.3) * 16000)]

    for name in sorted(labels):
        if not name.endswith("-cut.wav"):
            continue
        cut, whole = clip(name), clip(name.replace("-cut", "-complete"))
        if model.probability(cut) < 0.5 <= model.probability(np.concatenate([cut, whole])):
            break
    else:
        pytest.fail("no pair in the speech set that the model judges right")
    first = frames_of(cut, 0.0)
    second = frames_of(whole, first[-1].end_pts + 0.6)
    return [
        SpeechStarted(pts=0.3),
        *first,
        SpeechStopped(pts=first[-1].end_pts - 0.3),
        SpeechStarted(pts=second[0].pts + 0.3),
        *second,
        SpeechStopped(pts=second[-1].end_pts - 0.3),
    ]


async def _session(frames: list[Frame], clock: VirtualClock) -> tuple[list[Frame], Any]:
    async with run_emulator(EmulatorConfig(dialect="xai"), "127.0.0.1", 0, clock=clock) as emu:
        ctx = make_context(spec_for("realtime_session"), clock=clock, id="agent")
        out = await run_stage_async(
            "realtime_session", frames, ctx=ctx, provider="xai", url=emu.url,
            input_rate=16000, output_rate=16000, turn_detection="none",
        )  # fmt: skip
        return out, emu


def test_one_answer_for_a_sentence_with_a_pause(
    paused_call: list[Frame], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XAI_API_KEY", "xai-test")
    held = asyncio.run(run_stage_async("turn_detector", paused_call, max_wait_ms=2000))
    events = [f.type for f in held if not isinstance(f, Audio)]
    assert events == ["speech_started", "speech_stopped"]  # the pause was bridged

    with_detector, emu = asyncio.run(_session(held, VirtualClock()))
    sent = [e["type"] for e in emu.connections[0].received]
    assert sent.count("input_audio_buffer.commit") == 1 and sent.count("response.create") == 1
    assert sum(isinstance(f, ResponseStarted) for f in with_detector) == 1

    # without it, the VAD's stop at the pause ends the turn: the agent answers twice
    without, emu = asyncio.run(_session(paused_call, VirtualClock()))
    sent = [e["type"] for e in emu.connections[0].received]
    assert sent.count("input_audio_buffer.commit") == 2
    assert sum(isinstance(f, ResponseStarted) for f in without) == 2
