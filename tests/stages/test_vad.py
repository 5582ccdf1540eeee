"""The VAD gate: state machine table, gate/annotate framing, encodings, pts, engines, refusals."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import FormatError, InputError
from pipeline.frames import (
    Audio,
    AudioFormat,
    Frame,
    Interrupt,
    SpeechStarted,
    SpeechStopped,
    Text,
)
from pipeline.spec import spec_for
from pipeline.testing import make_context, run_stage
from stages import vad
from stages.vad import (
    TRANSITIONS,
    Action,
    EnergyEngine,
    Input,
    SileroEngine,
    State,
    Transition,
    VadGate,
    VadMachine,
    WebrtcEngine,
    analysis_samples,
    engines,
)
from stages.vad.gate import ALAW_TO_PCM16, ULAW_TO_PCM16

RATE = 8000
W = 80  # the scripted engine's window: 10 ms at 8 kHz


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


class ScriptedEngine:
    """A fake engine: window ``i`` scores ``flags[i]`` (then 0), whatever the audio."""

    default_threshold = 0.5
    hysteresis = 0.0

    def __init__(self, flags: Sequence[int], rate: int = RATE, window: int = W) -> None:
        self.rate = rate
        self.window = window
        self.flags = list(flags)
        self._i = 0
        self._pending = 0

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        self._pending += len(pcm)
        n, self._pending = divmod(self._pending, self.window)
        out = [
            float(self.flags[i]) if i < len(self.flags) else 0.0
            for i in range(self._i, self._i + n)
        ]
        self._i += n
        return out

    def reset(self) -> None:
        self._i = self._pending = 0


# ---------------------------------------------------------------------------- the machine


def _steps(machine: VadMachine, flags: Sequence[int], length: int = 1) -> list[tuple[str, int]]:
    out = []
    for f in flags:
        t = machine.step(bool(f), length)
        if t is not None:
            out.append((t.action.value, t.position))
    return out


def test_table_has_exactly_the_reachable_pairs() -> None:
    reachable = {
        State.SILENCE: {Input.QUIET, Input.VOICE, Input.CONFIRMED},
        State.ONSET: {Input.QUIET, Input.VOICE, Input.CONFIRMED},
        State.SPEECH: {Input.QUIET, Input.VOICE, Input.EXPIRED},
        State.HANGOVER: {Input.QUIET, Input.VOICE, Input.EXPIRED},
    }
    assert set(TRANSITIONS) == {(s, i) for s, ins in reachable.items() for i in ins}
    starts = {k for k, (_, a) in TRANSITIONS.items() if a is Action.START}
    stops = {k for k, (_, a) in TRANSITIONS.items() if a is Action.STOP}
    assert starts == {(State.SILENCE, Input.CONFIRMED), (State.ONSET, Input.CONFIRMED)}
    assert stops == {(State.SPEECH, Input.EXPIRED), (State.HANGOVER, Input.EXPIRED)}


def test_min_speech_rejects_a_blip() -> None:
    m = VadMachine(min_speech=3, hangover=2)
    assert _steps(m, [0, 1, 1, 0, 0]) == []  # two windows of "speech": a blip
    assert m.state is State.SILENCE
    assert _steps(m, [1, 1, 1]) == [("start", 5)]  # three: speech, dated from its first window
    assert m.state is State.SPEECH


def test_hangover_bridges_a_short_pause() -> None:
    m = VadMachine(min_speech=2, hangover=3)
    assert _steps(m, [1, 1, 0, 0, 1, 1]) == [("start", 0)]  # a 2-window pause: bridged
    assert m.state is State.SPEECH
    assert _steps(m, [0, 0, 0, 1]) == [("stop", 6)]  # a 3-window pause ends it where it began
    assert m.state is State.ONSET


def test_zero_lengths_act_on_the_first_window() -> None:
    m = VadMachine(min_speech=0, hangover=0)
    assert _steps(m, [0, 1, 0, 1, 1, 0]) == [
        ("start", 1),
        ("stop", 2),
        ("start", 3),
        ("stop", 5),
    ]


def test_lengths_count_samples_not_windows() -> None:
    m = VadMachine(min_speech=100, hangover=300)
    assert _steps(m, [1, 1, 1], length=32) == []  # 96 samples
    assert _steps(m, [1], length=32) == [("start", 0)]  # 128
    assert _steps(m, [0] * 9, length=32) == []  # 288
    assert _steps(m, [0], length=32) == [("stop", 128)]  # 320


def _reference(flags: Sequence[int], min_speech: int, hangover: int) -> list[tuple[str, int]]:
    """The same turns found offline from the runs of speech windows (window = 1 sample)."""
    runs: list[tuple[int, int]] = []
    for i, f in enumerate(flags):
        if f and runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        elif f:
            runs.append((i, i + 1))
    events: list[tuple[str, int]] = []
    speaking, last_end = False, 0
    for s, e in runs:
        if speaking and s - last_end < hangover:
            last_end = e
            continue
        if speaking:
            events.append(("stop", last_end))
            speaking = False
        if e - s >= min_speech:
            events.append(("start", s))
            speaking, last_end = True, e
    trailing = len(flags) - last_end
    if speaking and trailing >= 1 and trailing >= hangover:
        events.append(("stop", last_end))
    return events


@given(
    st.lists(st.integers(0, 1), max_size=200),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_machine_matches_an_offline_reference(
    flags: list[int], min_speech: int, hangover: int
) -> None:
    m = VadMachine(min_speech=min_speech, hangover=hangover)
    assert _steps(m, flags) == _reference(flags, min_speech, hangover)


def _table_step(m: VadMachine, voice: bool, length: int) -> Transition | None:
    """One step through the table alone (what step() did before its steady-state shortcut)."""
    old = m.state
    new, action = TRANSITIONS[(old, m.classify(voice, length))]
    runs = (State.ONSET, State.HANGOVER)
    run_start = m._run_start if old in runs else m.position
    if new in runs and new is not old:
        m._run_start = m.position
    m.state = new
    m.position += length
    return None if action is Action.NONE else Transition(action, run_start)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=120),
    st.integers(0, 8),
    st.integers(0, 8),
)
def test_the_steady_state_shortcut_is_the_tables_answer(
    steps: list[tuple[bool, int]], min_speech: int, hangover: int
) -> None:
    fast = VadMachine(min_speech=min_speech, hangover=hangover)
    table = VadMachine(min_speech=min_speech, hangover=hangover)
    for voice, length in steps:
        assert fast.step(voice, length) == _table_step(table, voice, length)
        assert (fast.state, fast.position, fast.pending_since) == (
            table.state,
            table.position,
            table.pending_since,
        )


# ---------------------------------------------------------------------------- the gate


def _ramp(n: int) -> bytes:
    """pcm16 whose sample i holds i (mod 30000): any slice says where it came from."""
    return (np.arange(n) % 30000).astype("<i2").tobytes()


def _frames(
    data: bytes, sizes: Sequence[int], *, encoding: Any = "pcm16", pts0: float = 0.0
) -> list[Audio]:
    width = 2 if encoding == "pcm16" else 1
    frames, pos, i = [], 0, 0
    total = len(data) // width
    while pos < total:
        n = sizes[i % len(sizes)] if sizes else total
        i += 1
        frames.append(
            Audio(data[pos * width : (pos + n) * width], encoding, RATE, 1, pts0 + pos / RATE)
        )
        pos += n
    return frames


def _run(gate: VadGate, frames: Sequence[Audio]) -> list[Frame]:
    out: list[Frame] = []
    for f in frames:
        out.extend(gate.push(f))
    out.extend(gate.finish())
    return out


def _summary(out: Sequence[Frame], width: int = 2, pts0: float = 0.0) -> list[tuple[Any, ...]]:
    """Events as (type, pts in samples); consecutive audio as ("audio", first, end) sample
    positions, checking each frame's pts and that the audio is contiguous."""
    result: list[tuple[Any, ...]] = []
    for f in out:
        if isinstance(f, Audio):
            start = round((f.pts - pts0) * RATE)
            assert abs(f.pts - pts0 - start / RATE) < 1e-9
            end = start + len(f.data) // width
            if result and result[-1][0] == "audio" and result[-1][2] == start:
                result[-1] = ("audio", result[-1][1], end)
            else:
                result.append(("audio", start, end))
        else:
            assert f.pts is not None
            result.append((f.type, round((f.pts - pts0) * RATE, 6)))
    return result


