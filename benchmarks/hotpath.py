"""Per stage, µs per 20 ms frame, beside the raw library calls (and Pipecat's, when installed).

Every row drives the pure synchronous core exactly as the stage does per frame; the baselines are
the raw library calls measured in the same run: ``audioop`` (Python ≤ 3.12), numpy, ``soxr``,
``webrtcvad``, ``onnxruntime``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson

from benchmarks.resample_latency import core_rows
from pipeline import Audio, Frame, stage
from pipeline.frames import make_audio
from stages.realtime.wire import b64

from . import inplace
from .goals import mark
from .harness import (
    Row,
    compare,
    cpu_per_item_us,
    drive,
    fixed,
    per_call_us,
    quiet_pipecat,
    row,
)


def _tone(rate: int, ms: int = 20, freq: float = 440.0) -> np.ndarray:
    n = rate * ms // 1000
    t = np.arange(n) / rate
    return (8000 * np.sin(2 * math.pi * freq * t)).astype(np.int16)


def _speechlike(rate: int, seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    env = 0.5 + 0.5 * np.sin(2 * math.pi * 3 * t)
    sig = env * (3000 * np.sin(2 * math.pi * 180 * t) + 800 * rng.standard_normal(n))
    return sig.astype(np.int16)


def g711_rows(inner: int, repeat: int) -> list[Row]:
    from stages import g711

    pcm = _tone(8000).tobytes()
    ulaw = g711.encode_ulaw(pcm)
    rows: list[Row] = []
    dec = row(
        "g711",
        "μ-law decode (ours)",
        per_call_us(lambda: g711.decode_ulaw(ulaw), inner=inner, repeat=repeat),
    )
    enc = row(
        "g711",
        "μ-law encode (ours)",
        per_call_us(lambda: g711.encode_ulaw(pcm), inner=inner, repeat=repeat),
    )
    ao = inplace.audioop_module()
    if ao is not None:
        adec = row(
            "g711",
            "audioop.ulaw2lin",
            per_call_us(
                lambda: ao.ulaw2lin(ulaw, 2),  # type: ignore[attr-defined]
                inner=inner,
                repeat=repeat,
            ),
        )
        aenc = row(
            "g711",
            "audioop.lin2ulaw",
            per_call_us(
                lambda: ao.lin2ulaw(pcm, 2),  # type: ignore[attr-defined]
                inner=inner,
                repeat=repeat,
            ),
        )
        rows += [adec, compare(dec, adec), aenc, compare(enc, aenc)]
        rows += _varied_encode_rows(ao, inner, repeat)
    else:
        rows += [dec, enc]
    try:
        from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
        from pipecat.audio.utils import pcm_to_ulaw, ulaw_to_pcm
    except Exception:
        return rows
    rs = SOXRStreamAudioResampler()  # not used at 8000 -> 8000: pure codec plus the coroutine
    pc_dec = row(
        "g711",
        "pipecat ulaw_to_pcm 8k",
        per_call_us(lambda: drive(ulaw_to_pcm(ulaw, 8000, 8000, rs)), inner=inner, repeat=repeat),
    )
    pc_enc = row(
        "g711",
        "pipecat pcm_to_ulaw 8k",
        per_call_us(lambda: drive(pcm_to_ulaw(pcm, 8000, 8000, rs)), inner=inner, repeat=repeat),
    )
    rows += [
        pc_dec,
        compare(row("g711", "μ-law decode (ours) vs pipecat", dec.samples), pc_dec),
        pc_enc,
        compare(row("g711", "μ-law encode (ours) vs pipecat", enc.samples), pc_enc),
    ]
    return rows


def _varied_encode_rows(ao: Any, inner: int, repeat: int) -> list[Row]:
    """μ-law encoding of distinct frames of noisy speech taken in turn, as a call's frames
    come, beside the same call on one frame over and over (the rows above). audioop's encoder
    searches the segment of each sample with branches: on one repeated frame the branch
    predictor learns the 160 outcomes, on noisy speech it misses, and the call costs 2-3×."""
    from stages import g711

    pcm = _speechlike(8000, 10.0).tobytes()
    frames = [pcm[i : i + 320] for i in range(0, len(pcm), 320)]  # 500 frames of 20 ms
    n = len(frames)

    def each(fn: Callable[[bytes], object]) -> Callable[[], object]:
        def run() -> object:
            for f in frames:
                fn(f)
            return None

        return run

    lin2ulaw = ao.lin2ulaw

    def audioop_encode(f: bytes) -> object:
        return lin2ulaw(f, 2)

    calls = max(1, inner // 50)
    raw = row(
        "g711",
        "audioop.lin2ulaw, 500 distinct speech frames in turn",
        per_call_us(each(audioop_encode), inner=calls, repeat=repeat) / n,
    )
    ours = row(
        "g711",
        "μ-law encode (ours), the same frames",
        per_call_us(each(g711.encode_ulaw), inner=calls, repeat=repeat) / n,
    )
    return [raw, compare(ours, raw)]


def resample_rows(inner: int, repeat: int) -> list[Row]:
    import soxr

    from stages.resample import StreamResampler

    rows: list[Row] = []
    for src, dst in ((8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000)):
        frame = _tone(src)
        raw = soxr.ResampleStream(src, dst, 1, dtype="int16", quality="HQ")
        base = row(
            "resample",
            f"soxr.ResampleStream {src // 1000}k→{dst // 1000}k HQ",
            per_call_us(
                lambda raw=raw, frame=frame: raw.resample_chunk(frame), inner=inner, repeat=repeat
            ),
        )
        rows.append(base)
        for mode in ("low_latency", "QQ", "HQ", "VHQ"):
            ll = mode == "low_latency"
            r = StreamResampler(src, dst, "HQ" if ll else mode, low_latency=ll)  # type: ignore[arg-type]
            name = f"resample {src // 1000}k→{dst // 1000}k " + (mode if ll else f"soxr {mode}")
            ours = row(
                "resample",
                name,
                per_call_us(lambda r=r, frame=frame: r.process(frame), inner=inner, repeat=repeat),
            )
            rows.append(compare(ours, base))
        pc = _pipecat_resampler()
        if pc is not None:
            pcr = row(
                "resample",
                f"pipecat SOXRStreamAudioResampler {src // 1000}k→{dst // 1000}k (VHQ)",
                per_call_us(
                    lambda pc=pc, b=frame.tobytes(), src=src, dst=dst: drive(  # noqa: B008
                        pc.resample(b, src, dst)
                    ),
                    inner=inner,
                    repeat=repeat,
                ),
            )
            mine = next(
                r
                for r in rows
                if r.name.endswith("low_latency") and f"{src // 1000}k→{dst // 1000}k " in r.name
            )
            rows += [pcr, compare(row("resample", f"{mine.name} vs pipecat", mine.samples), pcr)]
    return rows


def _pipecat_resampler() -> Any:
    try:
        from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
    except Exception:
        return None
    return SOXRStreamAudioResampler()  # its defaults: VHQ, state cleared after 0.2 s idle


def vad_rows(inner: int, repeat: int, silero: bool = True) -> list[Row]:
    from stages.vad.engines import make_engine

    rows: list[Row] = []
    frame = _tone(16000)
    try:
        import webrtcvad

        v = webrtcvad.Vad(3)
        pcm = frame.tobytes()
        base = row(
            "vad",
            "webrtcvad.is_speech 20 ms (raw)",
            per_call_us(lambda: v.is_speech(pcm, 16000), inner=inner, repeat=repeat),
        )
        rows.append(base)
        eng = make_engine("webrtc", 16000)
        rows.append(
            compare(
                row(
                    "vad",
                    "vad engine webrtc",
                    per_call_us(lambda: eng.process(frame), inner=inner, repeat=repeat),
                ),
                base,
            )
        )
    except ImportError:
        pass
    eng_e = make_engine("energy", 16000)
    rows.append(
        row(
            "vad",
            "vad engine energy",
            per_call_us(lambda: eng_e.process(frame), inner=inner, repeat=repeat),
        )
    )
    if silero:
        try:
            eng_s = make_engine("silero", 16000)
        except Exception as exc:  # model not installed
            rows.append(row("vad", "vad engine silero", [float("nan")], note=str(exc)[:60]))
            return rows
        # silero works on 32 ms windows: average over a long run of 20 ms frames
        s_inner = max(16, inner // 20)
        ours = row(
            "vad",
            "vad engine silero (per 20 ms)",
            per_call_us(lambda: eng_s.process(frame), inner=s_inner, repeat=repeat),
        )
        sess = getattr(eng_s, "_session", None)
        if sess is None:  # the engine's internals changed: no raw baseline
            return rows
        x = np.zeros((1, 576), np.float32)
        x[0, 64:] = np.resize(frame, 512) / 32768.0
        state = np.zeros((2, 1, 128), np.float32)
        sr = np.array(16000, dtype=np.int64)
        raw = row(
            "vad",
            "onnxruntime silero run (raw, per 20 ms)",
            [
                v * 20 / 32
                for v in per_call_us(
                    lambda: sess.run(None, {"input": x, "state": state, "sr": sr}),
                    inner=s_inner,
                    repeat=repeat,
                )
            ],
            note="one 32 ms window × 20/32",
        )
        rows += [raw, compare(ours, raw)]
        try:
            from pipecat.audio.vad.silero import SileroVADAnalyzer
        except Exception:
            return rows
        an = SileroVADAnalyzer(sample_rate=16000)
        an.set_sample_rate(16000)
        pcm = frame.tobytes()
        pc = row(
            "vad",
            "pipecat SileroVADAnalyzer (per 20 ms)",
            per_call_us(lambda: an._run_analyzer(pcm), inner=s_inner, repeat=repeat),
            note="its sync core; analyze_audio adds a run_in_executor hop per frame",
        )
        rows += [pc, compare(row("vad", "vad engine silero vs pipecat", ours.samples), pc)]
    return rows


# ---------------------------------------------------------------------------- session


DELTA_BYTES = 960  # 20 ms of pcm16 at 24 kHz


def ready_protocol() -> Any:
    """A client protocol core past its handshake: 16 kHz in, 24 kHz out (the default chain)."""
    from pipeline.frames import AudioFormat
    from stages.realtime import protocol as p

    cfg = p.SessionConfig(
        input_format=AudioFormat("pcm16", 16000), output_format=AudioFormat("pcm16", 24000)
    )
    proto = p.RealtimeProtocol(cfg)
    proto.connection_made()
    proto.receive('{"type":"session.updated","session":{}}')
    proto.data_to_send()
    return proto


def delta_message(data: bytes, n: int = 1) -> str:
    """A ``response.output_audio.delta`` as the xAI / OpenAI GA servers send it."""
    return orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": f"evt_{n:04d}",
            "response_id": "resp_0001",
            "item_id": "item_0002",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(data).decode(),
        }
    ).decode()


def session_rows(inner: int, repeat: int) -> list[Row]:
    """Session encode (an append from 20 ms of 16 kHz audio) and decode (a 960-byte delta)."""
    proto = ready_protocol()
    pcm = _tone(16000).tobytes()  # 640 bytes
    out_audio = _tone(24000).tobytes()
    assert len(out_audio) == DELTA_BYTES
    msg = delta_message(out_audio)

    def ours_enc() -> object:
        proto.append_audio(pcm)
        return proto.data_to_send()

    def json_enc() -> object:
        return json.dumps(
            {
                "type": "input_audio_buffer.append",
                "event_id": "c-1",
                "audio": base64.b64encode(pcm).decode(),
            }
        )

    def orjson_enc() -> object:
        return orjson.dumps(
            {
                "type": "input_audio_buffer.append",
                "event_id": "c-1",
                "audio": base64.b64encode(pcm).decode(),
            }
        ).decode()

    def pyb_enc() -> object:
        return orjson.dumps(
            {"type": "input_audio_buffer.append", "event_id": "c-1", "audio": b64.encode(pcm)}
        ).decode()

    def json_dec() -> object:
        return base64.b64decode(json.loads(msg)["delta"])

    def pyb_dec() -> object:
        return b64.decode_strict(orjson.loads(msg)["delta"])

    def orjson_dec() -> object:
        return base64.b64decode(orjson.loads(msg)["delta"])

    enc_base = row(
        "session",
        "append: base64 + json.dumps (raw)",
        per_call_us(json_enc, inner=inner, repeat=repeat),
    )
    enc_or = row(
        "session",
        "append: base64 + orjson (raw)",
        per_call_us(orjson_enc, inner=inner, repeat=repeat),
    )
    enc_pyb = row(
        "session",
        "append: pybase64 + orjson (raw, the base64 ours uses)",
        per_call_us(pyb_enc, inner=inner, repeat=repeat),
    )
    enc = row(
        "session",
        "session encode: append 20 ms (ours)",
        per_call_us(ours_enc, inner=inner, repeat=repeat),
    )
    dec_base = row(
        "session",
        "delta: json.loads + b64decode (raw)",
        per_call_us(json_dec, inner=inner, repeat=repeat),
    )
    dec_or = row(
        "session",
        "delta: orjson.loads + b64decode (raw)",
        per_call_us(orjson_dec, inner=inner, repeat=repeat),
    )
    dec_pyb = row(
        "session",
        "delta: orjson.loads + pybase64 (raw, the base64 ours uses)",
        per_call_us(pyb_dec, inner=inner, repeat=repeat),
    )
    dec = row(
        "session",
        "session decode: 960-byte delta (ours)",
        per_call_us(lambda: proto.receive(msg), inner=inner, repeat=repeat),
    )
    rows = [
        enc_base,
        enc_or,
        compare(enc, enc_base),
        compare(row("session", "session encode vs orjson raw", enc.samples), enc_or),
        enc_pyb,
        compare(row("session", "session encode vs pybase64 + orjson raw", enc.samples), enc_pyb),
        dec_base,
        dec_or,
        compare(dec, dec_base),
        compare(row("session", "session decode vs orjson raw", dec.samples), dec_or),
        dec_pyb,
        compare(row("session", "session decode vs orjson + pybase64 raw", dec.samples), dec_pyb),
    ]
    try:
        from pipecat.services.openai.realtime import events as pc_events
    except Exception:
        return rows

    def pc_enc() -> object:
        payload = base64.b64encode(pcm).decode("utf-8")
        ev = pc_events.InputAudioBufferAppendEvent(audio=payload)
        return json.dumps(ev.model_dump(exclude_none=True))  # what its _ws_send sends

    def pc_dec() -> object:
        ev = pc_events.parse_server_event(msg)
        return base64.b64decode(ev.delta)

    pe = row(
        "session",
        "pipecat OpenAI realtime append",
        per_call_us(pc_enc, inner=inner, repeat=repeat),
    )
    pd = row(
        "session",
        "pipecat OpenAI realtime delta parse",
        per_call_us(pc_dec, inner=inner, repeat=repeat),
    )
    rows += [
        pe,
        compare(row("session", "session encode vs pipecat", enc.samples), pe),
        pd,
        compare(row("session", "session decode vs pipecat", dec.samples), pd),
    ]
    return rows


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """Per-stage rows, each with its baselines."""
    inner, repeat = (30, 3) if tiny else (500, 15) if quick else (2000, 41)
    quiet_pipecat()
    rows: list[Row] = []
    for fn in (g711_rows, resample_rows, core_rows, vad_rows, session_rows):
        f: Callable[[int, int], list[Row]] = fn
        got = f(inner, repeat)
        if fn is core_rows:  # the engine's call against soxr's, each ratio: a goal
            got = [mark(r, "resampler") if r.baseline else r for r in got]
        rows += got
    rows += inplace.run(quick, tiny)
    rows += callpath_rows(quick, tiny)
    return rows


# ---------------------------------------------------------------------------- whole call

#: The whole-call hot path, both directions, through our Runner (neural VAD excluded):
#: μ-law in → g711_decode → resample 16 kHz → vad_gate (webrtc, annotate) → session core
#: (append encode; one 960-byte delta decoded per frame) → resample 8 kHz → g711_encode → sink.
CALL_STAGES = ("decode", "up", "vad", "session", "down", "encode")


@stage("bench_caller", emits=(Audio,), register=False)
async def _caller(*, frames: list[Audio]) -> AsyncIterator[Frame]:
    """The given μ-law frames, as fast as they are taken."""
    for f in frames:
        yield f


@stage("bench_session_core", accepts=(Audio,), emits=(Audio,), register=False)
async def _session_core(
    frames: AsyncIterator[Frame], *, proto: Any, message: str
) -> AsyncIterator[Frame]:
    """What ``realtime_session`` does per frame minus the socket: batch the input audio into
    ``input_audio_buffer.append`` messages (20 ms minimum) and parse one server delta into an
    output frame (the server answers at the pace it is fed, here one delta per input frame)."""
    batch = bytearray()
    min_bytes = 640  # 20 ms at 16 kHz
    pts = 0.0
    async for f in frames:
        if not isinstance(f, Audio):
            continue  # events: the real session reacts to them; here they end
        batch += f.data
        while len(batch) >= min_bytes:
            chunk = bytes(batch[:min_bytes])
            del batch[:min_bytes]
            proto.append_audio(chunk)
        proto.data_to_send()
        for ev in proto.receive(message):
            data = ev.data
            out = make_audio(data, "pcm16", 24000, 1, pts)
            pts += len(data) / 48000
            yield out


@stage("bench_null", accepts=(Audio,), emits=(), register=False)
async def _null(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Consume."""
    async for _ in frames:
        pass
    return
    yield  # pragma: no cover


