"""The HTTP side of Telnyx, Plivo and Vonage numbers: their signed webhooks (Twilio's is
:mod:`stages.telephony.webhook`).

With ``pipeline serve --public-url https://HOST`` on a pipeline of one of these carriers, the
server answers on the same port:

* ``POST /events``: the carrier's call events (Telnyx Call Control webhooks, JSON ``{"data":
  {"event_type", "payload": {"call_control_id", ...}}}``; Plivo's callbacks, form-encoded with
  ``CallUUID`` and ``CallStatus`` or ``Event``; Vonage's event webhook, JSON with ``uuid`` and
  ``status``): 200/204, logged against the call's id as ``call event``.
* ``POST /plivo/transfer?to=TARGET``: the Plivo XML a transfer runs (``<Dial>`` to the number
  or SIP URI), fetched by Plivo when ``transfer_call`` asks it to move the call.

**Every request is authenticated before anything else happens**, with what the carrier signs
(:mod:`.auth`): Telnyx's Ed25519 ``telnyx-signature-ed25519`` over ``timestamp|body``
(``TELNYX_PUBLIC_KEY``), Plivo's ``X-Plivo-Signature-V3`` (HMAC-SHA256 with the nonce,
``PLIVO_AUTH_TOKEN``), Vonage's signed webhooks (``Authorization: Bearer`` JWT, HS256 with the
signature secret, ``VONAGE_SIGNATURE_SECRET``, and the body's ``payload_hash``). A request that
fails gets 403 and one log line (``request refused: ...``), and nothing else. Exotel signs no
webhook (its stream URL takes Basic auth or an IP allow-list instead).

Pure request -> response code, as :class:`~stages.telephony.webhook.TwilioWebhook`; the clock
is injectable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

import structlog

from pipeline.errors import UsageError

from ..http import HttpRequest, HttpResponse
from ..twiml import TARGET_RE, stream_url
from .auth import plivo_v3_valid, telnyx_valid, vonage_webhook_valid

__all__ = ["SECRET_ENV", "CarrierWebhook", "carrier_webhook"]

#: the variable holding what checks each carrier's signatures
SECRET_ENV = {
    "telnyx": "TELNYX_PUBLIC_KEY",
    "plivo": "PLIVO_AUTH_TOKEN",
    "vonage": "VONAGE_SIGNATURE_SECRET",
}
EVENTS_PATH = "/events"
PLIVO_TRANSFER_PATH = "/plivo/transfer"

log = structlog.get_logger("pipeline.telephony")


class CarrierWebhook:
    """Answers a carrier's HTTP requests for a server reached at ``public_url``, each checked
    with ``secret`` (see :data:`SECRET_ENV`). ``clock``: Unix seconds."""

    def __init__(
        self,
        carrier: str,
        public_url: str,
        secret: str,
        *,
        stream_path: str = "/media",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if carrier not in SECRET_ENV:
            raise UsageError(f"{carrier} signs no webhooks this server can check")
        parts = urlsplit(public_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.path not in ("", "/"):
            raise UsageError(
                f"public URL {public_url!r} must be like https://agent.example.com (the "
                "host the carrier reaches, no path)"
            )
        self.carrier = carrier
        self.public_url = public_url.rstrip("/")
        self._secret = secret
        self.stream_url = stream_url(self.public_url, stream_path)
        self.parameters: dict[str, str] = {}
        self.on_answered_by: Callable[[str, str], bool] | None = None
        self.clock = clock
        #: requests refused for their signature
        self.refused = 0

    def __repr__(self) -> str:
        return f"CarrierWebhook({self.carrier!r}, {self.public_url!r})"

    def upgrade_refusal(self, target: str, headers: Mapping[str, str]) -> str:
        """These carriers sign no WebSocket upgrade (use serve's token for the stream)."""
        return ""

    def refusal(self, request: HttpRequest) -> str:
        """'' when the carrier signed ``request``, else what is wrong."""
        match self.carrier:
            case "telnyx":
                return telnyx_valid(
                    self._secret,
                    request.header("telnyx-signature-ed25519"),
                    request.header("telnyx-timestamp"),
                    request.body,
                    now=self.clock(),
                )
            case "plivo":
                form = request.form() if _is_form(request) else []
                return plivo_v3_valid(
                    self._secret,
                    self.public_url + request.target,
                    request.header("x-plivo-signature-v3-nonce"),
                    request.header("x-plivo-signature-v3"),
                    request.method,
                    form,
                )
            case _:
                return vonage_webhook_valid(
                    self._secret, request.header("authorization"), request.body, now=self.clock()
                )

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one POST from the carrier."""
        if request.method != "POST":
            return HttpResponse.text(405, f"{request.method} is not answered here\n")
        why = self.refusal(request)
        if why:
            self.refused += 1
            log.warning(f"request refused: {why}", carrier=self.carrier, path=request.path)
            return HttpResponse.text(403, f"refused: {why}\n")
        if request.path == EVENTS_PATH:
            call_id, event = self._event(request)
            log.info("call event", carrier=self.carrier, call_id=call_id, kind=event)
            return HttpResponse(200 if self.carrier == "telnyx" else 204)
        if request.path == PLIVO_TRANSFER_PATH and self.carrier == "plivo":
            return self._plivo_dial(request)
        return HttpResponse.text(404, f"no such endpoint {request.path}: use {EVENTS_PATH}\n")

    def _event(self, request: HttpRequest) -> tuple[str, str]:
        if _is_form(request):
            fields = dict(request.form())
            return fields.get("CallUUID", ""), fields.get("Event") or fields.get("CallStatus", "")
        try:
            body: Any = json.loads(request.body or b"{}")
        except ValueError:
            return "", "unreadable"
        if not isinstance(body, dict):
            return "", "unreadable"
        data = body.get("data")
        if isinstance(data, dict):  # Telnyx
            payload = data.get("payload")
            payload = payload if isinstance(payload, dict) else {}
            return str(payload.get("call_control_id", "")), str(data.get("event_type", ""))
        return str(body.get("uuid", "")), str(body.get("status", ""))

    def _plivo_dial(self, request: HttpRequest) -> HttpResponse:
        target = dict(parse_qsl(urlsplit(request.target).query)).get("to", "")
        if not TARGET_RE.match(target):
            return HttpResponse.text(400, f"to={target!r} is not an E.164 number or SIP URI\n")
        if target.startswith("+"):
            inner = f"<Number>{escape(target[1:])}</Number>"
        else:
            inner = f"<User>{escape(target)}</User>"
        xml = f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{inner}</Dial></Response>'
        log.info("transfer dialled", carrier="plivo", call_id=dict(request.form()).get("CallUUID"))
        return HttpResponse(200, xml.encode(), "text/xml")


def _is_form(request: HttpRequest) -> bool:
    ctype = (request.header("content-type") or "").split(";")[0].strip()
    return ctype == "application/x-www-form-urlencoded"


def carrier_webhook(
    carrier: str, public_url: str | None, environ: Mapping[str, str]
) -> CarrierWebhook | None:
    """The webhook of ``pipeline serve --public-url`` for ``carrier`` (None without the
    option, or for Exotel, which signs nothing). UsageError when the secret that checks the
    carrier's signatures is not in the environment."""
    if not public_url or carrier not in SECRET_ENV:
        return None
    env = SECRET_ENV[carrier]
    secret = environ.get(env)
    if not secret:
        raise UsageError(
            f"--public-url on a {carrier} pipeline checks every request {carrier} makes: "
            f"export {env}"
        )
    return CarrierWebhook(carrier, public_url, secret)
