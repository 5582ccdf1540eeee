"""Helpers for testing stages, yours and ours.

``run_stage(stage, frames, **params)`` runs one stage over a list of frames and returns what it
emitted; ``check_stage(stage, frames, **params)`` runs the conformance checks every stage should
pass. Both use a :class:`~pipeline.clock.VirtualClock`, so paced stages run at full speed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from .clock import Clock, VirtualClock
from .frames import Frame
from .stage import StageContext, StageSpec, call_stage, spec_for


def make_context(
    spec: StageSpec, *, clock: Clock | None = None, base_dir: Path | None = None, id: str = ""
) -> StageContext:
    return StageContext(
        id=id or spec.name,
        type=spec.name,
        clock=clock or VirtualClock(),
        base_dir=base_dir or Path.cwd(),
    )


async def _feed(frames: Iterable[Frame]) -> AsyncIterator[Frame]:
    for f in frames:
        yield f


async def run_stage_async(
    stage: str | StageSpec | Callable[..., Any],
    frames: Iterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    **params: Any,
) -> list[Frame]:
    """Run one stage over ``frames`` (ignored for a source) and collect its output."""
    spec = spec_for(stage)
    values, problems = spec.validate(params)
    if problems:
        raise ValueError("; ".join(p for _, p in problems))
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
    frames: Iterable[Frame] = (),
    *,
    ctx: StageContext | None = None,
    **params: Any,
) -> list[Frame]:
    """Synchronous form of :func:`run_stage_async` (runs its own event loop)."""
    return asyncio.run(run_stage_async(stage, frames, ctx=ctx, **params))
