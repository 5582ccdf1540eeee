"""In-band DTMF: key presses as tones in the call's own audio, and a detector for them.

A media stream carries audio only, but a key press *is* audio: two sine tones at once, one from
the low group (the keypad's row) and one from the high group (its column), ITU-T Q.23:

==========  ======  ======  ======  ======
 Hz          1209    1336    1477    1633
==========  ======  ======  ======  ======
 697         1       2       3       A
 770         4       5       6       B
 852         7       8       9       C
 941         \\*      0       #       D
==========  ======  ======  ======  ======

:func:`tones` renders digits as 70 ms of tone and 70 ms of silence each (Q.24 asks for at least
40 ms of each), at -7 dBm0 for the low tone and -5 dBm0 for the high one (Q.24's sending levels
leave -6 to -8 and -4 to -6 dBm0, the high group 2 dB above the low, "twist", since lines
attenuate high frequencies more), in the stream's own format (μ-law, A-law or linear PCM at its
rate); ``w`` is half a second of silence, as in Twilio's and Telnyx's digit strings.
``send_dtmf`` plays them into the outgoing media stream, so the stream (and the conversation)
stays up, which a REST redirect cannot do.

:func:`detect` reads digits back from audio with the Goertzel algorithm (the power at each of
the eight frequencies per 10 ms block); tests use it, with ``sox``'s tones as the independent
reference.

Pure code: numpy, no I/O.
"""

from __future__ import annotations

import math
import re

import numpy as np
import numpy.typing as npt

from pipeline.frames import AudioFormat

from ..g711 import decode as g711_decode
from ..g711 import encode as g711_encode

__all__ = [
    "DIGITS_RE",
    "FREQUENCIES",
    "GAP_MS",
    "HIGH_DBM0",
    "LOW_DBM0",
    "PAUSE_MS",
    "TONE_MS",
    "component_levels",
    "dbm0_peak",
    "detect",
    "tones",
]

LOW = (697, 770, 852, 941)
HIGH = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")
#: digit -> (low Hz, high Hz)
FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (LOW[r], HIGH[c]) for r, row in enumerate(KEYS) for c, key in enumerate(row)
}
TONE_MS = 70
GAP_MS = 70
PAUSE_MS = 500
LOW_DBM0 = -7.0
HIGH_DBM0 = -5.0
#: what send_dtmf accepts: keys, and w for a half-second pause
DIGITS_RE = re.compile(r"^[0-9A-D*#w]{1,64}$")
#: a full-scale sine in G.711 is +3.17 dBm0 (G.711's μ-law table; A-law's is +3.14)
FULL_SCALE_DBM0 = 3.17


def dbm0_peak(level_dbm0: float) -> float:
    """The peak amplitude (int16 scale) of a sine at ``level_dbm0``."""
    return 32767.0 * 10 ** ((level_dbm0 - FULL_SCALE_DBM0) / 20)


def _pcm(digits: str, rate: int, tone_ms: int, gap_ms: int) -> npt.NDArray[np.int16]:
    tone_n = rate * tone_ms // 1000
    gap = np.zeros(rate * gap_ms // 1000)
    pause = np.zeros(rate * PAUSE_MS // 1000)
    t = np.arange(tone_n) / rate
    low_a, high_a = dbm0_peak(LOW_DBM0), dbm0_peak(HIGH_DBM0)
    parts: list[npt.NDArray[np.float64]] = []
    for d in digits:
        if d == "w":
            parts.append(pause)
            continue
        lo, hi = FREQUENCIES[d]
        parts.append(low_a * np.sin(2 * math.pi * lo * t) + high_a * np.sin(2 * math.pi * hi * t))
        parts.append(gap)
    out = np.concatenate(parts) if parts else np.zeros(0)
    return np.round(out).astype("<i2")


def tones(digits: str, fmt: AudioFormat, *, tone_ms: int = TONE_MS, gap_ms: int = GAP_MS) -> bytes:
    """``digits`` (0-9, A-D, *, #; w = 500 ms pause) as DTMF audio in ``fmt`` (pcmu, pcma or
    little-endian pcm16 at its rate). ValueError for a character that is not a key."""
    if not DIGITS_RE.match(digits):
        raise ValueError(f"digits {digits!r}: use 0-9, A-D, *, # and w (a half-second pause)")
    if tone_ms < 40 or gap_ms < 40:
        raise ValueError(f"tone {tone_ms} ms, gap {gap_ms} ms: Q.24 needs at least 40 ms each")
    pcm = _pcm(digits, fmt.rate, tone_ms, gap_ms).tobytes()
    if fmt.encoding in ("pcmu", "pcma"):
        return g711_encode(pcm, fmt.encoding)
    return pcm


def _powers(x: npt.NDArray[np.float64], freqs: tuple[int, ...], rate: int) -> list[float]:
    """The power of ``x`` at each frequency: the single DFT bin the Goertzel algorithm
    computes, |sum x[n] e^(-i 2 pi f n / rate)|^2, for several frequencies at once."""
    n = np.arange(len(x))
    basis = np.exp(-2j * math.pi * np.outer(freqs, n) / rate)
    return [float(abs(v) ** 2) for v in basis @ x]


def component_levels(pcm: bytes, rate: int, digit: str) -> tuple[float, float]:
    """The peak amplitudes of ``digit``'s two tones in ``pcm`` (int16, one whole tone, as
    rendered by :func:`tones`): for checking the levels against Q.24."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = len(x)
    lo, hi = (2 * math.sqrt(p) / n for p in _powers(x, FREQUENCIES[digit], rate))
    return lo, hi


def detect(audio: bytes, fmt: AudioFormat) -> str:
    """The DTMF digits in ``audio`` (in ``fmt``). Blocks of 205 samples at 8 kHz (25.6 ms, the
    classic detector's: enough to tell 697 Hz from 770 Hz); a digit is counted when its two
    tones dominate two blocks running, and again only after something else."""
    pcm = g711_decode(audio, fmt.encoding) if fmt.encoding in ("pcmu", "pcma") else audio
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    rate = fmt.rate
    n = 205 * rate // 8000
    out: list[str] = []
    current, run = "", 0
    for start in range(0, len(x) - n + 1, n):
        block = x[start : start + n]
        energy = float(np.dot(block, block))
        key = ""
        if energy > n * 100.0**2:  # below about -47 dBm0: silence
            lows = _powers(block, LOW, rate)
            highs = _powers(block, HIGH, rate)
            r, c = int(np.argmax(lows)), int(np.argmax(highs))
            # one tone per group well above the others, and the two carry most of the energy
            if (
                sorted(lows)[-2] * 8 < lows[r]
                and sorted(highs)[-2] * 8 < highs[c]
                and (lows[r] + highs[c]) * 2 / n > 0.5 * energy
            ):
                key = KEYS[r][c]
        run = run + 1 if key and key == current else (1 if key else 0)
        current = key
        if key and run == 2:
            out.append(key)
    return "".join(out)
