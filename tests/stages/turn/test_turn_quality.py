"""The end-of-turn detector on the speech set's complete and cut-off sentences: the table of
docs/turn.md (``pytest -s`` shows it), and guards on what was measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.turn.quality import Judgement, by_synth, judge, score, table


@pytest.fixture(scope="module")
def judgements(speech_set: Path) -> list[Judgement]:
    result = judge(speech_set / "turn")
    print("\n\nSmart Turn v3 on the speech set (see docs/turn.md)\n")
    print(table(by_synth(result)))
    return result


def test_every_clip_is_judged_once(judgements: list[Judgement]) -> None:
    assert len(judgements) in (48, 96)  # espeak-ng, and flite when it is installed
    assert len({j.file for j in judgements}) == len(judgements)
    assert all(0.0 <= j.probability <= 1.0 and j.cpu_ms > 0 for j in judgements)


def test_on_flites_voices_complete_sentences_score_above_cut_ones(
    judgements: list[Judgement],
) -> None:
    # Measured: accuracy 60 % (18/24 complete, 11/24 cut-off), and a complete sentence scores
    # above a cut-off one in 64 % of the pairs (AUC); espeak-ng's voices sit at chance (52 %).
    flite = [j for j in judgements if j.synth == "flite"]
    if not flite:
        pytest.skip("flite is not installed (apt-get install flite)")
    complete = [j.probability for j in flite if j.complete]
    cut = [j.probability for j in flite if not j.complete]
    auc = sum(a > b for a in complete for b in cut) / (len(complete) * len(cut))
    assert auc >= 0.6
    assert score(flite).accuracy >= 0.55


def test_latency_on_complete_turns_is_the_decision_or_the_maximum_wait() -> None:
    right = Judgement("a", "x", True, 0.9, 10.0)
    wrong = Judgement("b", "x", True, 0.1, 20.0)
    cut = Judgement("c", "x", False, 0.1, 30.0)
    s = score([right, wrong, cut], threshold=0.5, max_wait_ms=1000)
    assert (s.complete, s.complete_right, s.incomplete, s.incomplete_right) == (2, 1, 1, 1)
    assert s.extra_latency_ms_mean == pytest.approx((10 + 1020) / 2)
    assert s.accuracy == pytest.approx(2 / 3)
    assert s.cpu_ms_median == 20.0
