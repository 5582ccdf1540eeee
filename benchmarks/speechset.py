"""The project's labelled speech set, synthesised with espeak-ng and sox, labels exact.

Two parts, each a folder with WAV files (16 kHz, mono, pcm16) and a ``labels.json``:

- ``vad/``: four files of 30-40 s, eight utterances each, for the VAD quality tests and the
  denoiser's measurements: ``dev-00-none-clean``, ``dev-01-white-20db``, ``dev-02-pink-10db``
  and ``dev-03-babble-hum-10db`` (sixteen talkers and 50 Hz mains hum with its harmonics). Labels
  per file: ``rate``, ``noise``, ``snr_db`` and ``speech``, the ``[start, end]`` seconds of every
  utterance. The harder scenes (white noise at 5 and 0 dB, noise bursts in the pauses) are made
  from the clean file by ``stages.vad.quality.harder_scenes``.
- ``turn/``: for the end-of-turn detector, pairs made from one sentence: ``turn-NN-complete`` (the
  whole sentence) and ``turn-NN-cut`` (the same talker stopping mid-sentence, where a caller
  pauses to think), spoken by espeak-ng; and the same 24 pairs spoken by flite
  (``flite-NN-...``, four CMU voices) when flite is installed. The cut is synthesised with an
  SSML break in the sentence and cut where the break begins, so its prosody is that of a
  sentence that goes on. Labels per file: ``label`` (``complete`` or ``incomplete``), ``synth``,
  ``text``, ``speech_start`` and ``speech_end`` (seconds).

- ``turn-variants/`` (``ensure_variants()``, for the benchmark only): the 24 sentences again by
  espeak-ng at other speaking rates and pitches and with other voices (``turn-prosody-NN-...``),
  and every espeak-ng and flite pair, these included, through a telephone line (``...-phone-``):
  sox band-limits them to 300-3400 Hz through 8 kHz and back, and seeded white noise 15-25 dB
  under the speech covers the whole clip.

The labels come from the synthesis, not from listening: every utterance is synthesised on its
own, its first and last non-silent samples are its bounds, and it is placed at a known offset.
Noise comes from a seeded generator and sox runs without dither, so given builds of espeak-ng,
flite and sox give the same bytes.

Build it (about ten seconds)::

    python -m benchmarks.speechset OUT_DIR

or from code: ``ensure()`` builds it once into ``.cache/speech-set/KEY/`` in the repository and
returns that folder (``KEY`` changes with this file and the espeak-ng, flite and sox versions).
``SpeechSetUnavailable`` says what is missing when espeak-ng or sox is not installed (Debian:
``apt-get install espeak-ng sox``; ``flite`` adds the second voice set).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

RATE = 16000
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "speech-set"
SEED = 20261204

#: eight utterances per VAD file, as a caller might say them to a voice agent
VAD_TEXT: tuple[tuple[str, ...], ...] = (
    (
        "Hello, I am calling about my order from last week.",
        "It was supposed to arrive on Tuesday.",
        "The tracking page has not changed since Monday morning.",
        "Could you tell me where the parcel is now?",
        "My order number is four seven two nine.",
        "I paid for express delivery, by the way.",
        "If it is lost, I would like a refund please.",
        "Thank you, that would be very helpful.",
    ),
    (
        "Good afternoon, I would like to book a table.",
        "We are four people, two adults and two children.",
        "Is there anything free on Saturday evening?",
        "Around seven o'clock would be ideal for us.",
        "One of the children is allergic to peanuts.",
        "Can you seat us near the window?",
        "The booking should be under the name Miller.",
        "Perfect, see you on Saturday then.",
    ),
    (
        "Hi, my internet connection keeps dropping.",
        "It happens several times every evening.",
        "I have already restarted the router twice today.",
        "The lights on the front are blinking orange.",
        "Is there an outage in my area at the moment?",
        "I work from home, so this is quite urgent.",
        "Can you send a technician tomorrow morning?",
        "Alright, I will wait for the text message.",
    ),
    (
        "Yes, I need to change my flight to Berlin.",
        "The current date is the twelfth of March.",
        "I would rather travel two days later.",
        "An aisle seat near the front, if possible.",
        "How much is the fee for the change?",
        "That is more than I expected, to be honest.",
        "Fine, please go ahead and change it anyway.",
        "Could you email me the new ticket?",
    ),
)

#: what the eight background talkers of the babble say (sped up, overlapped, quiet)
BABBLE_TEXT = (
    "The weather has been rather strange this year, with rain in the summer and sun in winter.",
    "We should leave early tomorrow if we want to find a parking space near the market.",
    "Did you see the match last night? The second half was much better than the first.",
    "I think the meeting was moved to Thursday, but nobody told the people downstairs.",
    "She bought a new bicycle and now she rides it to work every single day.",
    "The soup needs more salt, and maybe a little pepper, but otherwise it is fine.",
    "They are building a new library next to the station, it should open in spring.",
    "My brother lives in a small village by the sea, about two hours from here.",
)

#: end-of-turn pairs: the words before the cut, and the rest of the sentence
TURN_TEXT: tuple[tuple[str, str], ...] = (
    ("I would like to book a table for", "four people tonight."),
    ("My account number is", "three eight one five."),
    ("Can you tell me when the", "next train to London leaves?"),
    ("I was wondering if you could", "help me with my bill."),
    ("The problem started after I", "installed the latest update."),
    ("I need to change the delivery address to", "my office in town."),
    ("We are looking for a hotel with", "a swimming pool."),
    ("Could you please send me", "a copy of the invoice?"),
    ("I have been waiting for", "more than an hour."),
    ("The order arrived but the", "box was completely empty."),
    ("Please cancel my subscription because", "I am moving abroad."),
    ("I would like to speak to", "the manager, please."),
    ("My flight was delayed and I", "missed my connection."),
    ("Is it possible to pay with", "a credit card?"),
    ("The heating in my flat has", "stopped working again."),
    ("I am calling to ask about", "the job advertisement."),
    ("Can I bring my dog to", "the restaurant with me?"),
    ("The password reset email never", "reached my inbox."),
    ("We would like two tickets for", "the evening show."),
    ("I think there is a mistake in", "my last statement."),
    ("How long does it take to", "get a new passport?"),
    ("My neighbour said that the", "road will be closed tomorrow."),
    ("I want to know whether the", "museum is open on Mondays."),
    ("Could you move my appointment to", "next Friday afternoon?"),
)

#: espeak-ng voices and speeds (words per minute) the utterances cycle through
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3", "en-us+m7", "en-gb+f4")
SPEEDS = (150, 165, 175, 160, 145, 170)


class SpeechSetUnavailable(RuntimeError):
    """espeak-ng or sox is missing, so the set cannot be built."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One synthesised utterance: its samples (16 kHz) and the bounds of its speech."""

    samples: npt.NDArray[np.float64]
    start: int  # first non-silent sample
    end: int  # one past the last non-silent sample


