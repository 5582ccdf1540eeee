"""Tests for the tool router: schemas, loading errors, every failure path, timeouts on a virtual
clock, the concurrency limit, barge-in cancellation, de-duplication, logging and cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import re
import sys
import threading
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.clock import RealClock, VirtualClock
from pipeline.context import StageContext
from pipeline.errors import ConfigError
from pipeline.frames import (
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    Text,
    ToolCall,
    ToolCancel,
    ToolResult,
)
from pipeline.signature import parse_docstring
from pipeline.spec import resolve, stage
from pipeline.testing import check_stage, run_stage_async
from stages.tools import (
    CallLedger,
    cancelled_text,
    check_tools,
    load_tool,
    load_tools,
    not_run_text,
    run_tool,
    tool_router,
    tool_schemas,
)
from stages.tools.router import _cut

# The examples package sits at the repository root, next to pipelines.yaml (it is not installed).
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))
from examples import tools as example_tools  # noqa: E402

MOD = "tooltest_box"

# ---------------------------------------------------------------------------- test tools


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


def typed(
    name: str,
    count: int,
    ratio: float,
    loud: bool,
    mode: Literal["fast", "slow"],
    color: Color,
    note: str | None = None,
    tags: list[str] | None = None,
    level: Annotated[int, pydantic.Field(description="how loud, 0 to 10")] = 3,
) -> str:
    """Exercise every supported parameter type.

    A second paragraph the model
    also reads.

    Args:
        name: who to greet
        count (int): how many times; it goes on
            on a second line
        ratio: a fraction
        loud: shout or not
        mode: the speed
        color: a colour
        note: optional note
        tags: labels to attach

    Returns:
        nothing useful
    """
    return "ok"


def numpy_style(city: str, days: int = 1) -> str:
    """Forecast for a city.

    Parameters
    ----------
    city : str
        The city, in English.
    days : int
        How many days ahead.
    """
    return city


def no_args() -> str:
    return "nothing needed"


def positional_only(a: int, /, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


def star_args(*names: str) -> str:
    return ""


def kw_star(**options: Any) -> str:
    return ""


class Opaque:
    pass


def opaque_param(thing: Opaque) -> str:
    return ""


def nested(pts: list[Point], a: list[int] | None = None, b: int | str = 0) -> str:
    """Takes nested values."""
    return "ok"


def boom(x: int) -> str:
    """Always fails."""
    raise ValueError(f"bad x {x}")


def huge() -> str:
    return "x" * 1000


def unserializable() -> object:
    return object()


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Reading(pydantic.BaseModel):
    value: float
    unit: str


async def structured() -> dict[str, Any]:
    return {"point": Point(1, 2), "reading": Reading(value=1.5, unit="V"), "set": [3]}


async def nothing() -> None:
    return None


def sync_add(a: int, b: int) -> int:
    """Add (sync, runs in a thread)."""
    return a + b


def sync_wait_for(flag: str) -> str:
    """Blocks its thread until the event loop sets a threading.Event."""
    if not STATE.thread_event.wait(5):
        return "loop was blocked"
    return f"{flag} from {threading.current_thread().name}"


class State:
    """Shared by the tools below and the tests; reset per test."""

    def __init__(self) -> None:
        self.clock = VirtualClock()
        self.active = 0
        self.peak = 0
        self.calls: list[str] = []
        self.started = asyncio.Event()
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.thread_event = threading.Event()


STATE = State()


async def hold(tag: str, seconds: float = 1.0) -> str:
    """Holds a slot for ``seconds`` of virtual time, counting overlapping calls."""
    STATE.calls.append(tag)
    STATE.active += 1
    STATE.peak = max(STATE.peak, STATE.active)
    STATE.started.set()
    try:
        await STATE.clock.sleep(seconds)
    except asyncio.CancelledError:
        STATE.cancelled.append(tag)
        raise
    finally:
        STATE.active -= 1
    STATE.finished.append(tag)
    return f"done {tag}"


async def hang() -> str:
    """Waits for an event that never fires."""
    await asyncio.Event().wait()
    return "never"


async def end_call(reason: str) -> str:
    """Hang up."""
    STATE.calls.append(f"end_call:{reason}")
    return "hung up"


@pytest.fixture(autouse=True)
def toolbox() -> Iterator[types.ModuleType]:
    """The functions above as an importable module, so refs like 'tooltest_box:hold' load."""
    global STATE
    STATE = State()
    module = types.ModuleType(MOD)
    for name, value in globals().items():
        if callable(value) and getattr(value, "__module__", "") == __name__:
            setattr(module, name, value)
    sys.modules[MOD] = module
    yield module
    sys.modules.pop(MOD, None)


def ref(name: str) -> str:
    return f"{MOD}:{name}"


# ---------------------------------------------------------------------------- schemas


def test_schema_of_every_supported_type() -> None:
    schema = load_tool(ref("typed")).schema()
    assert schema["type"] == "function"
    assert schema["name"] == "typed"
    assert schema["description"] == (
        "Exercise every supported parameter type.\n\nA second paragraph the model also reads."
    )
    assert schema["parameters"] == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "who to greet"},
            "count": {
                "type": "integer",
                "description": "how many times; it goes on on a second line",
            },
            "ratio": {"type": "number", "description": "a fraction"},
            "loud": {"type": "boolean", "description": "shout or not"},
            "mode": {"type": "string", "enum": ["fast", "slow"], "description": "the speed"},
            "color": {"type": "string", "enum": ["red", "green"], "description": "a colour"},
            "note": {
                "anyOf": [{"type": "string"}, {"type": "null"}],
                "default": None,
                "description": "optional note",
            },
            "tags": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
                "description": "labels to attach",
            },
            "level": {"type": "integer", "default": 3, "description": "how loud, 0 to 10"},
        },
        "required": ["name", "count", "ratio", "loud", "mode", "color"],
    }
    json.dumps(schema)  # plain JSON all the way down


def test_schema_from_numpy_docstring_and_defaults() -> None:
    params = load_tool(ref("numpy_style")).schema()["parameters"]
    assert params["properties"] == {
        "city": {"type": "string", "description": "The city, in English."},
        "days": {"type": "integer", "default": 1, "description": "How many days ahead."},
    }
    assert params["required"] == ["city"]


def test_schema_of_a_function_without_parameters_or_docstring() -> None:
    schema = load_tool(ref("no_args")).schema()
    assert schema["description"] == "no args"
    assert schema["parameters"] == {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }


def test_parse_docstring_sections() -> None:
    doc = parse_docstring(
        """Do a thing.

        Args:
            a: first
            b (int, optional): second,
                continued
        Raises:
            ValueError: never listed as a parameter
        """
    )
    assert doc.summary == "Do a thing."
    assert doc.params == {"a": "first", "b": "second, continued"}


def test_tool_schemas_of_the_examples_in_order() -> None:
    schemas = tool_schemas(
        ["examples.tools:get_time", {"ref": "examples.tools:lookup_order", "timeout_s": 3}]
    )
    assert [s["name"] for s in schemas] == ["get_time", "lookup_order"]
    assert all(set(s) == {"type", "name", "description", "parameters"} for s in schemas)
    get_time = schemas[0]["parameters"]
    assert get_time["required"] == ["city"]
    assert get_time["properties"]["clock"]["enum"] == ["24h", "12h"]
    assert "New York" in get_time["properties"]["city"]["description"]
    assert schemas[1]["description"].startswith("Look up a customer's order")


def test_a_tool_can_be_renamed_and_given_its_own_timeout() -> None:
    tool = load_tool({"ref": ref("hold"), "name": "wait_a_bit", "timeout_s": 2})
    assert (tool.name, tool.timeout_s, tool.is_async) == ("wait_a_bit", 2.0, True)
    assert load_tool(ref("sync_add")).is_async is False


# ---------------------------------------------------------------------------- load errors


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_colon_here", "is not of the form 'module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{MOD}:missing", f"module '{MOD}' has no 'missing'"),
        (f"{MOD}:bom", f"module '{MOD}' has no 'bom'; did you mean 'boom'?"),
        (f"{MOD}:MOD", "is a str, not a function"),
        (f"{MOD}:star_args", "takes *names; the model can only fill named parameters"),
        (f"{MOD}:kw_star", "takes **options"),
        (f"{MOD}:opaque_param", "its parameters cannot be described as JSON schema"),
        ({"ref": f"{MOD}:hold", "timeout": 3}, "unknown key 'timeout'"),
        ({"timeout_s": 3}, "has no 'ref'"),
        ({"ref": f"{MOD}:hold", "timeout_s": 0}, "timeout_s is 0"),
        ({"ref": f"{MOD}:hold", "name": "bad name!"}, "is not a valid function name"),
        (42, "a tool must be 'module:function'"),
    ],
)
def test_bad_refs_are_clear_config_errors(spec: Any, expected: str) -> None:
    if spec == f"{MOD}:MOD":
        sys.modules[MOD].MOD = "a string"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as info:
        load_tool(spec)
    text = str(info.value)
    assert expected in text
    assert text.startswith("tool ") or text.startswith("a tool ")  # no "<pipeline>:" prefix
    assert info.value.exit_code == 2


def test_check_tools_lists_every_problem() -> None:
    problems = check_tools(
        {
            "tools": [ref("hold"), "nope_mod_q:f", ref("missing"), {"ref": ref("hold")}],
            "timeout_s": 0,
            "max_concurrency": 0,
            "on_interrupt": "later",
            "max_result_chars": 10,
        }
    )
    assert len(problems) == 7, problems
    joined = "\n".join(problems)
    assert "cannot import module 'nope_mod_q'" in joined
    assert "has no 'missing'" in joined
    assert "two tools are named 'hold'" in joined
    assert "'timeout_s' is 0; it must be more than 0" in joined
    assert "'max_concurrency' is 0; it must be at least 1" in joined
    assert "'max_result_chars' is 10; it must be at least 200" in joined
    assert "'on_interrupt' is 'later'" in joined
    assert check_tools({"tools": ["examples.tools:get_time"]}) == []
    assert check_tools({"tools": []}) == ["'tools' is empty; list at least one 'module:function'"]


def test_modules_next_to_the_yaml_file_are_found(tmp_path: Path) -> None:
    (tmp_path / "mytools_near_yaml.py").write_text(
        "def shout(text: str) -> str:\n    '''Shout.'''\n    return text.upper()\n"
    )
    try:
        tool = load_tool("mytools_near_yaml:shout", base_dir=tmp_path)
        assert tool.schema()["description"] == "Shout."
    finally:
        sys.modules.pop("mytools_near_yaml", None)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(tmp_path.resolve()))


# ---------------------------------------------------------------------------- run_tool


def run(call: ToolCall, *refs: str, clock: Any = None, **kw: Any) -> tuple[str, bool, str]:
    table = load_tools(refs or [ref("boom")])

    async def go() -> Any:
        return await run_tool(table, call, clock=clock or VirtualClock(), **kw)

    out = asyncio.run(go())
    return out.output, out.is_error, out.outcome


def test_bad_json_is_an_error_result_naming_the_expected_arguments() -> None:
    out, err, outcome = run(ToolCall("c1", "boom", '{"x": 1'), ref("boom"))
    assert err and outcome == "bad_arguments"
    assert out.startswith("arguments for boom are not valid JSON (")
    assert out.endswith("send a JSON object with 'x' (integer)")


def test_arguments_that_are_not_an_object() -> None:
    out, err, _ = run(ToolCall("c1", "boom", "[1]"), ref("boom"))
    assert err and out.startswith("arguments for boom must be a JSON object, got an array")


def test_bad_arguments_name_the_field_and_the_expected_type() -> None:
    out, err, outcome = run(
        ToolCall("c1", "typed", json.dumps({"name": 3, "count": "many", "mode": "medium"})),
        ref("typed"),
    )
    assert err and outcome == "bad_arguments"
    assert out.startswith("bad arguments for typed: ")
    assert "'name' (expected string): Input should be a valid string, got 3" in out
    assert "'count' (expected integer): Input should be a valid integer" in out
    assert """'mode' (expected one of "fast", "slow")""" in out
    assert "'ratio' is missing (expected number)" in out
    assert out.endswith("fix them and call again")


def test_bad_nested_arguments_are_located_as_the_model_wrote_them() -> None:
    args = {"pts": [{"x": 1, "y": 2}, {"x": "a", "y": 0, "z": 1}], "a": [1, "x"], "b": [1], "zz": 2}
    out, err, _ = run(ToolCall("c1", "nested", json.dumps(args)), ref("nested"))
    assert err
    assert out == (
        "bad arguments for nested: "
        "'pts[1].x' (expected integer): Input should be a valid integer, unable to parse "
        'string as an integer, got "a"; '
        "unexpected key 'pts[1].z'; "
        "'a[1]' (expected integer): Input should be a valid integer, unable to parse string "
        'as an integer, got "x"; '
        "'b' (expected integer or string): none of these fits, got [1]; "
        "unexpected argument 'zz' (nested takes: pts, a, b); fix them and call again"
    )


def test_unexpected_arguments_are_refused_with_the_real_names() -> None:
    out, err, _ = run(ToolCall("c1", "boom", '{"x": 1, "y": 2}'), ref("boom"))
    assert err and "unexpected argument 'y' (boom takes: x)" in out


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(["name", "count", "ratio", "loud", "mode", "color", "note", "tags", "x"])


@settings(max_examples=150, deadline=None)
@given(
    raw=st.one_of(
        st.text(max_size=40),
        JSON_VALUES.map(json.dumps),
        st.dictionaries(KEYS, JSON_VALUES, max_size=9).map(json.dumps),
    )
)
def test_any_arguments_give_a_result_never_an_exception(raw: str) -> None:
    tool = load_tool(ref("typed"))
    try:
        tool.bind_arguments(raw)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(("arguments for typed", "bad arguments for typed: "))
        assert len(message) < 2000
    else:
        # it validated: then it is a JSON object with every required key
        args = json.loads(raw)
        assert {"name", "count", "ratio", "loud", "mode", "color"} <= set(args)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=600), limit=st.integers(200, 500))
def test_cut_results_fit_the_limit(text: str, limit: int) -> None:
    out = _cut(text, limit)
    assert len(out) <= limit
    assert out == text if len(text) <= limit else out.startswith(text[: limit - 80])


def test_lax_arguments_are_converted() -> None:
    out, err, _ = run(ToolCall("c1", "positional_only", '{"a": "40"}'), ref("positional_only"))
    assert (out, err) == ("42", False)


def test_empty_arguments_mean_no_arguments() -> None:
    assert run(ToolCall("c1", "no_args", ""), ref("no_args")) == ("nothing needed", False, "ok")


def test_unknown_tool_is_refused_and_nothing_is_imported() -> None:
    out, err, outcome = run(
        ToolCall("c1", "os:system", '{"command": "true"}'), ref("boom"), ref("no_args")
    )
    assert (out, err, outcome) == (
        "no tool named 'os:system'; available: boom, no_args",
        True,
        "unknown_tool",
    )


def test_exception_becomes_an_error_result() -> None:
    out, err, outcome = run(ToolCall("c1", "boom", '{"x": 7}'), ref("boom"), clock=RealClock())
    assert (out, err, outcome) == ("boom raised ValueError: bad x 7", True, "exception")


def test_timeout_on_the_virtual_clock() -> None:
    clock = VirtualClock()
    out, err, outcome = run(ToolCall("c1", "hang", "{}"), ref("hang"), clock=clock, timeout_s=3)
    assert err and outcome == "timeout"
    assert out.startswith("hang took longer than 3 s and was stopped")
    assert clock.now() == 3.0


def test_per_tool_timeout_overrides_the_default() -> None:
    clock = VirtualClock()
    table = load_tools([{"ref": ref("hang"), "timeout_s": 0.25}])
    out = asyncio.run(run_tool(table, ToolCall("c", "hang", ""), clock=clock, timeout_s=10))
    assert out.output.startswith("hang took longer than 0.25 s")
    assert clock.now() == 0.25


def test_oversized_results_are_cut_with_a_note() -> None:
    out, err, _ = run(ToolCall("c1", "huge", ""), ref("huge"), max_result_chars=200)
    assert not err
    assert len(out) <= 200
    assert out.startswith("xxxx")
    assert out.endswith(f"[result cut: 1000 characters, showing the first {out.index(chr(10))}]")


def test_unserializable_result_is_an_error() -> None:
    out, err, outcome = run(ToolCall("c1", "unserializable", ""), ref("unserializable"))
    assert err and outcome == "error"
    assert out.startswith("unserializable returned a object that cannot be turned into JSON")


def test_non_string_results_are_json() -> None:
    out, err, _ = run(ToolCall("c1", "structured", ""), ref("structured"))
    assert not err
    assert json.loads(out) == {
        "point": {"x": 1, "y": 2},
        "reading": {"value": 1.5, "unit": "V"},
        "set": [3],
    }
    assert run(ToolCall("c1", "nothing", ""), ref("nothing"))[:2] == ("null", False)
    assert run(ToolCall("c1", "sync_add", '{"a": 2, "b": 3}'), ref("sync_add"), clock=RealClock())[
        :2
    ] == ("5", False)


def test_a_sync_tool_past_its_timeout_is_abandoned_not_awaited() -> None:
    table = load_tools([{"ref": ref("sync_wait_for"), "timeout_s": 2}])
    clock = VirtualClock()  # virtual time does not wait for the thread: the timeout is at once
    try:
        out = asyncio.run(
            run_tool(table, ToolCall("c", "sync_wait_for", '{"flag": "x"}'), clock=clock)
        )
        assert (out.outcome, clock.now()) == ("timeout", 2.0)
        assert out.output.startswith("sync_wait_for took longer than 2 s")
        threads = [t for t in threading.enumerate() if t.name == "tool-sync_wait_for"]
        assert threads and all(t.daemon for t in threads)  # never holds up the exit
    finally:
        STATE.thread_event.set()


def test_sync_tools_run_in_a_thread_without_blocking_the_loop() -> None:
    table = load_tools([ref("sync_wait_for")])

    async def go() -> str:
        async def release() -> None:
            await asyncio.sleep(0)
            STATE.thread_event.set()  # only runs if the loop is free while the tool blocks

        releaser = asyncio.create_task(release())
        out = await run_tool(
            table, ToolCall("c", "sync_wait_for", '{"flag": "ok"}'), clock=RealClock()
        )
        await releaser
        return out.output

    out = asyncio.run(go())
    assert out.startswith("ok from tool-sync_wait_for")


# ---------------------------------------------------------------------------- the ledger


def test_ledger_deduplicates_and_refuses_calls_of_cancelled_responses() -> None:
    book = CallLedger()
    assert book.admit(call("c1", "f", response="r1")) == "run"
    assert book.admit(call("c1", "f", response="r1")) == "repeat"
    assert book.interrupt("r1") == "r1"
    assert book.is_cancelled("r1")
    assert book.admit(call("c2", "f", response="r1")) == "cancelled"
    assert book.admit(call("c2", "f", response="r1")) == "repeat"
    assert book.admit(call("c3", "f", response="r2")) == "run"
    assert book.response_done("r3", "cancelled") == "r3"
    assert book.admit(call("c4", "end_call", response="r3")) == "cancelled"
    assert book.response_done("r2", "completed") is None
    assert not book.is_cancelled("r2")


def test_ledger_tracks_the_response_in_flight() -> None:
    book = CallLedger()
    assert book.interrupt("") == ""  # nothing known: the calls without a response id
    book.response_started("r1")
    assert book.current == "r1"
    book.admit(call("c1", "f", response="r2"))  # a call names its response
    assert book.current == "r2"
    book.response_done("r2", "completed")
    assert book.current == ""
    book.response_started("r3")
    assert book.interrupt("") == "r3"
    assert book.is_cancelled("r3") and not book.is_cancelled("")
    assert book.admit(call("c9", "f")) == "run"  # "" is never remembered as cancelled


def test_ledger_memory_is_bounded() -> None:
    book = CallLedger(remember_calls=2, remember_responses=1)
    for cid in ("a", "b", "c"):
        book.admit(call(cid, "f"))
    assert book.admit(call("a", "f")) == "run"  # forgotten: the oldest of 2
    book.interrupt("r1")
    book.interrupt("r2")
    assert not book.is_cancelled("r1") and book.is_cancelled("r2")


# ---------------------------------------------------------------------------- the stage


def make_ctx() -> StageContext:
    return StageContext(id="tools", type="tool_router", clock=STATE.clock)


Step = Frame | Callable[[], Awaitable[Any]]


async def feed(steps: list[Step]) -> AsyncIterator[Frame]:
    """Frames, with awaitables in between to order them against what the tools do."""
    for step in steps:
        if callable(step):
            await step()
        else:
            yield step


async def drive(steps: list[Step], **params: Any) -> list[ToolResult]:
    ctx = make_ctx()
    out: list[ToolResult] = []
    gen = tool_router(feed(steps), ctx=ctx, **params)
    async with contextlib.aclosing(gen):
        async for frame in gen:
            assert isinstance(frame, ToolResult)
            out.append(frame)
    return out


def call(call_id: str, name: str, args: dict[str, Any] | str = "", response: str = "") -> ToolCall:
    text = args if isinstance(args, str) else json.dumps(args)
    return ToolCall(call_id, name, text, response_id=response)


async def tool_started() -> None:
    await STATE.started.wait()
    STATE.started.clear()


def test_stage_is_registered_with_its_frame_types() -> None:
    spec = resolve("tool_router")
    assert spec.func is tool_router
    assert spec.accepts == (ToolCall, ToolCancel, Interrupt, ResponseStarted, ResponseDone)
    assert spec.emits == (ToolResult,)
    assert set(spec.params) == {
        "tools",
        "timeout_s",
        "max_concurrency",
        "on_interrupt",
        "max_result_chars",
    }
    assert spec.params["tools"].required and spec.params["timeout_s"].default == 10


def test_stage_passes_the_conformance_checks() -> None:
    frames: list[Frame] = [
        ResponseStarted("r1"),
        call("c1", "no_args", response="r1"),
        call("c2", "boom", {"x": 1}, response="r1"),
        call("c3", "nope", response="r1"),
        ResponseDone("r1"),
    ]
    out = check_stage(tool_router, frames, tools=[ref("no_args"), ref("boom")])
    assert sorted(r.call_id for r in out if isinstance(r, ToolResult)) == ["c1", "c2", "c3"]


def test_stage_runs_calls_and_reports_failures_as_results() -> None:
    frames: list[Frame] = [
        call("c1", "hold", {"tag": "a"}),
        call("c2", "boom", {"x": 1}),
        call("c3", "nope"),
        call("c4", "boom", "{oops"),
    ]
    out = asyncio.run(
        run_stage_async(tool_router, frames, ctx=make_ctx(), tools=[ref("hold"), ref("boom")])
    )
    by_id = {r.call_id: r for r in out}
    assert set(by_id) == {"c1", "c2", "c3", "c4"}
    assert by_id["c1"] == ToolResult("c1", "done a", is_error=False, name="hold")
    assert by_id["c2"].is_error and by_id["c2"].output == "boom raised ValueError: bad x 1"
    assert by_id["c3"].output == "no tool named 'nope'; available: boom, hold"
    assert by_id["c4"].is_error and "not valid JSON" in by_id["c4"].output
    # results come as calls finish: the instant failures before the one-second hold
    assert out[-1].call_id == "c1"


def test_concurrency_limit_and_owed_results_after_input_ends() -> None:
    frames = [call(f"c{i}", "hold", {"tag": str(i)}) for i in range(10)]
    out = asyncio.run(drive(list(frames), tools=[ref("hold")], max_concurrency=3))
    assert sorted(r.call_id for r in out) == sorted(f"c{i}" for i in range(10))
    assert not any(r.is_error for r in out)
    assert STATE.peak == 3
    assert STATE.clock.now() == 4.0  # ceil(10 / 3) rounds of one virtual second


def test_stage_timeout_uses_the_stage_clock() -> None:
    out = asyncio.run(
        drive(
            [call("c1", "hold", {"tag": "slow", "seconds": 60})],
            tools=[{"ref": ref("hold"), "timeout_s": 3}],
        )
    )
    assert out == [
        ToolResult(
            "c1",
            "hold took longer than 3 s and was stopped; tell the user it is not available "
            "right now, or try once more",
            is_error=True,
            name="hold",
        )
    ]
    assert STATE.clock.now() == 3.0
    assert STATE.cancelled == ["slow"]


def test_repeated_call_id_runs_once() -> None:
    out = asyncio.run(
        drive(
            [call("c1", "hold", {"tag": "a"}), call("c1", "hold", {"tag": "b"})],
            tools=[ref("hold")],
        )
    )
    assert [r.output for r in out] == ["done a"]
    assert STATE.calls == ["a"]


def test_interrupt_cancels_running_calls_of_that_response() -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "old", "seconds": 5}, response="r1"),
                tool_started,
                call("c2", "hold", {"tag": "other", "seconds": 5}, response="r2"),
                tool_started,
                Interrupt(response_id="r1"),
            ],
            tools=[ref("hold")],
        )
    )
    # the dropped call still gets its result, at once, saying why (the session owes it)
    assert out == [
        ToolResult("c1", cancelled_text("hold"), is_error=True, name="hold"),
        ToolResult("c2", "done other", name="hold"),
    ]
    assert cancelled_text("hold") == (
        "hold was cancelled by barge-in: the caller interrupted before it finished, so it "
        "may not have taken effect; ask the caller before calling it again"
    )
    assert STATE.cancelled == ["old"]
    assert STATE.finished == ["other"]


def test_a_call_the_model_withdraws_is_stopped_and_gets_no_result() -> None:
    """Gemini's toolCallCancellation reaches the router as a ToolCancel: the running call's
    task is cancelled, a call still waiting for a slot never runs, neither gets a result (the
    model wants none), and the other calls go on."""
    with structlog.testing.capture_logs() as logs:
        out = asyncio.run(
            drive(
                [
                    call("c1", "hold", {"tag": "withdrawn", "seconds": 5}, response="r1"),
                    tool_started,
                    call("c2", "hold", {"tag": "kept", "seconds": 5}, response="r1"),
                    tool_started,
                    call("c3", "hold", {"tag": "queued", "seconds": 5}, response="r1"),
                    ToolCancel("c1", "hold"),
                    ToolCancel("c3", "hold"),
                    ToolCancel("c9", "hold"),  # unknown: nothing to stop
                ],
                tools=[ref("hold")],
                max_concurrency=2,
            )
        )
    assert out == [ToolResult("c2", "done kept", name="hold")]
    assert STATE.cancelled == ["withdrawn"]
    assert STATE.calls == ["withdrawn", "kept"]  # the queued call never ran
    outcomes = {e["call_id"]: e["outcome"] for e in logs if "outcome" in e}
    assert outcomes == {"c1": "withdrawn", "c2": "ok", "c3": "withdrawn"}


def test_interrupt_without_response_id_means_the_current_response() -> None:
    out = asyncio.run(
        drive(
            [
                ResponseStarted("r1"),
                call("c1", "hold", {"tag": "a", "seconds": 5}, response="r1"),
                tool_started,
                Interrupt(),
            ],
            tools=[ref("hold")],
        )
    )
    assert out == [ToolResult("c1", cancelled_text("hold"), is_error=True, name="hold")]
    assert STATE.cancelled == ["a"]


def test_finish_mode_lets_running_calls_complete() -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "a", "seconds": 5}, response="r1"),
                tool_started,
                Interrupt(response_id="r1"),
                ResponseDone("r1", status="cancelled"),
            ],
            tools=[ref("hold")],
            on_interrupt="finish",
        )
    )
    assert [r.output for r in out] == ["done a"]
    assert STATE.cancelled == []


@pytest.mark.parametrize("mode", ["cancel", "finish"])
@pytest.mark.parametrize(
    "cancel_frame", [Interrupt(response_id="r1"), ResponseDone("r1", status="cancelled")]
)
def test_a_call_from_a_cancelled_response_never_runs(mode: str, cancel_frame: Frame) -> None:
    out = asyncio.run(
        drive(
            [cancel_frame, call("c1", "end_call", {"reason": "bye"}, response="r1")],
            tools=[ref("end_call")],
            on_interrupt=mode,
        )
    )
    assert out == [ToolResult("c1", not_run_text("end_call"), is_error=True, name="end_call")]
    assert not_run_text("end_call") == (
        "end_call did not run: cancelled by barge-in (the caller interrupted the response that "
        "asked for it); ask the caller before calling it again"
    )
    assert STATE.calls == []


@pytest.mark.parametrize("mode", ["cancel", "finish"])
def test_a_waiting_call_of_a_cancelled_response_never_runs(mode: str) -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "first", "seconds": 2}, response="r0"),
                tool_started,
                call("c2", "end_call", {"reason": "bye"}, response="r1"),  # waits for a slot
                ResponseDone("r1", status="cancelled"),
            ],
            tools=[ref("hold"), ref("end_call")],
            max_concurrency=1,
            on_interrupt=mode,
        )
    )
    assert [(r.call_id, r.is_error) for r in out] == [("c2", True), ("c1", False)]
    assert out[0].output == not_run_text("end_call")
    assert STATE.calls == ["first"]


@pytest.mark.parametrize("mode", ["cancel", "finish"])
def test_a_call_read_just_before_the_interrupt_started(mode: str) -> None:
    """A call followed at once by the interrupt (both already queued, the router never waits
    between them) holds its slot as it arrives: ``finish`` runs it, ``cancel`` answers it."""
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "a", "seconds": 1}, response="r1"),
                Interrupt(response_id="r1"),
                ResponseDone("r1", status="cancelled"),
            ],
            tools=[ref("hold")],
            on_interrupt=mode,
        )
    )
    if mode == "finish":
        assert out == [ToolResult("c1", "done a", name="hold")]
        assert STATE.calls == ["a"]
    else:
        assert out == [ToolResult("c1", cancelled_text("hold"), is_error=True, name="hold")]
        assert STATE.finished == []


def test_cancelled_calls_give_their_slots_back() -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "a", "seconds": 5}, response="r1"),
                Interrupt(response_id="r1"),  # cancelled before its first step
                call("c2", "hold", {"tag": "b"}, response="r2"),
            ],
            tools=[ref("hold")],
            max_concurrency=1,
        )
    )
    assert [(r.call_id, r.is_error) for r in out] == [("c1", True), ("c2", False)]
    assert STATE.calls == ["b"]


def test_completed_responses_do_not_cancel() -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "a"}, response="r1"),
                ResponseDone("r1", status="completed"),
            ],
            tools=[ref("hold")],
        )
    )
    assert [r.output for r in out] == ["done a"]


def test_each_call_is_logged() -> None:
    with structlog.testing.capture_logs() as logs:
        asyncio.run(
            drive(
                [call("c1", "hold", {"tag": "a", "seconds": 0.5}), call("c2", "boom", "{}")],
                tools=[ref("hold"), ref("boom")],
            )
        )
    done = [e for e in logs if e["event"] == "tool call" and "outcome" in e]
    assert {(e["name"], e["call_id"], e["outcome"], e["duration_ms"]) for e in done} == {
        ("hold", "c1", "ok", 500.0),
        ("boom", "c2", "bad_arguments", 0.0),
    }
    assert all(e["log_level"] == "info" for e in done)
    debug = [e for e in logs if e["log_level"] == "debug"]
    assert {"arguments", "output"} <= {k for e in debug for k in e}


def test_closing_the_stage_early_cancels_running_calls() -> None:
    async def go() -> list[ToolResult]:
        gen = tool_router(
            feed(
                [
                    call("c1", "hold", {"tag": "quick", "seconds": 1}),
                    call("c2", "hold", {"tag": "slow", "seconds": 100}),
                ]
            ),
            ctx=make_ctx(),
            tools=[ref("hold")],
        )
        out = []
        async with contextlib.aclosing(gen):
            async for frame in gen:
                assert isinstance(frame, ToolResult)
                out.append(frame)
                break
        return out

    out = asyncio.run(go())
    assert [r.output for r in out] == ["done quick"]
    assert STATE.cancelled == ["slow"]
    assert STATE.active == 0


def test_bad_tools_fail_the_stage_before_any_call() -> None:
    with pytest.raises(ConfigError) as info:
        asyncio.run(drive([call("c1", "x")], tools=["nowhere_mod_z:f"]))
    assert "stage 'tools' (tool_router): tool 'nowhere_mod_z:f': cannot import" in str(info.value)


def test_upstream_failure_propagates() -> None:
    async def broken() -> AsyncIterator[Frame]:
        yield call("c1", "hold", {"tag": "a", "seconds": 5})
        raise RuntimeError("upstream broke")

    async def go() -> None:
        gen = tool_router(broken(), ctx=make_ctx(), tools=[ref("hold")])
        async with contextlib.aclosing(gen):
            async for _ in gen:
                pass

    with pytest.raises(RuntimeError, match="upstream broke"):
        asyncio.run(go())
    assert STATE.cancelled == ["a"]


# ---------------------------------------------------------------------------- example tools

NOON_UTC = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)


def test_example_time_in_a_city_with_an_injected_now() -> None:
    assert example_tools.describe_time("paris", NOON_UTC) == (
        "It is 14:00 on Wednesday 1 July 2026 in Paris (UTC+02:00)."
    )
    assert example_tools.describe_time("New-York", NOON_UTC, "12h") == (
        "It is 8:00 AM on Wednesday 1 July 2026 in New York (UTC-04:00)."
    )
    assert example_tools.describe_time("São Paulo", NOON_UTC).startswith("It is 09:00")
    with pytest.raises(ValueError, match="unknown city 'Atlantis'; known cities: Athens"):
        example_tools.city_zone("Atlantis")


def test_example_tools_through_the_router() -> None:
    table = load_tools(["examples.tools:get_time", "examples.tools:lookup_order"])

    async def go(c: ToolCall) -> Any:
        return await run_tool(table, c, clock=VirtualClock())

    now = asyncio.run(go(call("c1", "get_time", {"city": "Tokyo"})))
    assert not now.is_error and "in Tokyo (UTC+09:00)." in now.output
    order = asyncio.run(go(call("c2", "lookup_order", {"order_id": "#a-1002"})))
    assert json.loads(order.output)["status"] == "processing"
    missing = asyncio.run(go(call("c3", "lookup_order", {"order_id": "Z9"})))
    assert missing.is_error
    assert missing.output == (
        "lookup_order raised LookupError: no order 'Z9'; order numbers look like A1001: "
        "ask the caller to repeat it"
    )


def test_interrupt_after_the_response_completed_leaves_its_calls_running() -> None:
    out = asyncio.run(
        drive(
            [
                ResponseStarted("r1"),
                call("c1", "hold", {"tag": "lookup", "seconds": 5}, response="r1"),
                ResponseDone("r1", status="completed"),
                tool_started,
                Interrupt(),  # nothing in flight: the user talks while the tool runs
            ],
            tools=[ref("hold")],
        )
    )
    assert [r.output for r in out] == ["done lookup"]


def test_calls_without_response_ids_are_interruptible_and_later_calls_still_run() -> None:
    out = asyncio.run(
        drive(
            [
                call("c1", "hold", {"tag": "a", "seconds": 5}),
                tool_started,
                Interrupt(),
                call("c2", "hold", {"tag": "b"}),
            ],
            tools=[ref("hold")],
        )
    )
    assert [r.output for r in out] == [cancelled_text("hold"), "done b"]
    assert STATE.cancelled == ["a"]


# ---------------------------------------------------------------------------- end to end


@stage("ask", emits=(Text,), register=False)
async def ask(*, text: str) -> AsyncIterator[Frame]:
    """One typed user turn.

    Parameters:
        text: what the user says
    """
    yield Text(text)


@pytest.mark.parametrize(
    ("tool", "arguments", "is_error", "expected"),
    [
        (
            "get_time",
            {"city": "Tokyo"},
            False,
            r"It is \d\d:\d\d on \w+ \d+ \w+ \d{4} in Tokyo \(UTC\+09:00\)\.",
        ),
        (
            "lookup_order",
            {"order_id": "Z9"},
            True,
            r"lookup_order raised LookupError: no order 'Z9'; .*",
        ),
    ],
    ids=["get_time", "lookup_order-error"],
)
def test_end_to_end_through_the_emulator(
    tool: str,
    arguments: dict[str, Any],
    is_error: bool,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """realtime_session <-> tool_router: the emulator, scripted to call a tool, gets the
    router's tools advertised by default, and the result comes back as a function output."""
    emulator = pytest.importorskip("stages.realtime.emulator")
    from pipeline.graph import Pipeline

    monkeypatch.setenv("TOOLTEST_KEY", "test-key")
    refs = ["examples.tools:get_time", "examples.tools:lookup_order"]
    events = tmp_path / "events.jsonl"
    config = emulator.EmulatorConfig(
        tool_calls=({"turn": 1, "name": tool, "arguments": arguments},),
        reply="tone",
        tone_ms=100,
    )

    async def go() -> tuple[Any, list[dict[str, Any]]]:
        async with emulator.run_emulator(config) as emu:
            p = Pipeline("e2e", base_dir=ROOT)
            p.add("user", ask, text="What time is it in Tokyo?")
            p.add(
                "agent",
                "realtime_session",
                provider="xai",
                url=emu.url,
                api_key_env="TOOLTEST_KEY",
                response_timeout_s=5,
            )
            p.add("tools", "tool_router", tools=refs)
            p.add("log", "jsonl_sink", path=str(events))
            p.add("speaker", "null_sink")
            p.chain("user -> agent -> tools -> agent")
            p.chain("agent -> log")
            p.chain("tools -> log")
            p.chain("agent -> speaker")
            summary = await asyncio.wait_for(p.run_async(), 30)
            return summary, list(emu.received)

    summary, received = asyncio.run(go())
    assert summary.status == "completed"
    log = [json.loads(line) for line in events.read_text().splitlines()]

    # the session advertised the router's tools, as tool_schemas describes them
    update = next(m for m in received if m["type"] == "session.update")
    assert update["session"]["tools"] == tool_schemas(refs)

    # the event log: the call from the agent, then its result from the router
    calls = [e for e in log if e["type"] == "tool_call"]
    results = [e for e in log if e["type"] == "tool_result"]
    assert len(calls) == 1 and len(results) == 1
    call_id = calls[0]["call_id"]
    assert calls[0]["stage"] == "agent" and calls[0]["name"] == tool
    assert json.loads(calls[0]["arguments"]) == arguments
    result = results[0]
    assert (result["stage"], result["call_id"], result["name"]) == ("tools", call_id, tool)
    assert result["is_error"] is is_error
    assert re.fullmatch(expected, result["output"]), result["output"]
    assert log.index(calls[0]) < log.index(result)

    # the emulator got exactly that output for that call, then asked for the follow-up
    outputs = [
        m["item"]
        for m in received
        if m["type"] == "conversation.item.create" and m["item"]["type"] == "function_call_output"
    ]
    assert outputs == [
        {"type": "function_call_output", "call_id": call_id, "output": result["output"]}
    ]
    spoken = [e["text"] for e in log if e["type"] == "transcript" and e["final"]]
    assert spoken == [f"{tool} says: {result['output']}"]
