"""The run plan: what ``Pipeline.check()`` found, frozen, ready for any number of runs.

A :class:`Plan` holds every stage with its checked parameter values and audio formats, every
link with the frame types and format it carries, and the segments the runner executes (a
segment is a maximal chain of stages joined by plain links, run as one task: see
:mod:`pipeline.runtime`). Nothing in it changes after ``check()``: a runner keeps its own state
(channels, counters, contexts) beside the plan, so ``pipeline serve`` runs every call from the
one plan it checked at start, at the same time, with no copy.

Parameter values are shared by every run of a plan: a stage reads them and never changes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .channels import DEFAULT_CAPACITY, Overflow
from .context import Peer
from .errors import ConfigError, Problem
from .frames import AudioFormat
from .spec import StageSpec

__all__ = ["Plan", "PlannedLink", "PlannedStage", "Segment", "segments_of"]


@dataclass(frozen=True, slots=True)
class PlannedStage:
    """One stage as checked: its spec, parameter values and audio formats."""

    id: str
    type_name: str
    spec: StageSpec
    values: Mapping[str, Any]
    input_format: AudioFormat | None
    output_format: AudioFormat | None
    #: frame types reaching it, and that it may emit
    in_types: frozenset[type[Any]]
    out_types: frozenset[type[Any]]
    #: the stages it sends to / receives from
    downstream: tuple[Peer, ...]
    upstream: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class PlannedLink:
    """One link as checked: what it carries, and how it is buffered."""

    src: str
    dst: str
    types: frozenset[type[Any]]
    format: AudioFormat | None
    feedback: bool
    capacity: int | None  # None: the default (a link without options may be fused)
    overflow: Overflow | None
    where: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        return f"{self.src} -> {self.dst}"

    @property
    def has_options(self) -> bool:
        return self.capacity is not None or self.overflow is not None

    @property
    def queue_capacity(self) -> int:
        """The capacity of its channel when it is not fused."""
        return self.capacity if self.capacity is not None else DEFAULT_CAPACITY

    def describe(self) -> str:
        """What it carries, e.g. ``audio [pcm16 8000 Hz]``."""
        types = ", ".join(sorted(t.type for t in self.types))
        fmt = f" [{self.format}]" if self.format else ""
        return f"{types}{fmt}"


@dataclass(frozen=True, slots=True)
class Segment:
    """Stages run as one task: ``stages`` in order along fused links; the head reads the
    ``inputs`` links through an inbox, the tail's frames go to the ``outputs`` links."""

    stages: tuple[str, ...]
    inputs: tuple[PlannedLink, ...]
    outputs: tuple[PlannedLink, ...]
    #: the link into each stage after the head (fused)
    fused: tuple[PlannedLink, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """A checked pipeline, immutable. ``problems`` empty means it can run."""

    name: str
    description: str
    file: str
    base_dir: Path
    stages: Mapping[str, PlannedStage]
    links: tuple[PlannedLink, ...]
    problems: tuple[Problem, ...]
    #: segments with plain links fused, and with every link queued (``fuse=False``)
    fused_segments: tuple[Segment, ...]
    queued_segments: tuple[Segment, ...]
    #: stages that have no stage type (reported by whoever built the pipeline)
    typeless: tuple[str, ...] = ()
    #: worth saying before running, but not in the way (``pipeline validate`` shows them)
    warnings: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and not self.typeless

    def runnable(self) -> Plan:
        """This plan, or ConfigError with every problem."""
        if self.problems:
            raise ConfigError(list(self.problems))
        if self.typeless:
            raise ConfigError(f"stage '{self.typeless[0]}' has no stage type; give it one")
        return self

    def segments(self, fuse: bool = True) -> tuple[Segment, ...]:
        return self.fused_segments if fuse else self.queued_segments

    def link(self, name: str) -> PlannedLink:
        return next(lk for lk in self.links if lk.name == name)


def freeze_values(values: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


def segments_of(
    stages: Mapping[str, PlannedStage], links: tuple[PlannedLink, ...], fuse: bool
) -> tuple[Segment, ...]:
    """Cut the graph into segments: a link is fused when it is plain (no options, not
    feedback) and the only link out of its source and into its destination."""
    ins: dict[str, list[PlannedLink]] = {n: [] for n in stages}
    outs: dict[str, list[PlannedLink]] = {n: [] for n in stages}
    for lk in links:
        ins[lk.dst].append(lk)
        outs[lk.src].append(lk)

    def fusible(lk: PlannedLink) -> bool:
        return (
            fuse
            and not lk.feedback
            and not lk.has_options
            and len(outs[lk.src]) == 1
            and len(ins[lk.dst]) == 1
        )

    fused = {lk.name for lk in links if fusible(lk)}
    out: list[Segment] = []
    for head in stages:
        if len(ins[head]) == 1 and ins[head][0].name in fused:
            continue  # inside a segment that starts earlier
        chain = [head]
        hops: list[PlannedLink] = []
        while len(outs[chain[-1]]) == 1 and outs[chain[-1]][0].name in fused:
            hop = outs[chain[-1]][0]
            hops.append(hop)
            chain.append(hop.dst)
        out.append(Segment(tuple(chain), tuple(ins[head]), tuple(outs[chain[-1]]), tuple(hops)))
    return tuple(out)
