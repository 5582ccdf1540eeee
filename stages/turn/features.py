"""Whisper-style log-mel features, the input of the Smart Turn v3 model, in numpy.

The model was trained on the features of OpenAI Whisper's front end at 16 kHz: 8 s of audio,
25 ms Hann windows every 10 ms, 80 mel bands (Slaney scale and area norm) from 0 to 8 kHz, the
log10 power clamped to 80 dB below its peak and scaled to about -1..1. This module computes them
from the definition:

1. the waveform is scaled to zero mean and unit variance (over the whole 8 s, silence included);
2. it is padded by half a window on each side by reflection, cut into 400-sample frames every
   160 samples (801 frames), each multiplied by a periodic Hann window; the power spectrum of a
   frame is ``|rfft|²`` (201 bins, 0..8000 Hz in 40 Hz steps);
3. an 80 × 201 matrix of triangular filters maps it to mel bands; the last frame is dropped
   (800 remain);
4. ``log10(max(power, 1e-10))``, floored at its maximum − 8, then ``(x + 4) / 4``.

Checked against the reference computation of the model's authors (see
``tests/stages/turn/test_features.py``): equal to float32 precision.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from pipeline.errors import UsageError

RATE = 16000
SECONDS = 8
SAMPLES = RATE * SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80
FRAMES = SAMPLES // HOP  # 800 after the last frame is dropped


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above it, where
    27 mels span a factor of 6.4."""
    linear = hz * 3.0 / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz < 1000.0, linear, log)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * 200.0 / 3.0
    log = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel < 15.0, linear, log)


@functools.cache
def mel_filters() -> npt.NDArray[np.float64]:
    """The ``(80, 201)`` filter bank: filter ``m`` rises from edge ``m`` to edge ``m+1`` and falls
    to edge ``m+2`` (82 edges evenly spaced in mels over 0..8 kHz), scaled by
    ``2 / (upper - lower)`` so every filter has the same area."""
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array(RATE / 2.0))), N_MELS + 2))
    bins = np.linspace(0.0, RATE / 2.0, N_FFT // 2 + 1)
    bank = np.zeros((N_MELS, bins.size))
    for m in range(N_MELS):
        lower, centre, upper = edges[m], edges[m + 1], edges[m + 2]
        rising = (bins - lower) / (centre - lower)
        falling = (upper - bins) / (upper - centre)
        bank[m] = np.clip(np.minimum(rising, falling), 0.0, None) * (2.0 / (upper - lower))
    return bank


@functools.cache
def _window() -> npt.NDArray[np.float64]:
    n = np.arange(N_FFT)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann


def fit_to_window(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The last 8 s of ``samples``, or all of them after leading zeros (the model hears the end
    of the turn at the end of its window)."""
    if samples.size >= SAMPLES:
        return samples[-SAMPLES:]
    return np.concatenate((np.zeros(SAMPLES - samples.size, np.float32), samples))


def log_mel(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Features ``(80, 800)`` of exactly 8 s of 16 kHz audio (floats, full scale ±1)."""
    if audio.shape != (SAMPLES,):
        raise UsageError(f"log_mel needs {SAMPLES} samples (8 s at 16 kHz), got {audio.shape}")
    x = audio.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))
    padded = np.pad(x.astype(np.float64), N_FFT // 2, mode="reflect")
    starts = np.arange(FRAMES + 1) * HOP
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    power = spectrum.real**2 + spectrum.imag**2  # (801, 201)
    mel = mel_filters() @ power[:FRAMES].T  # (80, 800)
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    out: npt.NDArray[np.float32] = ((logs + 4.0) / 4.0).astype(np.float32)
    return out
