"""The playground server: one page, and one fresh pipeline per browser tab.

Theory of operation
-------------------
One ``websockets`` server answers both plain HTTP and the WebSocket. Before the handshake
(``process_request``) it serves the page's files from the package (``static/``: HTML, CSS and
JavaScript modules, no build step, nothing from the network) and refuses what it must:

* a path that is not one of the page's files or ``/ws``: 404;
* on a server with a token (required on any host but loopback): ``/`` and ``/ws`` without the
  right ``?token=`` answer 401/403 (the page carries the token in its own URL and passes it on);
* ``/ws`` with an ``Origin`` header naming another site than the one in ``Host``: 403 (another
  web page open in the same browser must not talk to your agent);
* on a loopback address, any request whose ``Host`` is not a loopback name or address: 403 (a
  web page whose own domain name resolves to 127.0.0.1, "DNS rebinding", would otherwise be
  same-origin with the playground);
* ``/ws`` while ``max_sessions`` tabs are connected: 503.

Each WebSocket is one tab: the handler sends ``hello`` (the rates, the graph), reads messages into
a :class:`~stages.browser.connection.BrowserConnection` until the page's ``start``, then runs a
fresh run of the one checked plan with that connection bound (its ``browser_source`` and
``browser_sink`` talk to this tab and no other), sending ``stats`` (link depths, frame counts)
every ``stats_interval_s`` while it runs and ``bye`` when it ends. A message that breaks the
protocol closes that connection (1008, or 1009 when too big) and nothing else. A hang-up (or a
closed tab) ends the microphone: the pipeline drains and finishes; if it is still running
``hangup_grace_s`` later it is cancelled (its sinks still close properly).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from pipeline.errors import ConfigError, PipelineError, Problem, UsageError
from pipeline.graph import Pipeline
from pipeline.plan import Plan
from pipeline.runtime import Runner, RunSummary
from pipeline.tasks import wait_first

from ..listen import http_response, is_loopback, token_of, token_refusal
from .connection import BrowserConnection, bind_connection
from .protocol import MAX_AUDIO_BYTES, BrowserMessageError, dumps

__all__ = ["PlaygroundServer", "is_loopback", "run_playground"]

log = structlog.get_logger("pipeline.playground")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may carry the token
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
DEFAULT_TOKEN_ENV = "PIPELINE_PLAYGROUND_TOKEN"


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's files: URL path -> (body, content type)."""
    out: dict[str, tuple[bytes, str]] = {}
    root = resources.files("stages.browser") / "static"
    for entry in root.iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if entry.is_file() and suffix in CONTENT_TYPES:
            out["/" + name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    out["/"] = out["/index.html"]
    return out


def check_playground_pipeline(p: Pipeline) -> None:
    """Refuse (ConfigError) a pipeline that has no browser stage."""
    if not any(n.type_name in ("browser_source", "browser_sink") for n in p.nodes.values()):
        raise ConfigError(
            Problem(
                f"pipeline '{p.name}' has no browser_source or browser_sink, so the page could "
                "neither speak nor listen",
                "pipeline playground runs one copy per browser tab: add {type: browser_source} "
                "and {type: browser_sink} (see docs/playground.md)",
                p.file,
            )
        )


def _hello(p: Plan) -> dict[str, Any]:
    """What the page needs before it starts: the rates, the graph, the VAD settings."""
    capture_rate, playback_rate = 16000, 24000
    vad: dict[str, Any] = {}
    for node in p.stages.values():
        if node.type_name == "browser_source" and node.output_format is not None:
            capture_rate = node.output_format.rate
        elif node.type_name == "browser_sink" and node.input_format is not None:
            playback_rate = node.input_format.rate
        elif node.type_name == "vad_gate" and not vad:
            vad = {
                "stage": node.id,
                "hangover_ms": node.values.get("hangover_ms"),
                "min_speech_ms": node.values.get("min_speech_ms"),
            }
    return {
        "type": "hello",
        "pipeline": p.name,
        "description": p.description,
        "capture_rate": capture_rate,
        "playback_rate": playback_rate,
        "vad": vad or None,
        "graph": {
            "nodes": [{"id": n.id, "type": n.type_name} for n in p.stages.values()],
            "links": [
                {
                    "name": lk.name,
                    "src": lk.src,
                    "dst": lk.dst,
                    "feedback": lk.feedback,
                    "capacity": lk.queue_capacity,
                }
                for lk in p.links
            ],
        },
    }


def _stats(runner: Runner) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for name, ch in runner.channels.items():
        st = ch.statistics()
        links[name] = {"depth": st.depth, "capacity": st.capacity, "peak": st.peak}
    for name in runner.fused_links:
        links[name] = {"depth": 0, "capacity": 0, "fused": True}
    stages = {sid: {"in": st.frames_in, "out": st.frames_out} for sid, st in runner.stats.items()}
    return {"type": "stats", "links": links, "stages": stages}


def _new_runner(plan: Plan) -> Runner:
    """A runner for one tab: the one checked plan, with its own channels and bus."""
    return Runner(plan)


@dataclass
class _Tab:
    conn: BrowserConnection
    runner: Runner | None = None


class PlaygroundServer:
    """Serves the playground page and runs one pipeline per connected tab.

    Use :func:`run_playground` (tests, embedding) or ``pipeline playground`` (command line)."""

    def __init__(
        self,
        template: Pipeline,
        *,
        token: str | None = None,
        max_sessions: int = 4,
        start_timeout_s: float = 15.0,
        hangup_grace_s: float = 5.0,
        stats_interval_s: float = 0.25,
    ) -> None:
        if max_sessions < 1:
            raise UsageError(f"max_sessions must be at least 1, got {max_sessions}")
        self.plan = template.validate()
        check_playground_pipeline(template)
        self.template = template
        self.token = token or None
        self.max_sessions = max_sessions
        self.start_timeout_s = start_timeout_s
        self.hangup_grace_s = hangup_grace_s
        self.stats_interval_s = stats_interval_s
        self.files = _static_files()
        self.hello = dumps(_hello(self.plan))
        self.active = 0
        self.summaries: list[RunSummary] = []
        self.url = ""
        self.port = 0
        self.loopback = True
        self._changed = asyncio.Event()
        self._server: Server | None = None
        self._tabs: dict[int, _Tab] = {}
        self._count = 0

    # -- HTTP before the upgrade

    def _respond(self, status: int, body: bytes, content_type: str) -> Response:
        return http_response(status, body, content_type, SECURITY_HEADERS)

    def _text(self, status: int, text: str) -> Response:
        return self._respond(status, text.encode(), "text/plain; charset=utf-8")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if self.loopback and not is_loopback(
            urlsplit("//" + request.headers.get("Host", "")).hostname or ""
        ):
            log.warning("request for another host name refused", host=request.headers.get("Host"))
            return self._text(403, "this server answers to localhost and 127.0.0.1 only\n")
        if path not in self.files and path != "/ws":
            return self._text(404, f"not found: {path}\n")
        if path in ("/", "/index.html", "/ws") and self.token is not None:
            refusal = token_refusal(token_of({}, url.query), self.token)
            if refusal == "unauthenticated":
                return self._text(401, "a token is required: open the URL the server printed\n")
            if refusal:
                return self._text(403, "wrong token\n")
        if path != "/ws":
            body, ctype = self.files[path]
            return self._respond(200, body, ctype)
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("Host", ""):
            log.warning("connection from another site refused", origin=origin)
            return self._text(403, "connections are taken from this server's own page only\n")
        if self.active >= self.max_sessions:
            return self._text(503, f"busy: {self.active} tabs connected\n")
        return None

    # -- one tab

    async def _handle(self, ws: ServerConnection) -> None:
        self._count += 1
        tab_id = self._count
        tlog = log.bind(tab=tab_id)
        structlog.contextvars.bind_contextvars(tab=tab_id)
        if self.active >= self.max_sessions:  # raced past process_request
            await ws.close(1013, "busy")
            return
        self._count_tab(+1)
        conn = BrowserConnection(ws.send, log=tlog)
        tab = self._tabs[tab_id] = _Tab(conn)
        failure: list[BrowserMessageError] = []
        reader = asyncio.create_task(self._read(ws, conn, failure), name=f"tab {tab_id} reader")
        code, reason, outcome = 1000, "", "completed"
        t0 = time.perf_counter()
        try:
            await conn.send(self.hello)
            if not await self._wait_start(conn):
                code, reason, outcome = 1008, "no start message", "no_start"
                if failure:
                    code, reason, outcome = failure[0].code, "protocol error", "refused"
                return
            tlog.info("tab connected", pipeline=self.template.name, rate=conn.rate)
            runner = tab.runner = _new_runner(self.plan)
            summary = await self._run(runner, conn)
            self.summaries.append(summary)
            outcome = summary.status
            if failure:
                code, reason, outcome = failure[0].code, "protocol error", "refused"
            await conn.send(dumps({"type": "bye", "status": summary.status}))
        except PipelineError as exc:
            code, reason, outcome = 1011, "pipeline failed", "failed"
            tlog.error("tab's pipeline failed", error=str(exc))
            await conn.send(dumps({"type": "bye", "status": "failed", "error": str(exc)}))
        except asyncio.CancelledError:
            code, reason, outcome = 1001, "server shutting down", "cancelled"
            raise
        except Exception as exc:
            code, reason, outcome = 1011, "internal error", "failed"
            tlog.error("tab's pipeline failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await ws.close(code, reason)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._tabs.pop(tab_id, None)
            self._count_tab(-1)
            tlog.info(
                "tab closed",
                outcome=outcome,
                duration_s=round(time.perf_counter() - t0, 3),
                messages_in=conn.messages_in,
                messages_out=conn.messages_out,
            )

    async def _run(self, runner: Runner, conn: BrowserConnection) -> RunSummary:
        async def stats() -> None:
            while True:
                await asyncio.sleep(self.stats_interval_s)
                await conn.send(dumps(_stats(runner)))

        async def grace() -> None:
            await conn.ended.wait()
            await asyncio.sleep(self.hangup_grace_s)
            log.warning("pipeline still running after the hang-up; cancelling it")
            runner.cancel()

        helpers = [asyncio.create_task(stats()), asyncio.create_task(grace())]
        try:
            with bind_connection(conn):
                summary = await runner.run()
        finally:
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        await conn.send(dumps(_stats(runner)))
        return summary

    async def _read(
        self, ws: ServerConnection, conn: BrowserConnection, failure: list[BrowserMessageError]
    ) -> None:
        try:
            async for message in ws:
                await conn.receive(message)
        except BrowserMessageError as exc:
            failure.append(exc)
            log.warning("bad message from the page; closing its connection", error=str(exc))
            await ws.close(exc.code, str(exc)[:120])
        except ConnectionClosed:
            pass
        finally:
            conn.connection_closed()

    async def _wait_start(self, conn: BrowserConnection) -> bool:
        await wait_first(conn.started, conn.ended, timeout=self.start_timeout_s)
        return conn.started.is_set() and not conn.closed

    def _count_tab(self, delta: int) -> None:
        self.active += delta
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_active(self, n: int) -> None:
        """Wait until exactly ``n`` tabs are connected (bound it with ``asyncio.timeout``)."""
        while self.active != n:
            await self._changed.wait()

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=MAX_AUDIO_BYTES,
            compression=None,
            ping_interval=20,
            ping_timeout=20,
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        self.loopback = is_loopback(host)
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"

    def page_url(self, **query: str) -> str:
        """The page's URL (with the token when there is one, and ``query``)."""
        params = dict(query)
        if self.token is not None:
            params["token"] = self.token
        if not params:
            return self.url
        return self.url + "?" + "&".join(f"{k}={v}" for k, v in params.items())

    async def close(self) -> None:
        """Close every connection and the listening socket."""
        for tab in list(self._tabs.values()):
            if tab.runner is not None:
                tab.runner.cancel()
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None


@contextlib.asynccontextmanager
async def run_playground(
    template: Pipeline, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> AsyncIterator[PlaygroundServer]:
    """Serve the playground while the block runs (port 0: a free one; see ``server.url``)."""
    server = PlaygroundServer(template, **options)
    await server.start(host, port)
    try:
        yield server
    finally:
        await server.close()
