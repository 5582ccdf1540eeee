"""What a running stage is given: its context (``ctx``), the run's bus, its linked peers.

A stage that declares a keyword-only ``ctx: StageContext`` gets its id, the run's clock, a
logger bound to it, the YAML file's folder, the bus (facts outside the links, by
:class:`~pipeline.spec.Topic`), the stages linked to it and what they provide
(:meth:`StageContext.provided`), a metrics hook (``ctx.metrics``) and the run's stop signals.
:func:`call_stage` starts a stage with its parameters and context. The shared topics and
interfaces of the built-in stages are here too: :data:`PLAYED`, :data:`TOOLS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .clock import Clock, RealClock
from .errors import StageError
from .frames import Audio, AudioFormat, Frame
from .metrics import StageMetrics
from .spec import AudioNeeds, Interface, ProvideFn, StageSpec, Topic

T = TypeVar("T")


class Bus:
    """A per-run side channel for facts that flow against the stream (for example a sink
    reporting how much audio was actually played, for the session to truncate at)."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Callable[[Any], None]]] = {}

    def subscribe(self, topic: Topic[T], callback: Callable[[T], None]) -> None:
        self._subs.setdefault(topic.name, []).append(callback)

    def publish(self, topic: Topic[T], value: T) -> None:
        for cb in self._subs.get(topic.name, ()):
            cb(value)


@dataclass(frozen=True, slots=True)
class Peer:
    """A stage linked to this one."""

    id: str
    type: str
    params: Mapping[str, Any]
    feedback: bool = False
    #: what it provides to the stages linked to it (see :meth:`StageContext.provided`)
    provides: Mapping[Interface[Any], ProvideFn] = field(default_factory=dict)


@dataclass
class StageContext:
    """What the runtime gives a stage that asks for ``ctx``."""

    id: str
    type: str = ""
    clock: Clock = field(default_factory=RealClock)
    base_dir: Path = field(default_factory=Path.cwd)
    log: Any = None
    bus: Bus = field(default_factory=Bus)
    #: stages this one sends to / receives from
    downstream: tuple[Peer, ...] = ()
    upstream: tuple[Peer, ...] = ()
    input_format: AudioFormat | None = None
    #: facts a stage reports for the summary (e.g. ``algorithmic_delay_ms``)
    reports: dict[str, Any] = field(default_factory=dict)
    #: figures for whoever runs the pipeline (``pipeline serve``: Prometheus); pipeline.metrics
    metrics: StageMetrics = field(default_factory=StageMetrics)
    #: a source sets the media seconds it will emit when it knows them (a file): the live view
    #: and the progress log then show percent done and time left
    media_total_s: float | None = None
    #: set when every forward (non-feedback) input link has ended. A stage inside a cycle
    #: (``cycle_aware=True``) keeps receiving feedback frames after that; it finishes what it
    #: owes, then returns, which ends the feedback path in turn
    forward_ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: set when the run is asked to stop (Ctrl-C): sources should end soon
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: told how long each ``waiting()`` block lasted, in ns (the runner's counters)
    on_wait: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.log is None:
            import structlog

            self.log = structlog.get_logger("pipeline").bind(stage=self.id)

    def report(self, key: str, value: Any) -> None:
        self.reports[key] = value

    def provided(self, interface: Interface[T]) -> list[T]:
        """What the stages linked to this one (either way) provide under ``interface``: one
        value per providing stage, in link order (empty when none does). A stage that calls
        it declares ``uses=(interface,)``."""
        out: list[T] = []
        seen: set[str] = set()
        for peer in (*self.downstream, *self.upstream):
            fn = peer.provides.get(interface)
            if fn is not None and peer.id not in seen:
                seen.add(peer.id)
                out.append(fn(peer.params, self.base_dir))
        return out

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Mark an ``await`` in the stage's own step as waiting, not work: e.g. a source waiting
        for the network, a session for its server. The summary's per-frame time leaves it out,
        as it does the time a stage waits for its input or sleeps on the clock."""
        t0 = time.perf_counter_ns()
        try:
            yield
        finally:
            if self.on_wait is not None:
                self.on_wait(time.perf_counter_ns() - t0)


def call_stage(
    spec: StageSpec,
    upstream: AsyncIterator[Frame] | None,
    params: Mapping[str, Any],
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Start a stage: the async iterator of its output."""
    kwargs = dict(params)
    if spec.takes_ctx:
        kwargs["ctx"] = ctx
    if spec.audio_in is not None and upstream is not None:
        upstream = _AudioChecked(upstream, spec.audio_in, ctx.id)
    if spec.kind == "map":
        assert upstream is not None
        return _map_stage(spec, upstream, kwargs)
    if spec.is_source:
        return spec.func(**kwargs)  # type: ignore[no-any-return]
    assert upstream is not None
    return spec.func(upstream, **kwargs)  # type: ignore[no-any-return]


class _AudioChecked:
    """A stage's input that stops the run, naming the stage and the fix, when audio it did not
    declare arrives (a format unknown before running, e.g. a session's reply)."""

    __slots__ = ("_needs", "_ok", "_stage", "_up")

    def __init__(self, up: AsyncIterator[Frame], needs: AudioNeeds, stage_id: str) -> None:
        self._up = up
        self._needs = needs
        self._stage = stage_id
        self._ok: tuple[str, int, int] | None = None  # the last format that fitted

    def __aiter__(self) -> _AudioChecked:
        return self

    async def __anext__(self) -> Frame:
        frame = await self._up.__anext__()
        if frame.__class__ is Audio:
            key = (frame.encoding, frame.rate, frame.channels)
            if key != self._ok:
                problem = self._needs.problem(frame.format)
                if problem is not None:
                    raise StageError(self._stage, "; ".join(problem))
                self._ok = key
        return frame

    async def aclose(self) -> None:
        aclose = getattr(self._up, "aclose", None)
        if aclose is not None:
            await aclose()


async def _map_stage(
    spec: StageSpec, upstream: AsyncIterator[Frame], kwargs: dict[str, Any]
) -> AsyncIterator[Frame]:
    func = spec.func
    accepts = spec.accepts
    async for frame in upstream:
        if isinstance(frame, accepts):
            out = func(frame, **kwargs)
            if out is not None:
                yield out
        else:
            yield frame


#: Bus topic on which sinks report audio actually played/written: the value is a
#: :class:`Played`. The realtime session listens to truncate the assistant's item there.
PLAYED: Topic[Played] = Topic(
    "played", "audio a sink has played or written, up to a media time (Played)"
)

#: What a tool-running stage provides to the stages linked to it: the function definitions of
#: its tools, each ``{"type": "function", "name", "description", "parameters"}``. The realtime
#: session advertises those of every linked stage that provides it.
TOOLS: Interface[list[dict[str, Any]]] = Interface(
    "tools", "function definitions of the tools it runs (JSON schema)"
)


@dataclass(frozen=True, slots=True)
class Played:
    """A sink has played (or written) audio up to media time ``pts`` (end of the last sample)."""

    stage: str
    pts: float
