"""Denoise benchmark: VAD quality with and without RNNoise in front, its cost and its delay.

Run from the repository root::

    .venv/bin/python benchmarks/denoise_quality.py            # the tables, Markdown
    .venv/bin/python benchmarks/denoise_quality.py --quick    # fewer frames for the cost table
    .venv/bin/python benchmarks/denoise_quality.py --json out/denoise.json

Quality: every engine (silero, webrtc, energy; defaults, 16 kHz) on the speech set's four files
and the three harder scenes made from its clean file, as they are and after the ``denoise`` core
in 20 ms frames. The denoised audio is moved ``delay_s`` earlier before scoring, so onsets are
compared with the labels as if it had no delay; the delay itself is its own row. Cost: CPU time
per 20 ms frame (mean and 99th percentile, one thread, the quietest of three runs) at 8, 16 and
48 kHz, and how much of it RNNoise alone takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cli import machine  # noqa: E402
from benchmarks.speechset import SpeechSetUnavailable, ensure  # noqa: E402
from stages.denoise import Denoiser, rnnoise_library  # noqa: E402
from stages.vad.quality import (  # noqa: E402
    FileScore,
    Scene,
    evaluate_scenes,
    harder_scenes,
    load_labels,
    read_wav,
)

ENGINES = ("silero", "webrtc", "energy")
REPEATS = 3


def denoised(scene: Scene) -> Scene:
    """The scene through the denoiser in 20 ms frames, moved ``delay_s`` earlier (the last
    ``delay_s`` filled with silence) so that it lines up with the labels."""
    step = scene.rate // 50
    with Denoiser(scene.rate) as d:
        parts = [d.process(scene.samples[i : i + step]) for i in range(0, scene.samples.size, step)]
        parts.append(d.flush())
        shift = round(d.delay_s * scene.rate)
    y = np.concatenate(parts)
    y = np.concatenate((y[shift:], np.zeros(shift, np.int16)))
    return Scene(scene.name, y, scene.rate, scene.speech)


def scenes(folder: Path) -> list[Scene]:
    """The four labelled files and the three harder scenes, 16 kHz."""
    out = []
    for item in load_labels(folder):
        x, rate = read_wav(item.path)
        out.append(Scene(item.path.name, x, rate, item.speech))
    return out + harder_scenes(folder)


def quality(
    items: Iterable[Scene], engines: tuple[str, ...] = ENGINES
) -> tuple[list[FileScore], list[FileScore]]:
    """Scores without and with the denoiser in front."""
    items = list(items)
    plain = evaluate_scenes(items, engines, ("16k pcm16",))
    cleaned = evaluate_scenes([denoised(s) for s in items], engines, ("16k pcm16",))
    return plain, cleaned


def compare_table(plain: list[FileScore], cleaned: list[FileScore]) -> str:
    """One row per file, for each engine: missed utterances and false segments, without → with
    the denoiser (and merged utterances when there are any)."""

    def cell(s: FileScore) -> str:
        merged = f" (merged {s.merged})" if s.merged else ""
        return f"{s.utterances - s.found} · {s.false_segments}{merged} · {s.worst_onset_ms:+.0f}"

    by = {(s.engine, s.file): s for s in plain}
    files = list(dict.fromkeys(s.file for s in plain))
    engines = list(dict.fromkeys(s.engine for s in plain))
    head = "| file | " + " | ".join(f"{e} without | {e} with denoise" for e in engines) + " |"
    lines = [head, "|---|" + "---|---|" * len(engines)]
    with_by = {(s.engine, s.file): s for s in cleaned}
    for f in files:
        cells = []
        for e in engines:
            cells += [cell(by[e, f]), cell(with_by[e, f])]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _frames_cost(rate: int, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    step = rate // 50
    chunks = [x[i : i + step] for i in range(0, x.size - step + 1, step)]
    times = np.empty(len(chunks))
    with Denoiser(rate) as d:
        for i, c in enumerate(chunks):
            t0 = time.process_time_ns()
            d.process(c)
            times[i] = time.process_time_ns() - t0
    return times / 1000.0


def _rnnoise_cost(x48: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """CPU µs of RNNoise alone per 10 ms frame of ``x48`` (each frame fresh input: RNNoise
    skips its network on digital silence, so a frame fed back in would flatter it)."""
    import ctypes

    lib = rnnoise_library()
    state = lib.rnnoise_create(None)
    frame = np.zeros(480, np.float32)
    ptr = frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    n = x48.size // 480
    times = np.empty(n)
    for i in range(n):
        frame[:] = x48[i * 480 : (i + 1) * 480]
        t0 = time.process_time_ns()
        lib.rnnoise_process_frame(state, ptr, ptr)
        times[i] = time.process_time_ns() - t0
    lib.rnnoise_destroy(state)
    return times / 1000.0


def cost(folder: Path, quick: bool = False) -> list[dict[str, Any]]:
    """µs of CPU per 20 ms frame through the denoiser at 8, 16 and 48 kHz, and per 10 ms frame
    of RNNoise alone; the delay each adds."""
    import soxr

    x16, _ = read_wav(folder / "dev-02-pink-10db.wav")
    x16 = x16[: 16000 * (5 if quick else 30)]
    rows = []
    x48 = np.rint(soxr.resample(x16, 16000, 48000)).astype(np.int16)
    for rate in (8000, 16000, 48000):
        x = {16000: x16, 48000: x48}.get(rate)
        if x is None:
            x = np.rint(soxr.resample(x16, 16000, rate)).astype(np.int16)
        t = min((_frames_cost(rate, x) for _ in range(REPEATS)), key=np.mean)
        with Denoiser(rate) as d:
            delay_ms = d.delay_s * 1000
        rows.append(
            {
                "what": f"denoise, 20 ms frame at {rate // 1000} kHz",
                "mean_us": float(t.mean()),
                "p99_us": float(np.percentile(t, 99)),
                "delay_ms": delay_ms,
            }
        )
    t = min((_rnnoise_cost(x48) for _ in range(REPEATS)), key=np.mean)
    rows.append(
        {
            "what": "RNNoise alone, one 10 ms frame at 48 kHz",
            "mean_us": float(t.mean()),
            "p99_us": float(np.percentile(t, 99)),
            "delay_ms": 20.0,
        }
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s of audio for the cost table")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    try:
        folder = ensure() / "vad"
        rnnoise_library()
    except (SpeechSetUnavailable, Exception) as exc:
        print(f"denoise_quality: {exc}", file=sys.stderr)
        return 2
    plain, cleaned = quality(scenes(folder))
    print("## VAD without and with denoise (missed · false segments · worst onset ms)\n")
    print(compare_table(plain, cleaned))
    rows = cost(folder, args.quick)
    print("\n## Cost and delay\n")
    print("| what | CPU µs mean | CPU µs p99 | delay (ms) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['mean_us']:.0f} | {r['p99_us']:.0f} | {r['delay_ms']:.1f} |")
    info = machine()
    print(
        f"\n{info['processor']}, {info['cpus']} cores, Python {info['python']}, "
        f"load {info['load_avg_1_5_15']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": info,
            "quality": [
                {
                    "engine": s.engine,
                    "file": s.file,
                    "denoise": denoise,
                    "found": s.found,
                    "utterances": s.utterances,
                    "false_segments": s.false_segments,
                    "merged": s.merged,
                    "onset_errors_ms": list(s.onset_errors_ms),
                }
                for denoise, group in ((False, plain), (True, cleaned))
                for s in group
            ],
            "cost": rows,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
