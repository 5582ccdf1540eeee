"""The turn_detector stage: the real model on the speech set, the clock injected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.clock import VirtualClock
from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, SpeechStarted, SpeechStopped, Text
from pipeline.spec import spec_for
from pipeline.testing import make_context, run_stage, run_stage_async
from stages.turn import SmartTurnModel
from stages.vad.quality import read_wav


def clip(folder: Path, name: str, hangover_s: float = 0.3) -> tuple[list[Audio], float]:
    """20 ms frames of a labelled clip up to ``hangover_s`` after its speech, and its end."""
    labels = json.loads((folder / "labels.json").read_text())
    x, rate = read_wav(folder / name)
    end = labels[name]["speech_end"]
    x = x[: round((end + hangover_s) * rate)]
    frames = [Audio.from_samples(x[i : i + 320], rate, pts=i / rate) for i in range(0, x.size, 320)]
    return frames, end


def kinds(frames: list[Frame]) -> list[tuple[str, float | None]]:
    return [(f.type, f.pts) for f in frames if not isinstance(f, Audio)]


@pytest.fixture(scope="module")
def turn_set(speech_set: Path) -> Path:
    return speech_set / "turn"


def test_the_model_answers_a_probability_and_the_same_one_twice(turn_set: Path) -> None:
    model = SmartTurnModel()
    frames, _ = clip(turn_set, "turn-00-complete.wav")
    audio = np.concatenate([f.samples() for f in frames])
    p = model.probability(audio)
    assert 0.0 <= p <= 1.0
    assert model.probability(audio) == p
    # int16 and floats at full scale ±1 are the same audio to it
    assert model.probability(audio.astype(np.float32) / 32768) == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("label", ["complete", "cut"])
def test_a_stop_passes_at_once_when_the_model_says_complete(turn_set: Path, label: str) -> None:
    frames, end = clip(turn_set, f"turn-01-{label}.wav")
    p = SmartTurnModel().probability(np.concatenate([f.samples() for f in frames]))
    stream: list[Frame] = [SpeechStarted(pts=0.3), *frames, SpeechStopped(pts=end), Text("after")]
    # a threshold just under the model's answer: complete, whatever the clip
    out = run_stage("turn_detector", stream, threshold=max(0.001, p - 0.001))
    assert kinds(out) == [("speech_started", 0.3), ("speech_stopped", end), ("text", None)]
    assert [f for f in out if isinstance(f, Audio)] == frames  # audio passes unchanged


def test_a_pause_judged_incomplete_is_bridged_when_the_caller_goes_on(turn_set: Path) -> None:
    first, end1 = clip(turn_set, "turn-02-cut.wav")
    second, end2 = clip(turn_set, "turn-02-complete.wav")
    offset = first[-1].end_pts + 0.5
    second = [Audio(f.data, f.encoding, f.rate, f.channels, f.pts + offset) for f in second]
    stream: list[Frame] = [
        SpeechStarted(pts=0.3),
        *first,
        SpeechStopped(pts=end1),
        SpeechStarted(pts=offset + 0.3),
        *second,
        SpeechStopped(pts=offset + end2),
    ]
    out = run_stage("turn_detector", stream, threshold=0.999999, max_wait_ms=5000)
    # one turn downstream: the first start, the last stop (held to the end, then released)
    assert kinds(out) == [("speech_started", 0.3), ("speech_stopped", offset + end2)]


def test_a_held_stop_passes_after_max_wait_of_silence_on_the_clock(turn_set: Path) -> None:
    frames, end = clip(turn_set, "turn-03-cut.wav")
    clock = VirtualClock()
    spec = spec_for("turn_detector")
    ctx = make_context(spec, clock=clock)

    async def caller() -> AsyncIterator[Frame]:
        yield SpeechStarted(pts=0.3)
        for f in frames:
            yield f
        yield SpeechStopped(pts=end)
        await clock.sleep(10.0)  # the caller says nothing more for 10 s
        yield Text("later")

    async def run() -> list[Frame]:
        out = await run_stage_async(
            "turn_detector", caller(), ctx=ctx, threshold=0.999999, max_wait_ms=1500
        )
        return out

    async def watch(out_box: list[list[Frame]]) -> None:
        out_box.append(await run())

    box: list[list[Frame]] = []
    t0 = clock.now()
    asyncio.run(watch(box))
    out = box[0]
    assert kinds(out) == [("speech_started", 0.3), ("speech_stopped", end), ("text", None)]
    assert ctx.reports["turn_timeouts"] == 1 and ctx.reports["turn_complete"] == 0
    assert clock.now() - t0 == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("fmt", "fix"),
    [
        (AudioFormat("pcm16", 8000), "add {type: resample, rate: 16000} before it"),
        (AudioFormat("pcmu", 8000), "decode and add {type: resample, rate: 16000} before it"),
        (AudioFormat("pcm16", 24000), "add {type: resample, rate: 16000} before it"),
    ],
)
def test_audio_other_than_16_khz_pcm16_is_refused_before_running(
    fmt: AudioFormat, fix: str
) -> None:
    spec = spec_for("turn_detector")
    assert spec.output_format is not None
    assert spec.output_format({}, AudioFormat("pcm16", 16000)) == AudioFormat("pcm16", 16000)
    with pytest.raises(FormatError) as err:
        spec.output_format({}, fmt)
    assert err.value.message == f"gets {fmt} audio; the Smart Turn model takes pcm16 16000 Hz mono"
    assert err.value.fix.startswith(fix)


def test_8_khz_phone_audio_is_refused_while_running_too() -> None:
    refused = r"stage 'turn_detector' \(turn_detector\) gets pcm16 8000"
    with pytest.raises(FormatError, match=refused):
        run_stage("turn_detector", [Audio(bytes(320), "pcm16", 8000)])


def test_validate_names_the_line_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\n"
        "pipelines:\n"
        "  phone:\n"
        "    stages:\n"
        "      src:  {type: signal_source, seconds: 0.2, rate: 8000}\n"
        "      gate: {type: vad_gate, engine: webrtc, mode: annotate}\n"
        "      turn: {type: turn_detector, max_wait_ms: 1500}\n"
        "      out:  {type: null_sink}\n"
        "    links:\n"
        "      - src -> gate -> turn -> out\n"
    )
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert (
        "p.yaml:10:9: link 'gate -> turn': stage 'turn' (turn_detector) gets pcm16 8000 Hz audio; "
        "the Smart Turn model takes pcm16 16000 Hz mono; add {type: resample, rate: 16000} "
        "before it (the model was trained on 16 kHz speech)"
    ) in err


def test_parameters_are_checked() -> None:
    spec = spec_for("turn_detector")
    assert spec.check is not None
    problems = spec.check({"threshold": 1.5, "max_wait_ms": -1}, Path())
    assert {name for name, _ in problems} == {"threshold", "max_wait_ms"}
    assert spec.check({"threshold": 0.5, "max_wait_ms": 0}, Path()) == []
    assert all(spec.params[name].doc for name in spec.params)
