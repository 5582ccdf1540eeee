"""Per stage, µs per 20 ms frame, beside the raw library calls (and Pipecat's, when installed).

Every row drives the pure synchronous core exactly as the stage does per frame; the baselines are
the raw library calls measured in the same run: ``audioop`` (Python ≤ 3.12), numpy, ``soxr``,
``webrtcvad``, ``onnxruntime``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from .harness import Row, compare, per_call_us, row


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
        from pipecat.audio.utils import pcm_to_ulaw, ulaw_to_pcm  # noqa: F401
    except Exception:
        pass
    else:
        import asyncio

        async def pc_dec() -> None:
            await ulaw_to_pcm(ulaw, 8000, 8000, None)

        loop = asyncio.new_event_loop()
        try:
            pc = row(
                "g711",
                "pipecat ulaw_to_pcm",
                per_call_us(
                    lambda: loop.run_until_complete(pc_dec()), inner=inner // 10 or 1, repeat=repeat
                ),
            )
        finally:
            loop.close()
        rows.append(pc)
        rows.append(compare(row("g711", "ours vs pipecat ulaw_to_pcm", dec.samples), pc))
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
    return rows


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
        else:
            # silero works on 32 ms windows: average over a long run of 20 ms frames
            rows.append(
                row(
                    "vad",
                    "vad engine silero (per 20 ms)",
                    per_call_us(
                        lambda: eng_s.process(frame), inner=max(50, inner // 20), repeat=repeat
                    ),
                )
            )
    return rows


def run(quick: bool = False) -> list[Row]:
    inner, repeat = (500, 15) if quick else (2000, 41)
    rows: list[Row] = []
    for fn in (g711_rows, resample_rows, vad_rows):
        f: Callable[[int, int], list[Row]] = fn
        rows += f(inner, repeat)
    return rows