def _expected_gate(
    flags: Sequence[int], total: int, *, min_speech: int, hangover: int, prefix: int
) -> list[tuple[Any, ...]]:
    """What the gate must emit, from the offline reference (positions in samples)."""
    windows = total // W
    flags = list(flags[:windows]) + [0] * (windows - len(flags[:windows]))
    events = _reference(flags, -(-min_speech // W), -(-hangover // W))
    out: list[tuple[Any, ...]] = []
    passed = 0
    for kind, pos in events:
        pos *= W
        if kind == "start":
            start = pos
            out.append(("speech_started", start))
            passed = max(start - prefix, passed)
        else:
            end = min(pos + hangover, total)
            if end > passed:
                out.append(("audio", passed, end))
            passed = end
            out.append(("speech_stopped", pos))
    if len(events) % 2:  # still speaking at the end
        speech_end = (max(i for i, f in enumerate(flags) if f) + 1) * W
        if speech_end == windows * W:  # in speech: it ran to the end of the audio
            stop, end = total, total
        else:  # in a pause: speech stopped where the pause began
            stop, end = speech_end, min(speech_end + hangover, total)
        if end > passed:
            out.append(("audio", passed, end))
        out.append(("speech_stopped", stop))
    return out


def test_prefix_is_released_in_order_before_the_onset_and_is_exactly_prefix_ms() -> None:
    flags = [0] * 60 + [1] * 30 + [0] * 60  # speech from 600 ms to 900 ms
    gate = VadGate(ScriptedEngine(flags), min_speech_ms=50, hangover_ms=200, prefix_ms=300)
    data = _ramp(150 * W)
    out = _run(gate, _frames(data, [160]))
    assert isinstance(out[0], SpeechStarted)
    assert out[0].pts == pytest.approx(0.6)
    audio = b"".join(f.data for f in out if isinstance(f, Audio))
    # prefix (300 ms = 2400 samples before the onset at 4800), then the speech, then the hangover
    assert audio == data[(4800 - 2400) * 2 : (7200 + 1600) * 2]
    prefix = audio[: 2400 * 2]
    assert np.array_equal(np.frombuffer(prefix, "<i2"), np.arange(2400, 4800))
    assert isinstance(out[-1], SpeechStopped)
    assert out[-1].pts == pytest.approx(0.9)
    assert [type(f) for f in out if not isinstance(f, Audio)] == [SpeechStarted, SpeechStopped]


def test_prefix_is_clipped_at_the_start_and_never_repeats_audio() -> None:
    # speech at 50 ms (less than the prefix), then again 250 ms after the first turn ended
    flags = [0] * 5 + [1] * 20 + [0] * 25 + [1] * 20 + [0] * 40
    gate = VadGate(ScriptedEngine(flags), min_speech_ms=0, hangover_ms=100, prefix_ms=300)
    data = _ramp(110 * W)
    summary = _summary(_run(gate, _frames(data, [160])))
    assert summary == [
        ("speech_started", 400),
        ("audio", 0, 2800),  # no audio before the stream began; up to 250 ms + 100 ms
        ("speech_stopped", 2000),
        ("speech_started", 4000),
        ("audio", 2800, 6400),  # the prefix starts where the last turn's audio ended
        ("speech_stopped", 5600),
    ]


@settings(max_examples=150, deadline=None)
@given(
    flags=st.lists(st.integers(0, 1), min_size=1, max_size=80),
    sizes=st.lists(st.integers(1, 400), min_size=1, max_size=8),
    min_speech_ms=st.sampled_from([0, 10, 30, 100]),
    hangover_ms=st.sampled_from([10, 30, 55, 200]),
    prefix_ms=st.sampled_from([0, 15, 100, 300]),
    extra=st.integers(0, W - 1),
)
def test_gate_passes_exactly_prefix_speech_and_hangover_whatever_the_frame_sizes(
    flags: list[int],
    sizes: list[int],
    min_speech_ms: int,
    hangover_ms: int,
    prefix_ms: int,
    extra: int,
) -> None:
    total = len(flags) * W + extra
    data = _ramp(total)
    gate = VadGate(
        ScriptedEngine(flags),
        min_speech_ms=min_speech_ms,
        hangover_ms=hangover_ms,
        prefix_ms=prefix_ms,
    )
    got = _summary(_run(gate, _frames(data, sizes, pts0=3.0)), pts0=3.0)
    # the same, computed independently: turns from the offline reference, then the audio ranges
    ms = RATE // 1000
    want = _expected_gate(
        flags,
        total,
        min_speech=min_speech_ms * ms,
        hangover=hangover_ms * ms,
        prefix=prefix_ms * ms,
    )
    assert got == want


def test_annotate_mode_passes_every_frame_unchanged_with_events_after_the_deciding_frame() -> None:
    flags = [0] * 10 + [1] * 20 + [0] * 30
    gate = VadGate(ScriptedEngine(flags), mode="annotate", min_speech_ms=50, hangover_ms=100)
    frames = _frames(_ramp(60 * W), [160])  # 20 ms frames: two windows each
    out = _run(gate, frames)
    assert [f for f in out if isinstance(f, Audio)] == frames
    assert all(
        a is b for a, b in zip([f for f in out if isinstance(f, Audio)], frames, strict=True)
    )
    events = [(i, f) for i, f in enumerate(out) if not isinstance(f, Audio)]
    # onset at window 10 (100 ms), confirmed at the end of window 14, i.e. in frame 7
    (i_start, start), (i_stop, stop) = events
    assert start == SpeechStarted(pts=0.1) and i_start == 8
    # offset at window 30 (300 ms), hangover of 10 windows ends in window 39: frame 19
    assert stop == SpeechStopped(pts=0.3) and i_stop == 21


def _speech_like(
    rate: int, seconds: float, bursts: Sequence[tuple[float, float]]
) -> npt.NDArray[np.int16]:
    """Noise with harmonic bursts (a crude voice) at the given times."""
    rng = np.random.default_rng(7)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = np.zeros_like(t)
    for a, b in bursts:
        env[(t >= a) & (t < b)] = 1.0
    x = 4000 * voice * env * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) + rng.normal(0, 100, t.size)
    return np.clip(x, -32768, 32767).astype(np.int16)


def _ulaw(pcm: npt.NDArray[np.int16]) -> bytes:
    from stages.g711 import encode_ulaw

    return encode_ulaw(pcm.astype("<i2").tobytes())


@pytest.mark.parametrize("engine", ["silero", "webrtc", "energy"])
def test_ulaw_in_ulaw_out_byte_identical_in_annotate_mode(engine: str) -> None:
    data = _ulaw(_speech_like(8000, 3.0, [(0.8, 2.0)]))
    frames = _frames(data, [160], encoding="pcmu", pts0=1.5)
    out = run_stage("vad_gate", frames, engine=engine, mode="annotate")
    audio = [f for f in out if isinstance(f, Audio)]
    assert audio == frames
    assert b"".join(f.data for f in audio) == data
    assert {f.encoding for f in audio} == {"pcmu"}
    if engine == "energy":  # the crude voice is speech to energy, not necessarily to a model
        events = [f for f in out if not isinstance(f, Audio)]
        assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
        assert events[0].pts == pytest.approx(1.5 + 0.8, abs=0.03)
        assert events[1].pts == pytest.approx(1.5 + 2.0, abs=0.05)


@pytest.mark.parametrize("encoding", ["pcmu", "pcma"])
def test_gate_mode_passes_byte_slices_of_the_input_in_its_encoding(encoding: str) -> None:
    flags = [0] * 40 + [1] * 30 + [0] * 50
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 120 * W, dtype=np.uint8).tobytes()
    gate = VadGate(ScriptedEngine(flags), min_speech_ms=0, hangover_ms=100, prefix_ms=200)
    out = _run(gate, _frames(data, [160, 37, 301], encoding=encoding))
    audio = [f for f in out if isinstance(f, Audio)]
    assert {f.encoding for f in audio} == {encoding}
    assert b"".join(f.data for f in audio) == data[40 * W - 1600 : 70 * W + 800]


