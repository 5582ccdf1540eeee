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

Before the WebSocket handshake, :class:`~stages.telephony.serve_http.ServeFront` answers
``/healthz``, ``/readyz`` and ``/metrics`` and checks every upgrade: refused with 401 (no token)
or 403 (wrong token) when a token is set, and with 503 when ``max_calls`` calls are running or
the server is draining. The token comes as ``?token=``, ``Authorization: Bearer`` or
``X-Pipeline-Token``; Twilio drops query strings from ``<Stream url>`` and sends no custom
headers, so with ``token_parameter`` a connection without one is let through the handshake and
must carry it in the ``start`` message (TwiML ``<Parameter name="token" value="..."/>``), else
it is closed (1008) before any pipeline is built. The token is never logged. The command line
is :mod:`stages.telephony.serve_cli`, the metrics :mod:`stages.telephony.serve_metrics`.

With ``token_parameter``, a connection counts against ``max_calls`` only once its token is
checked; until then it counts against ``max_unauthenticated`` and has ``auth_timeout_s``.

Hostile callers: messages larger than ``max_message_bytes`` close the connection (1009); after
``max_bad_messages`` bad messages the caller is disconnected (1008); the media clock is policed
per call (:mod:`stages.telephony.police`: audio beyond ``media_allowance_s`` ahead of real time
is dropped, a sustained offender disconnected); a ``start`` in a format the pipeline cannot take
is refused (1003). Each call's outcome says how it ended (:func:`ended_by`); a call whose model
cannot be reached plays ``unavailable_audio`` to the caller before hanging up.

SIGTERM (and Ctrl-C) drains: new calls are refused (503) while ``/healthz`` stays 200 and
``/readyz`` answers 503; running calls go on until they end or ``drain_timeout_s`` passes, then
whatever is left is cancelled (every sink still closes properly).

Metrics (``/metrics``): ``pipeline_calls_active``, ``pipeline_calls_total{outcome}``,
``pipeline_connections_refused_total{reason}``, ``pipeline_stage_frame_cost_seconds{stage,type}``
(histogram of the time a stage spends per frame, excluding waits), ``pipeline_outgoing_frame_
lateness_seconds`` (histogram: the gap a caller hears before each outgoing chunk that continues a
stretch of audio), ``pipeline_link_dropped_frames_total{link}`` and ``..._purged_frames_total``
(audio dropped by an overflow policy / by a barge-in), ``pipeline_session_reconnects_total``,
``pipeline_tool_calls_total{outcome}``, ``pipeline_twilio_bad_messages_total``,
``pipeline_caller_audio_dropped_seconds_total``, ``pipeline_tasks_alive`` and
``pipeline_event_loop_lag_seconds`` (how late a 50 ms timer fires: a starved loop),
``pipeline_gc_pause_seconds{generation}`` (the process's garbage-collection pauses:
:mod:`pipeline.heap`). Tool calls,
reconnects and any other figure a stage reports through ``ctx.metrics`` (:mod:`pipeline.metrics`)
reach the server's registry through the runner of each call (:meth:`ServeMetrics.add`), whatever
the log level.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve

from pipeline.errors import (
    ConfigError,
    PipelineError,
    Problem,
    SessionRemoteError,
    UsageError,
)
from pipeline.graph import Pipeline
from pipeline.runtime import Runner
from pipeline.tasks import wait_first
from pipeline.tracing import CallTrace, TurnTimer
from pipeline.workers import WorkerLink

from ..listen import token_refusal
from ..wsbatch import send_batch
from .carriers.base import Carrier
from .control import CallControl, CallRest, bind_control
from .http import HttpRequest, HttpResponse, with_posts
from .offer import withhold_unavailable
from .police import MediaPolice
from .serve_cli import TOKEN_ENV, cmd_serve, keep_deletion_cost, register
from .serve_http import ServeFront
from .serve_metrics import ServeMetrics
from .twilio import MULAW_FORMAT, Mark, OutMedia, TwilioCall, bind_call, encode
from .webhook import Webhook

