"""Resampler latency, alias/image rejection, pass-band ripple and cost: ours against soxr.

Every figure is measured by streaming 20 ms frames through the engine (not taken from formulas):

* **added latency** after each frame: input time received − content time of the newest output
  sample; the content time of output sample ``j`` is ``j / out − d``, with ``d`` the engine's
  content delay found by cross-correlating its output with soxr VHQ one-shot (which is aligned
  with its input). Mean and max over the frames of a 2 s stream.
* **empty calls**: the share of 20 ms frames that returned no audio at all.
* **rejection**: worst level, relative to the input tone, of what lands in the stop band
  (aliases when down-sampling: tones from 0.575 × the lower rate to the input Nyquist; images when
  up-sampling: everything but the tone, for tones up to 0.425 × the lower rate).
* **ripple**: max − min gain over tones 100 Hz … 0.425 × the lower rate.
* **cost**: median CPU µs per 20 ms frame of our engine (``process`` on int16), and in
  brackets soxr's own int16 stream at that quality (what other frameworks pay).

Run: ``python -m benchmarks.resample_latency [--quick]``; prints a markdown table.

``python -m benchmarks.resample_latency --core [--against REV]`` measures only the low-latency
engine's own call (:func:`core_rows`): CPU µs per 20 ms frame of pcm16 bytes at every telephony
ratio, beside soxr's stream call at HQ on the same frame (and the engine of git revision REV),
taking turns in the same run.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from benchmarks.harness import Row, compare, row
from stages.resample import StreamResampler

RATIOS = [(8000, 16000), (24000, 8000), (16000, 24000), (8000, 24000), (48000, 8000)]
MODES = ["low_latency", "soxr QQ", "soxr LQ", "soxr HQ", "soxr VHQ"]
AMP = 16000.0


def _engine(mode: str, in_rate: int, out_rate: int) -> StreamResampler:
    if mode == "low_latency":
        return StreamResampler(in_rate, out_rate)
    return StreamResampler(in_rate, out_rate, quality=mode.split()[1], low_latency=False)  # type: ignore[arg-type]


def _tone(freq: float, rate: int, seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(AMP * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _stream(rs: StreamResampler, x: np.ndarray[Any, Any], frame: int) -> tuple[Any, list[int]]:
    outs, counts = [], []
    for i in range(0, len(x), frame):
        y = rs.process(x[i : i + frame])
        outs.append(y)
        counts.append(len(y))
    outs.append(rs.flush())
    return np.concatenate(outs), counts


def _fit(y: np.ndarray[Any, Any], freq: float, rate: int) -> tuple[float, float]:
    t = np.arange(len(y)) / rate
    basis = np.stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.hypot(*coef)), float(np.sqrt(np.mean((y - basis @ coef) ** 2)))


def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


def content_delay_s(mode: str, in_rate: int, out_rate: int) -> float:
    """Where the engine puts its content, relative to soxr VHQ one-shot (seconds)."""
    rng = np.random.default_rng(1)
    x = np.clip(rng.standard_normal(in_rate) * 4000, -32768, 32767).astype(np.int16)
    ref = soxr.resample(x, in_rate, out_rate, quality="VHQ").astype(np.float64)
    y = _stream(_engine(mode, in_rate, out_rate), x, in_rate // 50)[0].astype(np.float64)
    span = out_rate // 50  # search ±20 ms
    n = len(ref) - 2 * span
    lags = np.arange(-span, span)
    r = np.array([np.dot(y[span + k : span + k + n], ref[span : span + n]) for k in lags])
    k = int(np.argmax(r))
    frac = 0.5 * (r[k - 1] - r[k + 1]) / (r[k - 1] - 2 * r[k] + r[k + 1])
    return float((lags[k] + frac) / out_rate)


def latency_ms(mode: str, in_rate: int, out_rate: int) -> tuple[float, float, float, float]:
    """(content delay, mean and max added latency in ms, share of empty 20 ms calls)."""
    d = content_delay_s(mode, in_rate, out_rate)
    rs = _engine(mode, in_rate, out_rate)
    frame = in_rate // 50
    x = _tone(440, in_rate, 2.0)
    lat, empty = [], 0
    for i in range(0, len(x), frame):
        y = rs.process(x[i : i + frame])
        empty += len(y) == 0
        lat.append((rs.samples_in / in_rate - (rs.samples_out / out_rate - d)) * 1e3)
    return d * 1e3, float(np.mean(lat)), float(np.max(lat)), empty / len(lat)


def rejection_db(mode: str, in_rate: int, out_rate: int) -> float:
    """Worst stop-band level relative to the input tone (dB; lower is better)."""
    low = min(in_rate, out_rate)
    worst = -999.0
    skip = out_rate // 50  # 20 ms of transient at each end
    if in_rate > out_rate:  # aliases
        for frac in (0.575, 0.6, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 2.9):
            f = frac * low
            if f >= in_rate / 2 - 50:
                break
            y = _stream(_engine(mode, in_rate, out_rate), _tone(f, in_rate, 0.3), in_rate // 50)[0]
            seg = y[skip:-skip].astype(np.float64)
            worst = max(worst, _db(float(np.sqrt(np.mean(seg**2))) / (AMP / math.sqrt(2))))
    else:  # images
        for frac in (0.0125, 0.0625, 0.125, 0.25, 0.375, 0.425):
            f = frac * in_rate
            y = _stream(_engine(mode, in_rate, out_rate), _tone(f, in_rate, 0.3), in_rate // 50)[0]
            amp, resid = _fit(y[skip:-skip].astype(np.float64), f, out_rate)
            worst = max(worst, _db(resid / (amp / math.sqrt(2))))
    return worst


def ripple_db(mode: str, in_rate: int, out_rate: int) -> float:
    low = min(in_rate, out_rate)
    skip = out_rate // 50
    gains = []
    for f in (100, 300, 1000, 2000, 3000, 0.425 * low):
        y = _stream(_engine(mode, in_rate, out_rate), _tone(f, in_rate, 0.3), in_rate // 50)[0]
        gains.append(_db(_fit(y[skip:-skip].astype(np.float64), f, out_rate)[0] / AMP))
    return max(gains) - min(gains)


def _cpu_us(fn: Callable[[Any], object], x: Any, inner: int) -> float:
    """CPU µs per call (process time: the machine is shared, wall time counts the others)."""
    clock = time.process_time_ns
    t0 = clock()
    for _ in range(inner):
        fn(x)
    return (clock() - t0) / inner / 1e3


def cost_us(in_rate: int, out_rate: int, quick: bool) -> dict[str, np.ndarray[Any, Any]]:
    """CPU µs per 20 ms frame for each mode (our engine: what the stage pays) and for soxr's own
    int16 stream (``soxr int16 <Q>``, as other frameworks call it). The candidates take turns,
    round after round, so that load from elsewhere on the machine hits them alike."""
    x = _tone(440, in_rate, 0.02)
    fns: dict[str, Callable[[Any], object]] = {}
    for mode in MODES:
        fns[mode] = _engine(mode, in_rate, out_rate).process
        if mode != "low_latency":
            q = mode.split()[1]
            s = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=q)
            fns[f"soxr int16 {q}"] = s.resample_chunk
    for fn in fns.values():  # warm up
        _cpu_us(fn, x, 50)
    rounds = 7 if quick else 31
    inner = 200 if quick else 500
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(_cpu_us(fn, x, inner))
    return {k: np.asarray(v) for k, v in samples.items()}


#: every ratio between the telephony and wideband rates
CORE_RATIOS = [
    (8000, 16000),
    (16000, 8000),
    (8000, 24000),
    (24000, 8000),
    (16000, 24000),
    (24000, 16000),
    (24000, 48000),
    (48000, 24000),
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
]


def core_rows(inner: int = 500, repeat: int = 31, against: str | None = None) -> list[Row]:
    """The low-latency engine's call (``PolyphaseResampler.process_bytes`` on a 20 ms frame of
    pcm16 bytes, the call the stage makes; ``process`` for a revision without it) against
    soxr's stream call at the same rates
    (``soxr.ResampleStream(..., dtype="int16", quality="HQ").resample_chunk`` on the same
    frame as int16, as other frameworks call it). CPU µs per frame: ``repeat`` samples, each
    the mean of ``inner`` calls; the candidates take turns sample by sample, so that load from
    elsewhere on the machine hits them alike. Each engine row carries its ratio to soxr's.
    ``against``: a git revision whose engine (``stages/resample.py`` there) runs too, in the
    same turns: before and after in one run.

    The signature matches the per-stage row functions of ``benchmarks.hotpath``."""
    from stages.resample import PolyphaseResampler

    engines: list[tuple[str, Any]] = [("low_latency core", PolyphaseResampler)]
    if against is not None:
        engines.append((f"low_latency core at {against}", _engine_at(against)))
    rows: list[Row] = []
    for in_rate, out_rate in CORE_RATIOS:
        x = _tone(440, in_rate, 0.02)
        b = x.tobytes()
        theirs = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        fns: list[tuple[Callable[[Any], object], Any]] = [(theirs.resample_chunk, x)]
        fns += [(_stage_call(engine(in_rate, out_rate)), b) for _, engine in engines]
        for fn, arg in fns:  # warm up
            _cpu_us(fn, arg, max(10, inner // 5))
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(repeat):
            for k, (fn, arg) in enumerate(fns):
                samples[k].append(_cpu_us(fn, arg, inner))
        ratio = f"{in_rate // 1000}k→{out_rate // 1000}k"
        base = row("resample core", f"{ratio} soxr.ResampleStream HQ int16", samples[0])
        rows.append(base)
        for (name, _), got in zip(engines, samples[1:], strict=True):
            rows.append(compare(row("resample core", f"{ratio} {name}", got), base))
    return rows


def _stage_call(engine: Any) -> Callable[[bytes], object]:
    """The call the ``resample`` stage makes on an engine: pcm16 bytes in, bytes out."""
    return getattr(engine, "process_bytes", None) or engine.process  # type: ignore[no-any-return]


def _engine_at(rev: str) -> Any:
    """``PolyphaseResampler`` as ``stages/resample.py`` defines it at git revision ``rev``."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(
        ["git", "show", f"{rev}:stages/resample.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"resample_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses and typing look their module up
    exec(compile(src, f"{rev}:stages/resample.py", "exec"), module.__dict__)
    return module.PolyphaseResampler


def core_table(rows: list[Row]) -> str:
    """Markdown: per ratio and engine, the core and soxr's stream call (median / p99 µs) and
    the ratio of medians."""
    lines = [
        "| ratio | engine | engine µs median / p99 | soxr stream HQ µs median / p99 "
        "| engine / soxr |",
        "|---|---|---|---|---|",
    ]
    for ours in rows:
        if ours.baseline:
            base = next(r for r in rows if r.name == ours.baseline)
            ratio, engine = ours.name.split(" ", 1)
            lines.append(
                f"| {ratio} | {engine} | {ours.median:.2f} / {ours.p99:.2f} "
                f"| {base.median:.2f} / {base.p99:.2f} | {ours.ratio:.2f} |"
            )
    return "\n".join(lines)


def table(quick: bool = False) -> tuple[str, list[Row]]:
    lines = [
        "| ratio | mode | content delay ms | added latency mean / max ms | empty 20 ms calls "
        "| stop band (aliases/images) dB | ripple dB | µs / 20 ms frame (soxr int16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows: list[Row] = []
    for in_rate, out_rate in RATIOS if not quick else RATIOS[:2]:
        ratio = f"{in_rate // 1000}k→{out_rate // 1000}k"
        costs = cost_us(in_rate, out_rate, quick)
        base = row("resample", f"{ratio} soxr int16 HQ", costs["soxr int16 HQ"])
        rows.append(base)
        for mode in MODES:
            d, mean, mx, empty = latency_ms(mode, in_rate, out_rate)
            rej = rejection_db(mode, in_rate, out_rate)
            rip = ripple_db(mode, in_rate, out_rate)
            r = compare(row("resample", f"{ratio} {mode}", costs[mode]), base)
            rows.append(r)
            raw = ""
            if mode != "low_latency":
                raw = f" ({np.median(costs['soxr int16 ' + mode.split()[1]]):.1f})"
            kind = "alias" if in_rate > out_rate else "image"
            level = f"{rej:.0f}" if rej > -100 else "< -100"
            lines.append(
                f"| {ratio} | {mode} | {d:.2f} | {mean:.1f} / {mx:.1f} | {empty:.0%} | "
                f"{kind} {level} | {rip:.2f} | {r.median:.1f}{raw} |"
            )
    return "\n".join(lines), rows


def run(quick: bool = False) -> list[Row]:
    """Cost rows for ``pipeline bench`` (each compared with soxr HQ streaming)."""
    return table(quick)[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="two ratios, fewer repetitions")
    ap.add_argument(
        "--core", action="store_true", help="only the low-latency core against soxr's stream call"
    )
    ap.add_argument(
        "--against", metavar="REV", help="with --core: also the engine at this git revision"
    )
    args = ap.parse_args(argv)
    if args.core:
        inner, repeat = (200, 9) if args.quick else (500, 31)
        print(core_table(core_rows(inner, repeat, args.against)))
        return 0
    text, _ = table(args.quick)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