def test_event_pts_follow_the_input_timestamps_across_a_gap() -> None:
    flags = [0] * 30 + [1] * 20 + [0] * 50
    gate = VadGate(ScriptedEngine(flags), mode="annotate", min_speech_ms=0, hangover_ms=50)
    # 250 ms of audio at pts 10.0, then the rest at pts 20.0 (a gap in media time)
    first = Audio(_ramp(2000), "pcm16", RATE, 1, 10.0)
    second = Audio(_ramp(6000), "pcm16", RATE, 1, 20.0)
    events = [f for f in _run(gate, [first, second]) if not isinstance(f, Audio)]
    # onset at sample 2400: 400 samples into the second frame; offset at 4000
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    assert [e.pts for e in events] == [pytest.approx(20.05), pytest.approx(20.25)]


def test_a_turn_open_at_the_end_is_closed_at_the_end() -> None:
    gate = VadGate(ScriptedEngine([0, 1, 1, 1]), mode="annotate", min_speech_ms=0)
    events = [
        f for f in _run(gate, [Audio(_ramp(4 * W + 20), "pcm16", RATE)]) if not isinstance(f, Audio)
    ]
    assert events == [SpeechStarted(pts=0.01), SpeechStopped(pts=(4 * W + 20) / RATE)]
    gate = VadGate(ScriptedEngine([0, 1, 1, 0]), mode="annotate", min_speech_ms=0, hangover_ms=100)
    events = [
        f for f in _run(gate, [Audio(_ramp(4 * W), "pcm16", RATE)]) if not isinstance(f, Audio)
    ]
    assert events == [SpeechStarted(pts=0.01), SpeechStopped(pts=0.03)]  # in the pause: its start


