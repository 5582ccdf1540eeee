"""Added latency: each resample mode, and the whole default chain (p50 / p99, ms).

**Resample modes.** A 2 s 440 Hz tone is streamed in 20 ms frames; after each frame the added
latency is the input time received minus the content time of the newest output sample, where
the content time of output sample ``j`` is ``j / out_rate − d`` and ``d`` is the engine's content
delay (found by cross-correlating its output with soxr VHQ one-shot, which is aligned with its
input). The row's median / p99 are over the frames; the note gives mean / max (the figures the
issue asks for) and the share of 20 ms calls that returned nothing. Modes: ours
(``low_latency``), soxr QQ, HQ (python-soxr's default), VHQ (Pipecat's default) and soxr's
variable-rate engine (``vr=True``, python-soxr ≥ 1.1). Goal: ≤ 5 ms.

**Whole default chain.** From the end-to-end calls (:mod:`benchmarks.e2e`, annotate mode, so
every caller frame is sent): *uplink*, a caller frame handed on by the source → its audio read
by the emulator in an ``input_audio_buffer.append`` (decode, resample, VAD, session batching,
the WebSocket on loopback); *downlink*, an audio delta parsed by the session → its first audio at
the sink (the session's output queue, resample, encode). Processing and transport only: the
resampler's content delay (above) adds to it, and so does the gate's hold in gate mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import soxr

from .harness import Row, fixed, row

PAIRS = ((8000, 16000), (16000, 8000), (8000, 24000), (24000, 8000))
MODES = ("low_latency", "soxr QQ", "soxr HQ", "soxr VHQ", "soxr vr")


class _SoxrVR:
    """soxr's variable-rate engine as a stream (int16 in, int16 out)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", vr=True)
        self.samples_in = 0
        self.samples_out = 0

    def process(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        y = self._s.resample_chunk(x)
        self.samples_in += len(x)
        self.samples_out += len(y)
        return y

    def flush(self) -> np.ndarray[Any, Any]:
        y = self._s.resample_chunk(np.zeros(0, np.int16), last=True)
        self.samples_out += len(y)
        return y


def _engine(mode: str, in_rate: int, out_rate: int) -> Any:
    from stages.resample import StreamResampler

    if mode == "low_latency":
        return StreamResampler(in_rate, out_rate)
    if mode == "soxr vr":
        return _SoxrVR(in_rate, out_rate)
    return StreamResampler(in_rate, out_rate, mode.split()[1], low_latency=False)  # type: ignore[arg-type]


def _stream(eng: Any, x: np.ndarray[Any, Any], frame: int) -> np.ndarray[Any, Any]:
    out = [eng.process(x[i : i + frame]) for i in range(0, len(x), frame)]
    out.append(eng.flush())
    return np.concatenate(out)


def content_delay_s(mode: str, in_rate: int, out_rate: int) -> float:
    """Where the engine puts its content relative to soxr VHQ one-shot (seconds)."""
    rng = np.random.default_rng(1)
    x = np.clip(rng.standard_normal(in_rate) * 4000, -32768, 32767).astype(np.int16)
    ref = soxr.resample(x, in_rate, out_rate, quality="VHQ").astype(np.float64)
    y = _stream(_engine(mode, in_rate, out_rate), x, in_rate // 50).astype(np.float64)
    span = out_rate // 20  # search ±50 ms
    n = min(len(ref), len(y)) - 2 * span
    lags = np.arange(-span, span)
    r = np.array([np.dot(y[span + k : span + k + n], ref[span : span + n]) for k in lags])
    k = int(np.argmax(r))
    frac = 0.0
    if 0 < k < len(r) - 1:
        den = r[k - 1] - 2 * r[k] + r[k + 1]
        frac = 0.5 * (r[k - 1] - r[k + 1]) / den if den else 0.0
    return float((lags[k] + frac) / out_rate)


def added_latency_ms(mode: str, in_rate: int, out_rate: int) -> tuple[np.ndarray[Any, Any], float]:
    """(added latency after each 20 ms frame in ms, share of calls that returned nothing)."""
    d = content_delay_s(mode, in_rate, out_rate)
    eng = _engine(mode, in_rate, out_rate)
    frame = in_rate // 50
    t = np.arange(2 * in_rate) / in_rate
    x = np.rint(16000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    lat, empty = [], 0
    for i in range(0, len(x), frame):
        y = eng.process(x[i : i + frame])
        empty += len(y) == 0
        lat.append((eng.samples_in / in_rate - (eng.samples_out / out_rate - d)) * 1e3)
    return np.asarray(lat[5:]), empty / len(lat)  # past the first 100 ms (start-up)


def resample_rows() -> list[Row]:
    rows: list[Row] = []
    for in_rate, out_rate in PAIRS:
        pair = f"{in_rate // 1000}k→{out_rate // 1000}k"
        for mode in MODES:
            try:
                lat, empty = added_latency_ms(mode, in_rate, out_rate)
            except TypeError:  # python-soxr without vr
                rows.append(fixed("latency", f"resample {pair} {mode}", float("nan"), "ms"))
                continue
            goal = " (goal ≤ 5 ms)" if mode == "low_latency" else ""
            rows.append(
                row(
                    "latency",
                    f"resample {pair} {mode}",
                    lat,
                    unit="ms",
                    note=f"mean {lat.mean():.1f} / max {lat.max():.1f}; "
                    f"empty calls {empty:.0%}{goal}",
                )
            )
    return rows


def chain_rows(quick: bool, tiny: bool) -> list[Row]:
    from . import e2e

    if not e2e.CALLER.exists():
        return [fixed("latency", "default chain", float("nan"), "ms", note="no caller WAV")]
    figs = e2e.calls(quick, tiny).get("annotate", [])
    up = [x for f in figs for x in f.uplink_ms]
    down = [x for f in figs for x in f.downlink_ms]
    return [
        row(
            "latency",
            "chain uplink: caller frame → append at the server",
            up,
            unit="ms",
            note="decode, resample, silero VAD, session, loopback WebSocket",
        ),
        row(
            "latency",
            "chain downlink: delta parsed → its audio at the sink",
            down,
            unit="ms",
            note="session queue, resample, encode",
        ),
    ]


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """Resampler and chain latency rows (ms)."""
    return resample_rows() + chain_rows(quick, tiny)
