"""The HTTP side of ``pipeline serve``: what is answered before (or instead of) a call.

Every connection's opening request goes through :meth:`ServeFront.process_request`:

* ``GET /healthz``: 200 while the process is alive, its body says ``ok`` or ``draining``
  (a liveness probe: a drain is not a failure);
* ``GET /readyz``: 200 while a call would be taken, 503 while draining or at the call cap
  (a load balancer's health check, a readiness probe);
* ``GET /metrics``: Prometheus text (under ``--workers``, every worker's);
* any other path is a call's upgrade: checked against the Twilio signature and the token
  (see :mod:`stages.telephony.serve`), then against the drain and the call cap.

A refusal is counted (``pipeline_connections_refused_total{reason}``) and logged as one line
naming the reason; the token is never part of it.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from pipeline.loglimit import LimitedLog, LogLimit

from ..listen import http_response, token_of, token_refusal

if TYPE_CHECKING:
    from .serve import CallServer

__all__ = ["ServeFront"]

log = structlog.get_logger("pipeline.serve")

JSON = "application/json"


class ServeFront:
    """Answers the opening request of every connection to a :class:`CallServer`: the health,
    readiness and metrics endpoints, and the checks a call's upgrade must pass."""

    def __init__(self, server: CallServer) -> None:
        self.server = server
        #: connections let through without a token, whose token must come in 'start', oldest
        #: first
        self.awaiting_token: dict[int, ServerConnection] = {}
        self._settled = asyncio.Event()  # set (and replaced) when one leaves awaiting_token
        self._evictions: set[asyncio.Task[None]] = set()
        #: connections refused so far, for any reason (see wait_refused)
        self.refused = 0
        self._refusal = asyncio.Event()  # set (and replaced) on each refusal
        #: repeatable warnings (refusals, bad messages, dropped media): rate-limited
        self.warnings = LimitedLog(log, LogLimit(clock=server.clock))

    def token_settled(self, connection: object) -> None:
        """The connection showed its token in 'start', or is gone."""
        if self.awaiting_token.pop(id(connection), None) is not None:
            settled, self._settled = self._settled, asyncio.Event()
            settled.set()

    def _await_token(self, connection: ServerConnection) -> None:
        """Let ``connection`` through to show its token in 'start'. At the cap, the one that
        has waited longest is closed to make room: a real carrier sends 'start' within a
        moment, so sockets that hold on without it cannot lock the real callers out."""
        s = self.server
        if len(self.awaiting_token) >= s.max_unauthenticated:
            oldest = next(iter(self.awaiting_token.values()))
            self.token_settled(oldest)
            self._count_refusal("unauthenticated_evicted")
            task = asyncio.get_running_loop().create_task(
                oldest.close(1008, "no token shown in time")
            )
            self._evictions.add(task)
            task.add_done_callback(self._evictions.discard)
        self.awaiting_token[id(connection)] = connection

    async def wait_refused(self, n: int) -> None:
        """Wait until ``n`` connections in all have been refused (tests; bound it with
        ``asyncio.timeout``)."""
        while self.refused < n:
            await self._refusal.wait()

    def _count_refusal(self, reason: str) -> None:
        self.server.metrics.refused.labels(reason).inc()
        self.refused += 1
        refusal, self._refusal = self._refusal, asyncio.Event()
        refusal.set()

    async def wait_awaiting(self, n: int) -> None:
        """Wait until at most ``n`` connections are waiting to show their token (tests; bound
        it with ``asyncio.timeout``)."""
        while len(self.awaiting_token) > n:
            await self._settled.wait()

    # -- the endpoints

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason): whether a new call would be taken, by this server or, under
        ``--workers``, by some worker of the pool."""
        s = self.server
        if s.draining:
            return False, "draining"
        if s.worker is not None:
            ok = s.worker.pool_ready()
            return ok, "ok" if ok else "busy: every worker is at its call cap"
        if s.active >= s.max_calls:
            return False, f"busy: {s.active} calls running, the cap is {s.max_calls}"
        return True, "ok"

    def health(self) -> Response:
        s = self.server
        status = "draining" if s.draining else "ok"
        body = {"status": status, "active_calls": s.active, "max_calls": s.max_calls}
        return http_response(200, json.dumps(body) + "\n", JSON)

    def ready(self) -> Response:
        s = self.server
        ready, reason = self.readiness()
        info: dict[str, Any] = {"ready": ready, "reason": reason}
        info.update(active_calls=s.active, max_calls=s.max_calls)
        if s.worker is not None:
            pool = s.worker.pool()
            info["worker"] = s.worker.index
            info["pool_active_calls"] = sum(w.active for w in pool if w.alive)
            info["pool_max_calls"] = sum(w.max_calls for w in pool if w.alive)
        return http_response(200 if ready else 503, json.dumps(info) + "\n", JSON)

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        """websockets' ``process_request``: an answer, or None to go on with the upgrade."""
        s = self.server
        if s.worker is not None and urlsplit(request.path).path == "/metrics":
            s.fold_all()  # under --workers, /metrics gathers every worker's
            text = await s.worker.metrics(s.metrics.text())
            return http_response(200, text, CONTENT_TYPE_LATEST)
        return self.answer(connection, request)

    def answer(self, connection: ServerConnection, request: Request) -> Response | None:
        s = self.server
        url = urlsplit(request.path)
        if url.path == "/healthz":
            return self.health()
        if url.path == "/readyz":
            return self.ready()
        if url.path == "/metrics":
            s.fold_all()
            return http_response(200, s.metrics.text(), CONTENT_TYPE_LATEST)
        self.token_settled(connection)  # an id may be reused: start afresh
        if s.webhook is not None:
            refusal = s.webhook.upgrade_refusal(request.path, request.headers)
            if refusal:
                return self.refuse(
                    connection, refusal, 403, "invalid or missing X-Twilio-Signature\n", url.path
                )
        if s.token is not None:
            given = token_of(request.headers, url.query)
            if given is None and s.token_parameter:
                self._await_token(connection)  # Twilio: <Parameter name="token">
            elif given is None:
                text = "a token is required: ?token=... or Authorization: Bearer\n"
                return self.refuse(connection, "unauthenticated", 401, text, url.path)
            if given is not None and token_refusal(given, s.token):
                return self.refuse(connection, "bad_token", 403, "wrong token\n", url.path)
        if s.draining:
            text = "draining: not taking new calls\n"
            return self.refuse(connection, "draining", 503, text, url.path)
        if s.active >= s.max_calls:
            per = " per worker" if s.worker is not None else ""
            text = f"busy: {s.active} calls running, the cap is {s.max_calls}{per}\n"
            return self.refuse(connection, "busy", 503, text, url.path)
        return None

    # -- refusals

    def refuse(
        self, connection: ServerConnection, reason: str, status: int, text: str, path: str
    ) -> Response:
        """Count the refusal, log it (one line, rate-limited per reason), answer ``status``."""
        self._count_refusal(reason)
        self.warnings.warning(
            "connection refused",
            key=f"connection refused: {reason}",
            reason=reason,
            status=status,
            path=path,
            peer=_peer(connection),
        )
        return http_response(status, text)

    def handshake_failed(self, connection: ServerConnection, exc: BaseException) -> None:
        """The opening request could not be read (a bare TCP connect, a port scan, bad or
        non-HTTP/1.1 bytes): one line, rate-limited, no traceback, no query string."""
        self.token_settled(connection)
        cause = exc.__cause__ or exc
        reason = "no_request" if isinstance(cause, EOFError) else "bad_http"
        self._count_refusal(reason)
        self.warnings.warning(
            "connection refused",
            key=f"connection refused: {reason}",
            reason=reason,
            error=self.scrub(f"{type(cause).__name__}: {cause}"),
            peer=_peer(connection),
        )

    def scrub(self, text: str) -> str:
        """``text`` (a request line quoted in an error) without query strings or the token,
        cut to 200 characters."""
        text = _QUERY.sub("?<redacted>", text)
        if self.server.token:
            text = text.replace(self.server.token, "<redacted>")
        return text if len(text) <= 200 else text[:199] + "…"


_QUERY = re.compile(r"\?[^\s'\"]*")


def _peer(connection: ServerConnection) -> str:
    try:
        address = connection.remote_address
    except Exception:  # the transport is already gone
        return ""
    return str(address[0]) if address else ""
