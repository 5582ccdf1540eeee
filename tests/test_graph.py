"""Pipeline building and checking in Python: type and format propagation, feedback links,
order, descriptions. (Running graphs: test_runtime.py; YAML: test_config.py.)"""

from __future__ import annotations

from pipeline import Audio, AudioFormat, Pipeline, SpeechStarted, Text
from pipeline.frames import Interrupt, ToolCall, ToolResult
from pipeline.report import dot, mermaid
from tests import stagekit as kit
from tests.renderers import assert_dot_parses, assert_mermaid_parses


def test_add_returns_the_id_and_accepts_names_specs_and_functions() -> None:
    p = Pipeline("p")
    assert p.add("src", kit.source) == "src"
    p.add("up", "resample", rate=16000)
    p.add("out", "tests.stagekit:collect")
    p.chain("src -> up -> out")
    plan = p.check()
    assert plan.problems == ()
    assert [n.type_name for n in plan.stages.values()] == [
        "kit_source",
        "resample",
        "tests.stagekit:collect",
    ]
    assert plan.stages["up"].values == {"rate": 16000, "quality": "HQ", "low_latency": True}


def test_formats_propagate_through_the_chain() -> None:
    p = Pipeline("p")
    p.add("src", kit.source)  # declares pcm16 8000 Hz
    p.add("up", "resample", rate=16000)
    p.add("down", "resample", rate=8000)
    p.add("enc", "g711_encode", law="alaw")
    p.add("out", kit.collect)
    p.chain("src -> up -> down -> enc -> out")
    plan = p.check()
    assert plan.problems == ()
    assert [str(lk.format) for lk in plan.links] == [
        "pcm16 8000 Hz",
        "pcm16 16000 Hz",
        "pcm16 8000 Hz",
        "pcma 8000 Hz",
    ]
    assert plan.stages["enc"].input_format == AudioFormat("pcm16", 8000)
    assert [lk.describe() for lk in plan.links][-1] == "audio [pcma 8000 Hz]"


def test_link_types_follow_what_flows_and_what_the_destination_takes() -> None:
    p = Pipeline("p")
    p.add("src", kit.source)
    p.add("ev", kit.events)
    p.add("mix", kit.passthrough)  # passes everything it gets: audio and text
    p.add("talk", kit.echo_events)  # takes text, emits speech_started
    p.add("all", kit.collect)
    p.chain("src -> mix -> talk -> all")
    p.chain("ev -> mix -> all")
    plan = p.check()
    assert plan.problems == ()
    types = {lk.name: {t.type for t in lk.types} for lk in plan.links}
    assert types == {
        "src -> mix": {"audio"},
        "mix -> talk": {"text"},  # the audio is not sent where it is not taken
        "talk -> all": {"speech_started"},
        "ev -> mix": {"text"},
        "mix -> all": {"audio", "text"},
    }
    assert plan.stages["mix"].out_types == frozenset({Audio, Text})
    assert plan.stages["talk"].out_types == frozenset({SpeechStarted})


def test_the_link_closing_a_cycle_is_the_feedback_link() -> None:
    p = Pipeline("agent")
    p.add("src", kit.events)
    p.add("agent", kit.loop_head)
    p.add("tools", kit.echo_events)
    p.add("out", kit.collect)
    p.chain("src -> agent -> tools -> agent")
    p.chain("agent -> out")
    plan = p.check()
    assert plan.problems == ()
    assert [(lk.name, lk.feedback) for lk in plan.links] == [
        ("src -> agent", False),
        ("agent -> tools", False),
        ("tools -> agent", True),
        ("agent -> out", False),
    ]
    assert p.topo_order() == ["src", "agent", "tools", "out"]  # feedback links ignored
    assert '    tools -.->|"speech_started"| agent' in mermaid(plan)
    assert '"tools" -> "agent" [label="speech_started", style=dashed];' in dot(plan)
    assert_mermaid_parses(mermaid(plan))
    assert_dot_parses(dot(plan))


def test_builtin_agent_cycle_types() -> None:
    """The contract's cycle: session -> tool_router -> session carries calls and results."""
    p = Pipeline("agent")
    p.add("tone", "signal_source", rate=16000, seconds=0.1)
    p.add("agent", "realtime_session", provider="emulator", input_rate=16000)
    p.add("tools", "tool_router", tools=["examples.tools:get_time"])
    p.add("out", "null_sink")
    p.chain("tone -> agent -> tools -> agent")
    p.chain("agent -> out")
    plan = p.check()
    assert plan.problems == ()
    lk = {x.name: x for x in plan.links}
    assert lk["tools -> agent"].feedback
    assert lk["tools -> agent"].types == frozenset({ToolResult})
    assert ToolCall in lk["agent -> tools"].types and Interrupt in lk["agent -> tools"].types
    assert Audio not in lk["agent -> tools"].types
    assert str(lk["tone -> agent"].format) == "pcm16 16000 Hz"


def test_fan_in_of_two_formats_is_a_problem() -> None:
    p = Pipeline("p")
    p.add("a", "signal_source", rate=8000)
    p.add("b", "signal_source", rate=16000)
    p.add("mix", kit.passthrough)
    p.add("out", kit.collect)
    p.chain("a -> mix -> out")
    p.chain("b -> mix")
    assert [str(q) for q in p.check().problems] == [
        "<pipeline>: stage 'mix' (kit_pass) gets audio in 2 formats: pcm16 8000 Hz from 'a', "
        "pcm16 16000 Hz from 'b'; resample/encode the inputs to one format"
    ]


def test_a_stage_with_input_but_no_output_link_and_one_with_no_input() -> None:
    p = Pipeline("p")
    p.add("src", kit.source)
    p.add("up", "resample", rate=16000)
    p.add("dec", "g711_decode")
    p.add("out", kit.collect)
    p.chain("src -> up")
    p.chain("dec -> out")
    assert [str(q) for q in p.check().problems] == [
        "<pipeline>: stage 'up' (resample) sends its output nowhere; link it to a sink: "
        "'up -> ...'",
        "<pipeline>: stage 'dec' (g711_decode) gets no input; link a stage into it: '... -> dec'",
    ]


def test_link_needs_two_stages() -> None:
    p = Pipeline("p")
    p.add("src", kit.source)
    p.link("src")
    assert str(p.check().problems[0]) == (
        "<pipeline>: a link needs at least two stages; write 'a -> b'"
    )


def test_check_writes_nothing_into_the_pipeline_and_its_plan_is_frozen() -> None:
    import dataclasses

    import pytest

    p = Pipeline("p")
    p.add("src", kit.source)
    p.add("up", "resample", rate=16000)
    p.add("out", kit.collect)
    p.chain("src -> up -> out")
    before = [dataclasses.asdict(n) for n in p.nodes.values()]
    a, b = p.check(), p.check()
    assert [dataclasses.asdict(n) for n in p.nodes.values()] == before
    assert a == b and a is not b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.stages["up"].input_format = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.stages["up"].values["rate"] = 8000  # type: ignore[index]
    assert [seg.stages for seg in a.segments()] == [("src", "up", "out")]
    assert [seg.stages for seg in a.segments(fuse=False)] == [("src",), ("up",), ("out",)]
