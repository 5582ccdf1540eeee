"""Scoring a VAD against labelled speech: utterances found, false segments, onset error.

Used by ``tests/stages/test_vad_quality.py`` and ``benchmarks/vad_quality.py`` on the labelled
set that ``benchmarks/speechset.py`` synthesises (its ``vad/`` folder; ``labels.json``: per file
the rate and the exact speech segments, in seconds).

Scoring, per file: a detected segment runs from a ``speech_started`` to the next
``speech_stopped``. An utterance is *found* if a detected segment overlaps it; its *onset error*
is the start of the first such segment minus the utterance's start (negative: early). A *false
segment* overlaps no utterance. Two utterances merged into one segment both count as found, the
second with a large negative onset error, and count as *merged*.
"""

from __future__ import annotations

import json
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import UsageError
from pipeline.frames import Audio, Encoding, SpeechStarted, SpeechStopped

from .engines import make_engine
from .gate import VadGate

Segment = tuple[float, float]


@dataclass(frozen=True, slots=True)
class LabelledFile:
    """One file of the labelled set."""

    path: Path
    rate: int
    noise: str
    snr_db: float | None
    speech: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class FileScore:
    """How one engine did on one file."""

    engine: str
    condition: str  # how the audio was fed, e.g. "16k pcm16" or "8k pcmu"
    file: str
    utterances: int
    found: int
    false_segments: int
    onset_errors_ms: tuple[float, ...] = field(default=())
    #: detected segments in all
    segments: int = 0
    #: utterances that ran into the previous one's segment (a missed stop)
    merged: int = 0

    @property
    def worst_onset_ms(self) -> float:
        """The onset error furthest from zero (signed), 0 if nothing was found."""
        return max(self.onset_errors_ms, key=abs, default=0.0)

    @property
    def mean_onset_ms(self) -> float:
        return float(np.mean(self.onset_errors_ms)) if self.onset_errors_ms else 0.0

    def meets_target(self, *, max_false: int = 1, max_onset_ms: float = 250.0) -> bool:
        """Every utterance found, at most ``max_false`` false segments, onsets within bounds."""
        return (
            self.found == self.utterances
            and self.false_segments <= max_false
            and abs(self.worst_onset_ms) <= max_onset_ms
        )


def load_labels(folder: Path) -> list[LabelledFile]:
    """The files listed in ``folder/labels.json``, in name order."""
    raw: dict[str, Any] = json.loads((folder / "labels.json").read_text())
    return [
        LabelledFile(
            path=folder / name,
            rate=int(entry["rate"]),
            noise=str(entry.get("noise", "")),
            snr_db=entry.get("snr_db"),
            speech=tuple((float(a), float(b)) for a, b in entry["speech"]),
        )
        for name, entry in sorted(raw.items())
    ]


def frames_of(data: bytes, encoding: Encoding, rate: int, frame_ms: int = 20) -> Iterable[Audio]:
    """Cut encoded audio into frames of ``frame_ms``, as a source would."""
    width = 2 if encoding == "pcm16" else 1
    step = rate * frame_ms // 1000 * width
    for i in range(0, len(data), step):
        yield Audio(data[i : i + step], encoding, rate, 1, i / width / rate)


def detect(frames: Iterable[Audio], engine: str, rate: int, **gate_params: Any) -> list[Segment]:
    """Speech segments (seconds) found by a gate in annotate mode over ``frames``."""
    gate = VadGate(make_engine(engine, rate), mode="annotate", **gate_params)
    segments: list[Segment] = []
    start: float | None = None
    for frame in frames:
        for out in gate.push(frame):
            if isinstance(out, SpeechStarted):
                start = out.pts
            elif isinstance(out, SpeechStopped) and start is not None and out.pts is not None:
                segments.append((start, out.pts))
                start = None
    for out in gate.finish():
        if isinstance(out, SpeechStopped) and start is not None and out.pts is not None:
            segments.append((start, out.pts))
    return segments


def score(
    detected: Sequence[Segment],
    truth: Sequence[Segment],
    *,
    engine: str = "",
    condition: str = "",
    file: str = "",
) -> FileScore:
    """Compare detected segments with the labelled ones (see the module docstring)."""

    def overlaps(a: Segment, b: Segment) -> bool:
        return a[0] < b[1] and b[0] < a[1]

    found = 0
    errors: list[float] = []
    for utt in truth:
        hits = [seg for seg in detected if overlaps(seg, utt)]
        if hits:
            found += 1
            errors.append((hits[0][0] - utt[0]) * 1000.0)
    per_segment = [sum(1 for utt in truth if overlaps(seg, utt)) for seg in detected]
    false = per_segment.count(0)
    merged = sum(n - 1 for n in per_segment if n > 1)
    return FileScore(
        engine, condition, file, len(truth), found, false, tuple(errors), len(detected), merged
    )