__all__ = [
    "CALL_STAGES",
    "TOKEN_ENV",
    "CallServer",
    "ServeMetrics",
    "carrier_of",
    "cmd_serve",
    "keep_deletion_cost",
    "register",
    "run_server",
]

log = structlog.get_logger("pipeline.serve")
# websockets' own logger: whatever it would say about a connection (at debug, the request
# line with its query string, which may hold the token) stays out of the logs; serve_http
# writes the one line a refused connection gets
_WS_LOG = logging.getLogger("pipeline.serve.websockets")
_WS_LOG.setLevel(logging.ERROR)


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
        max_unauthenticated: int = 8,
        auth_timeout_s: float = 3.0,
        max_bad_messages: int = 20,
        media_allowance_s: float = 2.0,
        media_disconnect_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        unavailable_wav: str | os.PathLike[str] | None = None,
        ping_interval_s: float = 20.0,
        ping_timeout_s: float = 20.0,
        metrics: ServeMetrics | None = None,
        worker: WorkerLink | None = None,
        tracer: Any = None,
        webhook: Webhook | None = None,
        rest: CallRest | None = None,
    ) -> None:
        if max_calls < 1:
            raise UsageError(f"max_calls must be at least 1, got {max_calls}")
        for why in withhold_unavailable(template.nodes, rest):  # not offered to the model
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
        #: connections waiting for their token in 'start' (token_parameter): their own cap
        #: and deadline, outside max_calls
        self.max_unauthenticated = max_unauthenticated
        self.auth_timeout_s = auth_timeout_s
        #: a caller is disconnected after this many bad messages (1008)
        self.max_bad_messages = max_bad_messages
        #: the media clock (MediaPolice): how far ahead of real time a caller's audio may run,
        #: and how much may be dropped before the caller is disconnected (1008, policed)
        self.media_allowance_s = media_allowance_s
        self.media_disconnect_s = media_disconnect_s
        #: the wall clock of the media police and the log limiter (tests step their own)
        self.clock = clock
        #: what a caller hears when the model cannot be reached (μ-law 8 kHz; b"": nothing)
        self.unavailable_audio = unavailable_audio(unavailable_wav)
        #: keepalive: a caller that leaves a ping unanswered this long is cut off (1011)
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
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
        self.front = ServeFront(self)

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): whether a new call would be taken (:meth:`ServeFront.readiness`)."""
        return self.front.readiness()

    # -- one call

    async def _handle(self, ws: ServerConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._calls += 1
        conn_id = self._calls
        structlog.contextvars.bind_contextvars(conn=conn_id)
        # a connection whose token comes in 'start' counts against max_calls only once the
        # token is checked (till then, against max_unauthenticated, for auth_timeout_s)
        awaiting = id(ws) in self.front.awaiting_token
        counted = not awaiting
        if counted and (self.active >= self.max_calls or self.draining):  # raced past the front
            self.metrics.refused.labels("busy").inc()
            await ws.close(1013, "busy")
            self._handlers.discard(task)
            return
        if counted:
            self._count_call(+1)
        carrier = self.new_carrier()
        fmt = carrier.format if carrier is not None else MULAW_FORMAT
        police = MediaPolice(
            fmt.bytes_per_second,
            allowance_s=self.media_allowance_s,
            disconnect_after_s=self.media_disconnect_s,
            clock=self.clock,
        )
        police.begin()  # the caller can have sent nothing before now
        call = TwilioCall(
            ws.send,
            send_batch=functools.partial(send_batch, ws),
            log=log.bind(conn=conn_id),
            on_lateness=self.metrics.lateness.observe,
            carrier=carrier,
            warn=self.front.warnings,
            max_bad_messages=self.max_bad_messages,
            police=police,
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
            wait_s = self.auth_timeout_s if awaiting else self.start_timeout_s
            if not await self._wait_start(call, wait_s):
                if call.refusal is not None:
                    code, reason, outcome = call.refusal
                    return
                outcome, code, reason = "no_start", 1008, "no start message"
                self.front.warnings.warning(
                    "connection closed before a start message",
                    timeout_s=wait_s,
                    messages=call.messages_in,
                )
                return
            structlog.contextvars.bind_contextvars(
                call_sid=call.call_sid, stream_sid=call.stream_sid
            )
            call.log = call.log.bind(call_sid=call.call_sid)
            if id(ws) in self.front.awaiting_token:
                refusal = self._start_token_refusal(call)
                if refusal:
                    self.metrics.refused.labels(refusal).inc()
                    outcome, code, reason = "refused", 1008, "token required"
                    log.warning("call refused: no valid token in start.customParameters")
                    return
                self.front.token_settled(ws)
                if self.active >= self.max_calls or self.draining:
                    self.metrics.refused.labels("busy").inc()
                    outcome, code, reason = "refused", 1013, "busy"
                    log.warning("call refused: busy", max_calls=self.max_calls)
                    return
                self._count_call(+1)
                counted = True
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
                outcome = "drained" if self.draining else summary.status
                code, reason = 1001, "server shutting down"
            else:
                outcome, code, reason = ended_by(call, ws)
            if call.refusal is not None:
                code, reason, outcome = call.refusal
        except PipelineError as exc:
            outcome, code, reason = "failed", 1011, "pipeline failed"
            if model_unreachable(exc):
                outcome, reason = "model_unreachable", "model unreachable"
                log.error("call failed: the model cannot be reached", error=str(exc))
                await self._apologise(call)
            else:
                log.error("call failed", error=str(exc))
        except asyncio.CancelledError:
            outcome = "drained" if self.draining else "cancelled"
            code, reason = 1001, "server shutting down"
            raise
        except Exception as exc:
            outcome, code, reason = "failed", 1011, "internal error"
            log.error("call failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            self.front.token_settled(ws)
            if self._by_call_sid.get(call.call_sid) is call:
                del self._by_call_sid[call.call_sid]
            if live is not None:
                self._fold(live)
                self._live.pop(conn_id, None)
            if call.bad_messages:
                self.metrics.bad_messages.inc(call.bad_messages)
            if police.dropped_bytes:
                self.metrics.media_dropped.inc(police.dropped_s)
            with contextlib.suppress(Exception):
                await ws.close(code, reason)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if counted:
                self._count_call(-1)
            self.metrics.calls.labels(outcome).inc()
            if call.start is not None:
                log.info(
                    "call ended",
                    outcome=outcome,
                    close_code=code,
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
        # One wake-up per timeout period, not one per media message: the call only notes
        # when media last came.
        since = time.monotonic()
        while True:
            left = max(since, call.last_media_at) + self.idle_timeout_s - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(left)

    async def _apologise(self, call: TwilioCall) -> None:
        """Play ``unavailable_audio`` to the caller and wait (as long as it lasts, plus 2 s)
        for Twilio's echo of the mark after it: the caller has heard it. Twilio streams only:
        another carrier's call is closed without it."""
        audio = self.unavailable_audio
        if not audio or call.carrier is not None or call.closed or call.start is None:
            return
        sid = call.stream_sid
        heard = asyncio.Event()
        call.on_mark = lambda name: heard.set() if name == "unavailable" else None
        messages = [encode(OutMedia(sid, audio[i : i + 160])) for i in range(0, len(audio), 160)]
        await call.send([*messages, encode(Mark(sid, "unavailable"))])
        await wait_first(heard, call.ended, timeout=len(audio) / 8000 + 2.0)

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
        """Wait until exactly ``n`` calls are running (a call counts from the moment it is
        authenticated, at the upgrade or, with ``token_parameter``, at its ``start``, until it
        is closed). For tests and embedding code that must
        act on the server's state, not on a guess of how long it takes; bound it with
        ``asyncio.timeout``."""
        while self.active != n:
            await self._active_changed.wait()

    def _start_token_refusal(self, call: Any) -> str:
        """'' when ``start.customParameters.token`` matches, else the refusal reason."""
        given = call.start.custom_parameters.get("token") if call.start else None
        assert self.token is not None
        return token_refusal(None if given is None else str(given), self.token)

    async def _read(self, ws: ServerConnection, call: Any) -> None:
        await call.read_socket(ws.recv)

    async def _wait_start(self, call: Any, timeout_s: float) -> bool:
        await wait_first(call.started, call.ended, timeout=timeout_s)
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
            process_request=self.front.process_request,
            create_connection=with_posts(self._post, self.front.handshake_failed),
            logger=_WS_LOG,
            max_size=self.max_message_bytes,
            compression=None,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_timeout_s,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        self.url = f"ws://{shown}:{self.port}"
        self._monitor = asyncio.create_task(self._watch_loop(), name="loop lag")
        loop = asyncio.get_running_loop()
        self.metrics.tasks_alive.set_function(lambda: len(asyncio.all_tasks(loop)))
        self.metrics.gc_pauses.attach()

    async def _watch_loop(self, period: float = 0.05) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - t0 - period))

    async def drain(self, timeout_s: float = 30.0) -> int:
        """Stop accepting calls; let the running ones end for up to ``timeout_s``, then cancel
        the rest. Returns the number of calls that had to be cancelled. The server goes on
        answering while it drains: ``/healthz`` 200 with ``draining``, ``/readyz`` 503, new
        calls 503 ``draining``."""
        self.draining = True
        if self.worker is not None:
            self.worker.set_draining()
        # the listener stays open: /healthz answers 200 (draining) for the liveness probe,
        # /readyz 503 for the load balancer, and a new call gets 503 'draining'
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
        self.metrics.gc_pauses.detach()
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


