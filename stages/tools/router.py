"""The ``tool_router`` stage: the model's function calls run as Python functions, results go back.

The tools themselves are loaded and described by :mod:`stages.tools.schema`.

Theory of operation (the ``tool_router`` stage)
-----------------------------------------------
- A :class:`~pipeline.frames.ToolCall` names a tool and carries JSON arguments. Only declared
  tools run: an undeclared name is refused with an error result; nothing is ever imported or
  called on the model's say-so. The arguments are parsed and validated against the tool's
  pydantic model, then the tool runs (async tools on the loop, sync tools in a daemon thread so
  the loop never blocks) under a per-tool timeout and a concurrency limit.
- Every failure (bad JSON, bad arguments, unknown name, timeout, exception, a result that is not
  JSON-serializable) becomes a ``ToolResult(is_error=True)`` whose text tells the model what to do
  differently: the session goes on. Oversized results are cut, with a note saying so.
- A repeated ``call_id`` runs once (the repeat is ignored).
- Barge-in: an :class:`~pipeline.frames.Interrupt` or a ``ResponseDone(status="cancelled")``
  marks a response cancelled. A call of a cancelled response that has not started never runs
  (a hallucinated ``end_call`` from a discarded turn must not hang up a live caller). With
  ``on_interrupt: cancel`` the running calls of that response are cancelled too; with
  ``finish`` they complete and their results are delivered. A call has *started* once it holds
  a concurrency slot: a call that finds a free slot starts as it arrives, so a call read before
  the interrupt runs under ``finish``.
- Every call gets exactly one result, dropped ones included: a call that is cancelled or never
  runs because of a barge-in gets an ``is_error`` result saying so ("cancelled by barge-in").
  The session sends it as the call's ``function_call_output``, so the server's conversation
  never holds a ``function_call`` without an output (which can break the next response on the
  real services) and the session stops owing the call (no wait at the end of the input).
- The model may withdraw a call (a :class:`~pipeline.frames.ToolCancel`: Gemini's
  ``toolCallCancellation`` when the caller interrupts): the call is cancelled whether it
  runs or waits for a slot, and it gets **no** result (the model said it wants none); logged
  with outcome ``withdrawn``.
- Results are emitted as calls finish (not in call order). When the input ends, the router
  waits for the calls still running (their results are owed), then ends.

Timeouts use the stage's clock (``ctx.clock``); a sync tool that outlives its timeout keeps its
thread (Python cannot kill a thread) but its result is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic_core

from pipeline.clock import Clock
from pipeline.context import TOOLS, StageContext
from pipeline.errors import Problem
from pipeline.frames import (
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    ToolCall,
    ToolCancel,
    ToolResult,
)
from pipeline.metrics import Metric
from pipeline.spec import stage
from pipeline.tasks import StageTasks

from .schema import (
    DEFAULT_MAX_RESULT_CHARS,
    DEFAULT_TIMEOUT_S,
    MAX_PENDING,
    Tool,
    ToolArgumentError,
    ToolConfigError,
    check_tools,
    load_tools,
    tool_schemas,
)

__all__ = [
    "CallLedger",
    "CallOutcome",
    "cancelled_text",
    "not_run_text",
    "run_tool",
    "tool_router",
]

#: Every call the router answers, by outcome: ok, error, bad_arguments, unknown_tool, timeout,
#: exception, cancelled, skipped (its response was interrupted first), withdrawn (the model
#: cancelled it) or busy.
TOOL_CALLS = Metric("tool_calls", "Tool calls run, by outcome", labels=("outcome",))

# ---------------------------------------------------------------------------- running a call

Outcome = Literal["ok", "error", "bad_arguments", "unknown_tool", "timeout", "exception"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What running one call produced: the result text, whether it is an error, and a short
    outcome word for the log."""

    output: str
    is_error: bool
    outcome: Outcome


_CURRENT_CALL: contextvars.ContextVar[ToolCall | None] = contextvars.ContextVar(
    "tool_call", default=None
)


def current_tool_call() -> ToolCall | None:
    """Inside a running tool: the call that runs it (its ``call_id`` and ``response_id``, for
    a tool that acts on the response that asked for it, such as hanging up after it)."""
    return _CURRENT_CALL.get()


