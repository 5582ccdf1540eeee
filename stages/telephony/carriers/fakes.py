"""Strict fakes of the call-control APIs of Telnyx, Plivo and Vonage, for tests and local runs
(serve them on loopback with :func:`~stages.telephony.http.serve_http`).

Written from each provider's documentation of the endpoints :mod:`.rest` uses, strict where the
provider is lenient (an unknown field is refused, where a provider might ignore it: a test must
fail on it): the authentication (Bearer API key; Basic auth ID and token, the auth ID in the
path; an RS256 application JWT checked with the application's public key, its claims and its
lifetime), the method, the path, the content type, the fields and their values, and each
provider's error shape (Telnyx ``{"errors": [{"code", "title", "detail"}]}``, Plivo ``{"api_id",
"error"}``, Vonage RFC 7807 ``{"type", "title", "detail", "instance"}``). Each records what it
was asked (:attr:`requests`: method, path, status, body) and keeps the calls it knows: ``live``
ones can be acted on; a hang-up or a transfer ends them.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..http import HttpRequest, HttpResponse

__all__ = ["FakePlivo", "FakeTelnyx", "FakeVonage", "Recorded"]

_TELNYX_DIGITS = re.compile(r"^[0-9A-D*#wW]{1,128}$")
_PLIVO_DIGITS = re.compile(r"^[0-9*#wW]{1,64}$")
_VONAGE_DIGITS = re.compile(r"^[0-9*#p]{1,64}$")
_TARGET = re.compile(r"^(\+[1-9][0-9]{6,14}|sips?:\S{3,200})$")


#: (HTTP status, JSON body or None, the request body as read)
Answer = tuple[int, dict[str, Any] | None, Any]


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    status: int
    body: Any = None


def _body(request: HttpRequest) -> tuple[Any, str]:
    """The JSON body, or why it is not one."""
    if (request.header("content-type") or "").split(";")[0].strip() != "application/json":
        return None, f"Content-Type {request.header('content-type')!r}, not application/json"
    try:
        return json.loads(request.body or b"null"), ""
    except ValueError:
        return None, "malformed JSON"


def _fields(body: Any, required: set[str], optional: set[str]) -> str:
    if not isinstance(body, dict):
        return f"the body must be a JSON object, got {type(body).__name__}"
    missing = required - set(body)
    unknown = set(body) - required - optional
    if missing:
        return f"missing {', '.join(sorted(missing))}"
    if unknown:
        return f"unexpected {', '.join(sorted(unknown))}"
    return ""


@dataclass
class FakeTelnyx:
    """Telnyx Call Control's hangup, transfer and send_dtmf actions."""

    api_key: str
    live: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)

    def handle(self, request: HttpRequest) -> HttpResponse:
        status, out, body = self._handle(request)
        self.requests.append(Recorded(request.method, request.path, status, body))
        return HttpResponse(status, json.dumps(out).encode(), "application/json")

    def _handle(self, request: HttpRequest) -> Answer:
        def err(status: int, code: str, title: str, body: Any = None) -> Answer:
            return status, {"errors": [{"code": code, "title": title, "detail": title}]}, body

        auth = request.header("authorization") or ""
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.api_key}".encode()):
            return err(401, "10009", "Authentication failed")
        m = re.fullmatch(r"/v2/calls/([^/]+)/actions/(hangup|transfer|send_dtmf)", request.path)
        if m is None or request.method != "POST":
            return err(404, "10005", "Resource not found")
        body, why = _body(request)
        if why:
            return err(422, "10015", why)
        call, action = m.group(1), m.group(2)
        common = {"client_state", "command_id"}
        if action == "hangup":
            why = _fields(body, set(), common)
        elif action == "transfer":
            why = _fields(body, {"to"}, common | {"from", "from_display_name", "timeout_secs"})
            if not why and not _TARGET.match(str(body["to"])):
                why = f"to {body['to']!r} is not an E.164 number or a SIP URI"
        else:
            why = _fields(body, {"digits"}, common | {"duration_millis"})
            if not why and not _TELNYX_DIGITS.match(str(body["digits"])):
                why = f"digits {body['digits']!r}: valid are 0-9, A-D, *, #, w and W"
            ms = body.get("duration_millis", 250) if isinstance(body, dict) else 0
            if not why and not (isinstance(ms, int) and 100 <= ms <= 500):
                why = f"duration_millis {ms!r}: 100 to 500"
        if why:
            return err(422, "10015", f"Invalid parameters: {why}", body)
        if call in self.ended:
            return err(422, "90018", "Call has already ended", body)
        if call not in self.live:
            return err(404, "90015", "Call not found", body)
        if action in ("hangup", "transfer"):
            self.live.discard(call)
            self.ended.add(call)
        return 200, {"data": {"result": "ok"}}, body


