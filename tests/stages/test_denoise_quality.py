"""VAD with and without the denoiser in front, on the speech set: guards on what was measured
(docs/denoise.md has the whole table; ``pytest -s`` prints this part of it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.vad.quality import FileScore

denoise_quality = pytest.importorskip("benchmarks.denoise_quality")
try:
    denoise_quality.rnnoise_library()
except Exception as exc:
    pytest.skip(f"RNNoise is not installed: {exc}", allow_module_level=True)


@pytest.fixture(scope="module")
def scores(speech_set: Path) -> dict[tuple[str, str, bool], FileScore]:
    scenes = [
        s
        for s in denoise_quality.scenes(speech_set / "vad")
        if s.name
        in ("dev-02-pink-10db.wav", "clean + white 0 dB", "clean + noise bursts in pauses")
    ]
    assert len(scenes) == 3
    plain, cleaned = denoise_quality.quality(scenes)
    print("\n\n" + denoise_quality.compare_table(plain, cleaned))
    return {(s.engine, s.file, False): s for s in plain} | {
        (s.engine, s.file, True): s for s in cleaned
    }


def test_denoise_removes_the_false_segments_of_noise_bursts(
    scores: dict[tuple[str, str, bool], FileScore],
) -> None:
    bursts = "clean + noise bursts in pauses"
    for engine in ("webrtc", "energy"):
        assert scores[engine, bursts, False].false_segments >= 7  # without: it fires in pauses
        with_ = scores[engine, bursts, True]
        assert with_.false_segments == 0 and with_.found == with_.utterances


def test_denoise_rescues_webrtc_and_energy_in_white_noise_at_0_db(
    scores: dict[tuple[str, str, bool], FileScore],
) -> None:
    white = "clean + white 0 dB"
    assert scores["webrtc", white, False].merged == 7
    assert scores["energy", white, False].found <= 3
    for engine in ("webrtc", "energy"):
        s = scores[engine, white, True]
        assert s.meets_target() and s.merged == 0, s


def test_silero_keeps_its_target_with_denoise(
    scores: dict[tuple[str, str, bool], FileScore],
) -> None:
    for (engine, _, denoised), s in scores.items():
        if engine == "silero" and denoised:
            assert s.meets_target() and s.merged == 0, s