async def run_tool(
    tools: Mapping[str, Tool],
    call: ToolCall,
    *,
    clock: Clock,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> CallOutcome:
    """Run one call against the declared ``tools``; never raises for the tool's failures
    (bad JSON or arguments, unknown name, timeout, exception, unserializable result): each
    becomes an error outcome whose text tells the model what to do. Cancellation propagates."""
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return CallOutcome(
            f"no tool named '{call.name}'; available: {available}", True, "unknown_tool"
        )
    try:
        args, kwargs = tool.bind_arguments(call.arguments)
    except ToolArgumentError as exc:
        return CallOutcome(str(exc), True, "bad_arguments")
    limit = tool.timeout_s if tool.timeout_s is not None else timeout_s
    token = _CURRENT_CALL.set(call)  # copied into the task or thread that runs the tool
    try:
        result = await _with_timeout(_invoke(tool, args, kwargs), clock, limit)
    except TimeoutError:
        return CallOutcome(
            f"{tool.name} took longer than {limit:g} s and was stopped; "
            "tell the user it is not available right now, or try once more",
            True,
            "timeout",
        )
    except Exception as exc:
        return CallOutcome(f"{tool.name} raised {type(exc).__name__}: {exc}", True, "exception")
    finally:
        _CURRENT_CALL.reset(token)
    try:
        text = result if isinstance(result, str) else _to_json(result)
    except Exception as exc:
        return CallOutcome(
            f"{tool.name} returned a {type(result).__name__} that cannot be turned into "
            f"JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "this is a bug in the tool, do not retry",
            True,
            "error",
        )
    return CallOutcome(_cut(text, max_result_chars), False, "ok")


def _to_json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n[result cut: {len(text)} characters, showing the first {{n}}]"
    keep = max(0, limit - len(note.format(n=limit)))
    return text[:keep] + note.format(n=keep)


async def _invoke(tool: Tool, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if tool.is_async:
        return await tool.func(*args, **kwargs)
    return await _in_thread(tool.name, tool.func, args, kwargs)


async def _in_thread(
    name: str, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run a sync function in a daemon thread: the loop never blocks, and a tool that hangs
    past its timeout cannot keep the process from exiting (``asyncio.to_thread`` would)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def work() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(func, *args, **kwargs)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
    return await fut


async def _with_timeout(coro: Any, clock: Clock, seconds: float) -> Any:
    """Await ``coro`` for at most ``seconds`` of ``clock`` time; TimeoutError after that."""
    work = asyncio.ensure_future(coro)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise TimeoutError
    finally:
        for task in (work, timer):
            task.cancel()
        await asyncio.gather(work, timer, return_exceptions=True)


# ---------------------------------------------------------------------------- the stage


class _Recent:
    """A bounded set remembering the most recent keys."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class CallLedger:
    """Which calls may run: the router's bookkeeping, without I/O or an event loop.

    It remembers the call ids seen (a repeat runs once), the responses cancelled (by an
    interrupt or a ``response_done`` with status ``cancelled``: their calls that have not
    started never run) and the response in flight (what an interrupt without a response id
    means). The stage feeds it frames and acts on its answers.
    """

    def __init__(self, remember_calls: int = 4096, remember_responses: int = 256) -> None:
        self._seen = _Recent(remember_calls)
        self._cancelled = _Recent(remember_responses)
        #: the response in flight ("" when none is known)
        self.current = ""

    def admit(self, call: ToolCall) -> Literal["run", "repeat", "cancelled"]:
        """What to do with a new call: run it, ignore it (a repeated ``call_id``), or skip it
        (its response was cancelled)."""
        if call.call_id in self._seen:
            return "repeat"
        self._seen.add(call.call_id)
        if call.response_id:
            self.current = call.response_id
        return "cancelled" if self.is_cancelled(call.response_id) else "run"

    def is_cancelled(self, response_id: str) -> bool:
        """The response was cancelled: its calls that have not started must not run."""
        return bool(response_id) and response_id in self._cancelled

    def response_started(self, response_id: str) -> None:
        self.current = response_id

    def response_done(self, response_id: str, status: str) -> str | None:
        """A response ended; returns its id if its calls must be cancelled."""
        if response_id == self.current:
            self.current = ""
        return self.cancel(response_id) if status == "cancelled" else None

    def interrupt(self, response_id: str) -> str:
        """Barge-in on ``response_id`` ("" = the response in flight); returns the id whose
        calls must be cancelled ("" = the calls that carry no response id)."""
        return self.cancel(response_id or self.current)

    def cancel(self, response_id: str) -> str:
        # "" (a session that does not number its responses) is not remembered: it would
        # refuse every later call; it only stops what is running or waiting now.
        if response_id:
            self._cancelled.add(response_id)
        return response_id


@dataclass(eq=False)
class _Running:
    call: ToolCall
    slots: asyncio.Semaphore
    task: asyncio.Task[None] | None = None
    #: holds a concurrency slot (from then on, ``finish`` lets it complete)
    started: bool = False
    released: bool = False

    def release(self) -> None:
        if self.started and not self.released:
            self.released = True
            self.slots.release()


def _provided_tools(values: Mapping[str, Any], base_dir: Path) -> list[dict[str, Any]]:
    """The function definitions of the tools it runs: what a linked session advertises."""
    return tool_schemas(values.get("tools") or (), base_dir=base_dir)


def _check(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Bad tool refs are found by ``pipeline validate``, located at the ``tools`` parameter."""
    return [("tools", p) for p in check_tools(values, base_dir=base_dir)]


@stage(
    "tool_router",
    accepts=(ToolCall, ToolCancel, Interrupt, ResponseStarted, ResponseDone),
    emits=(ToolResult,),
    check=_check,
    provides={TOOLS: _provided_tools},
    metrics=(TOOL_CALLS,),
)
async def tool_router(
    frames: AsyncIterator[Frame],
    *,
    tools: list[str | dict[str, Any]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_concurrency: int = 4,
    on_interrupt: Literal["cancel", "finish"] = "cancel",
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Run the model's tool calls as Python functions and send their results back.

    Parameters:
        tools: the tools, each 'module:function' or {ref: 'module:function', timeout_s: 3}
        timeout_s: seconds a call may run before it is stopped (per tool: timeout_s in its entry)
        max_concurrency: calls running at the same time; more wait for a free slot
        on_interrupt: cancel (drop the running calls of an interrupted response) or finish
        max_result_chars: results longer than this are cut, with a note saying so
    """
    params = {
        "tools": tools,
        "timeout_s": timeout_s,
        "max_concurrency": max_concurrency,
        "on_interrupt": on_interrupt,
        "max_result_chars": max_result_chars,
    }
    problems = check_tools(params, base_dir=ctx.base_dir)
    if problems:
        raise ToolConfigError([Problem(f"stage '{ctx.id}' (tool_router): {p}") for p in problems])
    table = load_tools(tools, base_dir=ctx.base_dir)
    log = ctx.log
    clock = ctx.clock
    slots = asyncio.Semaphore(max_concurrency)
    running: dict[str, _Running] = {}
    withdrawn: set[str] = set()  # calls the model cancelled: stopped, no result
    ledger = CallLedger()

    def skip(call: ToolCall, why: str) -> ToolResult:
        """Log a call that will not run; its result, which says so."""
        ctx.metrics.count(TOOL_CALLS, outcome="skipped")
        log.info(
            "tool call",
            name=call.name,
            call_id=call.call_id,
            duration_ms=0,
            outcome="skipped",
            reason=why,
        )
        return ToolResult(call.call_id, not_run_text(call.name), is_error=True, name=call.name)

    async def run(entry: _Running) -> None:
        call = entry.call
        if not entry.started:  # no free slot when it arrived: wait for one
            await slots.acquire()
            entry.started = True
            if ledger.is_cancelled(call.response_id):
                entry.release()
                await out.send(skip(call, "its response was cancelled before it started"))
                return
        start = clock.now()
        try:
            result = await run_tool(
                table,
                call,
                clock=clock,
                timeout_s=timeout_s,
                max_result_chars=max_result_chars,
            )
        except asyncio.CancelledError:
            _log_done(ctx, call, start, "withdrawn" if call.call_id in withdrawn else "cancelled")
            raise
        finally:
            entry.release()
        _log_done(ctx, call, start, result.outcome)
        log.debug("tool result", name=call.name, call_id=call.call_id, output=result.output)
        await out.send(
            ToolResult(call.call_id, result.output, is_error=result.is_error, name=call.name)
        )

    async def cancel_calls(response_id: str, why: str) -> None:
        # Each dropped call still gets its (error) result, so the session's bookkeeping closes.
        for entry in list(running.values()):
            task = entry.task
            if entry.call.response_id != response_id or task is None or task.done():
                continue
            if task.cancelling():  # already dropped (an interrupt, then response_done)
                continue
            if not entry.started:
                task.cancel()
                await out.send(skip(entry.call, f"{why} before it started"))
            elif on_interrupt == "cancel":
                task.cancel()  # logged by the call itself, outcome "cancelled"
                c = entry.call
                await out.send(ToolResult(c.call_id, cancelled_text(c.name), True, c.name))

    def withdraw(cancel: ToolCancel) -> None:
        entry = running.get(cancel.call_id)
        if entry is None or entry.task is None or entry.task.done():
            log.debug("tool call withdrawn, not running", call_id=cancel.call_id)
            return
        withdrawn.add(cancel.call_id)
        if not entry.started:  # waiting for a slot: it never ran
            ctx.metrics.count(TOOL_CALLS, outcome="withdrawn")
            log.info(
                "tool call",
                name=entry.call.name,
                call_id=cancel.call_id,
                duration_ms=0,
                outcome="withdrawn",
            )
        entry.task.cancel()  # no result: the model withdrew the call

    async def start(call: ToolCall) -> None:
        verdict = ledger.admit(call)
        if verdict == "repeat":
            log.warning("tool call repeated; ignored", name=call.name, call_id=call.call_id)
            return
        log.debug("tool call", name=call.name, call_id=call.call_id, arguments=call.arguments)
        if verdict == "cancelled":
            await out.send(skip(call, "its response was cancelled"))
            return
        if len(running) >= max_concurrency + MAX_PENDING:
            ctx.metrics.count(TOOL_CALLS, outcome="busy")
            log.info(
                "tool call",
                name=call.name,
                call_id=call.call_id,
                duration_ms=0,
                outcome="busy",
            )
            text = (
                f"too many tool calls at once ({len(running)} running or waiting); "
                "wait for their results before calling more"
            )
            await out.send(ToolResult(call.call_id, text, is_error=True, name=call.name))
            return
        entry = _Running(call, slots)
        if not slots.locked():  # a free slot: the call starts now (acquire does not wait)
            await slots.acquire()
            entry.started = True
        entry.task = out.start(run(entry), name=f"tool {call.name} {call.call_id}")
        running[call.call_id] = entry

        def done(_t: object) -> None:
            entry.release()  # a call cancelled before its first step still gives its slot back
            running.pop(call.call_id, None)

        entry.task.add_done_callback(done)

    async def read() -> None:
        async for frame in frames:
            match frame:
                case ToolCall():
                    await start(frame)
                case ToolCancel():
                    withdraw(frame)
                case ResponseStarted():
                    ledger.response_started(frame.response_id)
                case ResponseDone():
                    target = ledger.response_done(frame.response_id, frame.status)
                    if target is not None:
                        await cancel_calls(target, "its response was cancelled")
                case Interrupt():
                    await cancel_calls(ledger.interrupt(frame.response_id), "interrupted")
        while running:  # the calls still running are owed their results
            await asyncio.wait([e.task for e in running.values() if e.task is not None])

    # The results go out as calls finish; the output ends when the reader has returned (input
    # ended, every running call done); leaving it cancels the calls still running.
    try:
        async with StageTasks[ToolResult](ctx, capacity=max_concurrency) as out:
            out.start(read(), name="reader", ends_output=True)
            async for result in out:
                yield result
    finally:
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def cancelled_text(name: str) -> str:
    """The result of a call cancelled while running (``on_interrupt: cancel``)."""
    return (
        f"{name} was cancelled by barge-in: the caller interrupted before it finished, so it "
        "may not have taken effect; ask the caller before calling it again"
    )


def not_run_text(name: str) -> str:
    """The result of a call that never ran: its response was interrupted or cancelled first."""
    return (
        f"{name} did not run: cancelled by barge-in (the caller interrupted the response that "
        "asked for it); ask the caller before calling it again"
    )


def _log_done(ctx: StageContext, call: ToolCall, start: float, outcome: str) -> None:
    ctx.metrics.count(TOOL_CALLS, outcome=outcome)
    log, clock = ctx.log, ctx.clock
    log.info(
        "tool call",
        name=call.name,
        call_id=call.call_id,
        duration_ms=round((clock.now() - start) * 1000, 1),
        outcome=outcome,
    )