#: how the labelled 16 kHz audio is fed to the engines: name -> (rate, encoding)
CONDITIONS: dict[str, tuple[int, Encoding]] = {
    "16k pcm16": (16000, "pcm16"),
    "8k pcmu": (8000, "pcmu"),
}


def read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """Mono 16-bit PCM samples and the rate of a labelled WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise UsageError(f"{path}: expected mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16), w.getframerate()


def prepare(
    samples: npt.NDArray[np.int16], rate: int, condition: str
) -> tuple[bytes, int, Encoding]:
    """The audio of one condition: resampled (soxr, one shot) and encoded as a phone would."""
    target, encoding = CONDITIONS[condition]
    if target != rate:
        import soxr

        samples = np.clip(np.rint(soxr.resample(samples, rate, target)), -32768, 32767).astype(
            np.int16
        )
    data = samples.astype("<i2").tobytes()
    if encoding != "pcm16":
        from stages.g711 import encode

        data = encode(data, encoding)
    return data, target, encoding


def evaluate(
    folder: Path,
    engines: Sequence[str] = ("silero", "webrtc", "energy"),
    conditions: Sequence[str] = ("16k pcm16",),
    **gate_params: Any,
) -> list[FileScore]:
    """Score every engine on every labelled file under every condition."""
    scenes = []
    for item in load_labels(folder):
        samples, rate = read_wav(item.path)
        scenes.append(Scene(item.path.name, samples, rate, item.speech))
    return evaluate_scenes(scenes, engines, conditions, **gate_params)


@dataclass(frozen=True)
class Scene:
    """Labelled audio held in memory (a dev-set file, or one made from it)."""

    name: str
    samples: npt.NDArray[np.int16]
    rate: int
    speech: tuple[Segment, ...]


def evaluate_scenes(
    scenes: Iterable[Scene],
    engines: Sequence[str] = ("silero", "webrtc", "energy"),
    conditions: Sequence[str] = ("16k pcm16",),
    **gate_params: Any,
) -> list[FileScore]:
    """Score every engine on every scene under every condition."""
    scores: list[FileScore] = []
    for scene in scenes:
        for condition in conditions:
            data, rate, encoding = prepare(scene.samples, scene.rate, condition)
            for engine in engines:
                segments = detect(frames_of(data, encoding, rate), engine, rate, **gate_params)
                scores.append(
                    score(
                        segments, scene.speech, engine=engine, condition=condition, file=scene.name
                    )
                )
    return scores


def harder_scenes(folder: Path) -> list[Scene]:
    """Harder than the labelled set, made from its clean file: white noise at 5 and 0 dB SNR
    (speech power over noise power), and non-speech bursts (250 ms of pink-ish noise, as loud
    as the speech) in every pause, where any detection is a false segment."""
    clean = next(item for item in load_labels(folder) if item.snr_db is None)
    x, rate = read_wav(clean.path)
    speech = np.concatenate([x[int(a * rate) : int(b * rate)] for a, b in clean.speech])
    power = float(np.mean(speech.astype(np.float64) ** 2))
    rng = np.random.default_rng(2024)
    scenes = []
    for snr in (5, 0):
        noise = rng.normal(0, np.sqrt(power / 10 ** (snr / 10)), len(x))
        mixed = np.clip(np.rint(x + noise), -32768, 32767).astype(np.int16)
        scenes.append(Scene(f"clean + white {snr} dB", mixed, rate, clean.speech))
    bursty = x.astype(np.float64)
    n = int(0.25 * rate)
    pauses = [(0.0, clean.speech[0][0])] + [
        (a[1], b[0]) for a, b in zip(clean.speech, clean.speech[1:], strict=False)
    ]
    for a, b in pauses:
        burst = np.cumsum(rng.normal(0, 1, n))  # brown noise: low-frequency heavy
        burst -= np.linspace(burst[0], burst[-1], n)
        burst *= np.sqrt(power / np.mean(burst**2)) * np.hanning(n)
        at = int((a + b) / 2 * rate) - n // 2
        bursty[at : at + n] += burst
    mixed = np.clip(np.rint(bursty), -32768, 32767).astype(np.int16)
    scenes.append(Scene("clean + noise bursts in pauses", mixed, rate, clean.speech))
    return scenes


def table(scores: Iterable[FileScore]) -> str:
    """A Markdown table of the scores, one row per engine, condition and file."""
    lines = [
        "| engine | audio | file | utterances found | false segments | merged "
        "| onset error mean (ms) | worst onset error (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(scores, key=lambda s: (s.engine != "silero", s.engine, s.condition, s.file)):
        lines.append(
            f"| {s.engine} | {s.condition} | {s.file} | {s.found}/{s.utterances} "
            f"| {s.false_segments} | {s.merged} "
            f"| {s.mean_onset_ms:+.0f} | {s.worst_onset_ms:+.0f} |"
        )
    return "\n".join(lines)