def _ulaw_frames(n: int) -> list[Audio]:
    from stages import g711

    pcm = _speechlike(8000, 2.0)
    ulaw = g711.encode_ulaw(pcm.tobytes())
    k = len(ulaw) // 160
    return [
        Audio(ulaw[(i % k) * 160 : (i % k + 1) * 160], "pcmu", 8000, 1, i * 0.02) for i in range(n)
    ]


def _call_pipeline(frames: list[Audio], fuse: bool = True) -> Any:
    import stages  # noqa: F401  (registers the stage types)
    from pipeline import Pipeline

    p = Pipeline("callpath")
    p.add("src", _caller, frames=frames)
    p.add("decode", "g711_decode")
    p.add("up", "resample", rate=16000)
    p.add("vad", "vad_gate", engine="webrtc", mode="annotate")
    p.add(
        "session",
        _session_core,
        proto=ready_protocol(),
        message=delta_message(_tone(24000).tobytes()),
    )
    p.add("down", "resample", rate=8000)
    p.add("encode", "g711_encode")
    p.add("sink", _null)
    p.link("src", *CALL_STAGES, "sink")
    p.validate()
    return p


def _run_ours(frames: list[Audio]) -> Any:
    from pipeline.runtime import Runner

    return asyncio.run(Runner(_call_pipeline(frames)).run())


