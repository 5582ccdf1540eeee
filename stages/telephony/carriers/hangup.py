"""Ending a call on Telnyx and Plivo through their REST APIs (Twilio's is
:class:`~stages.telephony.rest.TwilioRest`), and strict fakes of those endpoints for tests.

* Telnyx Call Control: ``POST /v2/calls/{call_control_id}/actions/hangup`` with a JSON body
  (``{}`` or ``client_state``/``command_id``) and ``Authorization: Bearer <API key>``;
  ``200 {"data": {"result": "ok"}}``. Errors are ``{"errors": [{"code", "title", "detail"}]}``;
  a call that has already ended answers 422 with code ``90018`` ("Call has already ended").
* Plivo: ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`` with HTTP Basic auth (auth ID and
  token); ``204`` when the call was hung up, ``404`` when there is no such live call (ended
  already, or never existed).

Each client has ``hang_up(call_id) -> bool`` (True: this request ended it; False: it had
already ended), as the Twilio client does, so ``end_call`` works the same on every carrier.
Credentials come from the environment: ``TELNYX_API_KEY``; ``PLIVO_AUTH_ID`` and
``PLIVO_AUTH_TOKEN``. Never logged.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..http import HttpRequest, HttpResponse
from ..rest import TwilioRestError

__all__ = [
    "FakePlivo",
    "FakeTelnyx",
    "PlivoRest",
    "TelnyxRest",
    "rest_for",
]

TELNYX_API = "https://api.telnyx.com"
PLIVO_API = "https://api.plivo.com"
ALREADY_ENDED = "90018"

#: REST errors on every carrier are reported the same way (HTTP status, the carrier's code)
CarrierRestError = TwilioRestError


class TelnyxRest:
    """Telnyx Call Control: hang up a call by its ``call_control_id``."""

    def __init__(self, api_key: str, *, base_url: str = TELNYX_API, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"TelnyxRest(base_url={self.base_url!r})"

    async def hang_up(self, call_id: str) -> bool:
        url = f"{self.base_url}/v2/calls/{call_id}/actions/hangup"
        try:
            r = await self._client.post(url, json={})
        except httpx.HTTPError as exc:
            raise CarrierRestError(0, 0, f"no answer from {self.base_url}: {exc}") from None
        if r.status_code == 200:
            return True
        errors = _json(r).get("errors") or [{}]
        code = str(errors[0].get("code", ""))
        if code == ALREADY_ENDED:
            return False
        raise CarrierRestError(
            r.status_code,
            int(code) if code.isdigit() else 0,
            str(errors[0].get("title", r.text[:200])),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class PlivoRest:
    """Plivo's Call API: hang up a live call by its ``CallUUID``."""

    def __init__(
        self, auth_id: str, auth_token: str, *, base_url: str = PLIVO_API, timeout_s: float = 10.0
    ):
        self.auth_id = auth_id
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            timeout=timeout_s, auth=httpx.BasicAuth(auth_id, auth_token)
        )

    def __repr__(self) -> str:
        return f"PlivoRest(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    async def hang_up(self, call_id: str) -> bool:
        url = f"{self.base_url}/v1/Account/{self.auth_id}/Call/{call_id}/"
        try:
            r = await self._client.delete(url)
        except httpx.HTTPError as exc:
            raise CarrierRestError(0, 0, f"no answer from {self.base_url}: {exc}") from None
        if r.status_code == 204:
            return True
        if r.status_code == 404:
            return False
        raise CarrierRestError(r.status_code, 0, str(_json(r).get("error", r.text[:200])))

    async def aclose(self) -> None:
        await self._client.aclose()


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def rest_for(carrier: str, environ: Any) -> Any:
    """The hang-up client for ``carrier`` from the environment, or None when its credentials
    are not set (Twilio's is built by the webhook set-up)."""
    if carrier == "telnyx" and environ.get("TELNYX_API_KEY"):
        base = environ.get("TELNYX_API_BASE", TELNYX_API)
        return TelnyxRest(environ["TELNYX_API_KEY"], base_url=base)
    if carrier == "plivo" and environ.get("PLIVO_AUTH_ID") and environ.get("PLIVO_AUTH_TOKEN"):
        base = environ.get("PLIVO_API_BASE", PLIVO_API)
        return PlivoRest(environ["PLIVO_AUTH_ID"], environ["PLIVO_AUTH_TOKEN"], base_url=base)
    return None


# ---------------------------------------------------------------------------- fakes


@dataclass
class FakeTelnyx:
    """Telnyx's hang-up endpoint, strictly: Bearer key (else 401), JSON body (else 422), a
    known live call (404 ``90015`` for an unknown one, 422 ``90018`` once it has ended)."""

    api_key: str
    live: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def handle(self, request: HttpRequest) -> HttpResponse:
        status, body = self._handle(request)
        self.requests.append((request.method, request.path, status))
        return HttpResponse(status, json.dumps(body).encode(), "application/json")

    def _handle(self, request: HttpRequest) -> tuple[int, dict[str, Any]]:
        def err(status: int, code: str, title: str) -> tuple[int, dict[str, Any]]:
            return status, {"errors": [{"code": code, "title": title, "detail": title}]}

        auth = request.header("authorization") or ""
        if not hmac.compare_digest(auth.encode(), f"Bearer {self.api_key}".encode()):
            return err(401, "10009", "Authentication failed")
        m = re.fullmatch(r"/v2/calls/([^/]+)/actions/hangup", request.path)
        if m is None or request.method != "POST":
            return err(404, "10005", "Resource not found")
        if (request.header("content-type") or "").split(";")[0] != "application/json":
            return err(422, "10015", "Invalid content type: send JSON")
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            return err(422, "10015", "Malformed JSON")
        if not isinstance(body, dict) or set(body) - {"client_state", "command_id"}:
            return err(422, "10015", f"Unexpected parameters {body!r}")
        call = m.group(1)
        if call in self.ended:
            return err(422, ALREADY_ENDED, "Call has already ended")
        if call not in self.live:
            return err(404, "90015", "Call not found")
        self.live.discard(call)
        self.ended.add(call)
        return 200, {"data": {"result": "ok"}}


@dataclass
class FakePlivo:
    """Plivo's hang-up endpoint, strictly: Basic auth with the auth ID in the path (else 401),
    DELETE only, the trailing slash, a live call (else 404)."""

    auth_id: str
    auth_token: str
    live: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def handle(self, request: HttpRequest) -> HttpResponse:
        status, body = self._handle(request)
        self.requests.append((request.method, request.path, status))
        return HttpResponse(status, json.dumps(body).encode() if body else b"", "application/json")

    def _handle(self, request: HttpRequest) -> tuple[int, dict[str, Any] | None]:
        auth = request.header("authorization") or ""
        want = "Basic " + base64.b64encode(f"{self.auth_id}:{self.auth_token}".encode()).decode()
        if not hmac.compare_digest(auth.encode(), want.encode()):
            return 401, {"error": "Authentication failed"}
        m = re.fullmatch(r"/v1/Account/([^/]+)/Call/([^/]+)/", request.path)
        if m is None or m.group(1) != self.auth_id:
            return 404, {"error": "not found"}
        if request.method != "DELETE":
            return 405, {"error": f"{request.method} not allowed"}
        call = m.group(2)
        if call not in self.live:
            return 404, {"error": "not found"}
        self.live.discard(call)
        return 204, None
