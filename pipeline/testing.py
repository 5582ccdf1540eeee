"""Helpers for testing stages, yours and ours.

``run_stage(stage, frames, **params)`` runs one stage over a list of frames and returns what it
emitted; ``check_stage(stage, frames, **params)`` runs the conformance checks every stage should
pass. Both use a :class:`~pipeline.clock.VirtualClock`, so paced stages run at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiostream

from .clock import Clock, VirtualClock
from .context import StageContext, call_stage
from .errors import ConfigError, FormatError, Problem
from .frames import Audio, Frame
from .spec import StageSpec, spec_for


def make_context(
    spec: StageSpec, *, clock: Clock | None = None, base_dir: Path | None = None, id: str = ""
) -> StageContext:
    return StageContext(
        id=id or spec.name,
        type=spec.name,
        clock=clock or VirtualClock(),
        base_dir=base_dir or Path.cwd(),
    )


async def _feed(frames: Iterable[Frame] | AsyncIterable[Frame]) -> AsyncIterator[Frame]:
    if isinstance(frames, AsyncIterable):
        it = aiter(frames)
        try:
            async for f in it:
                yield f
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        return
    for f in frames:
        yield f


async def merge(*sources: AsyncIterable[Frame]) -> AsyncIterator[Frame]:
    """Several inputs as one, each frame as soon as its source yields it (a fan-in, as the
    runtime's inbox does for a stage with several links): e.g. paced caller audio beside tool
    results for a session under test. Every source is closed when the merge is (aiostream's
    stream context)."""
    async with aiostream.stream.merge(*sources).stream() as streamer:
        async for frame in streamer:
            yield frame


async def run_stage_async(
    stage: str | StageSpec | Callable[..., Any],
    frames: Iterable[Frame] | AsyncIterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    **params: Any,
) -> list[Frame]:
    """Run one stage over ``frames`` (a list, or an async iterable such as :func:`merge`;
    ignored for a source) and collect its output."""
    spec = spec_for(stage)
    values, problems = spec.validate(params)
    if problems:
        raise ConfigError([Problem(f"stage '{spec.name}': {p}") for _, p in problems])
    ctx = ctx or make_context(spec)
    upstream = None if spec.is_source else _feed(frames)
    out: list[Frame] = []
    gen = call_stage(spec, upstream, values, ctx)
    async with contextlib.aclosing(gen):  # type: ignore[type-var]
        async for f in gen:
            out.append(f)
    return out


def run_stage(
    stage: str | StageSpec | Callable[..., Any],
    frames: Iterable[Frame] | AsyncIterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    **params: Any,
) -> list[Frame]:
    """Synchronous form of :func:`run_stage_async` (runs its own event loop)."""
    return asyncio.run(run_stage_async(stage, frames, ctx=ctx, **params))


# ---------------------------------------------------------------------------- conformance

#: Real seconds a check waits for a stage that should have finished (a hang, not a slow stage:
#: paced stages run on a VirtualClock).
CHECK_TIMEOUT_S = 10.0


class _TrackedInput:
    """The upstream of a stage under check: yields ``frames``, then either ends or (``hold``)
    waits forever; records whether it was closed and whether it was pulled after its consumer
    was closed."""

    def __init__(self, frames: list[Frame], *, hold: bool) -> None:
        self.frames = frames
        self.hold = hold
        self.open = False
        self.finished = False  # its finally ran
        self.pulls = 0
        self.pulls_after_close = 0
        self.consumer_closed = False
        self.holding = asyncio.Event()
        self.gen = self._run()

    async def _run(self) -> AsyncGenerator[Frame, None]:
        self.open = True
        try:
            for f in self.frames:
                yield f
            if self.hold:
                self.holding.set()
                await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            self.open = False
            self.finished = True

    def __aiter__(self) -> _TrackedInput:
        return self

    async def __anext__(self) -> Frame:
        self.pulls += 1
        if self.consumer_closed:
            self.pulls_after_close += 1
        return await self.gen.__anext__()

    async def aclose(self) -> None:
        await self.gen.aclose()


def _allowed_types(spec: StageSpec, inputs: list[Frame]) -> set[type[Any]]:
    allowed = set(spec.emits)
    if spec.passthrough:
        allowed |= {type(f) for f in inputs}
    return allowed


async def _aclose(gen: Any) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        await aclose()


def _gen_closed(gen: Any) -> bool:
    frame = getattr(gen, "ag_frame", False)
    return frame is None or frame is False


async def _settle(turns: int = 50) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


def _other_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and t not in before]


async def check_stage_async(
    stage: str | StageSpec | Callable[..., Any],
    frames: Iterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    max_frames: int = 100_000,
    **params: Any,
) -> list[Frame]:
    """Check that a stage behaves as the runtime expects; raise AssertionError saying how not.

    For a stage that takes input (``frames`` are filtered to the types a link into it
    delivers, as the runtime does):

    * it runs over ``frames`` and over an empty input, ends after its input ends, and once
      ended yields nothing more;
    * it emits only the frame types it declares (its ``emits``, plus the input types it passes
      through when ``passthrough``), and audio in the format its ``output_format`` declares;
    * cancelled while waiting for input, it lets the cancellation through and its input's
      ``finally`` has run (the input is closed), leaving no task of its own running;
    * closed early (``aclose()`` after its first output frame), it closes without yielding
      again, without pulling its input again, and leaves no task running.

    For a source: it ends within ``max_frames`` frames, emits only what it declares, and
    closed early it finishes cleanly. Returns the frames of the full run.
    """
    spec = spec_for(stage)
    values, problems = spec.validate(params)
    if problems:
        raise ConfigError([Problem(f"stage '{spec.name}': {p}") for _, p in problems])
    name = spec.name
    accepts = spec.link_accepts()
    inputs = [] if spec.is_source else [f for f in frames if isinstance(f, accepts)]
    in_fmt = next((f.format for f in inputs if isinstance(f, Audio)), None)

    def new_ctx() -> StageContext:
        if ctx is not None:
            return ctx
        c = make_context(spec)
        c.input_format = in_fmt
        return c

    async def drain(upstream: _TrackedInput | None, what: str) -> list[Frame]:
        gen = call_stage(spec, upstream, values, new_ctx())
        out: list[Frame] = []
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                async for f in gen:
                    out.append(f)
                    if len(out) > max_frames:
                        raise AssertionError(
                            f"stage '{name}' {what}: emitted more than {max_frames} frames "
                            "without ending"
                        )
        except TimeoutError:
            raise AssertionError(
                f"stage '{name}' {what}: did not end within {CHECK_TIMEOUT_S:g} s"
                + ("" if spec.is_source else " after its input ended")
            ) from None
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(f"stage '{name}' {what}: raised {exc!r}") from exc
        finally:
            await _aclose(gen)
        try:
            extra = await gen.__anext__()
        except StopAsyncIteration:
            pass
        else:
            raise AssertionError(
                f"stage '{name}' {what}: emitted {type(extra).__name__} after its end of stream"
            )
        return out

    def check_types(out: list[Frame], inputs: list[Frame], what: str) -> None:
        allowed = _allowed_types(spec, inputs)
        for i, f in enumerate(out):
            if type(f) not in allowed:
                names = ", ".join(sorted(t.type for t in allowed)) or "nothing"
                raise AssertionError(
                    f"stage '{name}' {what}: frame {i} is {f.type}, but it declares it emits "
                    f"only {names}; add {type(f).__name__} to emits=(...) of @stage"
                )
        if spec.output_format is not None:
            try:
                declared = spec.output_format(values, in_fmt)
            except FormatError as exc:
                raise AssertionError(
                    f"stage '{name}': its output_format refuses the input {in_fmt}: {exc}"
                ) from None
        elif spec.passthrough:
            declared = in_fmt
        else:
            declared = None
        if declared is None:
            return
        for i, f in enumerate(out):
            if isinstance(f, Audio) and f.format != declared:
                raise AssertionError(
                    f"stage '{name}' {what}: audio frame {i} is {f.format}, but it declares "
                    f"{declared} for input {in_fmt}"
                )

    # 1. the full run, and (for a stage with input) an empty input
    if spec.is_source:
        result = await drain(None, "as a source")
        check_types(result, [], "as a source")
    else:
        up = _TrackedInput(inputs, hold=False)
        result = await drain(up, f"over {len(inputs)} input frames")
        check_types(result, inputs, f"over {len(inputs)} input frames")
        await up.aclose()
        empty = _TrackedInput([], hold=False)
        out = await drain(empty, "over an empty input")
        check_types(out, [], "over an empty input")
        await empty.aclose()

    # 2. cancelled while waiting for more input
    if not spec.is_source:
        up = _TrackedInput(inputs, hold=True)
        before = set(asyncio.all_tasks())
        gen = call_stage(spec, up, values, new_ctx())

        async def consume() -> None:
            async for _f in gen:
                pass

        task = asyncio.get_running_loop().create_task(consume())
        holding = asyncio.ensure_future(up.holding.wait())
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await asyncio.wait([task, holding], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            task.cancel()
            raise AssertionError(
                f"stage '{name}': did not read all {len(inputs)} input frames within "
                f"{CHECK_TIMEOUT_S:g} s"
            ) from None
        finally:
            holding.cancel()
        if task.done():
            await asyncio.gather(task, return_exceptions=True)  # it ended early: allowed
        else:
            await _settle()
            task.cancel()
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    await asyncio.gather(task, return_exceptions=True)
            except TimeoutError:
                raise AssertionError(
                    f"stage '{name}': did not stop within {CHECK_TIMEOUT_S:g} s of being "
                    "cancelled (does it catch CancelledError?)"
                ) from None
            if not task.cancelled():
                exc = task.exception()
                raise AssertionError(
                    f"stage '{name}': cancelled while waiting for input, it "
                    + ("returned normally" if exc is None else f"raised {exc!r}")
                    + " instead of letting CancelledError through"
                )
            if not up.finished:
                raise AssertionError(
                    f"stage '{name}': cancelled while waiting for input, its input was left "
                    "open (its finally did not run); cancel any task that reads it and await it"
                )
        await _settle()
        leaked = _other_tasks(before)
        for t in leaked:
            t.cancel()
        if leaked:
            raise AssertionError(
                f"stage '{name}': tasks still running after it was cancelled: "
                + ", ".join(t.get_name() for t in leaked)
            )
        await _aclose(gen)
        await up.aclose()

    # 3. closed early, after its first output frame
    if result:
        up = _TrackedInput(inputs, hold=True)
        before = set(asyncio.all_tasks())
        gen = call_stage(spec, None if spec.is_source else up, values, new_ctx())
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await gen.__anext__()
        except (TimeoutError, StopAsyncIteration):
            raise AssertionError(
                f"stage '{name}': a second run over the same input emitted no frame "
                "(is its output nondeterministic?)"
            ) from None
        up.consumer_closed = True
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await _aclose(gen)
        except TimeoutError:
            raise AssertionError(
                f"stage '{name}': closed early, it did not finish within {CHECK_TIMEOUT_S:g} s"
            ) from None
        except RuntimeError as exc:  # "async generator ignored GeneratorExit"
            raise AssertionError(f"stage '{name}': closed early, it failed: {exc}") from None
        if not _gen_closed(gen):
            raise AssertionError(f"stage '{name}': closed early, it is still running")
        if up.pulls_after_close:
            raise AssertionError(
                f"stage '{name}': closed early, it read its input again "
                f"({up.pulls_after_close} times) instead of just finishing"
            )
        await _settle()
        leaked = _other_tasks(before)
        for t in leaked:
            t.cancel()
        if leaked:
            raise AssertionError(
                f"stage '{name}': tasks still running after it was closed: "
                + ", ".join(t.get_name() for t in leaked)
            )
        await up.aclose()
    return result


def check_stage(
    stage: str | StageSpec | Callable[..., Any],
    frames: Iterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    max_frames: int = 100_000,
    **params: Any,
) -> list[Frame]:
    """Synchronous form of :func:`check_stage_async` (runs its own event loop)."""
    return asyncio.run(
        check_stage_async(stage, list(frames), ctx=ctx, max_frames=max_frames, **params)
    )
