"""The HTTP side of a Twilio number: the Voice webhook, status callbacks, and their signatures.

Theory of operation
-------------------
A Twilio number's *Voice URL* is ``https://PUBLIC/twiml``: when a call comes in (or an outbound
call placed by ``pipeline call`` is answered), Twilio POSTs the call's details there and runs
the TwiML it gets back. :class:`TwilioWebhook` answers with ``<Connect><Stream url="wss://PUBLIC/
media">`` and a ``<Parameter>`` per call fact (``from``, ``to``, ``direction``, ``answered_by``
when answering-machine detection ran before the answer) and per static parameter, which come
back in the stream's ``start.customParameters``. Status callbacks (``POST /status``) and the
asynchronous answering-machine verdict (``POST /amd``) are logged against the ``CallSid``; a
verdict for a call that is streaming is handed to that call (``on_answered_by``), whose
``twilio_source`` emits it as an event.

Every request must carry a valid ``X-Twilio-Signature`` for ``PUBLIC`` + the request target and
its form parameters (:mod:`stages.telephony.signature`): a missing or wrong one gets 403 and one
log line, and nothing else happens. :meth:`TwilioWebhook.upgrade_refusal` applies the same check
to the media stream's WebSocket upgrade (a GET: the URL alone is signed).

Pure request -> response code: the server (:mod:`pipeline.serve`) feeds it the POSTs it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

from pipeline.errors import UsageError

from . import signature
from .http import HttpRequest, HttpResponse
from .rest import ACCOUNT_ENV, API_BASE, TwilioRest
from .twiml import connect_stream, stream_url

__all__ = [
    "AMD_PATH",
    "STATUS_PATH",
    "TWIML_PATH",
    "TwilioWebhook",
    "Webhook",
    "parse_parameters",
    "twilio_setup",
]

TWIML_PATH = "/twiml"
STATUS_PATH = "/status"
AMD_PATH = "/amd"
#: Webhook form fields passed on to the stream as <Parameter>s (field -> parameter name).
CALL_FACTS = {"From": "from", "To": "to", "Direction": "direction", "AnsweredBy": "answered_by"}

log = structlog.get_logger("pipeline.telephony")


class Webhook(Protocol):
    """What ``pipeline serve`` asks of a carrier's webhook (:class:`TwilioWebhook`,
    :class:`~.carriers.webhooks.CarrierWebhook`): answer its POSTs, check its upgrades."""

    stream_url: str
    parameters: dict[str, str]
    on_answered_by: Callable[[str, str], bool] | None

    def handle(self, request: HttpRequest) -> HttpResponse: ...

    def upgrade_refusal(self, target: str, headers: Mapping[str, str]) -> str: ...


class TwilioWebhook:
    """Answers Twilio's HTTP requests for a server reached at ``public_url``.

    ``auth_token`` signs every request (None: signatures are not checked, for a local test
    only; the server refuses to start that way unless told to). ``parameters`` go into every
    stream's ``<Parameter>``s (``token`` among them for ``--token-parameter``).
    """

    def __init__(
        self,
        public_url: str,
        auth_token: str | None,
        *,
        stream_path: str = "/media",
        parameters: Mapping[str, str] | None = None,
        on_answered_by: Callable[[str, str], bool] | None = None,
    ) -> None:
        parts = urlsplit(public_url)
        if parts.scheme not in ("https", "http") or not parts.netloc or parts.path not in ("", "/"):
            raise UsageError(
                f"public URL {public_url!r} must be like https://agent.example.com (the "
                "host Twilio reaches, no path)"
            )
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.stream_url = stream_url(self.public_url, stream_path)
        self.parameters = dict(parameters or {})
        self.on_answered_by = on_answered_by
        #: requests refused for their signature
        self.refused = 0

    # -- signatures

    def signed(self, request: HttpRequest, params: list[tuple[str, str]]) -> bool:
        if self.auth_token is None:
            return True
        url = self.public_url + request.target
        return signature.valid(self.auth_token, url, params, request.header(signature.HEADER))

    def _refuse(self, request: HttpRequest, form: list[tuple[str, str]]) -> HttpResponse:
        self.refused += 1
        missing = request.header(signature.HEADER) is None
        why = "no X-Twilio-Signature" if missing else "bad X-Twilio-Signature"
        log.warning(
            "request refused: " + why,
            method=request.method,
            path=request.path,
            call_sid=dict(form).get("CallSid", ""),
        )
        return HttpResponse.text(403, "invalid or missing X-Twilio-Signature\n")

    def upgrade_refusal(self, target: str, headers: Mapping[str, str]) -> str:
        """'' when the WebSocket upgrade to ``target`` carries a valid signature, else the
        reason (``unsigned`` or ``bad_signature``); the server then answers 403."""
        if self.auth_token is None:
            return ""
        given = headers.get(signature.HEADER)
        if given is None:
            return "unsigned"
        scheme = "wss" if self.stream_url.startswith("wss") else "ws"
        url = f"{scheme}://{urlsplit(self.public_url).netloc}{target}"
        return "" if signature.valid(self.auth_token, url, None, given) else "bad_signature"

    # -- requests

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one POST from Twilio."""
        if request.method != "POST":
            return HttpResponse.text(405, f"{request.method} is not answered here; Twilio POSTs\n")
        form = request.form()
        if not self.signed(request, form):
            return self._refuse(request, form)
        fields = dict(form)
        call_sid = fields.get("CallSid", "")
        match request.path:
            case "/twiml":
                return self._answer(call_sid, fields)
            case "/status":
                log.info(
                    "call status",
                    call_sid=call_sid,
                    status=fields.get("CallStatus", ""),
                    **_optional(fields, ("AnsweredBy", "CallDuration", "SipResponseCode")),
                )
                return HttpResponse(204)
            case "/amd":
                answered_by = fields.get("AnsweredBy", "unknown")
                delivered = False
                if self.on_answered_by is not None:
                    delivered = self.on_answered_by(call_sid, answered_by)
                log.info(
                    "answering machine detection",
                    call_sid=call_sid,
                    answered_by=answered_by,
                    delivered=delivered,
                    **_optional(fields, ("MachineDetectionDuration",)),
                )
                return HttpResponse(204)
        return HttpResponse.text(404, f"no such endpoint {request.path}: use /twiml or /status\n")

    def _answer(self, call_sid: str, fields: Mapping[str, str]) -> HttpResponse:
        params = dict(self.parameters)
        for field, name in CALL_FACTS.items():
            if fields.get(field):
                params[name] = fields[field]
        log.info(
            "call answered",
            call_sid=call_sid,
            direction=fields.get("Direction", ""),
            stream=self.stream_url,
        )
        return HttpResponse(200, connect_stream(self.stream_url, params).encode(), "text/xml")


def _optional(fields: Mapping[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: fields[name] for name in names if name in fields}


def twilio_setup(
    public_url: str | None,
    *,
    auth_token_env: str,
    parameters: Mapping[str, str],
    environ: Mapping[str, str],
) -> tuple[TwilioWebhook | None, TwilioRest | None]:
    """The webhook (with ``--public-url``) and the REST client (when the account SID and the
    auth token are in the environment) of ``pipeline serve``. Raises ValueError, whose text is
    the one line to show, for options that do not fit together."""
    token = environ.get(auth_token_env) or None
    sid = environ.get(ACCOUNT_ENV) or None
    webhook = None
    if public_url:
        if token is None:
            raise UsageError(
                f"--public-url needs the Twilio auth token to check X-Twilio-Signature: export "
                f"{auth_token_env} (or name another variable with --twilio-auth-token-env)"
            )
        webhook = TwilioWebhook(public_url, token, parameters=parameters)
    rest = None
    if sid and token:
        rest = TwilioRest(sid, token, base_url=environ.get("TWILIO_API_BASE", API_BASE))
    return webhook, rest


def parse_parameters(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` options as a mapping; ValueError for one without ``=``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--stream-parameter {item!r} is not NAME=VALUE")
        out[name] = value
    return out