def _run_hollow(frames: list[Audio]) -> Any:
    """The call path's graph with every stage a pass-through: the framework's share."""
    from pipeline import Pipeline
    from pipeline.runtime import Runner

    from .framework import _pass

    p = Pipeline("hollow")
    p.add("src", _caller, frames=frames)
    for sid in CALL_STAGES:
        p.add(sid, _pass)
    p.add("sink", _null)
    p.link("src", *CALL_STAGES, "sink")
    p.validate()
    return asyncio.run(Runner(p).run())


def _pipecat_call(n_frames: int) -> Callable[[int], object] | None:
    """The same path in Pipecat: a Pipeline of five FrameProcessors doing what its Twilio
    serializer (``ulaw_to_pcm`` / ``pcm_to_ulaw`` with its default stream resampler), its VAD
    analyzer (webrtcvad as the voice_confidence, the sync core, no executor hop) and its OpenAI
    realtime service (append event, delta parse) do per frame."""
    if not quiet_pipecat():
        return None
    try:
        import webrtcvad
        from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
        from pipecat.audio.utils import pcm_to_ulaw, ulaw_to_pcm
        from pipecat.audio.vad.vad_analyzer import VADAnalyzer
        from pipecat.frames.frames import (
            EndFrame,
            InputAudioRawFrame,
            OutputAudioRawFrame,
            TTSAudioRawFrame,
        )
        from pipecat.pipeline.pipeline import Pipeline as PcPipeline
        from pipecat.pipeline.runner import PipelineRunner
        from pipecat.pipeline.task import PipelineTask
        from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
        from pipecat.services.openai.realtime import events as pc_events
    except Exception:
        return None

    class WebrtcAnalyzer(VADAnalyzer):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(sample_rate=16000)
            self._v = webrtcvad.Vad(3)

        def num_frames_required(self) -> int:
            return 320

        def voice_confidence(self, buffer: bytes) -> float:
            return 1.0 if self._v.is_speech(buffer, 16000) else 0.0

    class Uplink(FrameProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._rs = SOXRStreamAudioResampler()

        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame) and frame.sample_rate == 8000:
                pcm = await ulaw_to_pcm(frame.audio, 8000, 16000, self._rs)
                frame = InputAudioRawFrame(audio=pcm, sample_rate=16000, num_channels=1)
            await self.push_frame(frame, direction)

    class Vad(FrameProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._an = WebrtcAnalyzer()
            self._an.set_sample_rate(16000)

        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                self._an._run_analyzer(frame.audio)
            await self.push_frame(frame, direction)

    delta = delta_message(_tone(24000).tobytes())

    class Realtime(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame):
                payload = base64.b64encode(frame.audio).decode("utf-8")
                ev = pc_events.InputAudioBufferAppendEvent(audio=payload)
                json.dumps(ev.model_dump(exclude_none=True))
                got = pc_events.parse_server_event(delta)
                audio = base64.b64decode(got.delta)
                await self.push_frame(
                    TTSAudioRawFrame(audio=audio, sample_rate=24000, num_channels=1), direction
                )
            else:
                await self.push_frame(frame, direction)

    class Downlink(FrameProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._rs = SOXRStreamAudioResampler()

        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, OutputAudioRawFrame):
                await pcm_to_ulaw(frame.audio, 24000, 8000, self._rs)
                done[0] += 1
                return
            await self.push_frame(frame, direction)

    seen = [0]
    done = [0]

    class Sink(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Any, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InputAudioRawFrame | OutputAudioRawFrame):
                seen[0] += 1
            else:
                await self.push_frame(frame, direction)

    ulaw = [f.data for f in _ulaw_frames(n_frames)]

    def run_n(n: int) -> object:
        async def once() -> None:
            procs = [Uplink(), Vad(), Realtime(), Downlink(), Sink()]
            task = PipelineTask(PcPipeline(procs))
            runner = PipelineRunner(handle_sigint=False)

            async def feed() -> None:
                for i in range(n):
                    await task.queue_frame(
                        InputAudioRawFrame(audio=ulaw[i], sample_rate=8000, num_channels=1)
                    )
                await task.queue_frame(EndFrame())

            await asyncio.gather(runner.run(task), feed())

        seen[0] = done[0] = 0
        asyncio.run(once())
        if seen[0] != 0 or done[0] != n:  # every frame went both ways, none leaked
            raise RuntimeError(f"pipecat path: {done[0]} of {n} frames encoded, {seen[0]} leaked")
        return None

    return run_n


def _pieces(frames: list[Audio], inner: int, repeat: int) -> list[Row]:
    """Each stage's per-frame work on the call path, as its stage does it (the pure core plus
    the frame it builds, with ``make_audio``), timed alone: where the whole-call figure goes."""
    from stages import g711
    from stages.resample import StreamResampler
    from stages.vad.engines import make_engine
    from stages.vad.gate import VadGate

    ulaw = frames[0]
    pcm8 = Audio(g711.decode_ulaw(ulaw.data), "pcm16", 8000, 1, 0.0)
    up = StreamResampler(8000, 16000)
    pcm16 = Audio.from_samples(up.process(pcm8.data), 16000)
    gate = VadGate(make_engine("webrtc", 16000), mode="annotate")
    proto = ready_protocol()
    msg = delta_message(_tone(24000).tobytes())
    down = StreamResampler(24000, 8000)
    out24 = _tone(24000).tobytes()
    out8 = Audio.from_samples(_tone(8000), 8000)
    k = [0]

    up_bytes, down_bytes = up.engine.process_bytes, down.engine.process_bytes

    def dec() -> object:
        return make_audio(g711.decode(ulaw.data, "pcmu"), "pcm16", 8000, 1, 0.0)

    def res_up() -> object:
        return make_audio(up_bytes(pcm8.data), "pcm16", 16000, 1, 0.0)

    def vad() -> object:
        k[0] += 1
        return gate.push(make_audio(pcm16.data, "pcm16", 16000, 1, k[0] * 0.02))

    def session() -> object:
        proto.append_audio(pcm16.data)
        proto.data_to_send()
        (ev,) = proto.receive(msg)
        return make_audio(ev.data, "pcm16", 24000, 1, 0.0)

    def res_down() -> object:
        return make_audio(down_bytes(out24), "pcm16", 8000, 1, 0.0)

    def enc() -> object:
        return make_audio(g711.encode(out8.data, "pcmu"), "pcmu", 8000, 1, 0.0)

    out = []
    for name, fn in (
        ("g711 decode", dec),
        ("resample 8k→16k (low_latency)", res_up),
        ("vad_gate webrtc, annotate", vad),
        ("session: append encode + delta decode", session),
        ("resample 24k→8k (low_latency)", res_down),
        ("g711 encode", enc),
    ):
        out.append(
            row(
                "callpath",
                f"  piece: {name}",
                per_call_us(fn, inner=inner, repeat=repeat, clock=time.process_time_ns),
                note="CPU time, alone",
            )
        )
    return out


def _raw_call(frames: list[Audio], engine: str) -> None:
    """The whole call's library calls in one plain loop, per frame: decode, resample up, the
    VAD's pre-emphasis and webrtcvad per 30 ms window, an append message (base64 + orjson), a
    delta parsed (orjson + base64), resample 24k→8k, encode; no frame objects, no generators,
    no protocol state. Base64 is pybase64 when installed (the session's codec), else the
    standard library's. ``engine``: ``soxr`` (HQ streams, int16) or ``ours`` (the low-latency
    resampler's core, as the stages call it)."""
    calls = inplace.raw_calls(engine, 24000, "the raw path")
    ulaw2lin, lin2ulaw, add, mul, decode, encode, emphasize, up, down, is_speech, _ = calls
    message = delta_message(_tone(24000).tobytes())
    dumps, loads = orjson.dumps, orjson.loads
    b64text: Callable[[bytes], str]
    b64decode: Callable[[str], bytes]
    try:
        import pybase64

        b64text, b64decode = pybase64.b64encode_as_string, pybase64.b64decode
    except ImportError:  # pragma: no cover

        def _text(data: bytes) -> str:
            return base64.b64encode(data).decode()

        b64text, b64decode = _text, base64.b64decode
    i16 = np.dtype("<i2")
    frombuffer = np.frombuffer
    last = b"\0\0"
    buf = b""
    if calls.soxr:  # the libraries' own calls, inline
        for n, f in enumerate(frames):
            b = up(frombuffer(ulaw2lin(f.data, 2), i16)).tobytes()
            if b:
                buf += add(b, mul(last + b[:-2], 2, -0.8), 2)
                last = b[-2:]
                while len(buf) >= 960:
                    is_speech(buf[:960], 16000)
                    buf = buf[960:]
                dumps(
                    {"type": "input_audio_buffer.append", "event_id": f"c-{n}", "audio": b64text(b)}
                )
            audio = b64decode(loads(message)["delta"])
            lin2ulaw(down(frombuffer(audio, i16)).tobytes(), 2)
        return
    for n, f in enumerate(frames):  # the stages' cores
        b = up(decode(f.data))
        if b:
            buf += emphasize(b, last)
            last = b[-2:]
            while len(buf) >= 960:
                is_speech(buf[:960], 16000)
                buf = buf[960:]
            dumps({"type": "input_audio_buffer.append", "event_id": f"c-{n}", "audio": b64text(b)})
        encode(down(b64decode(loads(message)["delta"])))


@contextmanager
def call_runs(n: int) -> Iterator[dict[str, Callable[[int], object]]]:
    """The whole call's runs over the first ``k`` of ``n`` caller frames: ours through the
    Runner and the raw library path with either resampler. Also entered in a child process
    (``benchmarks.remote``) for the pure-Python kernels' figures."""
    frames = _ulaw_frames(n)
    yield {
        "ours": lambda k: _run_ours(frames[:k]),
        "raw soxr": lambda k: _raw_call(frames[:k], "soxr"),
        "raw ours": lambda k: _raw_call(frames[:k], "ours"),
    }


def callpath_rows(quick: bool, tiny: bool) -> list[Row]:
    """The whole-call hot path beside the raw library path (goal ≤ 1.2×), where it goes, the
    same with the pure-Python kernels, and the same path in Pipecat (goal: ≥ 8× less CPU)."""
    from pipeline import native

    from . import remote

    n, n0, repeat = (200, 20, 2) if tiny else (3000, 300, 7) if quick else (10000, 1000, 11)
    frames = _ulaw_frames(n)
    pc = _pipecat_call(n)
    with (
        call_runs(n) as runs,
        remote.optional("benchmarks.hotpath:call_runs", [n], inplace.PURE_ENV) as pure,
    ):
        if isinstance(pure, remote.Remote):
            runs = {**runs, "pure": pure.run("ours")}
        if pc is not None:  # a fifth of the frames: it takes ten times as long per frame
            runs["pipecat"] = pc
        got = inplace.paired(runs, n=n, n0=n0, repeat=repeat, fewer={"pipecat": 5})
    samples = got["ours"]

    def best(a: str, b: str) -> str:
        return f"best of {repeat}: {float(np.min(got[a]) / np.min(got[b])):.2f}×"

    raw_soxr = row(
        "callpath",
        "raw library path: the same calls in a plain loop (audioop, soxr HQ streams (int16), "
        "pre-emphasis (audioop) + webrtcvad, orjson + pybase64)",
        got["raw soxr"],
        note="CPU per 20 ms frame pair; no frame objects, no generators, no protocol state",
    )
    ours = row(
        "callpath",
        "whole call, both directions, fused Runner",
        samples,
        note=f"CPU per 20 ms frame pair; {best('ours', 'raw soxr')}; "
        + inplace.kernels_note(native.status()),
    )
    pure_name = (
        "  the whole call, pure-Python kernels (PIPELINE_PURE_PYTHON=1, a child process taking "
        "turns)"
    )
    if isinstance(pure, remote.Remote):
        pure_row = compare(
            row(
                "callpath",
                pure_name,
                got["pure"],
                note=f"{best('pure', 'raw soxr')}; the kernels buy "
                f"{float(np.median(got['pure'] - samples)):.2f} µs per frame pair; "
                + inplace.kernels_note(pure.kernels),
            ),
            raw_soxr,
        )
    else:
        pure_row = fixed("callpath", pure_name, float("nan"), "µs/frame", f"not measured: {pure}")
    raw_ours = row(
        "callpath",
        "  information: the raw path over the stages' cores (the low-latency resampler's core "
        "for soxr's)",
        got["raw ours"],
        note="no frame objects, no generators, no protocol state",
    )
    rows = [
        raw_soxr,
        mark(compare(ours, raw_soxr), "call"),
        pure_row,
        raw_ours,
        compare(
            row(
                "callpath",
                "  information: whole call vs the raw path over the stages' cores",
                samples,
                note="what the framework and the stages' bookkeeping add over their own cores; "
                + best("ours", "raw ours"),
            ),
            raw_ours,
        ),
    ]
    inner, reps = (30, 3) if tiny else (500, 9) if quick else (2000, 21)
    pieces = _pieces(frames, inner, reps)
    rows += pieces
    hops = row(
        "callpath",
        "  framework: the same graph with pass-through stages",
        cpu_per_item_us(lambda k: _run_hollow(frames[:k]), n=n, n0=n0, repeat=repeat),
        note="source, 6 stages, sink: 7 fused hops with stats",
    )
    rows.append(hops)
    summary = _run_ours(frames)
    for sid in CALL_STAGES:
        st = summary.stage(sid)
        if st.p50_us is not None:
            r = row(
                "callpath",
                f"  in place: {sid} ({st.type})",
                [st.p50_us],
                note="the Runner's own per-frame timing of the stage (wall, p50/p99)",
            )
            r.p99 = st.p99_us or r.p99
            r.n = st.frames_out
            rows.append(r)
    if pc is None:
        rows.append(
            mark(
                fixed(
                    "callpath",
                    "pipecat: same path, 5 FrameProcessors",
                    float("nan"),
                    "µs/frame",
                    note=f"not measured: {PIPECAT_MISSING}",
                ),
                "pipecat",
            )
        )
        return rows
    pcr = row(
        "callpath",
        "pipecat: same path, 5 FrameProcessors",
        got["pipecat"],
        note=f"CPU per 20 ms frame pair, over {n // 5} frames, taking turns with ours",
    )
    vs = compare(row("callpath", "  pipecat ÷ ours, CPU per frame pair", pcr.samples), ours)
    return [*rows, pcr, mark(vs, "pipecat")]


#: Why the Pipecat rows are missing, and how to get them.
PIPECAT_MISSING = (
    "pipecat-ai is not installed (its soxr~=1.0 pin would move ours): pip install --no-deps "
    "pipecat-ai loguru aiofiles python-dotenv Markdown loudness sentencex wait_for2"
)
