"""Fixtures shared by the test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.speechset import SpeechSetUnavailable, ensure


@pytest.fixture(scope="session")
def speech_set() -> Path:
    """The project's labelled speech set (``benchmarks/speechset.py``), built on first use into
    ``.cache/speech-set/``; skips with the reason when espeak-ng or sox is missing."""
    try:
        return ensure()
    except SpeechSetUnavailable as exc:
        pytest.skip(str(exc))
