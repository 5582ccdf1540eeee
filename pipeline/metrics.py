"""Metrics a stage reports while it runs: an explicit hook, independent of logging.

A stage declares what it counts (a :class:`Metric`, with its labels) and reports through
``ctx.metrics``::

    TOOL_CALLS = Metric("tool_calls", "Tool calls run, by outcome", labels=("outcome",))

    @stage("tool_router", ..., metrics=(TOOL_CALLS,))
    async def tool_router(frames, *, ctx):
        ...
        ctx.metrics.count(TOOL_CALLS, outcome="ok")

Whoever runs the pipeline decides where the figures go by handing the runner a
:class:`MetricsSink` (``pipeline serve`` exports them to Prometheus as
``pipeline_<name>_total`` for a counter, ``pipeline_<name>`` for a histogram); without one they
go nowhere and cost one attribute test. Reporting never depends on the log level, and a label
set that does not match the declaration is a :class:`~pipeline.errors.UsageError` (a bug in the
stage), not a silently different series.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import UsageError

__all__ = ["Metric", "MetricsSink", "StageMetrics"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One figure a stage reports: a counter (``count``) or a histogram (``observe``)."""

    name: str
    doc: str
    labels: tuple[str, ...] = ()
    kind: Literal["counter", "histogram"] = "counter"

    def __str__(self) -> str:
        return self.name


class MetricsSink(Protocol):
    """Where the figures of a run go (``Runner(..., metrics=sink)``)."""

    def add(self, metric: Metric, value: float, labels: Mapping[str, str], stage: str) -> None:
        """Add ``value`` to a counter, or observe it in a histogram; ``stage`` is the id of
        the stage that reported it."""


class StageMetrics:
    """``ctx.metrics``: how one stage reports its figures."""

    __slots__ = ("_sink", "_stage")

    def __init__(self, sink: MetricsSink | None = None, stage: str = "") -> None:
        self._sink = sink
        self._stage = stage

    def count(self, metric: Metric, n: float = 1.0, **labels: str) -> None:
        """Add ``n`` to counter ``metric`` with these label values."""
        if metric.kind != "counter":
            raise UsageError(f"metric '{metric}' is a {metric.kind}: use observe(), not count()")
        self._add(metric, n, labels)

    def observe(self, metric: Metric, value: float, **labels: str) -> None:
        """Record ``value`` in histogram ``metric`` with these label values."""
        if metric.kind != "histogram":
            raise UsageError(f"metric '{metric}' is a {metric.kind}: use count(), not observe()")
        self._add(metric, value, labels)

    def _add(self, metric: Metric, value: float, labels: Mapping[str, str]) -> None:
        if tuple(labels) != metric.labels and set(labels) != set(metric.labels):
            raise UsageError(
                f"metric '{metric}' takes the labels ({', '.join(metric.labels)}), "
                f"got ({', '.join(labels)}); report it with exactly those"
            )
        if self._sink is not None:
            self._sink.add(metric, value, labels, self._stage)