def test_stereo_is_analysed_as_mono_and_sliced_per_sample_frame() -> None:
    flags = [0] * 10 + [1] * 10 + [0] * 20
    left = np.arange(40 * W, dtype=np.int16)
    data = np.stack([left, -left], axis=1).astype("<i2").tobytes()
    frames = [
        Audio(data[i : i + 640], "pcm16", RATE, 2, i / 4 / RATE) for i in range(0, len(data), 640)
    ]
    assert np.array_equal(analysis_samples(frames[0]), np.zeros(160, np.int16))
    gate = VadGate(ScriptedEngine(flags), min_speech_ms=0, hangover_ms=50, prefix_ms=25)
    audio = b"".join(f.data for f in _run(gate, frames) if isinstance(f, Audio))
    assert audio == data[(800 - 200) * 4 : (1600 + 400) * 4]


def test_analysis_decodes_g711_like_audioop() -> None:
    audioop = _audioop()
    codes = bytes(range(256))
    if audioop is None:  # Python 3.13+: two known points of the curves instead
        assert ULAW_TO_PCM16[0] == -32124 and ULAW_TO_PCM16[0xFF] == 0
        assert ALAW_TO_PCM16[0x55] == -8 and ALAW_TO_PCM16[0xD5] == 8
        return
    assert ULAW_TO_PCM16.astype("<i2").tobytes() == audioop.ulaw2lin(codes, 2)
    assert ALAW_TO_PCM16.astype("<i2").tobytes() == audioop.alaw2lin(codes, 2)
    for encoding, decode in (("pcmu", audioop.ulaw2lin), ("pcma", audioop.alaw2lin)):
        got = analysis_samples(Audio(codes, encoding, 8000))
        assert got.astype("<i2").tobytes() == decode(codes, 2)


