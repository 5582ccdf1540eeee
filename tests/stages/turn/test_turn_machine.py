"""The end-of-turn state table, driven synchronously with chosen probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import UsageError
from pipeline.frames import Audio, Frame, SpeechStarted, SpeechStopped, Text
from stages.turn.machine import TRANSITIONS, Input, State, TurnTaker


def audio(pts: float, seconds: float = 0.02, value: int = 100) -> Audio:
    return Audio.from_samples(np.full(int(16000 * seconds), value, np.int16), 16000, pts=pts)


def events(frames: list[Frame]) -> list[tuple[str, float | None]]:
    return [(f.type, f.pts) for f in frames if not isinstance(f, Audio)]


def test_every_state_answers_every_input_it_can_meet() -> None:
    for state in State:
        for event in (Input.STARTED, Input.TIMEOUT, Input.END):
            assert (state, event) in TRANSITIONS, (state, event)
    assert TRANSITIONS[State.SPEAKING, Input.COMPLETE][0] is State.SILENT


def test_a_complete_turn_passes_its_stop_at_once() -> None:
    t = TurnTaker()
    out = t.push(SpeechStarted(pts=0.5), 0.0) + t.push(audio(0.5), 0.0)
    assert t.push(SpeechStopped(pts=1.0), 1.0) == [] and t.asking == SpeechStopped(pts=1.0)
    out += t.answer(0.9, 1.05)
    assert events(out) == [("speech_started", 0.5), ("speech_stopped", 1.0)]
    assert t.state is State.SILENT and t.deadline is None
    assert [d.complete for d in t.decisions] == [True]


def test_a_pause_mid_sentence_holds_the_stop_and_a_resumed_turn_drops_both_events() -> None:
    t = TurnTaker(max_wait=2.0)
    out = t.push(SpeechStarted(pts=0.0), 0.0)
    t.push(SpeechStopped(pts=1.0), 1.3)
    out += t.answer(0.2, 1.35)
    assert t.state is State.PAUSED and t.deadline == pytest.approx(3.35)
    out += t.expire(2.0)  # not yet
    out += t.push(SpeechStarted(pts=1.8), 2.1)  # the caller goes on
    assert t.state is State.SPEAKING and t.deadline is None and t.resumed == 1
    t.push(SpeechStopped(pts=3.0), 3.3)
    out += t.answer(0.8, 3.35)
    assert events(out) == [("speech_started", 0.0), ("speech_stopped", 3.0)]


def test_the_held_stop_passes_after_max_wait_by_the_clock() -> None:
    t = TurnTaker(max_wait=2.0)
    t.push(SpeechStarted(pts=0.0), 0.0)
    t.push(SpeechStopped(pts=1.0), 1.3)
    assert t.answer(0.1, 1.3) == []
    assert t.expire(3.29) == []
    assert events(t.expire(3.3)) == [("speech_stopped", 1.0)]
    assert t.state is State.SILENT and t.timeouts == 1 and t.deadline is None


def test_the_held_stop_passes_after_max_wait_in_media_time_when_audio_flows() -> None:
    t = TurnTaker(max_wait=0.5)
    t.push(SpeechStarted(pts=0.0), 0.0)
    t.push(SpeechStopped(pts=1.0), 0.0)
    t.answer(0.1, 0.0)  # the clock has not moved: a file read faster than real time
    assert events(t.push(audio(1.46), 0.0)) == []
    out = t.push(audio(1.5), 0.0)
    assert events(out) == [("speech_stopped", 1.0)]
    assert isinstance(out[-1], Audio)  # the stop goes before the audio that expired it


def test_the_end_of_the_stream_releases_a_held_stop() -> None:
    t = TurnTaker()
    t.push(SpeechStarted(pts=0.0), 0.0)
    t.push(SpeechStopped(pts=1.0), 1.0)
    t.answer(0.0, 1.0)
    assert events(t.finish()) == [("speech_stopped", 1.0)]
    assert t.finish() == []


def test_other_frames_and_a_stray_stop_pass() -> None:
    t = TurnTaker()
    assert t.push(Text("hi"), 0.0) == [Text("hi")]
    assert t.push(SpeechStopped(pts=2.0), 0.0) == [SpeechStopped(pts=2.0)]
    assert t.asking is None


def test_answer_without_a_question_is_an_error() -> None:
    with pytest.raises(UsageError, match="push a speech_stopped first"):
        TurnTaker().answer(0.5, 0.0)


def test_the_model_hears_the_turn_from_pre_speech_before_its_start_at_most_the_window() -> None:
    t = TurnTaker(pre_speech=0.5, window=1.0)
    for i in range(100):  # 2 s of audio, each 20 ms frame holding its index
        t.push(audio(i * 0.02, value=i), 0.0)
        if i == 60:
            t.push(SpeechStarted(pts=1.2), 0.0)
    heard = t.turn_audio()
    # from 0.7 s (35) to the end (99): 1.3 s, cut to the last 1.0 s (frames 50..99)
    assert heard.size == 16000 and heard[0] == 50 and heard[-1] == 99
    t2 = TurnTaker(pre_speech=0.5, window=8.0)
    for i in range(100):
        t2.push(audio(i * 0.02, value=i), 0.0)
    t2.push(SpeechStarted(pts=1.2), 0.0)
    assert t2.turn_audio()[0] == 35  # the turn starts 0.5 s before 1.2 s


def test_history_is_bounded_by_the_window_and_pre_speech() -> None:
    t = TurnTaker(pre_speech=0.5, window=1.0)
    for i in range(500):
        t.push(audio(i * 0.02), 0.0)
    assert t.turn_audio().size == 16000
    assert sum(s.size for _, s in t._audio) <= int(1.5 * 16000) + 320
