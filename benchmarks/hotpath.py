"""Per stage, µs per 20 ms frame, beside the raw library calls (and Pipecat's, when installed).

Every row drives the pure synchronous core exactly as the stage does per frame; the baselines are
the raw library calls measured in the same run: ``audioop`` (Python ≤ 3.12), numpy, ``soxr``,
``webrtcvad``, ``onnxruntime``.
"""

from __future__ import annotations

import base64
import json
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from .harness import Row, compare, drive, per_call_us, row


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


def _audioop() -> object | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop

            return audioop
        except ImportError:
            return None


def g711_rows(inner: int, repeat: int) -> list[Row]:
    from stages import g711

    pcm = _tone(8000).tobytes()
    ulaw = g711.encode_ulaw(pcm)
    rows: list[Row] = []
    dec = row(
        "g711",
        "μ-law decode (ours, table)",
        per_call_us(lambda: g711.decode_ulaw(ulaw), inner=inner, repeat=repeat),
    )
    enc = row(
        "g711",
        "μ-law encode (ours, table)",
        per_call_us(lambda: g711.encode_ulaw(pcm), inner=inner, repeat=repeat),
    )
    ao = _audioop()
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
        for ll in (True, False):
            r = StreamResampler(src, dst, "HQ", low_latency=ll)
            name = f"resample {src // 1000}k→{dst // 1000}k " + ("low_latency" if ll else "soxr HQ")
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
            ll = next(
                r
                for r in rows
                if r.name.endswith("low_latency") and f"{src // 1000}k→{dst // 1000}k " in r.name
            )
            rows += [pcr, compare(row("resample", f"{ll.name} vs pipecat", ll.samples), pcr)]
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
        rows.append(ours)
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

    def json_dec() -> object:
        return base64.b64decode(json.loads(msg)["delta"])

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
        dec_base,
        dec_or,
        compare(dec, dec_base),
        compare(row("session", "session decode vs orjson raw", dec.samples), dec_or),
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
    rows: list[Row] = []
    for fn in (g711_rows, resample_rows, vad_rows, session_rows):
        f: Callable[[int, int], list[Row]] = fn
        rows += f(inner, repeat)
    return rows
