"""check_stage on every built-in stage: each gets minimal parameters and input frames.

A built-in stage added without a case here fails test_every_builtin_has_a_case: add its case.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import (
    Audio,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Text,
    ToolCall,
    Transcript,
)
from pipeline.spec import builtin_names, resolve
from pipeline.testing import check_stage

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tone(rate: int, seconds: float, *, frame_ms: int = 20, burst: bool = False) -> list[Audio]:
    """pcm16 frames of a 440 Hz tone (``burst``: silence, 0.6 s of loud noise, silence)."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    x = 3000 * np.sin(2 * np.pi * 440 * t)
    if burst:
        rng = np.random.default_rng(1)
        x = np.zeros(n)
        a, b = int(0.3 * rate), int(0.9 * rate)
        x[a:b] = rng.normal(0, 6000, b - a)
    step = rate * frame_ms // 1000
    return [
        Audio.from_samples(x[i : i + step], rate, pts=i / rate)
        for i in range(0, n - step + 1, step)
    ]


def ulaw(frames: list[Audio]) -> list[Audio]:
    from stages.g711 import encode

    return [Audio(encode(f.data, "pcmu"), "pcmu", f.rate, pts=f.pts) for f in frames]


EVENTS: list[Frame] = [
    Text("hello"),
    SpeechStarted(pts=0.1),
    Transcript("user", "hi", final=True),
    Interrupt(pts=0.2),
]


def pcm_wav(path: Path, seconds: float = 0.3, rate: int = 8000) -> Path:
    data = b"".join(f.data for f in tone(rate, seconds))
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


Case = Callable[[Path], tuple[list[Frame], dict[str, Any]]]

CASES: dict[str, Case] = {
    "g711_decode": lambda _: ([*ulaw(tone(8000, 0.2)), *EVENTS], {}),
    "g711_encode": lambda _: ([*tone(8000, 0.2), *EVENTS], {"law": "alaw"}),
    "resample": lambda _: ([*tone(8000, 0.2), *EVENTS], {"rate": 16000}),
    "vad_gate": lambda _: (
        [*tone(16000, 1.2, burst=True), *EVENTS],
        {"engine": "energy", "mode": "annotate"},
    ),
    "denoise": lambda _: ([*tone(16000, 0.3), *EVENTS], {}),
    "turn_detector": lambda _: (
        [SpeechStarted(pts=0.0), *tone(16000, 0.6), SpeechStopped(pts=0.6), *EVENTS],
        {"max_wait_ms": 500},
    ),
    "tool_router": lambda _: (
        [
            ResponseStarted("r1"),
            ToolCall("c1", "get_time", '{"city": "Tokyo"}', response_id="r1"),
            ToolCall("c2", "nope", "{}", response_id="r1"),
            ResponseDone("r1"),
        ],
        {"tools": ["examples.tools:get_time"]},
    ),
    "signal_source": lambda _: ([], {"seconds": 0.2, "rate": 8000, "pace": "realtime"}),
    "wav_source": lambda tmp: ([], {"path": pcm_wav(tmp / "in.wav"), "pace": "realtime"}),
    "wav_sink": lambda tmp: ([*tone(8000, 0.2), *EVENTS], {"path": tmp / "out.wav"}),
    "jsonl_sink": lambda tmp: ([*tone(8000, 0.1), *EVENTS], {"path": tmp / "out.jsonl"}),
    "null_sink": lambda _: ([*tone(8000, 0.1), *EVENTS], {}),
    "realtime_session": lambda _: (
        [*tone(16000, 0.5), Text("hello")],
        {"provider": "emulator", "input_rate": 16000, "output_rate": 16000},
    ),
}

SKIP: dict[str, str] = {
    "twilio_source": "needs a live Twilio Media Stream call (bind_call inside 'pipeline serve'); "
    "tests/stages/telephony/test_twilio.py drives it",
    "twilio_sink": "needs a Twilio Media Stream call bound with bind_call; checked in "
    "tests/stages/telephony/test_twilio.py::test_sink_passes_the_stage_conformance_checks",
    "phone_source": "needs a carrier's media stream call (bind_call inside 'pipeline serve'); "
    "tests/stages/telephony/test_carriers.py drives it on every carrier",
    "phone_sink": "needs a carrier's media stream call (bind_call inside 'pipeline serve'); "
    "tests/stages/telephony/test_carriers.py drives it on every carrier",
    "call_recorder": "needs a Twilio Media Stream call bound with bind_call; checked in "
    "tests/stages/telephony/test_call_recorder.py::test_recorder_passes_the_conformance_checks",
    "mic_source": "needs a sound card; tests/stages/test_desk.py runs it on a virtual one",
    "speaker_sink": "needs a sound card; tests/stages/test_desk.py runs it on a virtual one",
    "browser_source": "needs a browser tab bound with bind_connection, whose audio one run "
    "consumes; tests/stages/browser/test_server.py runs it over loopback WebSockets",
    "browser_sink": "needs a browser tab bound with bind_connection; checked in "
    "tests/stages/browser/test_server.py::test_the_sink_passes_the_conformance_checks",
}


def test_every_builtin_has_a_case() -> None:
    missing = [n for n in builtin_names() if n not in CASES and n not in SKIP]
    assert not missing, f"no conformance case for {missing}: add one to CASES in {__file__}"


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_conforms(name: str, tmp_path: Path) -> None:
    if name in SKIP:
        pytest.skip(SKIP[name])
    if name not in CASES:
        pytest.skip("no case (see test_every_builtin_has_a_case)")
    frames, params = CASES[name](tmp_path)
    out = check_stage(name, frames, **params)
    spec = resolve(name)
    if spec.is_sink:
        assert out == []
    else:
        assert out, f"{name} emitted nothing for its conformance input"
