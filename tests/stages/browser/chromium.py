"""Headless Chromium from the system (Debian's ``chromium``) driven by Playwright, with a WAV
file as the microphone. No browser is downloaded: Playwright starts ``executable_path``."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import pytest
import soundfile
import soxr

ROOT = Path(__file__).resolve().parents[3]
CALLER = ROOT / "examples" / "caller_8k_ulaw.wav"
SCREENSHOTS = ROOT / "out" / "screenshots"

#: Flags for a browser with no network of its own and a fake microphone and speaker.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]


def chromium_path() -> str:
    """The system Chromium, or skip the test saying how to get it."""
    for name in (os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser"):
        path = shutil.which(name) if name else None
        if path:
            return path
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")


def require_playwright() -> None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")


def caller_wav(path: Path, rate: int = 48000) -> Path:
    """The example caller (8 kHz μ-law) as a pcm16 WAV at ``rate``, the form Chromium's fake
    microphone reads; it loops the file for as long as the page listens."""
    pcm, in_rate = soundfile.read(str(CALLER), dtype="int16")
    up = soxr.resample(pcm, in_rate, rate).clip(-32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(up.tobytes())
    return path


def browser_flags(wav: Path) -> list[str]:
    return [*FLAGS, f"--use-file-for-fake-audio-capture={wav}"]