class ArrayOnly:
    """An engine seen without its ``process_bytes``: the gate hands it int16 arrays."""

    def __init__(self, engine: WebrtcEngine) -> None:
        self.engine = engine
        self.rate, self.window = engine.rate, engine.window
        self.default_threshold, self.hysteresis = engine.default_threshold, engine.hysteresis
        self.seen: list[npt.NDArray[np.int16]] = []

    def process(self, pcm: npt.NDArray[np.int16]) -> list[float]:
        self.seen.append(pcm)
        return self.engine.process(pcm)

    def reset(self) -> None:
        self.engine.reset()


@pytest.mark.parametrize("mode", ["gate", "annotate"])
def test_the_gate_gives_webrtc_bytes_or_arrays_alike(mode: Any) -> None:
    x = _speech_like(16000, 3.0, [(0.5, 1.2), (1.9, 2.6)])
    frames = [
        Audio(x[i : i + 320].astype("<i2").tobytes(), "pcm16", 16000, 1, i / 16000)
        for i in range(0, len(x), 320)
    ]
    wrapped = ArrayOnly(WebrtcEngine(16000))
    by_bytes = _run(VadGate(WebrtcEngine(16000), mode=mode), frames)
    by_array = _run(VadGate(wrapped, mode=mode), frames)
    assert by_bytes == by_array
    assert [type(f) for f in by_bytes].count(SpeechStarted) == 2
    # the engine reads the frame's bytes in place: a read-only view, no copy
    assert not wrapped.seen[0].flags.writeable and wrapped.seen[0].base is not None


# ---------------------------------------------------------------------------- the stage


def test_other_frames_and_interrupts_pass_through_in_order() -> None:
    frames: list[Frame] = [
        Text("hi"),
        Audio(bytes(320), "pcm16", 16000),
        Interrupt(pts=0.01),
        Audio(bytes(320), "pcm16", 16000, pts=0.01),
    ]
    out = run_stage("vad_gate", frames, engine="energy", mode="annotate")
    assert out == frames
    out = run_stage("vad_gate", frames, engine="energy", mode="gate")
    assert out == [Text("hi"), Interrupt(pts=0.01)]


