"""Fixtures shared by the test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from hypothesis import settings

from benchmarks.speechset import SpeechSetUnavailable, ensure

# Property tests assert on values, never on time: no per-example deadline (a loaded machine
# would fail them for being slow). A test's own @settings still sets its example count.
settings.register_profile("pipeline", deadline=None)
settings.load_profile("pipeline")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``pipeline.cli.main()`` points structlog at the calling test's captured stderr, which is
    closed once that test ends: put the old set-up back after every test."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture(scope="session")
def speech_set() -> Path:
    """The project's labelled speech set (``benchmarks/speechset.py``), built on first use into
    ``.cache/speech-set/``; skips with the reason when espeak-ng or sox is missing."""
    try:
        return ensure()
    except SpeechSetUnavailable as exc:
        pytest.skip(str(exc))
