"""The labelled speech set: labels exact from the synthesis, noise at the stated SNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.vad.quality import load_labels, read_wav


def test_clean_labels_bound_the_speech_exactly(speech_set: Path) -> None:
    clean = next(f for f in load_labels(speech_set / "vad") if f.snr_db is None)
    x, rate = read_wav(clean.path)
    assert rate == 16000 and len(clean.speech) == 8
    inside = np.zeros(x.size, bool)
    for a, b in clean.speech:
        i, j = round(a * rate), round(b * rate)
        assert abs(int(x[i])) > 0 and abs(int(x[j - 1])) > 0  # speech starts and ends there
        inside[i:j] = True
    assert not np.any(x[~inside])  # digital silence everywhere else


def test_noisy_files_have_their_stated_snr(speech_set: Path) -> None:
    files = {f.noise: f for f in load_labels(speech_set / "vad")}
    assert set(files) == {"none", "white", "pink", "babble-hum"}
    _clean, rate = read_wav(files["none"].path)
    for noise in ("white", "pink", "babble-hum"):
        item = files[noise]
        x, _ = read_wav(item.path)
        speech = np.concatenate([x[round(a * rate) : round(b * rate)] for a, b in item.speech])
        pauses = np.ones(x.size, bool)
        for a, b in item.speech:
            pauses[round(a * rate) : round(b * rate)] = False
        noise_power = float(np.mean(x[pauses].astype(np.float64) ** 2))
        speech_power = float(np.mean(speech.astype(np.float64) ** 2)) - noise_power
        assert item.snr_db is not None
        assert abs(10 * np.log10(speech_power / noise_power) - item.snr_db) < 1.5, noise


def test_turn_pairs_are_labelled_complete_and_incomplete(speech_set: Path) -> None:
    labels = json.loads((speech_set / "turn" / "labels.json").read_text())
    complete = [k for k, v in labels.items() if v["label"] == "complete"]
    cut = [k for k, v in labels.items() if v["label"] == "incomplete"]
    assert len(complete) == len(cut) >= 20
    for name, entry in labels.items():
        x, rate = read_wav(speech_set / "turn" / name)
        end = round(entry["speech_end"] * rate)
        assert rate == 16000 and abs(int(x[end - 1])) > 0 and not np.any(x[end:])
    for name in cut:  # a cut sentence is the start of its complete one
        whole = labels[name.replace("-cut", "-complete")]
        assert whole["text"].startswith(labels[name]["text"] + " ")
        assert labels[name]["speech_end"] < whole["speech_end"]
