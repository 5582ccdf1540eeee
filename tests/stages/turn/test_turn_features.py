"""The log-mel features against the reference computation of the model's authors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.turn.features import SAMPLES, fit_to_window, log_mel, mel_filters

FIXTURES = Path(__file__).with_name("fixtures")


def reference_signal() -> np.ndarray:
    """1.5 s of a rising chirp in noise after 6.5 s of silence (the fixture's input)."""
    rng = np.random.default_rng(7)
    t = np.arange(24000) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.05 * rng.normal(size=t.size)
    return np.concatenate([np.zeros(SAMPLES - t.size), x]).astype(np.float32)


def test_features_equal_the_reference_computation() -> None:
    # whisper_log_mel_reference.npz: compute_whisper_log_mel_features(reference_signal()) from
    # pipecat-ai 1.14.0 (pipecat/audio/turn/smart_turn/_whisper_features.py), the feature code
    # the model's authors ship with it, itself checked there against transformers'
    # WhisperFeatureExtractor.
    expected = np.load(FIXTURES / "whisper_log_mel_reference.npz")["features"]
    ours = log_mel(reference_signal())
    assert ours.shape == expected.shape == (80, 800) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


def test_features_equal_pipecats_on_random_audio_when_it_is_installed() -> None:
    ref = pytest.importorskip("pipecat.audio.turn.smart_turn._whisper_features")
    rng = np.random.default_rng(3)
    for x in (rng.normal(0, 0.2, SAMPLES), fit_to_window(rng.normal(0, 0.01, 5000))):
        x = x.astype(np.float32)
        np.testing.assert_allclose(
            log_mel(x), ref.compute_whisper_log_mel_features(x), rtol=0, atol=1e-5
        )


def test_features_equal_transformers_whisper_feature_extractor() -> None:
    """The reference itself: ``transformers``' WhisperFeatureExtractor as the model's authors
    call it (``chunk_length=8``, ``padding="max_length"``, ``do_normalize=True``) on the window
    as they build it (the last 8 s, zeros in front), on speech-like, quiet and tonal input."""
    transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency")
    extractor = transformers.WhisperFeatureExtractor(chunk_length=8)
    rng = np.random.default_rng(11)
    t = np.arange(30000) / 16000
    inputs = (
        rng.normal(0, 0.2, SAMPLES),
        fit_to_window(rng.normal(0, 0.01, 5000)),
        fit_to_window(0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))),
        reference_signal(),
    )
    for x in inputs:
        x = x.astype(np.float32)
        expected = extractor(
            x,
            sampling_rate=16000,
            return_tensors="np",
            padding="max_length",
            max_length=SAMPLES,
            truncation=True,
            do_normalize=True,
        ).input_features[0]
        np.testing.assert_allclose(log_mel(x), expected, rtol=0, atol=1e-5)


def test_filter_bank_has_equal_area_triangles_on_the_slaney_scale() -> None:
    bank = mel_filters()
    assert bank.shape == (80, 201)
    assert np.all(bank >= 0)
    peaks = bank.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the band
    # below 1 kHz the Slaney scale is linear: equal spacing, equal height there
    heights = bank.max(axis=1)
    assert heights[2] == pytest.approx(heights[3], rel=0.3)


def test_a_tone_lights_the_band_of_its_frequency() -> None:
    t = np.arange(SAMPLES) / 16000
    for hz in (300.0, 2000.0):
        feats = log_mel((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        band = int(feats[:, 400].argmax())
        bins = np.linspace(0, 8000, 201)
        assert abs(bins[mel_filters()[band].argmax()] - hz) <= 80, (hz, band)


def test_fit_to_window_keeps_the_end_and_pads_in_front() -> None:
    x = np.arange(10, dtype=np.float32)
    y = fit_to_window(x)
    assert y.size == SAMPLES and np.all(y[:-10] == 0) and np.all(y[-10:] == x)
    long = np.arange(SAMPLES + 5, dtype=np.float32)
    assert np.all(fit_to_window(long) == long[5:])


def test_log_mel_refuses_a_window_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="128000 samples"):
        log_mel(np.zeros(16000, np.float32))