@pytest.mark.parametrize(
    ("engine", "rate", "takes"),
    [
        ("silero", 44100, "8000 or 16000"),
        ("silero", 24000, "8000 or 16000"),
        ("silero", 48000, "8000 or 16000"),
        ("webrtc", 22050, "8000 or 16000 or 32000 or 48000"),
        ("webrtc", 24000, "8000 or 16000 or 32000 or 48000"),
    ],
)
def test_a_rate_the_engine_cannot_take_is_refused_before_and_while_running(
    engine: str, rate: int, takes: str
) -> None:
    spec = spec_for("vad_gate")
    assert spec.output_format is not None
    with pytest.raises(FormatError) as err:
        spec.output_format({"engine": engine}, AudioFormat("pcm16", rate))
    assert err.value.message == f"gets {rate} Hz audio; VAD engine '{engine}' takes {takes} Hz"
    assert err.value.fix == "add {type: resample, rate: 16000} before it"
    with pytest.raises(FormatError) as err:
        run_stage("vad_gate", [Audio(bytes(640), "pcm16", rate)], engine=engine)
    assert str(err.value) == (
        f"stage 'vad_gate' (vad_gate) gets {rate} Hz audio; VAD engine '{engine}' takes {takes} Hz"
        "; add {type: resample, rate: 16000} before it"
    )


@pytest.mark.parametrize(
    ("engine", "fmt"),
    [
        ("silero", AudioFormat("pcmu", 8000)),
        ("silero", AudioFormat("pcm16", 16000)),
        ("webrtc", AudioFormat("pcma", 8000)),
        ("webrtc", AudioFormat("pcm16", 48000)),
        ("energy", AudioFormat("pcm16", 44100)),
        ("energy", AudioFormat("pcmu", 11025, 2)),
    ],
)
def test_output_format_is_the_input_format(engine: str, fmt: AudioFormat) -> None:
    spec = spec_for("vad_gate")
    assert spec.output_format is not None
    assert spec.output_format({"engine": engine}, fmt) == fmt
    assert spec.output_format({"engine": engine}, None) is None


def test_stage_declares_its_frames_and_parameters() -> None:
    spec = spec_for("vad_gate")
    assert spec.passthrough
    assert spec.emits == (Audio, SpeechStarted, SpeechStopped)
    assert {"engine", "threshold", "min_speech_ms", "hangover_ms", "prefix_ms", "mode"} <= set(
        spec.params
    )
    assert spec.params["engine"].default == "silero"
    assert spec.params["mode"].default == "gate"
    assert all(p.doc for p in spec.params.values())
    _, problems = spec.validate({"engine": "rnnoise"})
    assert problems and problems[0][0] == "engine"


def test_a_rate_change_mid_stream_is_refused() -> None:
    frames = [Audio(bytes(320), "pcm16", 16000), Audio(bytes(160), "pcm16", 8000)]
    with pytest.raises(FormatError, match="gets pcm16 8000 Hz audio after pcm16 16000 Hz"):
        run_stage("vad_gate", frames, engine="energy")


# ---------------------------------------------------------------------------- engines


def test_silero_scores_do_not_depend_on_chunk_sizes_and_gates_share_one_session() -> None:
    x = _speech_like(16000, 1.5, [(0.3, 1.0)])
    a, b = SileroEngine(16000), SileroEngine(16000)
    assert a._session is b._session  # one onnxruntime session per process
    whole = a.process(x)
    pieces: list[float] = []
    rng = np.random.default_rng(0)
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 900))
        pieces += b.process(x[i : i + n])
        i += n
    assert len(whole) == len(x) // 512
    assert pieces == whole


def test_silero_gates_keep_their_own_state() -> None:
    x = _speech_like(8000, 1.0, [(0.2, 0.8)])
    y = np.random.default_rng(1).normal(0, 2000, 8000).astype(np.int16)
    alone_x = SileroEngine(8000).process(x)
    alone_y = SileroEngine(8000).process(y)
    ex, ey = SileroEngine(8000), SileroEngine(8000)
    both_x: list[float] = []
    both_y: list[float] = []
    for i in range(0, 8000, 160):  # interleaved, as two gates in one process would run
        both_x += ex.process(x[i : i + 160])
        both_y += ey.process(y[i : i + 160])
    assert ex.window == 256
    assert both_x == alone_x and both_y == alone_y


def test_silero_model_ships_with_the_package() -> None:
    path = engines.find_silero_model()
    assert path == Path(engines.__file__).parent / "data" / "silero_vad.onnx"
    assert (path.parent / "SILERO_VAD_LICENSE").read_text().startswith("MIT License")
    # the Silero VAD v6.2.3 release file, byte for byte
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"


