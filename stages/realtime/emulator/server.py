"""The emulator's network edge: a ``websockets`` server (:func:`run_emulator`) whose handler
pumps each connection's socket through one :class:`~.core.EmulatorSession` and sleeps on an
injectable clock between due times; the HTTP upgrade checks the path and the credentials and
picks the connection's dialect (:func:`detect_dialect`)."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from pipeline.clock import Clock, RealClock
from pipeline.heap import GcPauses
from pipeline.tasks import StageTasks

from ..wire import Dialect
from ..wire.gemini import GEMINI_PATH, GeminiServerBridge
from .config import EmulatorConfig
from .core import LATENESS_BOUNDS, ConversationState, EmulatorSession

log = structlog.get_logger("pipeline.emulator")

# websockets' server logs every request header it receives (Authorization: Bearer <key>
# included) at debug level on ``websockets.server``: give it a logger of its own that never says
# more than warnings, as the client side does (stages.realtime.session).
_WS_LOGGER = logging.getLogger("pipeline.emulator.websocket")
_WS_LOGGER.setLevel(logging.WARNING)

Json = dict[str, Any]


def detect_dialect(
    config: EmulatorConfig, headers: Headers, model: str | None, azure_api_version: str = ""
) -> Dialect:
    """The dialect of one connection: the configured one, or with ``auto`` (the default)
    ``openai-beta`` for an ``OpenAI-Beta: realtime=v1`` header (the beta clients send it) or an
    Azure preview ``api-version`` (``...-preview``: Azure's preview realtime API speaks the beta
    dialect), ``openai`` for a ``gpt-*`` model or any other Azure connection (the GA clients),
    else ``xai``."""
    if config.dialect != "auto":
        return config.dialect
    if headers.get("OpenAI-Beta", "").strip().lower() == "realtime=v1":
        return "openai-beta"
    if azure_api_version:
        return "openai-beta" if azure_api_version.endswith("-preview") else "openai"
    if model and model.startswith("gpt-"):
        return "openai"
    return "xai"


#: Azure OpenAI's realtime route (``wss://RESOURCE.openai.azure.com/openai/realtime``), which
#: takes ``api-version`` and ``deployment`` in the query and the key in an ``api-key`` header
AZURE_PATH = "/openai/realtime"
#: ``GET``: the emulator's own figures (:meth:`Emulator.delta_lateness`), JSON
STATS_PATH = "/stats"
#: Gemini's message wording for a connection without a key (it closes with 1008)
GEMINI_NO_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)
#: closing a connection whose setup names a handle that is unknown or expired (1007, as Google's
#: server closes a refused resumption)
RESUME_REFUSED = "Session resumption handle is invalid or has expired; start a new session"
AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


@dataclass
class EmulatorConnection:
    """One client connection: what it asked for and every event each way (parsed)."""

    index: int
    dialect: Dialect
    model: str
    path: str
    headers: Headers = field(repr=False)  # holds the client's Authorization header
    subprotocol: str | None
    session: EmulatorSession
    sent: list[Json] = field(default_factory=list)
    closed: bool = False
    aborted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    #: Gemini Live connections: the translation between its messages and the core's events
    bridge: GeminiServerBridge | None = field(default=None, repr=False)

    @property
    def received(self) -> list[Json]:
        """Every client event received on this connection, parsed, in order."""
        return self.session.received


class Emulator:
    """A running emulator (from :func:`run_emulator`): its ``url``, its connections and what
    they exchanged, and ``wait_for`` / ``wait_sent`` to await a condition without sleeping."""

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.url = ""
        self.port = 0
        self.connections: list[EmulatorConnection] = []
        self._ids: dict[str, int] = {}
        self._changed = asyncio.Event()
        #: Gemini session resumption handles: the conversation each holds, and when it was made
        self.handles: dict[str, tuple[ConversationState, float]] = {}
        #: the process's garbage-collection pauses, in ``GET /stats`` when counted (the
        #: ``pipeline emulator`` command counts them; an emulator inside a test does not)
        self.gc_pauses: GcPauses | None = None

    @property
    def received(self) -> list[Json]:
        """Every client event received, parsed, in order (all connections; see
        ``connections[i].received`` for one)."""
        return [e for c in self.connections for e in c.received]

    @property
    def sent(self) -> list[Json]:
        """Every server event sent (all connections, connection by connection)."""
        return [e for c in self.connections for e in c.sent]

    def delta_lateness(self) -> dict[str, int]:
        """How late the audio deltas of every connection so far left against their pace, as a
        cumulative histogram (bound in seconds -> deltas at or under it, ``"+Inf"``: all):
        what ``GET /stats`` answers. A delta that leaves late reaches the client late, whatever
        the client does; a load test reads it to tell its model's delays from its own."""
        counts = [0] * (len(LATENESS_BOUNDS) + 1)
        for conn in self.connections:
            for i, n in enumerate(conn.session.delta_lateness):
                counts[i] += n
        out: dict[str, int] = {}
        total = 0
        for bound, n in zip([*map(str, LATENESS_BOUNDS), "+Inf"], counts, strict=True):
            total += n
            out[bound] = total
        return out

    def stats(self) -> Json:
        """What ``GET /stats`` answers: :meth:`delta_lateness` and, when counted, the
        process's garbage-collection pauses (``gc_pause_seconds``: per generation, the same
        cumulative histogram, and ``gc_pause_seconds_total``)."""
        out: Json = {"audio_delta_lateness_seconds": self.delta_lateness()}
        pauses = self.gc_pauses
        if pauses is not None:
            out["gc_pause_seconds"] = {
                str(gen): {
                    ("+Inf" if b == float("inf") else str(b)): n for b, n in pauses.cumulative(gen)
                }
                for gen in range(3)
            }
            out["gc_pause_seconds_total"] = {str(g): pauses.total_s[g] for g in range(3)}
        return out

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[Emulator], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate(self)`` holds (checked after every message each way);
        TimeoutError after ``timeout`` real seconds (a safety net for tests, not a delay)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_for(
        self, predicate: Callable[[list[Json]], bool], timeout: float = 5.0
    ) -> list[Json]:
        """Wait until ``predicate(received)`` holds for the client events received so far."""
        await self.wait(lambda emu: predicate(emu.received), timeout)
        return self.received

    async def wait_sent(
        self, predicate: Callable[[list[Json]], bool], timeout: float = 5.0
    ) -> list[Json]:
        """Wait until ``predicate(sent)`` holds for the server events sent so far."""
        await self.wait(lambda emu: predicate(emu.sent), timeout)
        return self.sent

    # -- HTTP upgrade

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        path = url.path.rstrip("/")
        if path == STATS_PATH and request.headers.get("Upgrade") is None:
            return _json_response(connection, self.stats())
        if path not in ("/v1/realtime", AZURE_PATH, GEMINI_PATH):
            return _http_error(connection, http.HTTPStatus.NOT_FOUND, f"no route {url.path}")
        if path == AZURE_PATH:
            query = urllib.parse.parse_qs(url.query)
            missing = [k for k in ("api-version", "deployment") if not query.get(k)]
            if missing:
                return _http_error(
                    connection,
                    http.HTTPStatus.BAD_REQUEST,
                    f"Missing required query parameter(s): {', '.join(missing)} "
                    f"({AZURE_PATH}?api-version=...&deployment=...)",
                )
        if self.config.reject_status is not None:
            status = http.HTTPStatus(self.config.reject_status)
            return _http_error(connection, status, "rejected by the emulator's reject_status")
        if not self.config.require_auth or path == GEMINI_PATH:  # Gemini: checked after upgrade
            return None
        if path == AZURE_PATH:
            # Azure takes its key in ``api-key``, or an Entra ID token as a bearer
            if request.headers.get("api-key", "").strip():
                return None
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return None
            return _http_error(connection, http.HTTPStatus.UNAUTHORIZED, AZURE_DENIED)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return None
        for offered in request.headers.get_all("Sec-WebSocket-Protocol"):
            for proto in offered.split(","):
                if proto.strip().startswith("xai-client-secret.") and len(proto.strip()) > 18:
                    return None
        return _http_error(
            connection,
            http.HTTPStatus.UNAUTHORIZED,
            "Missing bearer authentication: send 'Authorization: Bearer <key>' or the "
            "'xai-client-secret.<token>' subprotocol",
        )

    @staticmethod
    def _select_subprotocol(
        connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        for proto in offered:
            if proto.startswith("xai-client-secret."):
                return proto
        return None

    # -- a connection

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        url = urllib.parse.urlsplit(request.path)
        query = urllib.parse.parse_qs(url.query)
        model = query["model"][0] if query.get("model") else None
        azure_version = ""
        if url.path.rstrip("/") == AZURE_PATH:  # the deployment names the model
            model = query["deployment"][0]
            azure_version = query["api-version"][0]
        dialect = detect_dialect(self.config, request.headers, model, azure_version)
        bridge: GeminiServerBridge | None = None
        if url.path.rstrip("/") == GEMINI_PATH:  # Gemini Live: its messages, bridged
            dialect, bridge = "gemini", GeminiServerBridge()
            if self.config.require_auth and not (
                request.headers.get("x-goog-api-key", "").strip() or query.get("key")
            ):
                await ws.close(1008, GEMINI_NO_KEY[:123])  # a close reason holds 123 bytes
                return
        session = EmulatorSession(self.config, dialect=dialect, model=model, counters=self._ids)
        conn = EmulatorConnection(
            index=len(self.connections),
            dialect=dialect,
            model=session.model,
            path=request.path,
            headers=request.headers,
            subprotocol=ws.subprotocol,
            session=session,
            bridge=bridge,
        )
        self.connections.append(conn)
        if bridge is not None:
            bridge.checkpoint = lambda: self._checkpoint(session)
        log.info("emulator.connect", connection=conn.index, dialect=dialect, model=session.model)
        session.open(self.clock.now())
        wake = asyncio.Event()
        wake.set()
        try:
            # the writer sends what falls due between client messages; leaving the block
            # cancels it and waits for it
            async with StageTasks[None]() as tasks:
                tasks.start(self._writer(ws, conn, wake), name=f"emulator writer {conn.index}")
                async for message in ws:
                    if bridge is None:
                        session.receive(message, self.clock.now())
                    else:
                        try:
                            bridged = bridge.incoming(message)
                        except ValueError as exc:  # Gemini closes on a message it refuses
                            await ws.close(1007, str(exc)[:120])
                            break
                        if bridge.resume_handle is not None and not self._resume(bridge, session):
                            await ws.close(1007, RESUME_REFUSED)
                            break
                        async with conn.lock:  # in order with what the writer sends
                            for reply in bridge.to_client:
                                await ws.send(orjson.dumps(reply).decode())
                            bridge.to_client.clear()
                        for m in bridged:
                            session.receive(m, self.clock.now())
                    # what is due now goes out before the next message is read, so a client
                    # that sends faster than real time still sees a pace-0 response complete
                    if not await self._flush(ws, conn):
                        break
                    wake.set()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._notify()
            log.info("emulator.disconnect", connection=conn.index, code=ws.close_code)

    def _checkpoint(self, session: EmulatorSession) -> str:
        """A new Gemini resumption handle for ``session``'s conversation as it stands."""
        n = self._ids.get("handle", 0) + 1
        self._ids["handle"] = n
        handle = f"resume-{n:04d}"
        self.handles[handle] = (session.snapshot(), self.clock.now())
        return handle

    def _resume(self, bridge: GeminiServerBridge, session: EmulatorSession) -> bool:
        """A setup asked to resume from a handle: restore its conversation, if the handle is
        known and not older than ``resumption_ttl_s``."""
        handle, bridge.resume_handle = bridge.resume_handle, None
        known = self.handles.get(handle or "")
        if known is None or self.clock.now() - known[1] > self.config.resumption_ttl_s:
            log.info("emulator.resume_refused", handle=handle)
            return False
        session.restore(known[0])
        log.info("emulator.resumed", handle=handle)
        return True

    async def _flush(self, ws: ServerConnection, conn: EmulatorConnection) -> bool:
        """Send the events due now, applying the fault injections; False once the socket was
        dropped on purpose."""
        cfg = self.config
        async with conn.lock:
            if conn.aborted:
                return False
            for event in conn.session.release(self.clock.now()):
                if (
                    cfg.malformed_after_events is not None
                    and len(conn.sent) == cfg.malformed_after_events
                ):
                    await ws.send('{"type": "response.output_audio.delta", "delta": ')
                    conn.sent.append({"type": "<malformed>"})
                if cfg.close_after_events is not None and len(conn.sent) >= cfg.close_after_events:
                    log.info("emulator.fault_close", connection=conn.index, after=len(conn.sent))
                    conn.aborted = True
                    if ws.transport is not None:
                        ws.transport.abort()
                    return False
                if conn.bridge is None:
                    await ws.send(orjson.dumps(event).decode())
                else:
                    for m in conn.bridge.outgoing(orjson.dumps(event).decode()):
                        await ws.send(m)
                conn.sent.append(event)
            if conn.session.expired:
                conn.aborted = True
                log.info("emulator.session_expired", connection=conn.index)
                await ws.close(1001, "session expired")
                return False
        self._notify()
        return True

    async def _writer(
        self, ws: ServerConnection, conn: EmulatorConnection, wake: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._write(ws, conn, wake)

    async def _write(
        self, ws: ServerConnection, conn: EmulatorConnection, wake: asyncio.Event
    ) -> None:
        while True:
            wake.clear()
            if not await self._flush(ws, conn):
                return
            deadline = conn.session.next_deadline()
            waiter = asyncio.ensure_future(wake.wait())
            if deadline is None:
                await waiter
                continue
            sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
            try:
                await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, sleeper):
                    task.cancel()


def _http_error(connection: ServerConnection, status: http.HTTPStatus, message: str) -> Response:
    error = {
        "type": "invalid_request_error",
        "code": status.phrase.lower().replace(" ", "_"),
        "message": message,
    }
    return _json_response(connection, {"error": error}, status)


def _json_response(
    connection: ServerConnection, doc: Json, status: http.HTTPStatus = http.HTTPStatus.OK
) -> Response:
    body = orjson.dumps(doc)
    response = connection.respond(status, "")
    response.body = body
    # Headers is a multi-dict: assignment would add a second value
    for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
        del response.headers[name]
        response.headers[name] = value
    return response


@contextlib.asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
    ssl: Any = None,
) -> AsyncIterator[Emulator]:
    """Serve the emulator on ``host:port`` (0: a free port) while the block runs; with ``ssl``
    (an ``ssl.SSLContext``) over TLS, for clients that only speak ``wss://`` (the Gemini SDK).

    Yields an :class:`Emulator`: connect a client to ``emu.url``
    (``ws://127.0.0.1:PORT/v1/realtime``), then assert on ``emu.connections``/``emu.received``,
    awaiting conditions with ``emu.wait_for``. ``clock`` paces responses (``think_ms``, ``pace``)
    and pings; default: the machine's clock.
    """
    emu = Emulator(config or EmulatorConfig(), clock or RealClock())
    server: Server
    async with serve(
        emu._handle,
        host,
        port,
        process_request=emu._process_request,
        select_subprotocol=emu._select_subprotocol,
        max_size=None,
        compression=None,
        logger=_WS_LOGGER,
        ssl=ssl,
    ) as server:
        sock = next(iter(server.sockets))
        emu.port = int(sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        emu.url = f"{'wss' if ssl else 'ws'}://{shown}:{emu.port}/v1/realtime"
        yield emu
        server.close()
