"""End to end against the emulator (``think_ms: 0``), and the whole default chain's added latency.

One *call* runs the default chain of ``pipelines.yaml`` (``phone-agent``) in Python, minus the
tools: the example caller (8 kHz μ-law: 0.4 s lead-in, an utterance, a 1.5 s pause, a second
utterance, 0.6 s of tail) paced in real time → ``g711_decode`` → ``resample`` 16 kHz →
``vad_gate`` (silero, prefix 300 ms, hangover 400 ms) → ``realtime_session`` (the emulator on
loopback: ``think_ms: 0``, the reply echoes the caller's utterance, delivered in real time in
20 ms deltas) → ``resample`` 8 kHz → ``g711_encode`` → a sink that timestamps what it gets.

Timestamps (``perf_counter``, one process, one clock):

* the source notes when it hands each 20 ms frame on;
* the emulator notes when it reads each ``input_audio_buffer.append`` (a wrapper around
  ``EmulatorSession.receive``, installed for the call and removed after);
* the client notes when each audio delta is parsed (a wrapper around
  ``RealtimeProtocol.receive``);
* the sink notes every frame it gets (audio, events, the interrupt).

From these:

* **turn latency**: caller speech end (the source hands on the frame holding the last speech
  sample) → the first reply audio at the sink, for each turn; the server VAD's hangover (speech
  end → its ``speech_stopped`` at the sink) is reported apart, and so is the rest;
* **barge-in**: the second utterance's onset (while the first reply plays) → the ``interrupt``
  at the sink, after which no audio of that reply reaches the sink (checked);
* **chain latency** (annotate mode, so every frame is sent): caller frame handed on → its audio
  read by the emulator in an append (uplink); delta parsed → its first audio at the sink
  (downlink).

Variants: ``gate`` (the gate passes speech only and the server's VAD ends turns, as in
``phone-agent``), ``annotate`` (every frame goes to the server, as in ``grok``) and, in full runs,
``local`` (the gate passes speech only and its ``speech_stopped`` ends the turn:
``turn_detection: none``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import Audio, Frame, stage
from pipeline.context import StageContext
from pipeline.frames import FRAME_TYPES, Interrupt, ResponseStarted, SpeechStarted, SpeechStopped

from .harness import Row, fixed, row

CALLER = Path(__file__).resolve().parents[1] / "examples" / "caller_8k_ulaw.wav"
FRAME_S = 0.02
_perf = time.perf_counter_ns


@dataclass
class CallLog:
    """Everything one call noted, in perf_counter ns."""

    emitted: list[int] = field(default_factory=list)  # per source frame
    appends: list[tuple[int, int]] = field(default_factory=list)  # (t, bytes) at the emulator
    deltas: list[tuple[int, int]] = field(default_factory=list)  # (t, bytes) parsed by client
    sink: list[tuple[int, Frame]] = field(default_factory=list)


@stage("bench_paced_caller", emits=(Audio,), register=False)
async def _caller(
    *, codes: Any, log: Any, speed: float = 1.0, ctx: StageContext
) -> AsyncIterator[Frame]:
    """μ-law frames of 20 ms, paced at ``speed`` × real time, each handing-on time noted."""
    start = ctx.clock.now()
    period = FRAME_S / speed
    for i in range(len(codes) // 160):
        await ctx.clock.sleep_until(start + i * period)
        log.emitted.append(_perf())
        yield Audio(codes[i * 160 : (i + 1) * 160], "pcmu", 8000, 1, i * FRAME_S)


@stage("bench_recorder", accepts=FRAME_TYPES, emits=(), register=False)
async def _recorder(frames: AsyncIterator[Frame], *, log: Any) -> AsyncIterator[Frame]:
    """Note the time of every frame."""
    async for f in frames:
        log.sink.append((_perf(), f))
    return
    yield  # pragma: no cover


def _read_codes() -> bytes:
    import soundfile as sf

    with sf.SoundFile(str(CALLER)) as f:
        pcm = f.read(dtype="int16")
    from stages import g711

    return g711.encode_ulaw(pcm.astype("<i2").tobytes())


def speech_spans(codes: bytes, rate: int = 8000) -> list[tuple[float, float]]:
    """(start, end) seconds of each utterance: 10 ms blocks above -45 dBFS, gaps < 300 ms
    bridged."""
    from stages import g711

    x = np.frombuffer(g711.decode_ulaw(codes), dtype="<i2").astype(np.float64)
    blk = rate // 100
    n = len(x) // blk
    lvl = 20 * np.log10(np.sqrt(np.mean(x[: n * blk].reshape(n, blk) ** 2, axis=1)) / 32768 + 1e-9)
    on = lvl > -45
    spans: list[list[int]] = []
    for i in np.flatnonzero(on):
        if spans and i - spans[-1][1] <= 30:
            spans[-1][1] = int(i) + 1
        else:
            spans.append([int(i), int(i) + 1])
    return [(a / 100, b / 100) for a, b in spans if b - a >= 20]


def _install_probes(log: CallLog) -> Any:
    from stages.realtime import emulator, protocol

    em_receive = emulator.EmulatorSession.receive
    pr_receive = protocol.RealtimeProtocol.receive

    def em_wrap(self: Any, message: str | bytes, now: float) -> None:
        t = _perf()
        if b"input_audio_buffer.append" in (
            message if isinstance(message, bytes) else message.encode()
        ):
            import orjson

            audio = orjson.loads(message).get("audio", "")
            log.appends.append((t, len(base64.b64decode(audio))))
        return em_receive(self, message, now)

    def pr_wrap(self: Any, message: Any) -> list[Any]:
        out = pr_receive(self, message)
        t = _perf()
        for ev in out:
            if isinstance(ev, protocol.AudioDeltaEvent):
                log.deltas.append((t, len(ev.data)))
        return out

    emulator.EmulatorSession.receive = em_wrap  # type: ignore[method-assign]
    protocol.RealtimeProtocol.receive = pr_wrap  # type: ignore[method-assign]

    def remove() -> None:
        emulator.EmulatorSession.receive = em_receive  # type: ignore[method-assign]
        protocol.RealtimeProtocol.receive = pr_receive  # type: ignore[method-assign]

    return remove


def _vad_engine() -> str:
    try:
        from stages.vad.engines import find_silero_model

        find_silero_model()
    except Exception:
        return "webrtc"
    return "silero"


#: variant -> (vad_gate mode, realtime_session turn_detection)
VARIANTS: dict[str, tuple[str, str]] = {
    "gate": ("gate", "server_vad"),
    "annotate": ("annotate", "server_vad"),
    "local": ("gate", "none"),
}


async def _call(codes: bytes, variant: str, speed: float) -> CallLog:
    import stages  # noqa: F401  (registers the stage types)
    from pipeline import Pipeline
    from pipeline.runtime import Runner

    mode, turns = VARIANTS[variant]
    log = CallLog()
    p = Pipeline("e2e")
    p.add("caller", _caller, codes=codes, log=log, speed=speed)
    p.add("decode", "g711_decode")
    p.add("up", "resample", rate=16000)
    p.add("gate", "vad_gate", engine=_vad_engine(), prefix_ms=300, hangover_ms=400, mode=mode)
    p.add(
        "agent",
        "realtime_session",
        provider="emulator",
        voice="ara",
        input_rate=16000,
        output_rate=24000,
        turn_detection=turns,
        emulator={"think_ms": 0, "pace": 1.0 / speed, "chunk_ms": 20, "reply": "echo"},
    )
    p.add("down", "resample", rate=8000)
    p.add("encode", "g711_encode")
    p.add("sink", _recorder, log=log)
    p.link("caller", "decode", "up", "gate", "agent", "down", "encode", "sink")
    p.validate()
    remove = _install_probes(log)
    try:
        await Runner(p).run()
    finally:
        remove()
    return log


@dataclass
class CallFigures:
    """What one call measured (ms)."""

    turn_ms: list[float] = field(default_factory=list)
    hangover_ms: list[float] = field(default_factory=list)
    after_turn_end_ms: list[float] = field(default_factory=list)
    bargein_ms: list[float] = field(default_factory=list)
    bargein_vad_ms: list[float] = field(default_factory=list)
    audio_after_interrupt: int = 0
    uplink_ms: list[float] = field(default_factory=list)
    downlink_ms: list[float] = field(default_factory=list)


def analyse(
    log: CallLog, spans: list[tuple[float, float]], speed: float, turn_by: str = "agent"
) -> CallFigures:
    """Turn, barge-in and chain latencies from one call's notes; ``turn_by``: the stage whose
    ``speech_stopped`` ends a turn (``agent``: the server's VAD, ``gate``: ours)."""
    out = CallFigures()
    emitted = log.emitted
    if not emitted:
        return out

    def emit_at(media_s: float) -> int:
        i = min(len(emitted) - 1, max(0, int(media_s / FRAME_S - 1e-9)))
        return emitted[i]

    sink = log.sink
    audio_t = [t for t, f in sink if isinstance(f, Audio)]
    interrupts = [t for t, f in sink if isinstance(f, Interrupt)]
    stops = [t for t, f in sink if isinstance(f, SpeechStopped) and f.stage == turn_by]
    starts_gate = [t for t, f in sink if isinstance(f, SpeechStarted) and f.stage == "gate"]
    ms = 1e-6
    for k, (a, b) in enumerate(spans):
        t_end = emit_at(b)
        after = [t for t in audio_t if t > t_end]
        if not after:
            continue
        out.turn_ms.append((after[0] - t_end) * ms * speed)
        st = [t for t in stops if t > t_end]
        if st and st[0] <= after[0]:
            out.hangover_ms.append((st[0] - t_end) * ms * speed)
            out.after_turn_end_ms.append((after[0] - st[0]) * ms * speed)
        if k >= 1:  # a later utterance: barge-in on the reply playing when it begins
            t_on = emit_at(a)
            ints = [t for t in interrupts if t > t_on - 200 * 1_000_000]
            if ints:
                ti = ints[0]
                out.bargein_ms.append((ti - t_on) * ms * speed)
                gs = [t for t in starts_gate if t >= t_on]
                if gs:
                    out.bargein_vad_ms.append((gs[0] - t_on) * ms * speed)
                nxt = [t for t, f in sink if isinstance(f, ResponseStarted) and t > ti]
                limit = nxt[0] if nxt else float("inf")
                out.audio_after_interrupt += sum(1 for t in audio_t if ti < t < limit)

    # chain latency (meaningful when every frame is sent: annotate mode)
    first_int = interrupts[0] if interrupts else float("inf")
    cum = 0
    for t, nbytes in log.appends:
        cum += nbytes
        end_s = cum / 32000  # 16 kHz pcm16
        i = int(np.ceil(end_s / FRAME_S - 1e-6)) - 1
        if 0 <= i < len(emitted) and t >= emitted[i]:
            out.uplink_ms.append((t - emitted[i]) * ms)
    sink_audio = [(t, len(f.data)) for t, f in sink if isinstance(f, Audio) and t < first_int]
    ends: list[float] = []
    c = 0
    for _, nb in sink_audio:
        c += nb
        ends.append(c / 8000)
    start_s = 0.0
    j = 0
    for t, nbytes in log.deltas:
        if t >= first_int:
            break
        while j < len(ends) and ends[j] <= start_s + 1e-9:
            j += 1
        if j < len(ends) and sink_audio[j][0] >= t:
            out.downlink_ms.append((sink_audio[j][0] - t) * ms)
        start_s += nbytes / 48000  # 24 kHz pcm16
    return out


@functools.lru_cache(maxsize=4)
def calls(quick: bool, tiny: bool) -> dict[str, list[CallFigures]]:
    """Run the calls once per process (the latency suite reuses them): variant -> figures.
    Quick and tiny runs leave out the ``local`` variant."""
    codes = _read_codes()
    spans = speech_spans(codes)
    speed = 4.0 if tiny else 1.0
    if tiny:  # the first utterance, the pause, and the second utterance's first half second
        codes = codes[: int((spans[1][0] + 0.5) * 8000)] if len(spans) > 1 else codes
        spans = speech_spans(codes)
    runs = 1 if quick or tiny else 3
    variants = ("annotate",) if tiny else ("gate", "annotate") if quick else tuple(VARIANTS)
    out: dict[str, list[CallFigures]] = {}
    for v in variants:
        by = "gate" if VARIANTS[v][1] == "none" else "agent"
        out[v] = [
            analyse(asyncio.run(_call(codes, v, speed)), spans, speed, by) for _ in range(runs)
        ]
    return out


NAMES = {
    "gate": "phone-agent (gate, server VAD)",
    "annotate": "annotate, server VAD",
    "local": "gate, local turns",
}


def _rows_of(variant: str, figs: list[CallFigures]) -> list[Row]:
    g = "e2e"

    def col(name: str) -> list[float]:
        return [x for f in figs for x in getattr(f, name)]

    what = NAMES[variant]
    turns = col("turn_ms")
    each = ", ".join(f"{x:.0f}" for x in turns[:6])
    if variant == "local":
        hang = "local VAD hangover (gate speech_stopped; hangover_ms 400)"
    else:
        hang = "server VAD hangover (its speech_stopped; silence_duration_ms 500)"
    rows = [
        row(
            g,
            f"{what}: speech end → first reply audio",
            turns,
            unit="ms",
            note=f"per turn ({each} ms); includes the VAD hangover",
        ),
        row(g, f"{what}:   of which {hang}", col("hangover_ms"), unit="ms"),
        row(
            g,
            f"{what}:   of which after the turn end",
            col("after_turn_end_ms"),
            unit="ms",
            note="speech_stopped → first reply audio at the sink",
        ),
    ]
    if variant == "gate":
        rows[0].note += (
            "; the gate drops the pause after its 400 ms hangover, so the server's VAD "
            "(500 ms) hears the turn end only when audio resumes"
        )
        return rows  # its "barge-in" would be the late reply to turn 1 cut as turn 2 begins
    bi = col("bargein_ms")
    after = sum(f.audio_after_interrupt for f in figs)
    rows.append(
        row(
            g,
            f"{what}: barge-in onset → reply stops",
            bi,
            unit="ms",
            note=f"interrupt at the sink; reply audio after it: {after} frames",
        )
    )
    rows.append(
        row(
            g,
            f"{what}:   local VAD onset (gate speech_started)",
            col("bargein_vad_ms"),
            unit="ms",
            note="min_speech_ms 100 + silero windows (the server's VAD may be first)",
        )
    )
    return rows


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """Turn and barge-in latency rows (ms)."""
    if not CALLER.exists():
        return [fixed("e2e", "end to end", float("nan"), "ms", note=f"{CALLER} missing")]
    rows: list[Row] = []
    for variant, figs in calls(quick, tiny).items():
        rows += _rows_of(variant, figs)
    return rows
