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

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

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
        #: connections let through without a token, whose token must come in 'start'
        self.awaiting_token: set[int] = set()

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
        self.awaiting_token.discard(id(connection))  # an id may be reused: start afresh
        if s.webhook is not None:
            refusal = s.webhook.upgrade_refusal(request.path, request.headers)
            if refusal:
                s.metrics.refused.labels(refusal).inc()
                log.warning(
                    "connection refused: "
                    + (
                        "no X-Twilio-Signature"
                        if refusal == "unsigned"
                        else "bad X-Twilio-Signature"
                    ),
                    path=url.path,
                )
                return http_response(403, "invalid or missing X-Twilio-Signature\n")
        if s.token is not None:
            given = token_of(request.headers, url.query)
            if given is None and s.token_parameter:
                self.awaiting_token.add(id(connection))  # Twilio: <Parameter name="token">
            elif given is None:
                s.metrics.refused.labels("unauthenticated").inc()
                return http_response(
                    401, "a token is required: ?token=... or Authorization: Bearer\n"
                )
            if given is not None and token_refusal(given, s.token):
                s.metrics.refused.labels("bad_token").inc()
                return http_response(403, "wrong token\n")
        if s.draining:
            s.metrics.refused.labels("draining").inc()
            return http_response(503, "draining: not taking new calls\n")
        if s.active >= s.max_calls:
            s.metrics.refused.labels("busy").inc()
            per = " per worker" if s.worker is not None else ""
            return http_response(
                503, f"busy: {s.active} calls running, the cap is {s.max_calls}{per}\n"
            )
        return None
