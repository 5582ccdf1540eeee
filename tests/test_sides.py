"""What a stage exchanges outside its links (bus topics, provided interfaces): declared on
``@stage``, shown by ``pipeline stages`` and ``pipeline graph``, found through ``ctx.provided``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pipeline import Frame, Pipeline, StageContext, Text, ToolCall, ToolResult, VirtualClock, stage
from pipeline.cli import main
from pipeline.context import PLAYED, TOOLS, Played
from pipeline.report import dot, mermaid, side_edges
from pipeline.spec import Interface, Topic
from tests.renderers import assert_dot_parses, assert_mermaid_parses

ROOT = Path(__file__).resolve().parents[1]
SEEN: list[str] = []


def _my_tools(values: Mapping[str, Any], base_dir: Path) -> list[dict[str, Any]]:
    return [
        {"type": "function", "name": n, "description": "", "parameters": {}}
        for n in values["names"]
    ]


@stage(
    "my_router",
    accepts=(ToolCall,),
    emits=(ToolResult,),
    provides={TOOLS: _my_tools},
    register=False,  # a user's stage, not a built-in (the conformance test lists those)
)
async def my_router(frames: AsyncIterator[Frame], *, names: list[str]) -> AsyncIterator[Frame]:
    """A user's own tool router: answers every call with 'ok'."""
    async for f in frames:
        if isinstance(f, ToolCall):
            yield ToolResult(f.call_id, "ok", name=f.name)


@stage("tool_lister", emits=(Text, ToolCall), uses=(TOOLS,), subscribes=(PLAYED,), register=False)
async def tool_lister(*, ctx: StageContext) -> AsyncIterator[Frame]:
    """A source that names the tools its linked stages provide (as a session advertises them)
    and calls each once."""
    heard: list[Played] = []
    ctx.bus.subscribe(PLAYED, heard.append)
    for tools in ctx.provided(TOOLS):
        for i, t in enumerate(tools):
            yield Text(t["name"])
            yield ToolCall(f"c{i}", t["name"], "{}")
    await asyncio.sleep(0)
    yield Text(f"heard {len(heard)}")


@stage("noter", accepts=(Text, ToolResult), emits=(), publishes=(PLAYED,), register=False)
async def noter(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """A sink that notes what it got and publishes each text as played."""
    async for f in frames:
        if isinstance(f, Text):
            SEEN.append(f.text)
            ctx.bus.publish(PLAYED, Played(ctx.id, 0.0))
        elif isinstance(f, ToolResult):
            SEEN.append(f"{f.name}: {f.output}")
    return
    yield


def _graph() -> Pipeline:
    p = Pipeline("sides")
    p.add("agent", tool_lister)
    p.add("tools", my_router, names=["get_time", "lookup_order"])
    p.add("out", noter)
    p.link("agent", "tools", "out")
    p.link("agent", "out")
    return p


def test_a_users_own_router_provides_tools_to_a_linked_stage() -> None:
    SEEN.clear()
    _graph().run(clock=VirtualClock())
    assert sorted(SEEN[:-1]) == sorted(
        ["get_time", "lookup_order", "get_time: ok", "lookup_order: ok"]
    )
    assert SEEN[-1].startswith("heard ")


def test_the_graph_draws_what_flows_outside_the_links() -> None:
    p = _graph().check()
    assert p.problems == ()
    assert side_edges(p) == [("out", "agent", "bus: played"), ("tools", "agent", "provides: tools")]
    chart = mermaid(p)
    assert 'out -.-|"bus: played"| agent' in chart
    assert 'tools -.-|"provides: tools"| agent' in chart
    drawn = dot(p)
    assert '"tools" -> "agent" [label="provides: tools", style=dotted, color=gray40];' in drawn
    assert_mermaid_parses(chart)
    assert_dot_parses(drawn)


def test_the_tool_router_provides_the_schemas_of_its_tools() -> None:
    from pipeline.spec import resolve
    from stages.tools import tool_router  # noqa: F401  (registers it)

    spec = resolve("tool_router")
    schemas = spec.provides[TOOLS]({"tools": ["examples.tools:get_time"]}, ROOT)
    assert [s["name"] for s in schemas] == ["get_time"]
    assert schemas[0]["type"] == "function"


def test_stages_lists_what_flows_outside_the_links(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stages", "tool_router"]) == 0
    assert "provides: tools" in capsys.readouterr().out
    assert main(["stages", "twilio_sink"]) == 0
    out = capsys.readouterr().out
    assert "publishes: played" in out and "uses: twilio call" in out
    assert main(["stages", "wav_sink"]) == 0
    assert "publishes: played" in capsys.readouterr().out


def test_topics_and_interfaces_are_values_with_a_name() -> None:
    assert str(PLAYED) == "played" and str(TOOLS) == "tools"
    assert Topic("played") == Topic("played")
    mine: Interface[int] = Interface("answer")
    assert {mine: 1}[Interface("answer")] == 1
