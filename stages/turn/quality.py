"""Scoring the end-of-turn detector on labelled complete and cut-off sentences.

Used by ``tests/stages/turn/test_quality.py`` and ``benchmarks/turn_quality.py`` on the ``turn/``
part of the speech set that ``benchmarks/speechset.py`` synthesises (``labels.json``: per file
``label`` complete or incomplete, ``synth``, ``speech_end`` in seconds).

Method: the model hears each clip as the stage would at the VAD's ``speech_stopped``: the audio
from the start of the file (0.3 s before the speech) to ``hangover_ms`` after the end of the
speech (the VAD reports the stop after that much silence). A turn is judged complete when the
probability reaches ``threshold``.

- *accuracy*: the share of clips judged right;
- *extra latency on complete turns*, from the VAD's stop to the end of the turn: the decision's
  own time when the turn is judged complete, plus ``max_wait`` when it is judged incomplete (the
  held stop passes on after it);
- *cost per decision*: CPU time of one decision (features and inference, one thread).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.vad.quality import read_wav

from .model import SmartTurnModel


@dataclass(frozen=True, slots=True)
class Judgement:
    """The model's answer on one clip."""

    file: str
    synth: str
    complete: bool  # the label
    probability: float
    cpu_ms: float  # CPU time of this decision

    def judged_complete(self, threshold: float) -> bool:
        return self.probability >= threshold


def judge(
    folder: Path, model: SmartTurnModel | None = None, *, hangover_ms: int = 300
) -> list[Judgement]:
    """The model's probability on every labelled clip in ``folder``, in name order."""
    model = model or SmartTurnModel()
    labels: dict[str, Any] = json.loads((folder / "labels.json").read_text())
    out = []
    for name, entry in sorted(labels.items()):
        samples, rate = read_wav(folder / name)
        end = round((float(entry["speech_end"]) + hangover_ms / 1000) * rate)
        audio = samples[:end]
        t0 = time.process_time()
        p = model.probability(audio)
        cpu_ms = (time.process_time() - t0) * 1000
        out.append(
            Judgement(name, str(entry.get("synth", "")), entry["label"] == "complete", p, cpu_ms)
        )
    return out


@dataclass(frozen=True, slots=True)
class TurnScore:
    """Accuracy and latency of one group of clips at one threshold."""

    group: str
    threshold: float
    complete: int  # complete clips
    complete_right: int  # ... judged complete
    incomplete: int
    incomplete_right: int  # cut-off clips judged incomplete (a cut-in avoided)
    extra_latency_ms_mean: float  # on complete turns
    extra_latency_ms_p90: float
    cpu_ms_median: float
    cpu_ms_p99: float

    @property
    def accuracy(self) -> float:
        total = self.complete + self.incomplete
        return (self.complete_right + self.incomplete_right) / total if total else 0.0


def score(
    judgements: Sequence[Judgement], *, threshold: float = 0.5, max_wait_ms: float = 2000.0
) -> TurnScore:
    """Accuracy and extra latency of ``judgements`` (see the module docstring)."""
    group = ", ".join(sorted({j.synth for j in judgements}))
    complete = [j for j in judgements if j.complete]
    cut = [j for j in judgements if not j.complete]
    latency = [j.cpu_ms + (0.0 if j.judged_complete(threshold) else max_wait_ms) for j in complete]
    cpu = [j.cpu_ms for j in judgements]
    return TurnScore(
        group,
        threshold,
        len(complete),
        sum(j.judged_complete(threshold) for j in complete),
        len(cut),
        sum(not j.judged_complete(threshold) for j in cut),
        float(np.mean(latency)) if latency else 0.0,
        float(np.percentile(latency, 90)) if latency else 0.0,
        float(np.median(cpu)) if cpu else 0.0,
        float(np.percentile(cpu, 99)) if cpu else 0.0,
    )


def by_synth(
    judgements: Sequence[Judgement], *, threshold: float = 0.5, max_wait_ms: float = 2000.0
) -> list[TurnScore]:
    """One score per synthesiser, then one for all clips."""
    groups = sorted({j.synth for j in judgements})
    scores = [
        score([j for j in judgements if j.synth == g], threshold=threshold, max_wait_ms=max_wait_ms)
        for g in groups
    ]
    if len(groups) > 1:
        scores.append(score(judgements, threshold=threshold, max_wait_ms=max_wait_ms))
    return scores


def table(scores: Iterable[TurnScore], max_wait_ms: float = 2000.0) -> str:
    """A Markdown table of the scores."""
    lines = [
        "| voices | threshold | accuracy | complete judged complete | cut-off judged incomplete "
        f"| extra latency on complete turns, mean / p90 (ms; max wait {max_wait_ms:.0f}) "
        "| CPU per decision, median / p99 (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in scores:
        lines.append(
            f"| {s.group} | {s.threshold:g} | {100 * s.accuracy:.0f} % "
            f"| {s.complete_right}/{s.complete} | {s.incomplete_right}/{s.incomplete} "
            f"| {s.extra_latency_ms_mean:.0f} / {s.extra_latency_ms_p90:.0f} "
            f"| {s.cpu_ms_median:.1f} / {s.cpu_ms_p99:.1f} |"
        )
    return "\n".join(lines)
