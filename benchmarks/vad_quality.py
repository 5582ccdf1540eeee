"""VAD benchmark: quality on the labelled speech set, and cost per 20 ms frame, for every engine.

Run from the repository root::

    .venv/bin/python benchmarks/vad_quality.py            # both tables, Markdown
    .venv/bin/python benchmarks/vad_quality.py --quick    # fewer frames for the cost table
    .venv/bin/python benchmarks/vad_quality.py --json out/vad.json

Quality runs on the project's labelled speech set (``benchmarks/speechset.py``, built on first
use; skipped with a note without espeak-ng and sox). Each engine sees the 16 kHz files as they
are, and as an 8 kHz μ-law phone call (soxr, then G.711). Cost is the mean and 99th percentile
time of one 20 ms frame through the engine alone and through the whole gate (decode for analysis,
engine, state machine, framing), on one thread; the quietest of three runs, as the machine may
be shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speechset import SpeechSetUnavailable, ensure  # noqa: E402
from pipeline.frames import Audio  # noqa: E402
from stages.vad import VadGate, make_engine  # noqa: E402
from stages.vad.quality import (  # noqa: E402
    CONDITIONS,
    FileScore,
    evaluate,
    evaluate_scenes,
    harder_scenes,
    prepare,
    read_wav,
    table,
)

ENGINES = ("silero", "webrtc", "energy")


def dev_set() -> Path | None:
    """The VAD part of the speech set, or None when it cannot be built here."""
    try:
        return ensure() / "vad"
    except SpeechSetUnavailable as exc:
        print(f"(speech set unavailable: {exc})", file=sys.stderr)
        return None


def quality(folder: Path | None = None) -> tuple[list[FileScore], list[FileScore]] | None:
    """Per-file scores for every engine and condition on the speech set and on the harder scenes
    made from it, or None without the speech set."""
    folder = folder or dev_set()
    if folder is None:
        return None
    dev = evaluate(folder, ENGINES, tuple(CONDITIONS))
    harder = evaluate_scenes(harder_scenes(folder), ENGINES, tuple(CONDITIONS))
    return dev, harder


def _test_audio(rate: int, seconds: float) -> np.ndarray[Any, np.dtype[np.int16]]:
    folder = dev_set()
    first = folder / "dev-01-white-20db.wav" if folder else None
    if first is not None and first.is_file():
        samples, file_rate = read_wav(first)
        data, _, _ = prepare(samples, file_rate, "16k pcm16" if rate == 16000 else "8k pcmu")
        if rate == 16000:
            x = np.frombuffer(data, "<i2").astype(np.int16)
        else:
            from stages.g711 import decode

            x = np.frombuffer(decode(data, "pcmu"), "<i2").astype(np.int16)
    else:  # noise with bursts of a harmonic "voice"
        rng = np.random.default_rng(1)
        t = np.arange(int(rate * seconds)) / rate
        voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
        envelope = (np.sin(2 * np.pi * 0.25 * t) > 0).astype(float)
        x = (3000 * voice * envelope + rng.normal(0, 300, t.size)).astype(np.int16)
    n = int(rate * seconds)
    return np.resize(x, n)


REPEATS = 3  # the machine is shared: keep the quietest of a few runs


def _time_engine(name: str, rate: int, chunks: list[Any]) -> np.ndarray[Any, Any]:
    engine = make_engine(name, rate)
    times = np.empty(len(chunks))
    for i, chunk in enumerate(chunks):
        t0 = time.perf_counter_ns()
        engine.process(chunk)
        times[i] = time.perf_counter_ns() - t0
    return times


def _time_gate(name: str, rate: int, frames: list[Audio]) -> np.ndarray[Any, Any]:
    gate = VadGate(make_engine(name, rate), mode="gate")
    times = np.empty(len(frames))
    for i, frame in enumerate(frames):
        t0 = time.perf_counter_ns()
        gate.push(frame)
        times[i] = time.perf_counter_ns() - t0
    return times


def cost(quick: bool = False) -> list[dict[str, Any]]:
    """Microseconds per 20 ms frame for each engine at 16 and 8 kHz (engine alone, whole gate)."""
    seconds = 10.0 if quick else 60.0
    rows: list[dict[str, Any]] = []
    for rate in (16000, 8000):
        x = _test_audio(rate, seconds)
        step = rate // 50
        chunks = [x[i : i + step] for i in range(0, len(x) - step + 1, step)]
        frames = [Audio.from_samples(c, rate, pts=i / 50) for i, c in enumerate(chunks)]
        for name in ENGINES:
            make_engine(name, rate).process(chunks[0])  # warm up (creates the silero session)
            times = min((_time_engine(name, rate, chunks) for _ in range(REPEATS)), key=np.mean)
            gate_times = min((_time_gate(name, rate, frames) for _ in range(REPEATS)), key=np.mean)
            rows.append(
                {
                    "engine": name,
                    "rate": rate,
                    "frames": len(chunks),
                    "engine_mean_us": float(times.mean() / 1000),
                    "engine_p99_us": float(np.percentile(times, 99) / 1000),
                    "gate_mean_us": float(gate_times.mean() / 1000),
                    "gate_p99_us": float(np.percentile(gate_times, 99) / 1000),
                }
            )
    return rows


def cost_table(rows: list[dict[str, Any]]) -> str:
    """The cost rows as a Markdown table."""
    lines = [
        "| engine | rate (Hz) | engine µs/frame (mean) | engine p99 | gate µs/frame (mean) "
        "| gate p99 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['rate']} | {r['engine_mean_us']:.1f} | {r['engine_p99_us']:.1f} "
            f"| {r['gate_mean_us']:.1f} | {r['gate_p99_us']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s of audio for the cost table")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    scores = quality()
    print("## VAD quality (the labelled speech set)\n")
    if scores is None:
        print("(skipped: the speech set needs espeak-ng and sox)")
    else:
        print(table(scores[0]))
        print("\n## VAD quality, harder scenes made from the clean file\n")
        print(table(scores[1]))
    rows = cost(args.quick)
    print("\n## VAD cost per 20 ms frame (one thread)\n")
    print(cost_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "quality": [
                {
                    "engine": s.engine,
                    "audio": s.condition,
                    "file": s.file,
                    "utterances": s.utterances,
                    "found": s.found,
                    "false_segments": s.false_segments,
                    "merged": s.merged,
                    "onset_errors_ms": list(s.onset_errors_ms),
                }
                for s in (scores[0] + scores[1] if scores else [])
            ],
            "cost": rows,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
