"""The Prometheus metrics of ``pipeline serve``, in a registry per server.

:class:`ServeMetrics` holds every family ``/metrics`` exports (see :mod:`stages.telephony.serve`
for the list); the per-stage cost histogram is filled in bulk from the runners' own timings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily

from pipeline.heap import GcPauses
from pipeline.metrics import Metric

__all__ = ["COST_BUCKETS", "LATENESS_BUCKETS", "VOICE_TO_VOICE_BUCKETS", "ServeMetrics"]

#: Stage cost buckets, seconds per frame.
COST_BUCKETS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2,
)  # fmt: skip
#: Voice-to-voice latency buckets, seconds.
VOICE_TO_VOICE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
#: Lateness buckets, seconds.
LATENESS_BUCKETS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


# ---------------------------------------------------------------------------- metrics


class _StageCost:
    """A histogram per stage of the time spent per frame, filled in bulk from the runners'
    own per-frame timings (no per-frame call into prometheus-client)."""

    def __init__(self, buckets: Iterable[float] = COST_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        self._bounds_ns = np.array(self.bounds) * 1e9
        self._data: dict[tuple[str, str], tuple[np.ndarray[Any, Any], list[float]]] = {}

    def add(self, stage: str, type_: str, times_ns: np.ndarray[Any, Any]) -> None:
        if not len(times_ns):
            return
        counts, total = self._data.setdefault(
            (stage, type_), (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0])
        )
        idx = np.searchsorted(self._bounds_ns, times_ns, side="left")
        counts += np.bincount(idx, minlength=len(self.bounds) + 1)
        total[0] += float(times_ns.sum()) / 1e9

    def describe(self) -> list[HistogramMetricFamily]:
        return [self._family()]

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "pipeline_stage_frame_cost_seconds",
            "Time a stage spends per frame it produces (per frame consumed for a sink), "
            "excluding time waiting for input or sleeping; over the frames the runner times "
            "(one in 16)",
            labels=["stage", "type"],
        )

    def collect(self) -> Iterable[HistogramMetricFamily]:
        fam = self._family()
        for (stage, type_), (counts, total) in sorted(self._data.items()):
            cum = np.cumsum(counts)
            buckets = [(repr(b), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
            buckets.append(("+Inf", float(cum[-1])))
            fam.add_metric([stage, type_], buckets, total[0])
        yield fam


class _GcPauseFamily:
    """``pipeline_gc_pause_seconds{generation}``: the process's garbage-collection pauses,
    counted by :class:`~pipeline.heap.GcPauses` inside the collector's callback and read out
    here at each scrape."""

    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses

    def describe(self) -> list[HistogramMetricFamily]:
        return [self._family()]

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "pipeline_gc_pause_seconds",
            "Garbage-collection pauses of the server process, by generation (a pause stops "
            "every call at once)",
            labels=["generation"],
        )

    def collect(self) -> Iterable[HistogramMetricFamily]:
        fam = self._family()
        for gen in range(3):
            cum = self.pauses.cumulative(gen)
            buckets = [(repr(b), float(n)) for b, n in cum[:-1]]
            buckets.append(("+Inf", float(cum[-1][1])))
            fam.add_metric([str(gen)], buckets, self.pauses.total_s[gen])
        yield fam


class ServeMetrics:
    """The server's Prometheus metrics, in a registry of their own (so two servers in one
    process, as in tests, never mix their figures)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.calls_active = Gauge("pipeline_calls_active", "Calls in progress", registry=r)
        self.calls = Counter("pipeline_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.voice_to_voice = Histogram(
            "pipeline_voice_to_voice_seconds",
            "Per turn: from the end of the caller's speech to the first byte of the reply sent "
            "to them (on the caller's stream clock)",
            buckets=VOICE_TO_VOICE_BUCKETS,
            registry=r,
        )
        self.refused = Counter(
            "pipeline_connections_refused",
            "Connections refused before the call started, by reason",
            ["reason"],
            registry=r,
        )
        self.lateness = Histogram(
            "pipeline_outgoing_frame_lateness_seconds",
            "Gap the caller hears before an outgoing audio chunk that continues a stretch of "
            "audio (0: the chunk arrived before the previous one finished playing)",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.link_dropped = Counter(
            "pipeline_link_dropped_frames",
            "Frames dropped by a link's overflow policy",
            ["link"],
            registry=r,
        )
        self.link_purged = Counter(
            "pipeline_link_purged_frames",
            "Audio frames dropped from a link by a barge-in (interrupt)",
            ["link"],
            registry=r,
        )
        self.reconnects = Counter(
            "pipeline_session_reconnects",
            "Realtime sessions opened again after the first one of a call",
            registry=r,
        )
        self.tool_calls = Counter(
            "pipeline_tool_calls", "Tool calls run, by outcome", ["outcome"], registry=r
        )
        self.bad_messages = Counter(
            "pipeline_twilio_bad_messages",
            "Twilio messages refused (malformed or invalid) and skipped",
            registry=r,
        )
        self.loop_lag = Histogram(
            "pipeline_event_loop_lag_seconds",
            "How late the server's event loop wakes a 50 ms timer (a starved or blocked loop "
            "makes every call late at once)",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.media_dropped = Counter(
            "pipeline_caller_audio_dropped_seconds",
            "Caller audio dropped for running ahead of real time (the media clock's police)",
            registry=r,
        )
        self.tasks_alive = Gauge(
            "pipeline_tasks_alive",
            "asyncio tasks alive in the server's event loop (flat between calls: none leaked)",
            registry=r,
        )
        self.stage_cost = _StageCost()
        r.register(self.stage_cost)
        #: the process's GC pauses (counted while the server runs: CallServer.start)
        self.gc_pauses = GcPauses()
        r.register(_GcPauseFamily(self.gc_pauses))
        # figures stages report through ctx.metrics, by Metric.name (others are added on use)
        self._reported: dict[str, Any] = {
            "tool_calls": self.tool_calls,
            "session_reconnects": self.reconnects,
        }

    def add(self, metric: Metric, value: float, labels: Mapping[str, str], stage: str) -> None:
        """A figure a stage of a call reported through ``ctx.metrics`` (the runner's
        :class:`~pipeline.metrics.MetricsSink`): a counter becomes ``pipeline_<name>_total``,
        a histogram ``pipeline_<name>``, labelled as the metric declares."""
        family: Any = self._reported.get(metric.name)
        if family is None:  # declared by a stage: exported as it is reported
            kind = Counter if metric.kind == "counter" else Histogram
            family = kind(
                f"pipeline_{metric.name}", metric.doc, list(metric.labels), registry=self.registry
            )
            self._reported[metric.name] = family
        target = family.labels(**labels) if labels else family
        if metric.kind == "counter":
            target.inc(value)
        else:
            target.observe(value)

    def text(self) -> bytes:
        return generate_latest(self.registry)
