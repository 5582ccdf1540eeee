"""The VAD gate's outputs on the repository's recordings, pinned.

For every engine and mode, on the two recordings in the repository (``examples/caller_8k_ulaw.wav``,
``stages/telephony/data/unavailable_8k_ulaw.wav``) and on a longer stream made from them with
seeded integer noise: every event (its type, its ``pts`` and how many audio frames had left before
it), the digest of the audio that passed and of the frames' layout (``pts`` and length), and the
digest of the per-window decisions (score against the threshold). The expected values live in
``tests/fixtures/vad_pinned.json``; a change that moves one decision or one byte fails here. Every
case runs on the compiled kernels and on their pure-Python twins.

Regenerate the file only when a decision is meant to change::

    python -m tests.stages.test_vad_pinned --write
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from pipeline import frames as frames_module
from pipeline.frames import BYTES_PER_SAMPLE, Audio, Frame
from stages import g711
from stages.vad import EnergyEngine, Engine, SileroEngine, VadGate, WebrtcEngine, engines
from stages.vad import gate as gate_module
from stages.wavfile import read_wav

ROOT = Path(__file__).resolve().parents[2]
PINNED = ROOT / "tests" / "fixtures" / "vad_pinned.json"
CLIPS = {
    "caller": ROOT / "examples" / "caller_8k_ulaw.wav",
    "unavailable": ROOT / "stages" / "telephony" / "data" / "unavailable_8k_ulaw.wav",
}


def _noise(n: int, amplitude: int, seed: int) -> npt.NDArray[np.int64]:
    """Uniform integer noise in ``[-amplitude, amplitude)`` from a 32-bit LCG: the same numbers on
    every machine and numpy version."""
    out = np.empty(n, np.int64)
    x = seed
    for i in range(n):
        x = (1664525 * x + 1013904223) & 0xFFFFFFFF
        out[i] = (x >> 16) % (2 * amplitude) - amplitude
    return out


def _clip(name: str) -> npt.NDArray[np.int16]:
    header, data = read_wav(CLIPS[name])
    assert header.format.encoding == "pcmu" and header.format.rate == 8000
    return np.frombuffer(g711.decode_ulaw(data), "<i2").copy()


def signals() -> dict[str, npt.NDArray[np.int16]]:
    """8 kHz int16 signals: the two clips, and both in a row twice more under noise."""
    caller, unavailable = _clip("caller"), _clip("unavailable")

    def noisy(x: npt.NDArray[np.int16], amplitude: int, seed: int) -> npt.NDArray[np.int16]:
        y = x.astype(np.int64) + _noise(len(x), amplitude, seed)
        clipped: npt.NDArray[np.int16] = np.clip(y, -32768, 32767).astype(np.int16)
        return clipped

    mix = np.concatenate(
        [caller, noisy(unavailable, 1500, 1), noisy(caller, 4000, 2), unavailable[: 8000 * 2]]
    )
    return {"caller": caller, "unavailable": unavailable, "mix": mix}


def _upsample(x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """16 kHz from 8 kHz by integer linear interpolation (exact, no filter library)."""
    y = np.empty(2 * len(x), np.int16)
    y[0::2] = x
    nxt = np.append(x[1:], x[-1]).astype(np.int32)
    y[1::2] = (x.astype(np.int32) + nxt) // 2
    return y


def _frames(
    data: bytes, encoding: Any, rate: int, channels: int, sizes: list[int], gap_at: int = -1
) -> list[Audio]:
    """Frames of ``sizes[i % len(sizes)]`` samples (per channel); after frame ``gap_at`` the
    timestamps jump by 1.25 s (a gap in the input)."""
    width = BYTES_PER_SAMPLE[encoding] * channels
    frames: list[Audio] = []
    pos = i = 0
    total = len(data) // width
    offset = 0.0
    while pos < total:
        n = sizes[i % len(sizes)]
        frames.append(
            Audio(
                data[pos * width : (pos + n) * width], encoding, rate, channels, pos / rate + offset
            )
        )
        if i == gap_at:
            offset += 1.25
        pos += n
        i += 1
    return frames


def _make_engine(engine: str, rate: int, variant: str) -> Engine:
    if engine == "webrtc":
        if variant == "w10":
            return WebrtcEngine(rate, frame_ms=10, preemphasis=0.0, aggressiveness=2)
        if variant == "w20":
            return WebrtcEngine(rate, frame_ms=20, preemphasis=0.5, aggressiveness=1)
        return WebrtcEngine(rate)
    if engine == "energy":
        return EnergyEngine(rate)
    return SileroEngine(rate)


#: gate settings by name: the stage's defaults, the phone server's, and the edges
SETTINGS: dict[str, dict[str, int]] = {
    "default": {},
    "phone": {"prefix_ms": 300, "hangover_ms": 400},
    "zero": {"min_speech_ms": 0, "hangover_ms": 0, "prefix_ms": 0},
    "short": {"min_speech_ms": 30, "hangover_ms": 15, "prefix_ms": 45},
}


def cases() -> Iterator[tuple[str, str, str, str, str, str]]:
    """(id, signal, engine, engine variant, input shape, settings)."""
    shapes = ("pcmu8k-20ms", "pcm16-16k-20ms", "pcm16-8k-odd")
    for signal in ("caller", "unavailable", "mix"):
        for engine in ("webrtc", "energy", "silero"):
            for shape in shapes:
                yield f"{signal}/{engine}/{shape}", signal, engine, "", shape, "default"
    extra = [
        ("mix", "webrtc", "", "pcmu8k-20ms", "phone"),
        ("mix", "webrtc", "", "pcma8k-30ms-gap", "default"),
        ("mix", "webrtc", "", "pcm16-8k-stereo", "default"),
        ("mix", "webrtc", "w10", "pcm16-16k-20ms", "zero"),
        ("mix", "webrtc", "w20", "pcm16-8k-odd", "short"),
        ("mix", "webrtc", "", "pcm16-16k-20ms", "short"),
        ("mix", "energy", "", "pcm16-16k-20ms", "zero"),
        ("mix", "silero", "", "pcmu8k-20ms", "short"),
    ]
    for signal, engine, variant, shape, settings in extra:
        tag = f"{engine}-{variant}" if variant else engine
        yield f"{signal}/{tag}/{shape}/{settings}", signal, engine, variant, shape, settings


def _input(x: npt.NDArray[np.int16], shape: str) -> tuple[int, list[Audio]]:
    if shape == "pcmu8k-20ms":
        return 8000, _frames(g711.encode_ulaw(x.tobytes()), "pcmu", 8000, 1, [160])
    if shape == "pcma8k-30ms-gap":
        return 8000, _frames(g711.encode_alaw(x.tobytes()), "pcma", 8000, 1, [240], gap_at=200)
    if shape == "pcm16-16k-20ms":
        return 16000, _frames(_upsample(x).tobytes(), "pcm16", 16000, 1, [320])
    if shape == "pcm16-8k-odd":
        return 8000, _frames(x.tobytes(), "pcm16", 8000, 1, [7, 160, 333, 80, 1, 240, 159])
    if shape == "pcm16-8k-stereo":
        st = np.stack([x, (x.astype(np.int32) * 3 // 4).astype(np.int16)], axis=1)
        return 8000, _frames(st.astype("<i2").tobytes(), "pcm16", 8000, 2, [160])
    raise AssertionError(shape)


def _digest(parts: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(4, "little"))
        h.update(p)
    return h.hexdigest()[:24]


def run_case(signal: str, engine: str, variant: str, shape: str, settings: str) -> dict[str, Any]:
    """What the gate does with this input, in both modes, as plain data."""
    x = signals_cache()[signal]
    rate, frames = _input(x, shape)
    result: dict[str, Any] = {}
    for mode in ("gate", "annotate"):
        engine_ = _make_engine(engine, rate, variant)
        decisions: list[int] = []
        _record_decisions(engine_, decisions)
        gate = VadGate(engine_, mode=mode, **SETTINGS[settings])
        out: list[Frame] = []
        for f in frames:
            out.extend(gate.push(f))
        out.extend(gate.finish())
        audio = [f for f in out if isinstance(f, Audio)]
        events: list[list[Any]] = []
        passed = 0
        for frame in out:
            if isinstance(frame, Audio):
                passed += 1
            else:
                events.append([frame.type, repr(frame.pts), passed])
        result[mode] = {
            "events": events,
            "audio": _digest(f.data for f in audio),
            "layout": _digest(f"{f.pts!r}:{len(f.data)}".encode() for f in audio),
            "frames": len(audio),
            "windows": _digest(iter([bytes(decisions)])),
            "n_windows": len(decisions),
        }
    return result


def _record_decisions(engine: Engine, decisions: list[int]) -> None:
    """Wrap the engine so every window's decision lands in ``decisions``: bit 0 the score
    against the threshold, bit 1 against the release threshold (threshold - hysteresis)."""
    threshold = engine.default_threshold
    release = threshold - engine.hysteresis

    def wrap(fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
        def scored(*args: Any) -> list[float]:
            scores = fn(*args)
            decisions.extend((s >= threshold) + 2 * (s >= release) for s in scores)
            return scores

        return scored

    for name in ("process", "process_bytes", "process_g711"):
        if getattr(engine, name, None) is not None:
            setattr(engine, name, wrap(getattr(engine, name)))


_SIGNALS: dict[str, npt.NDArray[np.int16]] = {}


def signals_cache() -> dict[str, npt.NDArray[np.int16]]:
    if not _SIGNALS:
        _SIGNALS.update(signals())
    return _SIGNALS


def _pinned() -> dict[str, Any]:
    return dict(json.loads(PINNED.read_text()))


def _skip_missing(engine: str) -> None:
    if engine == "webrtc":
        pytest.importorskip("webrtcvad")
    if engine == "silero":
        pytest.importorskip("onnxruntime")


@pytest.fixture(params=["native", "pure"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run on the compiled kernels (skipped when not built) or on their pure-Python twins."""
    if request.param == "native":
        if engines.NativeWindows is None:
            pytest.skip("stages.vad._cvad is not built (or PIPELINE_PURE_PYTHON is set)")
    else:
        monkeypatch.setattr(engines, "NativeWindows", None)
        monkeypatch.setattr(gate_module, "make_audio", frames_module._make_audio_pure)
    return str(request.param)


@pytest.mark.parametrize(
    ("case", "signal", "engine", "variant", "shape", "settings"), list(cases())
)
def test_the_gate_decides_and_passes_exactly_what_it_did(
    case: str, signal: str, engine: str, variant: str, shape: str, settings: str, impl: str
) -> None:
    _skip_missing(engine)
    expected = _pinned()[case]
    got = run_case(signal, engine, variant, shape, settings)
    assert got == expected


def test_every_pinned_case_is_run() -> None:
    assert sorted(_pinned()) == sorted(c[0] for c in cases())


def _write() -> None:
    out = {c[0]: run_case(*c[1:]) for c in cases()}
    PINNED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(out)} cases to {PINNED}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m tests.stages.test_vad_pinned --write")
    _write()
