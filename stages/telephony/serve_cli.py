"""``pipeline serve`` on the command line: its options, the pool of workers, the signals.

The server itself (one pipeline per call) is :class:`stages.telephony.serve.CallServer`; this
module parses the options, builds it, announces it, and drains it on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import structlog

from pipeline.errors import ConfigError, Problem, UsageError
from pipeline.graph import Pipeline
from pipeline.heap import settle
from pipeline.kube import DeletionCost, PodRef
from pipeline.loops import LOOPS, loop_factory
from pipeline.loops import run as run_on_loop
from pipeline.signals import stop_signals
from pipeline.tracing import TracingUnavailable, otel_tracer
from pipeline.workers import (
    READY_LINE,
    Supervisor,
    WorkerLink,
    set_parent_death_signal,
    usable_cores,
)

from ..listen import add_listen_arguments
from .carriers.rest import rest_for
from .carriers.webhooks import carrier_webhook
from .webhook import Webhook, parse_parameters, twilio_setup

if TYPE_CHECKING:
    from .serve import CallServer

__all__ = ["TOKEN_ENV", "cmd_serve", "keep_deletion_cost", "register"]

log = structlog.get_logger("pipeline.serve")

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
    add_listen_arguments(
        p,
        port=8080,
        token_env=TOKEN_ENV,
        token_help="when it is set, connections need ?token=... or 'Authorization: Bearer ...'",
    )
    p.add_argument(
        "--token-parameter",
        action="store_true",
        help="also accept the token as <Parameter name='token'> (start.customParameters.token): "
        "Twilio drops query strings from <Stream url>; checked before the pipeline starts",
    )
    p.add_argument(
        "--max-unauthenticated",
        type=int,
        default=8,
        help="with --token-parameter: connections at once still waiting to show their token in "
        "'start'; they do not count against --max-calls (8)",
    )
    p.add_argument(
        "--auth-timeout",
        type=float,
        default=3.0,
        help="with --token-parameter: seconds a connection may take to send a 'start' with the "
        "token (3)",
    )
    p.add_argument(
        "--max-bad-messages",
        type=int,
        default=20,
        help="disconnect a caller (1008) after this many malformed or invalid messages (20)",
    )
    p.add_argument(
        "--media-allowance",
        type=float,
        default=2.0,
        help="seconds a caller's audio may run ahead of real time; more is dropped, and a "
        "caller with 10 s dropped is disconnected (2)",
    )
    p.add_argument(
        "--unavailable-wav",
        default=None,
        metavar="PATH",
        help="what a caller hears when the model cannot be reached, before the call is hung "
        "up: an 8000 Hz mono WAV, μ-law or 16-bit PCM (default: a short spoken apology shipped "
        "with the package; '' for none)",
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
        "--loop",
        choices=LOOPS,
        default="auto",
        help="event loop: uvloop when installed (auto, the default; pip install "
        "'pipeline[fast]'), asyncio's own, or uvloop (refused if not installed)",
    )
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

    from .serve import CALL_STAGES, UNAVAILABLE_WAV, carrier_of

    p = load(args.file, args.name or args.pipeline_name, overrides=args.overrides)
    if not any(n.type_name in CALL_STAGES for n in p.nodes.values()):
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
    # out of the collector's sight, so a full collection only walks what calls allocate; and
    # collect less often (pipeline.heap)
    settle()
    try:
        kind, _ = loop_factory(args.loop)
    except UsageError as exc:
        log.error(str(exc))
        return 2
    log.debug("event loop", loop=kind)
    return run_on_loop(
        _serve(
            p,
            args.host,
            args.port,
            token=token,
            token_parameter=args.token_parameter,
            max_unauthenticated=args.max_unauthenticated,
            auth_timeout_s=args.auth_timeout,
            max_bad_messages=args.max_bad_messages,
            media_allowance_s=args.media_allowance,
            unavailable_wav=UNAVAILABLE_WAV
            if args.unavailable_wav is None
            else args.unavailable_wav,
            max_calls=args.max_calls,
            max_message_bytes=args.max_message_bytes,
            start_timeout_s=args.start_timeout,
            idle_timeout_s=args.idle_timeout,
            drain_timeout_s=args.drain_timeout,
            worker=worker,
            tracer=tracer,
            webhook=webhook,
            rest=rest,
        ),
        args.loop,
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
    from .serve import CallServer

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