@dataclass
class FakePlivo:
    """Plivo's hangup (DELETE), transfer (POST on the call) and send digits (POST .../DTMF/)."""

    auth_id: str
    auth_token: str
    live: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)

    def handle(self, request: HttpRequest) -> HttpResponse:
        status, out, body = self._handle(request)
        self.requests.append(Recorded(request.method, request.path, status, body))
        payload = json.dumps(out).encode() if out is not None else b""
        return HttpResponse(status, payload, "application/json")

    def _handle(self, request: HttpRequest) -> Answer:
        api_id = str(uuid.uuid4())

        def err(status: int, text: str, body: Any = None) -> Answer:
            return status, {"api_id": api_id, "error": text}, body

        auth = request.header("authorization") or ""
        want = "Basic " + base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(auth.encode(), want.encode()):
            return err(401, "Authentication failed")
        m = re.fullmatch(r"/v1/Account/([^/]+)/Call/([^/]+)/(DTMF/)?", request.path)
        if m is None or m.group(1) != self.auth_id:
            return err(404, "not found")
        call, dtmf = m.group(2), bool(m.group(3))
        if request.method == "DELETE" and not dtmf:
            if call not in self.live:
                return err(404, "not found")
            self.live.discard(call)
            return 204, None, None
        if request.method != "POST":
            return err(405, f"{request.method} not allowed")
        body, why = _body(request)
        if not why and dtmf:
            why = _fields(body, {"digits"}, {"leg"})
            if not why and not _PLIVO_DIGITS.match(str(body["digits"])):
                why = f"invalid digits {body['digits']!r}"
            if not why and body.get("leg", "aleg") not in ("aleg", "bleg"):
                why = f"leg must be aleg or bleg, got {body['leg']!r}"
        elif not why:
            why = _fields(body, {"legs"}, {"aleg_url", "aleg_method", "bleg_url", "bleg_method"})
            if (
                not why
                and body["legs"] == "aleg"
                and not str(body.get("aleg_url", "")).startswith(("http://", "https://"))
            ):
                why = "aleg_url (http or https) is required when legs is aleg"
            if not why and body.get("aleg_method", "POST") not in ("GET", "POST"):
                why = f"aleg_method must be GET or POST, got {body['aleg_method']!r}"
        if why:
            return err(400, why, body)
        if call not in self.live:
            return err(404, "not found", body)
        if dtmf:
            return 202, {"api_id": api_id, "message": "digits sent"}, body
        self.live.discard(call)
        return 202, {"api_id": api_id, "message": "call transferred"}, body


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeVonage:
    """The Vonage Voice API's call update (hangup, transfer) and DTMF, each request carrying
    a JWT signed RS256 by the application's private key (checked with its public half: the
    signature, ``application_id``, ``iat`` not in the future, ``exp`` not past, a ``jti``)."""

    application_id: str
    public_key: RSAPublicKey
    live: set[str] = field(default_factory=set)
    requests: list[Recorded] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def handle(self, request: HttpRequest) -> HttpResponse:
        status, out, body = self._handle(request)
        self.requests.append(Recorded(request.method, request.path, status, body))
        payload = json.dumps(out).encode() if out is not None else b""
        return HttpResponse(status, payload, "application/json")

    def _problem(self, status: int, title: str, detail: str, body: Any = None) -> Answer:
        slug = title.lower().replace(" ", "-")
        problem = {
            "type": f"https://developer.nexmo.com/api-errors#{slug}",
            "title": title,
            "detail": detail,
            "instance": str(uuid.uuid4()),
        }
        return status, problem, body

    def _auth(self, header: str) -> str:
        if not header.startswith("Bearer "):
            return "You did not provide correct credentials."
        parts = header[7:].split(".")
        if len(parts) != 3:
            return "Invalid Token"
        try:
            head, claims = json.loads(_unb64url(parts[0])), json.loads(_unb64url(parts[1]))
            sig = _unb64url(parts[2])
        except ValueError:
            return "Invalid Token"
        if head.get("alg") != "RS256":
            return "Invalid Token"
        try:
            self.public_key.verify(
                sig, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return "Invalid Token"
        now = self.clock()
        if claims.get("application_id") != self.application_id or not claims.get("jti"):
            return "Invalid Token"
        if not isinstance(claims.get("iat"), int) or claims["iat"] > now + 60:
            return "Invalid Token"
        if isinstance(claims.get("exp"), int) and claims["exp"] < now:
            return "Expired Token"
        return ""

    def _handle(self, request: HttpRequest) -> Answer:
        why = self._auth(request.header("authorization") or "")
        if why:
            return self._problem(401, "Unauthorized", why)
        m = re.fullmatch(r"/v1/calls/([^/]+)(/dtmf)?", request.path)
        if m is None:
            return self._problem(404, "Not Found", f"no such resource {request.path}")
        if request.method != "PUT":
            return self._problem(405, "Method Not Allowed", f"{request.method} is not allowed")
        body, why = _body(request)
        call, dtmf = m.group(1), bool(m.group(2))
        if not why and dtmf:
            why = _fields(body, {"digits"}, set())
            if not why and not _VONAGE_DIGITS.match(str(body["digits"])):
                why = f"digits {body['digits']!r}: 0-9, *, # and p (a pause)"
        elif not why:
            why = self._update_problem(body)
        if why:
            return self._problem(400, "Bad Request", why, body)
        if call not in self.live:
            return self._problem(404, "Not Found", f"Call {call} doesn't exist", body)
        if dtmf:
            return 200, {"message": "DTMF sent", "uuid": call}, body
        self.live.discard(call)
        return 204, None, body

    def _update_problem(self, body: Any) -> str:
        if not isinstance(body, dict) or "action" not in body:
            return "missing action"
        action = body["action"]
        if action == "hangup":
            return _fields(body, {"action"}, set())
        if action != "transfer":
            return f"action {action!r} is not one of hangup, mute, unmute, earmuff, transfer"
        why = _fields(body, {"action", "destination"}, set())
        dest = body.get("destination")
        if not why and (not isinstance(dest, dict) or dest.get("type") != "ncco"):
            why = "destination.type must be ncco"
        ncco = dest.get("ncco") if isinstance(dest, dict) else None
        actions_ok = isinstance(ncco, list) and ncco and all(isinstance(a, dict) for a in ncco)
        if not why and not actions_ok:
            why = "destination.ncco must be a non-empty list of actions"
        if why or ncco is None:
            return why
        for action_ in ncco:
            if action_.get("action") != "connect":
                continue
            for ep in action_.get("endpoint") or [None]:
                if not isinstance(ep, dict):
                    return "connect.endpoint must be a list of endpoints"
                if ep.get("type") == "phone" and not re.fullmatch(
                    r"[1-9][0-9]{6,14}", str(ep.get("number"))
                ):
                    return f"phone number {ep.get('number')!r}: digits only, no +"
                if ep.get("type") == "sip" and not str(ep.get("uri", "")).startswith("sip"):
                    return f"sip uri {ep.get('uri')!r}"
                if ep.get("type") not in ("phone", "sip", "websocket", "app", "vbc"):
                    return f"endpoint type {ep.get('type')!r}"
        return ""
