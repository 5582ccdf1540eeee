"""The ``vad_gate`` stage: voice activity detection on a stream of audio.

The work is synchronous and lives in three modules; the stage only adapts it to a stream:

- :mod:`stages.vad.engines`: silero (ONNX), webrtc and energy engines, samples in, a score per
  window out;
- :mod:`stages.vad.machine`: the silence/onset/speech/hangover state machine, as a table;
- :mod:`stages.vad.gate`: :class:`VadGate`, frames in, frames and speech events out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pipeline.context import StageContext
from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, SpeechStarted, SpeechStopped
from pipeline.spec import InputPath, stage

from .engines import (
    ENGINE_RATES,
    SILERO_MODEL,
    EnergyEngine,
    Engine,
    SileroEngine,
    WebrtcEngine,
    check_rate,
    find_silero_model,
    make_engine,
    silero_session,
)
from .gate import VadGate, analysis_samples
from .machine import TRANSITIONS, Action, Input, State, Transition, VadMachine

__all__ = [
    "ENGINE_RATES",
    "SILERO_MODEL",
    "TRANSITIONS",
    "Action",
    "EnergyEngine",
    "Engine",
    "Input",
    "SileroEngine",
    "State",
    "Transition",
    "VadGate",
    "VadMachine",
    "WebrtcEngine",
    "analysis_samples",
    "check_rate",
    "find_silero_model",
    "make_engine",
    "silero_session",
    "vad_gate",
]


def _output_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    """Audio leaves as it came; a rate the engine cannot analyse is refused, and so is silero
    without its model (so ``pipeline validate`` says how to install it)."""
    engine = str(params.get("engine", "silero"))
    if engine == "silero" and params.get("model_path") is None:
        find_silero_model()
    if fmt is not None:
        check_rate(engine, fmt.rate)
    return fmt


def _check(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Numbers that would make the gate drop or keep everything, found by ``pipeline
    validate`` rather than by an empty reply."""
    out = []
    for name in ("min_speech_ms", "hangover_ms", "prefix_ms"):
        if values.get(name, 0) < 0:
            out.append((name, f"{name} must be 0 or more, got {values[name]}"))
    threshold, engine = values.get("threshold"), values.get("engine", "silero")
    if threshold is not None:
        if engine == "energy" and not threshold > 0:
            out.append(
                (
                    "threshold",
                    f"the energy threshold is dB above the noise, more than 0; got {threshold:g}",
                )
            )
        elif engine != "energy" and not 0 < threshold < 1:
            out.append(
                (
                    "threshold",
                    f"the {engine} threshold is a speech probability between 0 and 1; "
                    f"got {threshold:g}",
                )
            )
    return out


def _no_gate(frame: Audio) -> list[Frame]:
    raise AssertionError("vad_gate: audio before its gate was made")  # never: see the stage


@stage(
    "vad_gate",
    accepts=(Audio,),
    emits=(Audio, SpeechStarted, SpeechStopped),
    passthrough=True,
    output_format=_output_format,
    check=_check,
)
async def vad_gate(
    frames: AsyncIterator[Frame],
    *,
    engine: Literal["silero", "webrtc", "energy"] = "silero",
    threshold: float | None = None,
    min_speech_ms: int = 100,
    hangover_ms: int = 300,
    prefix_ms: int = 300,
    mode: Literal["gate", "annotate"] = "gate",
    aggressiveness: Literal[0, 1, 2, 3] = 3,
    model_path: InputPath | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Detect speech; pass only speech audio (gate) or all of it (annotate), with events.

    Emits ``speech_started`` / ``speech_stopped`` with the media time of the onset / offset.
    Audio (pcm16, pcmu or pcma) leaves byte for byte in the encoding it came in.

    Parameters:
        engine: silero (8/16 kHz), webrtc (8/16/32/48 kHz) or energy (any rate, numpy only)
        threshold: speech score (default: silero probability 0.5, energy 9 dB over the noise)
        min_speech_ms: speech shorter than this is a blip and is ignored
        hangover_ms: a pause shorter than this does not end speech (audio passed after it)
        prefix_ms: audio from before the onset released with it (gate mode)
        mode: gate (only speech audio passes) or annotate (all audio passes, events added)
        aggressiveness: webrtc only, 0..3 (3: fewest false alarms)
        model_path: silero only, an .onnx model file instead of the packaged silero_vad.onnx
    """
    gate: VadGate | None = None
    fmt: AudioFormat | None = None
    rate = channels = 0  # fmt's (0: no audio yet)
    push: Callable[[Audio], list[Frame]] = _no_gate
    model = None if model_path is None else ctx.base_dir / model_path  # absolute from YAML
    if engine == "silero":
        silero_session(model)  # load the shared model now, not when the first words arrive
    async for frame in frames:
        if frame.__class__ is not Audio:  # frames are never subclassed
            yield frame
            continue
        if frame.rate != rate or frame.channels != channels:  # the first audio, or a change
            if fmt is not None:
                raise FormatError(
                    f"stage '{ctx.id}' (vad_gate) gets {frame.format} audio after {fmt}; "
                    "a gate analyses one rate and channel count",
                    f"add {{type: resample, rate: {fmt.rate}}} before it",
                )
            fmt = frame.format
            rate, channels = fmt.rate, fmt.channels
            try:
                vad = make_engine(
                    engine, frame.rate, aggressiveness=aggressiveness, model_path=model
                )
            except FormatError as exc:
                raise FormatError(f"stage '{ctx.id}' (vad_gate) {exc.message}", exc.fix) from None
            gate = VadGate(
                vad,
                threshold=threshold,
                min_speech_ms=min_speech_ms,
                hangover_ms=hangover_ms,
                prefix_ms=prefix_ms,
                mode=mode,
            )
            push = gate.push
        for out in push(frame):
            yield out
    if gate is not None:
        for out in gate.finish():
            yield out