def tools_missing() -> list[str]:
    """The command-line tools the set needs that are not on PATH."""
    return [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]


def _version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def cache_key() -> str:
    """Changes with this file and with the espeak-ng and sox builds."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for tool in ("espeak-ng", "sox", "flite"):
        digest.update((_version(tool) if shutil.which(tool) else "absent").encode())
    return digest.hexdigest()[:16]


def synthesise(
    text: str, voice: str, speed: int, *, ssml: bool = False, pitch: int | None = None
) -> npt.NDArray[np.int16]:
    """espeak-ng's rendering of ``text`` (``pitch`` 0-99, espeak-ng's default 50), converted by
    sox to 16 kHz mono pcm16."""
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "espeak.wav", Path(tmp) / "16k.wav"
        command = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw)]
        if pitch is not None:
            command += ["-p", str(pitch)]
        if ssml:
            command.append("-m")
        subprocess.run([*command, text], check=True, capture_output=True)
        subprocess.run(
            ["sox", "-D", str(raw), "-r", str(RATE), "-b", "16", "-c", "1", str(out)],
            check=True,
            capture_output=True,
        )
        with wave.open(str(out), "rb") as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)


def _bounds(x: npt.NDArray[Any], floor: float = 8.0) -> tuple[int, int]:
    loud = np.flatnonzero(np.abs(x) > floor)
    if loud.size == 0:
        raise SpeechSetUnavailable("espeak-ng produced silence; check the espeak-ng install")
    return int(loud[0]), int(loud[-1]) + 1


def utterance(text: str, voice: str, speed: int, gain_db: float) -> Utterance:
    """One utterance, trimmed to its speech, at a level ``gain_db`` from a -20 dBFS RMS."""
    x = synthesise(text, voice, speed).astype(np.float64)
    a, b = _bounds(x)
    x = x[a:b]
    rms = float(np.sqrt(np.mean(x**2)))
    x *= 32768 * 10 ** ((-20 + gain_db) / 20) / rms
    return Utterance(x, 0, len(x))


def _pink(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(f), n)
    return pink / np.std(pink)


def _babble_hum(rng: np.random.Generator, n: int) -> npt.NDArray[np.float64]:
    """A crowd: sixteen talkers at once (each babble sentence in two voices), each looping from a
    random start, plus 50 Hz mains hum with decaying harmonics; as much hum power as babble."""
    babble = np.zeros(n)
    for i, text in enumerate(BABBLE_TEXT):
        for voice in (VOICES[i % len(VOICES)], VOICES[(i + 3) % len(VOICES)]):
            talker = synthesise(text, voice, 185).astype(np.float64)
            talker /= np.std(talker)
            start = int(rng.integers(0, talker.size))
            babble += np.resize(np.roll(talker, -start), n)
    babble /= np.std(babble)
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 9))
    hum /= np.std(hum)
    noise = babble + hum
    return noise / np.std(noise)


def vad_scene(
    index: int, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float64], list[tuple[int, int]]]:
    """Eight utterances with pauses of 1-2.5 s, after a 1 s lead-in; the sample bounds of each."""
    parts: list[npt.NDArray[np.float64]] = [np.zeros(int(rng.uniform(0.9, 1.4) * RATE))]
    bounds: list[tuple[int, int]] = []
    at = parts[0].size
    for j, text in enumerate(VAD_TEXT[index]):
        k = (index * 3 + j) % len(VOICES)
        u = utterance(text, VOICES[k], SPEEDS[k], float(rng.uniform(-4, 4)))
        bounds.append((at + u.start, at + u.end))
        parts.append(u.samples)
        pause = np.zeros(int(rng.uniform(1.0, 2.5) * RATE))
        parts.append(pause)
        at += u.samples.size + pause.size
    return np.concatenate(parts), bounds


#: the four VAD files: name, noise, SNR (dB, speech power over noise power)
VAD_FILES: tuple[tuple[str, str, float | None], ...] = (
    ("dev-00-none-clean.wav", "none", None),
    ("dev-01-white-20db.wav", "white", 20.0),
    ("dev-02-pink-10db.wav", "pink", 10.0),
    ("dev-03-babble-hum-10db.wav", "babble-hum", 10.0),
)


def write_wav(path: Path, samples: npt.NDArray[Any]) -> None:
    """Mono 16 kHz pcm16, clipped."""
    data = np.clip(np.rint(samples), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(data.tobytes())


def build_vad(folder: Path) -> None:
    """The four VAD files and their labels."""
    folder.mkdir(parents=True, exist_ok=True)
    labels: dict[str, Any] = {}
    for index, (name, noise, snr) in enumerate(VAD_FILES):
        rng = np.random.default_rng([SEED, index])
        speech, bounds = vad_scene(index, rng)
        mixed = speech
        if snr is not None:
            power = float(np.mean(np.concatenate([speech[a:b] for a, b in bounds]) ** 2))
            if noise == "white":
                shape = rng.normal(0, 1, speech.size)
            elif noise == "pink":
                shape = _pink(rng, speech.size)
            else:
                shape = _babble_hum(rng, speech.size)
            mixed = speech + shape * np.sqrt(power / 10 ** (snr / 10))
        write_wav(folder / name, mixed)
        labels[name] = {
            "rate": RATE,
            "noise": noise,
            "snr_db": snr,
            "speech": [[a / RATE, b / RATE] for a, b in bounds],
            "text": list(VAD_TEXT[index]),
        }
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")


def _cut_at_break(x: npt.NDArray[np.int16], min_s: float = 0.8) -> int:
    """The first sample of the long silence an SSML break leaves in the synthesis."""
    quiet = np.abs(x.astype(np.int32)) <= 8
    run = int(min_s * RATE)
    # the start of the first run of `run` quiet samples after the speech began
    first = int(np.flatnonzero(~quiet)[0])
    window = np.convolve(quiet[first:].astype(np.int32), np.ones(run, np.int32), "valid")
    hit = np.flatnonzero(window == run)
    if hit.size == 0:
        raise SpeechSetUnavailable("espeak-ng ignored the SSML break; it needs -m support")
    return first + int(hit[0])


#: flite's voices for the second synthesiser of the end-of-turn pairs
FLITE_VOICES = ("rms", "slt", "awb", "kal16")


def flite(
    text: str, voice: str, *, ssml: bool = False
) -> tuple[npt.NDArray[np.int16], list[float]]:
    """flite's rendering of ``text`` at 16 kHz (sox), and the end time (s) of every segment whose
    name is ``pau`` (a pause), from flite's own segment timings (``-psdur``)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, raw, out = Path(tmp) / "in.txt", Path(tmp) / "flite.wav", Path(tmp) / "16k.wav"
        src.write_text(text)
        command = ["flite", "-voice", voice, "-psdur", *(["-ssml"] if ssml else [])]
        printed = subprocess.run(
            [*command, "-f", str(src), "-o", str(raw)], check=True, capture_output=True, text=True
        ).stdout.split()
        subprocess.run(
            ["sox", "-D", str(raw), "-r", str(RATE), "-b", "16", "-c", "1", str(out)],
            check=True,
            capture_output=True,
        )
        with wave.open(str(out), "rb") as w:
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
    segments = [(item.rsplit(":", 1)[0], float(item.rsplit(":", 1)[1])) for item in printed]
    # a pause starts where the segment before it ends
    starts = [segments[k - 1][1] for k, (name, _) in enumerate(segments) if name == "pau" and k]
    return x, starts