def test_silero_model_missing_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(engines, "SILERO_MODEL", tmp_path / "silero_vad.onnx")
    with pytest.raises(InputError, match=r"shipped with pipeline is missing .*reinstall pipeline"):
        engines.find_silero_model()
    # before running too (pipeline validate), unless the model is given or not needed
    spec = spec_for("vad_gate")
    assert spec.output_format is not None
    with pytest.raises(InputError, match=r"reinstall pipeline"):
        spec.output_format({"engine": "silero"}, AudioFormat("pcmu", 8000))
    assert spec.output_format({"engine": "silero", "model_path": "m.onnx"}, None) is None
    assert spec.output_format({"engine": "webrtc"}, None) is None


def test_silero_model_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.onnx: silero VAD model file not found"):
        SileroEngine(16000, model_path=tmp_path / "nope.onnx")
    model = engines.find_silero_model()
    assert SileroEngine(16000, model_path=model)._session is SileroEngine(16000)._session


def test_model_path_is_relative_to_the_pipeline_file(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vad.onnx").write_bytes(engines.find_silero_model().read_bytes())
    spec = spec_for("vad_gate")
    ctx = make_context(spec, base_dir=tmp_path)
    frames = [Audio(bytes(320), "pcmu", 8000)]
    assert run_stage(spec, frames, ctx=ctx, mode="annotate", model_path="models/vad.onnx") == frames
    with pytest.raises(InputError, match=r"elsewhere\.onnx: silero VAD model file not found"):
        run_stage(
            spec, frames, ctx=make_context(spec, base_dir=tmp_path), model_path="elsewhere.onnx"
        )


def test_webrtc_scores_do_not_depend_on_chunk_sizes() -> None:
    x = _speech_like(16000, 2.0, [(0.5, 1.5)])
    whole = WebrtcEngine(16000).process(x)
    e = WebrtcEngine(16000)
    pieces = [s for i in range(0, len(x), 333) for s in e.process(x[i : i + 333])]
    assert pieces == whole and len(whole) == len(x) // 480
    assert 0.0 in whole and 1.0 in whole


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-32768, 32767), min_size=1, max_size=300),
    st.integers(-32768, 32767),
    st.floats(0.0, 1.0, exclude_max=True),
)
def test_preemphasis_numpy_matches_audioop(xs: list[int], prev: int, a: float) -> None:
    data = np.array(xs, np.int16).tobytes()
    p = np.array([prev], np.int16).tobytes()
    y = np.frombuffer(engines._preemphasis_numpy(data, p, a), np.int16)
    # y[n] = x[n] + floor(-a x[n-1]), saturated: audioop.mul then audioop.add
    x1 = np.array([prev, *xs[:-1]], np.float64)
    expected = np.clip(np.array(xs) + np.floor(-a * x1), -32768, 32767)
    assert y.tolist() == expected.astype(np.int64).tolist()
    if engines.AUDIOOP is not None:
        assert engines._preemphasis_audioop(data, p, a) == y.tobytes()
    assert engines.preemphasize(data, p, a) == y.tobytes()


def test_preemphasis_values_and_both_paths_in_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    numpy_path = engines._preemphasis_numpy

    def counted(data: bytes, prev: bytes, a: float) -> bytes:
        calls.append(len(data))
        return numpy_path(data, prev, a)

    monkeypatch.setattr(engines, "_preemphasis_numpy", counted)
    x = np.array([100, 100, -32768, 32767, 0, -1], np.int16).tobytes()
    y = np.frombuffer(engines.preemphasize(x, np.array([50], np.int16).tobytes(), 0.8), np.int16)
    assert y.tolist() == [60, 20, -32768, 32767, -26214, -1]  # saturated both ways
    speech = _speech_like(16000, 2.0, [(0.5, 1.5)])
    chunks = [speech[i : i + size] for size in (320, 1000) for i in range(0, len(speech), size)]
    fast = WebrtcEngine(16000, native=False)
    by_audioop = [fast.process(c) for c in chunks]  # one window a call, and several
    # numpy's pre-emphasis: what the pure path runs where audioop is absent
    monkeypatch.setattr(engines, "AUDIOOP", None)
    monkeypatch.setattr(engines, "_ADD", None)
    calls.clear()
    fallback = WebrtcEngine(16000, native=False)
    assert [fallback.process(c) for c in chunks] == by_audioop
    assert calls and set(calls) == {960}  # whole 30 ms windows, each once


