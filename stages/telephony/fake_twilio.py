"""A strict fake of Twilio's Calls REST API on loopback, for tests and local runs.

Written from Twilio's documentation of the Call resource (``/2010-04-01/Accounts/{AccountSid}/
Calls.json`` to create, ``.../Calls/{CallSid}.json`` to fetch and update): HTTP Basic auth with
the account SID and auth token (else 401, error 20003), form-encoded bodies, the documented
fields only (a misspelt field is refused with 400, where Twilio would silently ignore it: a
test should fail on it), ``To``/``From``/``Url``-or-``Twiml`` required on create (21201, 21213,
21205), TwiML that must parse with a ``<Response>`` root (12100), an unknown call SID (404,
20404), and an update of a call that is no longer in progress (400, 21220). Errors come back as
Twilio's JSON: ``{"code", "message", "more_info", "status"}``.

Every request is recorded (:attr:`FakeTwilio.requests`, with the clock's time); ``on_update``
lets a test act when a call is hung up or redirected (end the media stream, as Twilio does).
"""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.clock import Clock, RealClock

from .http import HttpRequest, HttpResponse, serve_http

__all__ = ["FakeCall", "FakeTwilio", "Recorded", "run_fake_twilio"]

_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls(?:/(CA[0-9a-f]{32}))?\.json$")
_UPDATE_FIELDS = frozenset(
    {"Url", "Method", "Status", "FallbackUrl", "FallbackMethod", "StatusCallback",
     "StatusCallbackMethod", "Twiml", "TimeLimit"}
)  # fmt: skip
_CREATE_FIELDS = frozenset(
    {"To", "From", "Url", "Twiml", "ApplicationSid", "Method", "FallbackUrl", "FallbackMethod",
     "StatusCallback", "StatusCallbackEvent", "StatusCallbackMethod", "SendDigits", "Timeout",
     "Record", "MachineDetection", "MachineDetectionTimeout", "AsyncAmd",
     "AsyncAmdStatusCallback", "AsyncAmdStatusCallbackMethod", "CallerId", "TimeLimit"}
)  # fmt: skip
_SINGLE = frozenset(_CREATE_FIELDS | _UPDATE_FIELDS) - {"StatusCallbackEvent"}
_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
_ENDPOINT = re.compile(r"^(\+[1-9][0-9]{6,14}|sips?:\S+|client:\S+)$")