def _espeak_pair(
    head: str, rest: str, voice: str, speed: int, pitch: int | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """espeak-ng's complete sentence and its cut-off version (cut where an SSML break begins)."""
    whole = synthesise(f"{head} {rest}", voice, speed, pitch=pitch)
    broken = synthesise(
        f'<speak>{head} <break time="1500ms"/> {rest}</speak>', voice, speed, ssml=True, pitch=pitch
    )
    return whole.astype(np.float64), broken[: _cut_at_break(broken)].astype(np.float64)


def _turn_pairs() -> list[tuple[str, str, str, npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """(synthesiser, head, rest, complete audio, cut audio) for every sentence and synthesiser:
    espeak-ng always, flite when it is installed. The cut is synthesised with a break after the
    head and cut where the break begins: with espeak-ng at the first long digital silence, with
    flite at the start of the pause segment it reports."""
    pairs = []
    for i, (head, rest) in enumerate(TURN_TEXT):
        k = i % len(VOICES)
        whole, cut = _espeak_pair(head, rest, VOICES[k], SPEEDS[k])
        pairs.append(("espeak-ng", head, rest, whole, cut))
    if shutil.which("flite") is None:
        return pairs
    for i, (head, rest) in enumerate(TURN_TEXT):
        voice = FLITE_VOICES[i % len(FLITE_VOICES)]
        whole, _ = flite(f"{head} {rest}", voice)
        broken, pauses = flite(
            f'<speak>{head} <break time="1500ms"/> {rest}</speak>', voice, ssml=True
        )
        if len(pauses) < 2:  # the break, then the final pause
            raise SpeechSetUnavailable("flite ignored the SSML break; it needs -ssml support")
        cut = broken[: round(pauses[0] * RATE)]
        pairs.append(("flite", head, rest, whole.astype(np.float64), cut.astype(np.float64)))
    return pairs


#: (synthesiser, head, rest, complete audio, cut audio) of one end-of-turn pair
Pair = tuple[str, str, str, npt.NDArray[np.float64], npt.NDArray[np.float64]]
#: speaking rates (words per minute) and pitches (espeak-ng's 0-99) of the prosody variants
PROSODY = ((115, 30), (195, 70), (135, 85), (185, 20))


def _variant_pairs() -> list[
    tuple[str, str, str, npt.NDArray[np.float64], npt.NDArray[np.float64]]
]:
    """The variants of ``turn-variants/``: every sentence again by espeak-ng at another rate and
    pitch (slow and low, fast and high, ...) and another voice; then every espeak-ng and flite
    pair (the base ones and these) through a telephone line (:func:`telephone`)."""
    pairs = []
    for i, (head, rest) in enumerate(TURN_TEXT):
        speed, pitch = PROSODY[i % len(PROSODY)]
        whole, cut = _espeak_pair(head, rest, VOICES[(i + 2) % len(VOICES)], speed, pitch)
        pairs.append(("espeak-ng prosody", head, rest, whole, cut))
    phoned = [
        (f"{synth} phone", head, rest, telephone(whole), telephone(cut))
        for synth, head, rest, whole, cut in [*_turn_pairs(), *pairs]
    ]
    return pairs + phoned


def telephone(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x`` as a phone line carries it: sox band-limits it to 300-3400 Hz through 8 kHz and
    back to 16 kHz (``build_turn`` then adds the line's noise)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_wav(src, x)
        subprocess.run(
            ["sox", "-D", str(src), str(out), "highpass", "300", "lowpass", "3400",
             "rate", "8000", "rate", str(RATE)],
            check=True, capture_output=True,
        )  # fmt: skip
        with wave.open(str(out), "rb") as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64)


def build_turn(
    folder: Path,
    lead_s: float = 0.3,
    tail_s: float = 1.0,
    pairs: Sequence[Pair] | None = None,
) -> None:
    """The complete and cut-off sentence pairs and their labels. Every clip has ``lead_s`` of
    silence before the speech and ``tail_s`` after it, as the audio up to a VAD's stop would."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([SEED, 100])
    labels: dict[str, Any] = {}
    for n, (synth, head, rest, whole, cut) in enumerate(_turn_pairs() if pairs is None else pairs):
        i = n % len(TURN_TEXT)
        prefix = synth.replace("espeak-ng", "turn").replace(" ", "-")
        gain = 32768 * 10 ** ((-20 + float(rng.uniform(-4, 4))) / 20)
        for kind, label, x in (("complete", "complete", whole), ("cut", "incomplete", cut)):
            a, b = _bounds(x)
            x = x[a:b]
            x *= gain / float(np.sqrt(np.mean(x**2)))
            lead, tail = np.zeros(int(lead_s * RATE)), np.zeros(int(tail_s * RATE))
            name = f"{prefix}-{i:02d}-{kind}.wav"
            clip = np.concatenate([lead, x, tail])
            if synth.endswith(" phone"):  # the line's hiss, 15-25 dB under the speech
                line = np.random.default_rng([SEED, 200, n])
                snr_db = float(line.uniform(15, 25))
                clip += line.normal(0.0, gain * 10 ** (-snr_db / 20), clip.size)
            write_wav(folder / name, clip)
            labels[name] = {
                "label": label,
                "synth": synth,
                "text": f"{head} {rest}" if kind == "complete" else head,
                "speech_start": lead.size / RATE,
                "speech_end": (lead.size + x.size) / RATE,
                "rate": RATE,
            }
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")


def build(folder: Path) -> Path:
    """Both parts into ``folder`` (``vad/`` and ``turn/``); returns ``folder``."""
    missing = tools_missing()
    if missing:
        raise SpeechSetUnavailable(
            f"the speech set needs {' and '.join(missing)}; install with: "
            f"apt-get install {' '.join(missing)}"
        )
    build_vad(folder / "vad")
    build_turn(folder / "turn")
    return folder


def ensure(cache: Path = CACHE) -> Path:
    """The speech set, built once per ``cache_key()`` under ``cache`` (atomically: a half-built
    folder is never seen), and its folder."""
    missing = tools_missing()
    if missing:
        raise SpeechSetUnavailable(
            f"the speech set needs {' and '.join(missing)}; install with: "
            f"apt-get install {' '.join(missing)}"
        )
    target = cache / cache_key()
    if (target / "vad" / "labels.json").is_file() and (target / "turn" / "labels.json").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # built meanwhile by another process
            if not (target / "turn" / "labels.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_variants(cache: Path = CACHE) -> Path:
    """``turn-variants/`` beside the set of :func:`ensure` (built once, atomically): the
    end-of-turn pairs again at other speaking rates and pitches, and every pair through a
    telephone line (:func:`_variant_pairs`). The benchmark's, not the tests': about 240 clips."""
    target = ensure(cache) / "turn-variants"
    if (target / "labels.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build_turn(tmp, pairs=_variant_pairs())
        try:
            os.replace(tmp, target)
        except OSError:  # built meanwhile by another process
            if not (target / "labels.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="folder to write vad/ and turn/ into")
    args = parser.parse_args(argv)
    try:
        build(args.out)
    except SpeechSetUnavailable as exc:
        print(f"speechset: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'vad'} and {args.out / 'turn'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