def test_webrtc_calls_webrtcvads_c_function_as_is_speech_does() -> None:
    speech = _speech_like(16000, 2.0, [(0.5, 1.5)])
    direct = WebrtcEngine(16000, aggressiveness=2)
    public = WebrtcEngine(16000, aggressiveness=2, decide=engines._is_speech)  # Vad.is_speech
    assert direct.decide is not engines._is_speech  # the wheel has _webrtcvad.process
    got = direct.process(speech)
    assert got == public.process(speech) and 0.0 in got and 1.0 in got
    with pytest.raises(ValueError, match=r"pre-emphasis is 0 \(off\) up to below 1, not 1\.2"):
        WebrtcEngine(16000, preemphasis=1.2)


def test_webrtc_frames_and_refusals() -> None:
    e = WebrtcEngine(48000, aggressiveness=0)
    assert e.window == 1440
    assert e.process(np.zeros(1440 * 2 + 5, np.int16)) == [0.0, 0.0]
    with pytest.raises(FormatError):
        WebrtcEngine(44100)


def _noise(rate: int, seconds: float, dbfs: float, seed: int = 0) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 32768 * 10 ** (dbfs / 20), int(rate * seconds))


def test_energy_follows_the_noise_floor() -> None:
    rate = 16000
    e = EnergyEngine(rate)
    quiet = _noise(rate, 3, -50)
    loud = _noise(rate, 4, -30, seed=1)  # the noise gets 20 dB louder
    x = np.concatenate([quiet, loud]).astype(np.int16)
    scores = np.array(e.process(x))
    per_s = 50
    assert (scores[: 3 * per_s] < e.default_threshold).all()  # steady noise: never speech
    assert (scores[3 * per_s : 3 * per_s + 10] > e.default_threshold).all()  # a jump: at first
    assert (scores[int(5.2 * per_s) :] < e.default_threshold).all()  # then it is the floor
    # speech-like bursts 10 dB over a steady noise are found; 50 Hz hum 20 dB over it is not
    e.reset()
    t = np.arange(rate * 4) / rate
    hum = 32768 * 10 ** (-30 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 50 * t)
    hummed = np.array(e.process((_noise(rate, 4, -50, seed=2) + hum).astype(np.int16)))
    assert (hummed < e.default_threshold).all()
    e.reset()
    voice = _speech_like(rate, 4.0, [(2.0, 3.0)]).astype(np.float64) * 0.2
    scores = np.array(e.process((voice + _noise(rate, 4, -50, seed=3)).astype(np.int16)))
    assert (scores[int(2.1 * per_s) : int(2.9 * per_s)] > e.default_threshold).mean() > 0.9
    assert (scores[: int(1.9 * per_s)] < e.default_threshold).all()


def _energy_reference(x: npt.NDArray[np.int16], rate: int) -> list[float]:
    """EnergyEngine's scores written plainly: np.fft.rfft, a band mask, the minimum of a
    2 s history array."""
    n = rate * 20 // 1000
    taper = np.hanning(n).astype(np.float32)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    band = (freqs >= 200.0) & (freqs <= min(4000.0, rate / 2))
    norm = float(np.sum(taper) ** 2 / 4.0 * 32768.0**2)
    history = np.full(100, np.inf)
    scores = []
    for i in range(len(x) // n):
        spectrum = np.fft.rfft(x[i * n : (i + 1) * n] * taper)
        level = 10.0 * np.log10(float(np.sum(np.abs(spectrum[band]) ** 2)) / norm + 1e-12)
        history[i % len(history)] = level
        scores.append(max(0.0, float(level - max(float(history.min()), -60.0))))
    return scores


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_energy_scores_are_the_plain_computations_to_the_bit(rate: int) -> None:
    quiet, loud = _noise(rate, 2.5, -50), _noise(rate, 3, -25, seed=1)
    voice = _speech_like(rate, 3.0, [(0.5, 1.5)]).astype(np.float64) * 0.3
    x = np.concatenate([quiet, loud, voice + _noise(rate, 3, -50, seed=2)]).astype(np.int16)
    expected = _energy_reference(x, rate)
    e = EnergyEngine(rate)
    step = rate // 50
    for sizes in ([step], [7, step, 999, 1]):  # whole windows, and pieces
        e.reset()
        got, pos, i = [], 0, 0
        while pos < len(x):
            got += e.process(x[pos : pos + sizes[i % len(sizes)]])
            pos += sizes[i % len(sizes)]
            i += 1
        assert got == expected


def test_energy_takes_any_rate() -> None:
    e = EnergyEngine(44100)
    assert e.window == 882
    assert len(e.process(np.zeros(44100, np.int16))) == 50


def test_the_package_exports_the_stage() -> None:
    assert vad.vad_gate is spec_for("vad_gate").func
