"""End-of-turn benchmark: Smart Turn v3 on the speech set's complete and cut-off sentences.

Run from the repository root::

    .venv/bin/python benchmarks/turn_quality.py              # the tables, Markdown
    .venv/bin/python benchmarks/turn_quality.py --json out/turn.json

Accuracy and extra latency on complete turns at a few thresholds (``max_wait_ms`` 2000, the
stage's default), and the CPU time of one decision split into features and inference (one
thread, the quietest of three runs over every clip, as the machine may be shared). Method:
``stages/turn/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cli import machine  # noqa: E402
from benchmarks.speechset import SpeechSetUnavailable, ensure, ensure_variants  # noqa: E402
from stages.turn import SmartTurnModel  # noqa: E402
from stages.turn.features import fit_to_window, log_mel  # noqa: E402
from stages.turn.quality import by_synth, judge, score, table  # noqa: E402
from stages.vad.quality import read_wav  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.7)
REPEATS = 3


def cost(folder: Path) -> dict[str, float]:
    """CPU ms per decision: features, inference, and both (median and p99 over every clip)."""
    model = SmartTurnModel()
    clips = [read_wav(p)[0] for p in sorted(folder.glob("*.wav"))]
    best: dict[str, float] | None = None
    for _ in range(REPEATS):
        feats, infer = [], []
        for x in clips:
            t0 = time.process_time()
            f = log_mel(fit_to_window(x.astype(np.float32) / 32768))[None]
            t1 = time.process_time()
            model._session.run(None, {"input_features": f})
            t2 = time.process_time()
            feats.append((t1 - t0) * 1000)
            infer.append((t2 - t1) * 1000)
        total = np.add(feats, infer)
        run = {
            "features_ms_median": float(np.median(feats)),
            "inference_ms_median": float(np.median(infer)),
            "decision_ms_median": float(np.median(total)),
            "decision_ms_p99": float(np.percentile(total, 99)),
        }
        if best is None or run["decision_ms_median"] < best["decision_ms_median"]:
            best = run
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument(
        "--hangover-ms",
        type=int,
        default=300,
        help="silence after the speech the model hears (the VAD's hangover_ms; default 300)",
    )
    args = parser.parse_args(argv)
    try:
        folder = ensure() / "turn"
        variants = ensure_variants()
    except SpeechSetUnavailable as exc:
        print(f"turn_quality: {exc}", file=sys.stderr)
        return 2
    hangover = args.hangover_ms
    judgements = judge(folder, hangover_ms=hangover) + judge(variants, hangover_ms=hangover)
    print(f"## Smart Turn v3 on the speech set (turn/ and turn-variants/), {hangover} ms after\n")
    print(table(by_synth(judgements, threshold=0.5)))
    print("\n### by threshold, all clips\n")
    print(table([replace(score(judgements, threshold=t), group="all") for t in THRESHOLDS]))
    print("\n### how often a complete sentence scores above a cut-off one (AUC)\n")
    print("| voices | AUC |\n|---|---|")
    for group in sorted({j.synth for j in judgements}):
        print(f"| {group} | {100 * auc([j for j in judgements if j.synth == group]):.0f} % |")
    print(f"| all | {100 * auc(judgements):.0f} % |")
    c = cost(folder)
    print("\n## CPU per decision (ms, one thread)\n")
    print("| features median | inference median | decision median | decision p99 |")
    print("|---|---|---|---|")
    print(
        f"| {c['features_ms_median']:.1f} | {c['inference_ms_median']:.1f} "
        f"| {c['decision_ms_median']:.1f} | {c['decision_ms_p99']:.1f} |"
    )
    info = machine()
    print(
        f"\n{info['processor']}, {info['cpus']} cores, Python {info['python']}, "
        f"load {info['load_avg_1_5_15']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "machine": info,
            "judgements": [
                {"file": j.file, "synth": j.synth, "complete": j.complete, "p": j.probability}
                for j in judgements
            ],
            "scores": [vars_of(s) for s in by_synth(judgements)],
            "cost": c,
        }
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


def auc(judgements: list[Any]) -> float:
    """The share of (complete, cut-off) pairs of clips where the complete one scores higher."""
    complete = [j.probability for j in judgements if j.complete]
    cut = [j.probability for j in judgements if not j.complete]
    return sum(a > b for a in complete for b in cut) / max(1, len(complete) * len(cut))


def vars_of(score: Any) -> dict[str, Any]:
    return {name: getattr(score, name) for name in score.__slots__}


if __name__ == "__main__":
    raise SystemExit(main())