@dataclass
class FakeCall:
    """A call the fake knows: its status and what it was told to do."""

    sid: str
    status: str = "in-progress"
    to: str = ""
    from_: str = ""
    answered_by: str | None = None
    twiml: list[str] = field(default_factory=list)
    form: dict[str, Any] = field(default_factory=dict)

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": "outbound-api" if self.form else "inbound",
            "answered_by": self.answered_by,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake answered: when (clock time), what, and the HTTP status."""

    at: float
    method: str
    path: str
    form: tuple[tuple[str, str], ...]
    status: int
    call_sid: str = ""


class _Refused(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        self.status, self.code, self.message = status, code, message


class FakeTwilio:
    """The fake's state and its request handler (serve it with :func:`run_fake_twilio`)."""

    def __init__(self, account_sid: str, auth_token: str, *, clock: Clock | None = None) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.clock = clock or RealClock()
        self.calls: dict[str, FakeCall] = {}
        self.requests: list[Recorded] = []
        #: called with (call, form) after each accepted update
        self.on_update: Callable[[FakeCall, dict[str, Any]], None] | None = None
        #: called with the new call after each accepted create
        self.on_create: Callable[[FakeCall], None] | None = None
        self._sids = (f"CA{n:032x}" for n in itertools.count(0xF000))
        self.url = ""

    def add_call(self, sid: str, status: str = "in-progress") -> FakeCall:
        """Make a call known (an inbound call that is up)."""
        call = self.calls[sid] = FakeCall(sid, status)
        return call

    def handle(self, request: HttpRequest) -> HttpResponse:
        form = tuple(request.form()) if request.method == "POST" else ()
        sid = ""
        try:
            status, body, sid = self._handle(request, form)
        except _Refused as exc:
            status = exc.status
            body = {
                "code": exc.code,
                "message": exc.message,
                "more_info": f"https://www.twilio.com/docs/errors/{exc.code}",
                "status": exc.status,
            }
        self.requests.append(
            Recorded(self.clock.now(), request.method, request.path, form, status, sid)
        )
        headers: tuple[tuple[str, str], ...] = ()
        if status == 401:
            headers = (("WWW-Authenticate", 'Basic realm="Twilio API"'),)
        return HttpResponse(status, json.dumps(body).encode(), "application/json", headers)

    def _auth(self, request: HttpRequest) -> None:
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, password = "", ""
        ok = scheme.lower() == "basic" and hmac.compare_digest(
            f"{user}:{password}".encode(), f"{self.account_sid}:{self.auth_token}".encode()
        )
        if not ok:
            raise _Refused(401, 20003, "Authenticate")

    def _handle(
        self, request: HttpRequest, form: tuple[tuple[str, str], ...]
    ) -> tuple[int, dict[str, Any], str]:
        self._auth(request)
        m = _PATH.match(request.path)
        if m is None or m.group(1) != self.account_sid:
            raise _Refused(404, 20404, f"The requested resource {request.path} was not found")
        call_sid = m.group(2) or ""
        if request.method == "GET" and call_sid:
            return 200, self._call(call_sid, request.path).resource(self.account_sid), call_sid
        if request.method != "POST":
            raise _Refused(405, 20004, f"Method {request.method} not allowed")
        ctype = (request.header("content-type") or "").split(";")[0].strip()
        if ctype != "application/x-www-form-urlencoded":
            raise _Refused(
                400, 20001, f"body must be application/x-www-form-urlencoded, got {ctype!r}"
            )
        values = self._fields(form, _UPDATE_FIELDS if call_sid else _CREATE_FIELDS)
        if call_sid:
            call = self._update(self._call(call_sid, request.path), values)
            return 200, call.resource(self.account_sid), call_sid
        call = self._create(values)
        return 201, call.resource(self.account_sid), call.sid

    def _call(self, sid: str, path: str) -> FakeCall:
        call = self.calls.get(sid)
        if call is None:
            raise _Refused(404, 20404, f"The requested resource {path} was not found")
        return call

    @staticmethod
    def _fields(form: tuple[tuple[str, str], ...], allowed: frozenset[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, value in form:
            if name not in allowed:
                raise _Refused(400, 20001, f"Unknown parameter {name!r}")
            if name in _SINGLE:
                if name in values:
                    raise _Refused(400, 20001, f"Parameter {name!r} given twice")
                values[name] = value
            else:
                values.setdefault(name, []).append(value)
        return values

    @staticmethod
    def _twiml(text: str) -> None:
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise _Refused(400, 12100, f"Document parse failure: {exc}") from None
        if root.tag != "Response":
            raise _Refused(400, 12100, f"Document parse failure: root is <{root.tag}>")

    def _update(self, call: FakeCall, values: dict[str, Any]) -> FakeCall:
        if not values:
            raise _Refused(400, 20001, "No parameters to update")
        status = values.get("Status")
        if status is not None and status not in ("completed", "canceled"):
            raise _Refused(400, 20001, f"Status must be completed or canceled, got {status!r}")
        if "Twiml" in values and "Url" in values:
            raise _Refused(400, 20001, "Twiml and Url are mutually exclusive")
        if "Twiml" in values:
            self._twiml(values["Twiml"])
        if call.status not in ("queued", "ringing", "in-progress"):
            raise _Refused(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status is not None:
            call.status = "completed" if call.status == "in-progress" else "canceled"
        elif "Twiml" in values:
            call.twiml.append(values["Twiml"])
        if self.on_update is not None:
            self.on_update(call, values)
        return call

    def _create(self, values: dict[str, Any]) -> FakeCall:
        to, from_ = values.get("To"), values.get("From")
        if not to:
            raise _Refused(400, 21201, "No 'To' number is specified")
        if not from_:
            raise _Refused(400, 21213, "No 'From' number is specified")
        for name, v in (("To", to), ("From", from_)):
            if not _ENDPOINT.match(v):
                raise _Refused(400, 21211 if name == "To" else 21212, f"Invalid '{name}': {v}")
        if not any(k in values for k in ("Url", "Twiml", "ApplicationSid")):
            raise _Refused(400, 21205, "Url parameter is required")
        if "Twiml" in values:
            self._twiml(values["Twiml"])
        amd = values.get("MachineDetection")
        if amd is not None and amd not in ("Enable", "DetectMessageEnd"):
            raise _Refused(
                400, 20001, f"MachineDetection must be Enable or DetectMessageEnd, got {amd!r}"
            )
        if values.get("AsyncAmd", "false") not in ("true", "false"):
            raise _Refused(400, 20001, "AsyncAmd must be true or false")
        for event in values.get("StatusCallbackEvent", []):
            if event not in _EVENTS:
                raise _Refused(400, 20001, f"Invalid StatusCallbackEvent {event!r}")
        call = FakeCall(next(self._sids), "queued", to, from_, form=values)
        if "Twiml" in values:
            call.twiml.append(values["Twiml"])
        self.calls[call.sid] = call
        if self.on_create is not None:
            self.on_create(call)
        return call


@asynccontextmanager
async def run_fake_twilio(fake: FakeTwilio, host: str = "127.0.0.1") -> AsyncIterator[FakeTwilio]:
    """Serve ``fake`` on loopback while the block runs; ``fake.url`` is its base URL (give it
    to :class:`~stages.telephony.rest.TwilioRest` as ``base_url``)."""
    async with serve_http(fake.handle, host, 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        fake.url = f"http://{host}:{port}"
        yield fake
