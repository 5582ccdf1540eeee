"""ctx.metrics: figures a stage reports, handed to whoever runs the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest

from pipeline import Frame, Pipeline, StageContext, Text, UsageError, VirtualClock, stage
from pipeline.metrics import Metric, StageMetrics
from pipeline.runtime import Runner

WORDS = Metric("words", "Words seen, by kind", labels=("kind",))
LENGTH = Metric("word_length", "Letters per word", kind="histogram")


@stage("word_counter", accepts=(Text,), emits=(Text,), metrics=(WORDS, LENGTH), register=False)
async def word_counter(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Count the words of each text."""
    async for f in frames:
        assert isinstance(f, Text)
        for w in f.text.split():
            ctx.metrics.count(WORDS, kind="long" if len(w) > 3 else "short")
            ctx.metrics.observe(LENGTH, len(w))
        yield f


@stage("texts", emits=(Text,), register=False)
async def texts() -> AsyncIterator[Frame]:
    """Two texts."""
    yield Text("the quick brown fox")
    yield Text("jumps")


class Sink:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float, dict[str, str], str]] = []

    def add(self, metric: Metric, value: float, labels: Mapping[str, str], stage: str) -> None:
        self.seen.append((metric.name, value, dict(labels), stage))


def test_the_runner_hands_every_figure_to_its_sink() -> None:
    p = Pipeline("count")
    p.add("src", texts)
    p.add("count", word_counter)
    p.add("out", "null_sink")
    p.link("src", "count", "out")
    p.validate()
    sink = Sink()
    asyncio.run(Runner(p, clock=VirtualClock(), metrics=sink).run())
    words = [(labels["kind"], stage) for name, _, labels, stage in sink.seen if name == "words"]
    kinds = ["short", "long", "long", "short", "long"]  # the quick brown fox / jumps
    assert words == [(k, "count") for k in kinds]
    lengths = [v for name, v, _, _ in sink.seen if name == "word_length"]
    assert lengths == [3, 5, 5, 3, 5]


def test_without_a_sink_figures_go_nowhere_and_the_stage_runs() -> None:
    from pipeline.testing import run_stage

    assert run_stage(word_counter, [Text("a b")]) == [Text("a b")]


def test_a_wrong_label_set_or_kind_is_a_bug_said_plainly() -> None:
    m = StageMetrics(Sink(), "s")
    with pytest.raises(UsageError, match=r"metric 'words' takes the labels \(kind\), got \(k\)"):
        m.count(WORDS, k="x")
    with pytest.raises(UsageError, match="metric 'word_length' is a histogram: use observe"):
        m.count(LENGTH)
    with pytest.raises(UsageError, match="metric 'words' is a counter: use count"):
        m.observe(WORDS, 1.0, kind="x")


def test_pipeline_stages_lists_what_a_stage_reports(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    assert main(["stages", "tool_router"]) == 0
    assert "reports: tool_calls" in capsys.readouterr().out
