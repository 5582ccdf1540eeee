"""``pipeline serve``: one fresh pipeline per phone call, over Twilio Media Streams.

Theory of operation
-------------------
The YAML is loaded and checked once, into one immutable plan (:class:`pipeline.plan.Plan`).
Every WebSocket connection is one call: the handler makes a
:class:`~stages.telephony.twilio.TwilioCall` bound to the connection, reads messages into it
until the ``start`` message (which carries the callSid, bound to every log line of the call
through structlog's context variables), then runs the plan with a runner of its own and the call
bound to the context (:func:`stages.telephony.twilio.bind_call`), so its ``twilio_source`` and
``twilio_sink`` talk to this connection and no other. When the run ends (the caller hung up and
everything drained) the socket is closed. A call that fails is logged and closed with code 1011;
other calls never see it (each runs in its own task, with its own runner, channels and bus).

Before the WebSocket handshake (``process_request``):

* ``GET /healthz``: 200 ``{"status": "ok", ...}`` while the process is alive (``"draining"``
  during a drain): a liveness probe;
* ``GET /readyz``: 200 while a call would be taken, 503 while draining or at ``max_calls``: a
  load balancer's health check (or a readiness probe) stops sending calls here;
* ``GET /metrics``: Prometheus text from this server's own registry (under ``--workers``, every
  worker's, each sample labelled ``worker``: :mod:`pipeline.workers`);
* any other path is a call: refused with 401 (no token) or 403 (wrong token) when a token is
  set, and with 503 when ``max_calls`` calls are running or the server is draining. The token
  comes as ``?token=``, ``Authorization: Bearer`` or ``X-Pipeline-Token``; Twilio drops query
  strings from ``<Stream url>`` and sends no custom headers, so with ``token_parameter`` a
  connection without one is let through the handshake and must carry it in the ``start``
  message (TwiML ``<Parameter name="token" value="..."/>``), else it is closed (1008) before
  any pipeline is built. The token is never logged.

Messages larger than ``max_message_bytes`` close the connection (1009). SIGTERM (and Ctrl-C)
drains: the listening socket closes, running calls go on until they end or ``drain_timeout_s``
passes, then whatever is left is cancelled (every sink still closes properly).

Metrics (``/metrics``): ``pipeline_calls_active``, ``pipeline_calls_total{outcome}``,
``pipeline_connections_refused_total{reason}``, ``pipeline_stage_frame_cost_seconds{stage,type}``
(histogram of the time a stage spends per frame, excluding waits), ``pipeline_outgoing_frame_
lateness_seconds`` (histogram: the gap a caller hears before each outgoing chunk that continues a
stretch of audio), ``pipeline_link_dropped_frames_total{link}`` and ``..._purged_frames_total``
(audio dropped by an overflow policy / by a barge-in), ``pipeline_session_reconnects_total``,
``pipeline_tool_calls_total{outcome}``, ``pipeline_twilio_bad_messages_total`` and
``pipeline_event_loop_lag_seconds`` (how late a 50 ms timer fires: a starved loop). Tool calls,
reconnects and any other figure a stage reports through ``ctx.metrics`` (:mod:`pipeline.metrics`)
reach the server's registry through the runner of each call (:meth:`ServeMetrics.add`), whatever
the log level.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pipeline.errors import ConfigError, PipelineError, Problem, UsageError
from pipeline.graph import Pipeline
from pipeline.kube import DeletionCost, PodRef
from pipeline.metrics import Metric
from pipeline.runtime import Runner
from pipeline.signals import stop_signals
from pipeline.tasks import wait_first
from pipeline.tracing import CallTrace, TracingUnavailable, TurnTimer, otel_tracer
from pipeline.workers import (
    READY_LINE,
    Supervisor,
    WorkerLink,
    set_parent_death_signal,
    usable_cores,
)

from .carriers.base import Carrier
from .carriers.rest import rest_for
from .carriers.webhooks import carrier_webhook
from .control import CallControl, CallRest, bind_control
from .http import HttpRequest, HttpResponse, with_posts
from .offer import withhold_unavailable
from .twilio import TwilioCall, bind_call
from .webhook import Webhook, parse_parameters, twilio_setup

log = structlog.get_logger("pipeline.serve")

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
            "excluding time waiting for input or sleeping",
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
        self.stage_cost = _StageCost()
        r.register(self.stage_cost)
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


# ---------------------------------------------------------------------------- the server


@dataclass
class _Live:
    runner: Runner
    folded: dict[str, int]
    drops: dict[str, tuple[int, int]]


class CallServer:
    """Answers Twilio Media Streams connections, one fresh pipeline per call.

    Use :func:`run_server` (tests, embedding) or ``pipeline serve`` (command line)."""

    def __init__(
        self,
        template: Pipeline,
        *,
        token: str | None = None,
        max_calls: int = 100,
        max_message_bytes: int = 64 * 1024,
        start_timeout_s: float = 10.0,
        idle_timeout_s: float = 15.0,
        token_parameter: bool = False,
        metrics: ServeMetrics | None = None,
        worker: WorkerLink | None = None,
        tracer: Any = None,
        webhook: Webhook | None = None,
        rest: CallRest | None = None,
    ) -> None:
        if max_calls < 1:
            raise UsageError(f"max_calls must be at least 1, got {max_calls}")
        for why in withhold_unavailable(template.nodes):  # not offered to the model
            log.warning(why)
        #: checked once; every call runs from it, none copies it
        self.plan = template.validate()
        self.template = template
        self.token = token or None
        self.max_calls = max_calls
        self.max_message_bytes = max_message_bytes
        self.start_timeout_s = start_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.token_parameter = token_parameter
        self._check_at_start: set[int] = set()  # connections whose token comes in 'start'
        self.metrics = metrics or ServeMetrics()
        self.worker = worker  # one of a pool (pipeline serve --workers), else None
        self.tracer = tracer  # an OpenTelemetry tracer (pipeline.tracing), else None
        self.active = 0
        self._active_changed = asyncio.Event()  # set (and replaced) whenever active changes
        self.draining = False
        self.url = ""
        self.port = 0
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._live: dict[int, _Live] = {}
        self._calls = 0
        self._monitor: asyncio.Task[None] | None = None
        # Twilio: the webhook (POST /twiml, /status, /amd) and signed upgrades; call control
        self.webhook = webhook
        self.rest = rest
        self._by_call_sid: dict[str, TwilioCall] = {}
        if webhook is not None:
            webhook.on_answered_by = self._answered_by
        self.new_carrier = carrier_of(template)  # the carrier's dialect, per call

    # -- HTTP before the upgrade

    def _respond(
        self, connection: ServerConnection, status: int, body: str, content_type: str = ""
    ) -> Response:
        response = connection.respond(status, body)
        if content_type:
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = content_type
        return response

    async def _process_request_pooled(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """Under ``--workers``: ``/metrics`` gathers every worker's (the rest as below)."""
        if self.worker is not None and urlsplit(request.path).path == "/metrics":
            self.fold_all()
            text = await self.worker.metrics(self.metrics.text())
            return self._respond(connection, 200, text.decode(), CONTENT_TYPE_LATEST)
        return self._process_request(connection, request)

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): whether a new call would be taken, by this server or, under
        ``--workers``, by some worker of the pool."""
        if self.draining:
            return False, "draining"
        if self.worker is not None:
            ok = self.worker.pool_ready()
            return ok, "ok" if ok else "busy: every worker is at its call cap"
        if self.active >= self.max_calls:
            return False, f"busy: {self.active} calls running, the cap is {self.max_calls}"
        return True, "ok"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/healthz":  # liveness: 200 while this process answers at all
            status = "draining" if self.draining else "ok"
            body = json.dumps(
                {"status": status, "active_calls": self.active, "max_calls": self.max_calls}
            )
            return self._respond(connection, 200, body + "\n", "application/json")
        if url.path == "/readyz":  # readiness: would a new call be taken?
            ready, reason = self.readiness()
            info: dict[str, Any] = {"ready": ready, "reason": reason}
            info.update(active_calls=self.active, max_calls=self.max_calls)
            if self.worker is not None:
                pool = self.worker.pool()
                info["worker"] = self.worker.index
                info["pool_active_calls"] = sum(w.active for w in pool if w.alive)
                info["pool_max_calls"] = sum(w.max_calls for w in pool if w.alive)
            return self._respond(
                connection, 200 if ready else 503, json.dumps(info) + "\n", "application/json"
            )
        if url.path == "/metrics":
            self.fold_all()
            text = self.metrics.text().decode()
            return self._respond(connection, 200, text, CONTENT_TYPE_LATEST)
        self._check_at_start.discard(id(connection))  # an id may be reused: start afresh
        if self.webhook is not None:
            refusal = self.webhook.upgrade_refusal(request.path, request.headers)
            if refusal:
                self.metrics.refused.labels(refusal).inc()
                log.warning(
                    "connection refused: "
                    + (
                        "no X-Twilio-Signature"
                        if refusal == "unsigned"
                        else "bad X-Twilio-Signature"
                    ),
                    path=url.path,
                )
                return self._respond(connection, 403, "invalid or missing X-Twilio-Signature\n")
        if self.token is not None:
            given = _token_of(request, url.query)
            if given is None and self.token_parameter:
                self._check_at_start.add(id(connection))  # Twilio: <Parameter name="token">
            elif given is None:
                self.metrics.refused.labels("unauthenticated").inc()
                return self._respond(
                    connection, 401, "a token is required: ?token=... or Authorization: Bearer\n"
                )
            if given is not None and not hmac.compare_digest(given.encode(), self.token.encode()):
                self.metrics.refused.labels("bad_token").inc()
                return self._respond(connection, 403, "wrong token\n")
        if self.draining:
            self.metrics.refused.labels("draining").inc()
            return self._respond(connection, 503, "draining: not taking new calls\n")
        if self.active >= self.max_calls:
            self.metrics.refused.labels("busy").inc()
            per = " per worker" if self.worker is not None else ""
            return self._respond(
                connection,
                503,
                f"busy: {self.active} calls running, the cap is {self.max_calls}{per}\n",
            )
        return None

    # -- one call

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._calls += 1
        conn_id = self._calls
        structlog.contextvars.bind_contextvars(conn=conn_id)
        if self.active >= self.max_calls or self.draining:  # raced past process_request
            self.metrics.refused.labels("busy").inc()
            await ws.close(1013, "busy")
            self._handlers.discard(task)
            return
        self._count_call(+1)
        call = TwilioCall(
            ws.send,
            log=log.bind(conn=conn_id),
            on_lateness=self.metrics.lateness.observe,
            carrier=self.new_carrier(),
        )
        reader = asyncio.create_task(self._read(ws, call), name=f"call {conn_id} reader")
        outcome, code, reason = "completed", 1000, ""
        t0 = time.perf_counter()
        live: _Live | None = None
        trace: CallTrace | None = None

        def on_turn(latency_s: float) -> None:
            self.metrics.voice_to_voice.observe(latency_s)
            if trace is not None:
                trace.turn(latency_s)

        turns = TurnTimer(on_turn)

        def on_chunk(lateness_s: float) -> None:  # each reply chunk, as it is sent
            self.metrics.lateness.observe(lateness_s)
            turns.reply_sent(call.media_end_ms)

        call.on_lateness = on_chunk
        try:
            if not await self._wait_start(call):
                outcome, code, reason = "no_start", 1008, "no start message"
                log.warning(
                    "connection closed before a start message",
                    timeout_s=self.start_timeout_s,
                    messages=call.messages_in,
                )
                return
            structlog.contextvars.bind_contextvars(
                call_sid=call.call_sid, stream_sid=call.stream_sid
            )
            call.log = call.log.bind(call_sid=call.call_sid)
            if id(ws) in self._check_at_start:
                refusal = self._start_token_refusal(call)
                if refusal:
                    self.metrics.refused.labels(refusal).inc()
                    outcome, code, reason = "refused", 1008, "token required"
                    log.warning("call refused: no valid token in start.customParameters")
                    return
            runner = Runner(self.plan, metrics=self.metrics)
            live = self._live[conn_id] = _Live(runner, {}, {})
            runner.event_hooks.append(turns.on_event)
            if self.tracer is not None:
                trace = CallTrace(
                    self.tracer,
                    {
                        "call.sid": call.call_sid,
                        "call.stream_sid": call.stream_sid,
                        "pipeline": self.template.name,
                    },
                )
                runner.event_hooks.append(trace.on_event)
            start = call.start
            params = dict(start.custom_parameters) if start else {}
            if "token" in params:
                params["token"] = "<redacted>"
            log.info(
                "call started",
                pipeline=self.plan.name,
                custom_parameters=params,
                active_calls=self.active,
            )
            self._by_call_sid[call.call_sid] = call
            control = CallControl(
                self.rest,
                self.webhook.stream_url if self.webhook else "",
                self.webhook.parameters if self.webhook else {},
            )
            with bind_call(call), bind_control(control):
                summary = await self._run_watched(runner, call)
            if summary is None:
                outcome, code, reason = "idle", 1000, "no media"
                log.warning("call closed: no media", idle_timeout_s=self.idle_timeout_s)
            elif summary.status != "completed":
                outcome, code, reason = summary.status, 1001, "server shutting down"
        except PipelineError as exc:
            outcome, code, reason = "failed", 1011, "pipeline failed"
            log.error("call failed", error=str(exc))
        except asyncio.CancelledError:
            outcome, code, reason = "cancelled", 1001, "server shutting down"
            raise
        except Exception as exc:
            outcome, code, reason = "failed", 1011, "internal error"
            log.error("call failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            self._check_at_start.discard(id(ws))
            if self._by_call_sid.get(call.call_sid) is call:
                del self._by_call_sid[call.call_sid]
            if live is not None:
                self._fold(live)
                self._live.pop(conn_id, None)
            if call.bad_messages:
                self.metrics.bad_messages.inc(call.bad_messages)
            with contextlib.suppress(Exception):
                await ws.close(code, reason)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._count_call(-1)
            self.metrics.calls.labels(outcome).inc()
            if call.start is not None:
                log.info(
                    "call ended",
                    outcome=outcome,
                    duration_s=round(time.perf_counter() - t0, 3),
                    messages_in=call.messages_in,
                    messages_out=call.messages_out,
                    voice_to_voice_ms=[round(x * 1000) for x in turns.latencies_s],
                )
            if trace is not None:
                trace.end(outcome, **{"call.turns": len(turns.latencies_s)})
            self._handlers.discard(task)

    async def _run_watched(self, runner: Runner, call: Any) -> Any:
        """Run the call's pipeline; None when no media arrived for ``idle_timeout_s``
        (a carrier streams audio, silence included, for the whole call)."""
        run = asyncio.ensure_future(runner.run())
        idle = asyncio.ensure_future(self._idle(call))
        try:
            await asyncio.wait([run, idle], return_when="FIRST_COMPLETED")
            if idle.done() and not run.done():
                return None
            return await run
        finally:
            idle.cancel()
            if not run.done():
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, BaseExceptionGroup):
                    await run

    async def _idle(self, call: Any) -> None:
        while True:
            call.media_arrived.clear()
            try:
                await asyncio.wait_for(call.media_arrived.wait(), self.idle_timeout_s)
            except TimeoutError:
                return

    def _answered_by(self, call_sid: str, value: str) -> bool:
        call = self._by_call_sid.get(call_sid)
        return call is not None and call.deliver_answered_by(value)

    def _post(self, request: HttpRequest) -> HttpResponse:
        if self.webhook is None:
            return HttpResponse.text(404, "no webhook here: start serve with --public-url\n")
        return self.webhook.handle(request)

    def _count_call(self, delta: int) -> None:
        self.active += delta
        self.metrics.calls_active.inc(delta)
        if self.worker is not None:
            self.worker.set_active(self.active)
        changed, self._active_changed = self._active_changed, asyncio.Event()
        changed.set()

    async def wait_active(self, n: int) -> None:
        """Wait until exactly ``n`` calls are running (a call counts from the moment its
        connection is accepted until it is closed). For tests and embedding code that must
        act on the server's state, not on a guess of how long it takes; bound it with
        ``asyncio.timeout``."""
        while self.active != n:
            await self._active_changed.wait()

    def _start_token_refusal(self, call: Any) -> str:
        """'' when ``start.customParameters.token`` matches, else the refusal reason."""
        given = call.start.custom_parameters.get("token") if call.start else None
        if given is None:
            return "unauthenticated"
        assert self.token is not None
        if not hmac.compare_digest(str(given).encode(), self.token.encode()):
            return "bad_token"
        return ""

    async def _read(self, ws: ServerConnection, call: Any) -> None:
        try:
            async for message in ws:
                await call.receive(message)
        except ConnectionClosed:
            pass
        finally:
            call.connection_closed()

    async def _wait_start(self, call: Any) -> bool:
        await wait_first(call.started, call.ended, timeout=self.start_timeout_s)
        return bool(call.start is not None)

    # -- metrics from the runners

    def _fold(self, live: _Live) -> None:
        runner = live.runner
        for sid, st in runner.stats.items():
            n = len(st.times)
            k = live.folded.get(sid, 0)
            if n > k:
                times = np.frombuffer(st.times, dtype=np.int64)[k:n]
                self.metrics.stage_cost.add(sid, st.type, times)
                live.folded[sid] = n
        for name, ch in runner.channels.items():
            d0, p0 = live.drops.get(name, (0, 0))
            if ch.dropped > d0:
                self.metrics.link_dropped.labels(name).inc(ch.dropped - d0)
            if ch.purged > p0:
                self.metrics.link_purged.labels(name).inc(ch.purged - p0)
            live.drops[name] = (ch.dropped, ch.purged)

    def metrics_text(self) -> bytes:
        """This server's own metrics, up to date, as Prometheus text."""
        self.fold_all()
        return self.metrics.text()

    def fold_all(self) -> None:
        """Bring the per-stage and per-link metrics up to date with the running calls."""
        for live in list(self._live.values()):
            self._fold(live)

    # -- lifecycle

    async def start(
        self, host: str = "127.0.0.1", port: int = 8080, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on ``host:port``, or on ``sock`` (a bound, listening socket) if given."""
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        self._server = await serve(
            self._handle,
            **where,
            process_request=self._process_request_pooled,
            create_connection=with_posts(self._post),
            max_size=self.max_message_bytes,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"ws://{shown}:{self.port}"
        self._monitor = asyncio.create_task(self._watch_loop(), name="loop lag")

    async def _watch_loop(self, period: float = 0.05) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - t0 - period))

    async def drain(self, timeout_s: float = 30.0) -> int:
        """Stop accepting calls; let the running ones end for up to ``timeout_s``, then cancel
        the rest. Returns the number of calls that had to be cancelled. The listening socket
        is closed before the ``draining`` log line is written."""
        self.draining = True
        if self.worker is not None:
            self.worker.set_draining()
        if self._server is not None:
            self._server.close(close_connections=False)
            # websockets stops listening in a task of its own; stop now, so that once the
            # 'draining' line is out nobody can connect any more
            self._server.server.close()
        pending = set(self._handlers)
        log.info("draining", active_calls=len(pending), timeout_s=timeout_s)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for live in list(self._live.values()):
            live.runner.cancel()
        if pending:
            log.warning("drain deadline passed; cancelling calls", calls=len(pending))
            _, still = await asyncio.wait(pending, timeout=5.0)
            for t in still:
                t.cancel()
        await self.close()
        return len(pending)

    async def close(self) -> None:
        """Close at once: every connection and the listening socket."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None
        if self.rest is not None:
            await self.rest.aclose()


_CALL_STAGES = ("twilio_source", "twilio_sink", "phone_source", "phone_sink")


def carrier_of(template: Pipeline) -> Callable[[], Carrier | None]:
    """A factory of the carrier dialect the pipeline's phone stages name (None: Twilio's own
    parser). ConfigError when its phone stages name different carriers or formats."""
    from .carriers import CARRIERS
    from .phone import stream_format

    seen = set()
    for node in template.nodes.values():
        if node.type_name in ("phone_source", "phone_sink"):
            params = dict(node.raw_params)
            carrier = str(params.get("carrier") or "twilio")
            seen.add((carrier, stream_format(params)))
        elif node.type_name in ("twilio_source", "twilio_sink"):
            seen.add(("twilio", stream_format({})))
    if len(seen) > 1:
        named = ", ".join(f"{c} {f}" for c, f in sorted(seen, key=str))
        raise ConfigError(
            Problem(
                f"pipeline '{template.name}' names more than one stream ({named}); a call "
                "comes from one carrier",
                "give its phone stages the same carrier, encoding and rate",
            )
        )
    if not seen or next(iter(seen))[0] == "twilio":
        return lambda: None
    name, fmt = next(iter(seen))
    cls = CARRIERS[name]
    return lambda: cls(fmt)


def _token_of(request: Request, query: str) -> str | None:
    values = parse_qs(query).get("token")
    if values:
        return values[0]
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    header = request.headers.get("X-Pipeline-Token")
    return header if header else None


@contextlib.asynccontextmanager
async def run_server(
    template: Pipeline, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[CallServer]:
    """Serve calls while the block runs (port 0: a free one; see ``server.url``). Closes every
    connection on the way out."""
    server = CallServer(template, **options)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.close()


# ---------------------------------------------------------------------------- command line

TOKEN_ENV = "PIPELINE_SERVE_TOKEN"


def register(subparsers: Any) -> None:
    """Add ``pipeline serve`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="answer phone calls: one pipeline per Twilio Media Streams connection",
        description="Run a WebSocket server for Twilio Media Streams (<Connect><Stream "
        "url='wss://HOST/...'>). Each connection runs the pipeline afresh; "
        "GET /healthz and GET /metrics answer plain HTTP.",
    )
    p.add_argument("file", help="the pipelines YAML file")
    p.add_argument("name", nargs="?", help="pipeline name (default: the first)")
    p.add_argument("--pipeline", dest="pipeline_name", help="pipeline name (same as NAME)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    p.add_argument(
        "--token-env",
        default=TOKEN_ENV,
        help=f"environment variable holding the shared token (default {TOKEN_ENV}); when it "
        "is set, connections need ?token=... or 'Authorization: Bearer ...'",
    )
    p.add_argument(
        "--token-parameter",
        action="store_true",
        help="also accept the token as <Parameter name='token'> (start.customParameters.token): "
        "Twilio drops query strings from <Stream url>; checked before the pipeline starts",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes on the one port, each with its own event loop (default: the "
        f"cores this process may use, here {usable_cores()}); 1 serves in this process",
    )
    p.add_argument("--max-calls", type=int, default=100, help="concurrent calls per worker (100)")
    p.add_argument(
        "--otel",
        action="store_true",
        help="export OpenTelemetry traces (a span per call, turn and tool call) over OTLP/HTTP "
        "to $OTEL_EXPORTER_OTLP_ENDPOINT; needs pip install 'pipeline[otel]'",
    )
    p.add_argument(
        "--max-message-bytes", type=int, default=64 * 1024, help="largest message (65536)"
    )
    p.add_argument(
        "--start-timeout", type=float, default=10.0, help="seconds to wait for 'start' (10)"
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=15.0,
        help="close a call after this many seconds without media (15)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds running calls may take to finish (30)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.PARAM=VALUE")
    p.add_argument(
        "--public-url",
        help="https://HOST that Twilio reaches: answers the number's Voice webhook (POST "
        "/twiml) with <Connect><Stream url='wss://HOST/media'>, takes status callbacks (POST "
        "/status, /amd), and checks X-Twilio-Signature on them and on every upgrade",
    )
    p.add_argument(
        "--twilio-auth-token-env",
        default="TWILIO_AUTH_TOKEN",
        help="environment variable holding the account's auth token, which signs Twilio's "
        "requests (default TWILIO_AUTH_TOKEN); with TWILIO_ACCOUNT_SID it also enables the "
        "call tools (end_call, transfer_call, send_dtmf)",
    )
    p.add_argument(
        "--stream-parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a <Parameter> for every call's stream (start.customParameters)",
    )
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """``pipeline serve``: exit 0 after a drain, 2 for a bad pipeline or bad options."""
    from pipeline.config import load

    p = load(args.file, args.name or args.pipeline_name, overrides=args.overrides)
    if not any(n.type_name in _CALL_STAGES for n in p.nodes.values()):
        raise ConfigError(
            Problem(
                f"pipeline '{p.name}' has no twilio_source or twilio_sink, so a call could "
                "neither be heard nor answered",
                "pipeline serve runs one copy per phone call: add {type: twilio_source} and "
                "{type: twilio_sink} (see docs/telephony.md)",
                p.file,
            )
        )
    # what every call will need (a model provider's key, ...): refuse to start without it
    # rather than answer each call and fail it
    p.preflight(p.validate())
    token = os.environ.get(args.token_env) or None
    if args.max_calls < 1:
        log.error("--max-calls must be at least 1", given=args.max_calls)
        return 2
    try:
        params = parse_parameters(args.stream_parameter)
        if token is not None and args.token_parameter:
            params["token"] = token  # the stream comes back with it (never logged)
        other = carrier_of(p)()
        webhook: Webhook | None
        if other is None:
            webhook, rest = twilio_setup(
                args.public_url,
                auth_token_env=args.twilio_auth_token_env,
                parameters=params,
                environ=os.environ,
            )
        else:  # Telnyx, Plivo...: their own signatures and call-control credentials
            webhook = carrier_webhook(other.name, args.public_url, os.environ)
            rest = rest_for(other.name, os.environ, args.public_url)
    except ValueError as exc:
        log.error(str(exc))
        return 2
    worker = WorkerLink.from_environ()
    workers = usable_cores() if args.workers is None else args.workers
    if workers < 1:
        log.error("--workers must be at least 1", given=workers)
        return 2
    if worker is None and workers > 1:
        return _supervise(args, workers)
    if worker is not None:
        set_parent_death_signal()  # drain, not run on, should the supervisor die
    tracer = None
    if args.otel:
        try:
            tracer = otel_tracer("pipeline-serve")
        except TracingUnavailable as exc:
            log.error(str(exc))
            return 2
    # Everything loaded so far (modules, the template) lives as long as the server: keep it
    # out of the collector's sight, so a full collection only walks what calls allocate.
    gc.collect()
    gc.freeze()
    return asyncio.run(
        _serve(
            p,
            args.host,
            args.port,
            token=token,
            token_parameter=args.token_parameter,
            max_calls=args.max_calls,
            max_message_bytes=args.max_message_bytes,
            start_timeout_s=args.start_timeout,
            idle_timeout_s=args.idle_timeout,
            drain_timeout_s=args.drain_timeout,
            worker=worker,
            tracer=tracer,
            webhook=webhook,
            rest=rest,
        )
    )


def _supervise(args: argparse.Namespace, workers: int) -> int:
    """Run ``workers`` copies of this very command line as a pool (pipeline.workers)."""
    argv = getattr(args, "command_line", None) or sys.argv[1:]
    command = [sys.executable, "-m", "pipeline", *argv]
    supervisor = Supervisor(command, workers, args.host, args.port)

    async def run() -> int:
        def pool_calls() -> int:
            return supervisor.state.total_active() if supervisor.state is not None else 0

        async with keep_deletion_cost(pool_calls):
            return await supervisor.run()

    return asyncio.run(run())


@contextlib.asynccontextmanager
async def keep_deletion_cost(calls: Callable[[], int]) -> AsyncIterator[None]:
    """In a Kubernetes pod (pipeline.kube), keep its pod-deletion-cost equal to ``calls()``
    while the block runs; elsewhere, nothing."""
    ref = PodRef.from_environ()
    if ref is None:
        yield
        return
    task = asyncio.create_task(DeletionCost(ref, calls).run(), name="pod deletion cost")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _serve(
    p: Pipeline,
    host: str,
    port: int,
    *,
    drain_timeout_s: float,
    worker: WorkerLink | None = None,
    **options: Any,
) -> int:
    server = CallServer(p, worker=worker, **options)
    try:
        if worker is not None:
            structlog.contextvars.bind_contextvars(worker=worker.index)
            await server.start(worker.host, sock=worker.listening_socket())
            worker.started(server.max_calls)
            await worker.serve_metrics(server.metrics_text)
        else:
            await server.start(host, port)
    except OSError as exc:
        log.error("cannot listen", host=host, port=port, error=str(exc))
        return 2
    stop = asyncio.Event()

    def cancel_calls() -> None:
        for live in list(server._live.values()):
            live.runner.cancel()

    with stop_signals(stop.set, cancel_calls):
        return await _until_stopped(server, p, worker, stop, drain_timeout_s)


async def _until_stopped(
    server: CallServer,
    p: Pipeline,
    worker: WorkerLink | None,
    stop: asyncio.Event,
    drain_timeout_s: float,
) -> int:
    """Announce the server, wait for a stop signal, drain, close."""
    if worker is None:
        print(f"pipeline serve: listening on {server.url}", file=sys.stderr, flush=True)
    else:
        print(READY_LINE, flush=True)  # to the supervisor, which announces the pool
    log.info(
        "serving",
        url=server.url,
        pipeline=p.name,
        max_calls=server.max_calls,
        auth="token" if server.token else "none",
        twilio_signatures=server.webhook is not None,
        call_control=server.rest is not None,
    )
    try:
        if worker is None:  # a pool's supervisor keeps it for the whole pod
            async with keep_deletion_cost(lambda: server.active):
                await stop.wait()
        else:
            await stop.wait()
        cancelled = await server.drain(drain_timeout_s)
        log.info("stopped", cancelled_calls=cancelled)
    finally:
        await server.close()
        if worker is not None:
            await worker.close()
    return 0