CALL_STAGES = ("twilio_source", "twilio_sink", "phone_source", "phone_sink")


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


#: The message a caller hears when the model cannot be reached (made by
#: ``data/make_unavailable.sh``, shipped with the package; ``pipeline serve`` plays it unless
#: told otherwise with --unavailable-wav).
UNAVAILABLE_WAV = Path(__file__).parent / "data" / "unavailable_8k_ulaw.wav"


def unavailable_audio(path: str | os.PathLike[str] | None) -> bytes:
    """The μ-law 8 kHz bytes of the WAV at ``path`` (μ-law, or PCM16 encoded); b"" for None
    or "". ConfigError naming the file when it cannot be played on a phone line."""
    if path is None or str(path) == "":
        return b""
    from stages.g711 import encode_ulaw
    from stages.wavfile import read_wav

    try:
        header, data = read_wav(path)
    except (OSError, PipelineError) as exc:
        said = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        raise ConfigError(Problem(said, "give a WAV file (--unavailable-wav PATH)")) from None
    fmt = header.format
    if fmt.rate != 8000 or fmt.channels != 1 or fmt.encoding not in ("pcmu", "pcm16"):
        raise ConfigError(
            Problem(
                f"{path}: {fmt.encoding} {fmt.rate} Hz x{fmt.channels}; the message for an "
                "unreachable model is played on a phone line",
                "give an 8000 Hz mono WAV, μ-law or 16-bit PCM (sox IN.wav -r 8000 -c 1 -e "
                "u-law OUT.wav)",
            )
        )
    return data if fmt.encoding == "pcmu" else encode_ulaw(data)


def model_unreachable(exc: BaseException) -> bool:
    """Whether a call failed because its realtime model could not be reached (the session
    gave up connecting), looking through the causes a stage error chains."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, SessionRemoteError) and seen.code == "connect_failed":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def ended_by(call: TwilioCall, ws: ServerConnection) -> tuple[str, int, str]:
    """(outcome, close code, reason) of a call whose pipeline ran to its end: ``completed``
    after the carrier's ``stop`` (or the agent ending the call), else what closed the socket:
    ``too_big`` (a message over the size limit, 1009), ``keepalive_timeout`` (pings went
    unanswered), ``caller_hangup`` (closed without ``stop``)."""
    if call.stopped or not call.closed:
        return "completed", 1000, ""
    sent = ws.protocol.close_sent
    if sent is not None and sent.code == 1009:
        return "too_big", 1009, sent.reason
    if sent is not None and sent.code == 1011 and "keepalive" in sent.reason:
        return "keepalive_timeout", 1011, sent.reason
    return "caller_hangup", 1000, ""


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
