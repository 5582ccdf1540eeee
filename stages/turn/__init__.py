"""The ``turn_detector`` stage: semantic end of turn with the Smart Turn v3 model.

Synchronous parts, each usable without an event loop:

- :mod:`stages.turn.features`: Whisper-style log-mel features in numpy;
- :mod:`stages.turn.model`: :class:`SmartTurnModel`, audio in, P(turn complete) out;
- :mod:`stages.turn.machine`: :class:`TurnTaker`, the state table that holds a VAD's
  ``speech_stopped`` until the model says the turn is complete, or ``max_wait`` passes.

The stage pumps frames through the machine, asks the model in a worker thread (a decision costs
tens of milliseconds of CPU, too long to block the event loop) and waits on the clock for the
deadline while the caller is silent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.context import StageContext
from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, SpeechStarted, SpeechStopped
from pipeline.spec import InputPath, stage

from .features import RATE
from .machine import TRANSITIONS, Action, Decision, Input, State, TurnTaker
from .model import SMART_TURN_MODEL, SmartTurnModel, smart_turn_session

__all__ = [
    "SMART_TURN_MODEL",
    "TRANSITIONS",
    "Action",
    "Decision",
    "Input",
    "SmartTurnModel",
    "State",
    "TurnTaker",
    "smart_turn_session",
    "turn_detector",
]

_FIX = "add {type: resample, rate: 16000} before it (the model was trained on 16 kHz speech)"


def _output_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    """Audio passes unchanged; the model hears 16 kHz mono pcm16 only, so anything else is
    refused before running (8 kHz phone audio would be judged wrongly, silently)."""
    if fmt is not None and (fmt.rate != RATE or fmt.encoding != "pcm16" or fmt.channels != 1):
        raise FormatError(
            f"gets {fmt} audio; the Smart Turn model takes pcm16 16000 Hz mono",
            _FIX if fmt.encoding == "pcm16" else f"decode and {_FIX}",
        )
    return fmt


def _check(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    out = []
    threshold = values.get("threshold", 0.5)
    if not 0 < threshold < 1:
        out.append(("threshold", f"threshold is a probability between 0 and 1; got {threshold:g}"))
    for name in ("max_wait_ms", "pre_speech_ms"):
        if values.get(name, 0) < 0:
            out.append((name, f"{name} must be 0 or more, got {values[name]}"))
    return out


def _check_frame(frame: Audio, ctx: StageContext) -> None:
    if frame.rate != RATE or frame.encoding != "pcm16" or frame.channels != 1:
        raise FormatError(
            f"stage '{ctx.id}' (turn_detector) gets {frame.format} audio; "
            "the Smart Turn model takes pcm16 16000 Hz mono",
            _FIX,
        )


@stage(
    "turn_detector",
    accepts=(Audio, SpeechStarted, SpeechStopped),
    emits=(Audio, SpeechStarted, SpeechStopped),
    passthrough=True,
    output_format=_output_format,
    check=_check,
)
async def turn_detector(
    frames: AsyncIterator[Frame],
    *,
    threshold: float = 0.5,
    max_wait_ms: int = 2000,
    pre_speech_ms: int = 500,
    model_path: InputPath | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """End the caller's turn when they have finished, not at every pause.

    Put it after a ``vad_gate`` (16 kHz): at each ``speech_stopped`` the Smart Turn v3 model
    judges the last 8 s of audio; the stop passes on only when the turn is complete, otherwise
    it is held until speech resumes (then the turn goes on, and neither event passes) or
    ``max_wait_ms`` passes. Audio and other frames pass at once.

    Parameters:
        threshold: probability of "complete" at which the turn ends
        max_wait_ms: after a pause judged incomplete, end the turn anyway after this long
        pre_speech_ms: audio from before the turn's start that the model hears
        model_path: a Smart Turn v3 .onnx file instead of the packaged one
    """
    model = SmartTurnModel(None if model_path is None else ctx.base_dir / model_path)
    core = TurnTaker(
        threshold=threshold, max_wait=max_wait_ms / 1000, pre_speech=pre_speech_ms / 1000
    )
    clock = ctx.clock
    it = aiter(frames)
    pending: asyncio.Future[Frame | None] | None = None
    decide_ms: list[float] = []

    async def next_frame() -> Frame | None:
        return await anext(it, None)

    try:
        while True:
            if core.deadline is None and pending is None:
                frame = await next_frame()
            else:
                if pending is None:
                    pending = asyncio.ensure_future(next_frame())
                if core.deadline is not None:
                    timer: asyncio.Future[Any] = asyncio.ensure_future(
                        clock.sleep_until(core.deadline)
                    )
                    waiting: set[asyncio.Future[Any]] = {pending, timer}
                    try:
                        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        timer.cancel()
                    if not pending.done():
                        for out in core.expire(clock.now()):
                            ctx.log.info("turn: ended after max_wait_ms", max_wait_ms=max_wait_ms)
                            yield out
                        continue
                frame, pending = await pending, None
            if frame is None:
                break
            if isinstance(frame, Audio):
                _check_frame(frame, ctx)
            for out in core.push(frame, clock.now()):
                yield out
            if core.asking is not None:
                audio = core.turn_audio()
                t0 = time.perf_counter()
                probability = await asyncio.to_thread(model.probability, audio)
                decide_ms.append((time.perf_counter() - t0) * 1000)
                outs = core.answer(probability, clock.now())
                ctx.log.info(
                    "turn: complete" if outs else "turn: paused mid-sentence, waiting",
                    probability=round(probability, 3),
                    audio_s=round(audio.size / RATE, 2),
                    decide_ms=round(decide_ms[-1], 1),
                )
                for out in outs:
                    yield out
        for out in core.finish():
            yield out
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
        if core.decisions:
            complete = sum(d.complete for d in core.decisions)
            ctx.report("turn_decisions", len(core.decisions))
            ctx.report("turn_complete", complete)
            ctx.report("turn_timeouts", core.timeouts)
            ctx.report("turn_resumed", core.resumed)
            ctx.report("turn_decide_ms_max", round(max(decide_ms), 1) if decide_ms else 0.0)
