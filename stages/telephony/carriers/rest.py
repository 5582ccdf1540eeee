"""Call control on Telnyx, Plivo, Vonage and Exotel: hang up, transfer, send digits through
each carrier's API (Twilio's is :class:`~stages.telephony.rest.TwilioRest`).

Each client has the same three calls, so the call tools work the same on every carrier:
``hang_up(call_id)``, ``transfer(call_id, target)`` and ``send_digits(call_id, digits)``, each
True when this request acted and False when the call had already ended; any other refusal
raises :class:`CarrierRestError` with the HTTP status and the carrier's code. ``tools`` names
the call tools the carrier can do; the others are not offered to the model on its calls.

* **Telnyx** Call Control (``Authorization: Bearer <API key>``, JSON): ``POST
  /v2/calls/{call_control_id}/actions/hangup`` (``{}``), ``.../actions/transfer`` (``{"to":
  NUMBER_OR_SIP_URI}``), ``.../actions/send_dtmf`` (``{"digits", "duration_millis"}``, digits
  0-9 A-D * # and ``w`` for half a second); ``200 {"data": {"result": "ok"}}``. Errors are
  ``{"errors": [{"code", "title", "detail"}]}``; an ended call is 422 with code ``90018``.
* **Plivo** (HTTP Basic auth ID and token, JSON): ``DELETE /v1/Account/{auth_id}/Call/{uuid}/``
  hangs up (204); ``POST .../Call/{uuid}/`` with ``{"legs": "aleg", "aleg_url", "aleg_method"}``
  transfers (202), the call then running the Plivo XML fetched from ``aleg_url``, which
  ``pipeline serve --public-url`` answers with ``<Dial>`` (so a transfer needs it); ``POST
  .../Call/{uuid}/DTMF/`` with ``{"digits", "leg": "aleg"}`` plays digits (202). A call that is
  not live answers 404 (``{"api_id", "error"}``).
* **Vonage** Voice API (``Authorization: Bearer <application JWT>``, RS256 with the
  application's private key, :func:`~.auth.vonage_app_jwt`; JSON): ``PUT /v1/calls/{uuid}`` with
  ``{"action": "hangup"}`` or ``{"action": "transfer", "destination": {"type": "ncco", "ncco":
  [connect ...]}}`` (204), ``PUT /v1/calls/{uuid}/dtmf`` with ``{"digits"}`` (200; ``p`` is a
  half-second pause). Errors are RFC 7807 objects (``{"type", "title", "detail",
  "instance"}``); a call that is over answers 404.
* **Exotel** documents no hang-up or transfer for a call inside its Voicebot applet (its Legs
  API acts on legs of its programmable-voice platform, by ``leg_sid``, which an AgentStream does
  not carry): closing the stream *is* the hang-up: the applet ends and the flow moves to its
  next applet (put a Hangup applet after the Voicebot applet). :class:`ExotelStream` does that
  and says so; transfer is not offered; digits go in-band (``send_dtmf``'s default).

Credentials come from the environment (:func:`rest_for`); none is logged or shown in a repr.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.errors import UsageError

from ..rest import TwilioRestError
from .auth import load_rsa_key, vonage_app_jwt

__all__ = [
    "ALL_TOOLS",
    "CALL_TOOLS",
    "CarrierRestError",
    "ExotelStream",
    "PlivoRest",
    "TelnyxRest",
    "VonageRest",
    "rest_for",
    "unavailable",
]

TELNYX_API = "https://api.telnyx.com"
PLIVO_API = "https://api.plivo.com"
VONAGE_API = "https://api.nexmo.com"
TELNYX_ENDED = "90018"
ALL_TOOLS = frozenset({"end_call", "transfer_call", "send_dtmf", "send_dtmf_via_api"})
#: the call tools each carrier can do (send_dtmf, in-band, works on every stream)
CALL_TOOLS: dict[str, frozenset[str]] = {
    "twilio": ALL_TOOLS,
    "telnyx": ALL_TOOLS,
    "plivo": ALL_TOOLS,
    "vonage": ALL_TOOLS,
    "exotel": frozenset({"end_call", "send_dtmf"}),
}
#: why a carrier cannot do a tool (one line, for validate and the tool's answer)
WHY_NOT: dict[tuple[str, str], str] = {
    ("exotel", "transfer_call"): (
        "Exotel documents no transfer of a call inside its Voicebot applet; end the stream "
        "and let the flow's next applet (Connect) transfer it"
    ),
    ("plivo", "transfer_call"): (
        "a Plivo transfer runs the <Dial> that Plivo fetches from this server: start "
        "'pipeline serve' with --public-url"
    ),
    ("exotel", "send_dtmf_via_api"): (
        "Exotel has no API for digits on a streaming call; use send_dtmf (in-band tones)"
    ),
}

#: REST errors on every carrier are reported the same way (HTTP status, the carrier's code)
CarrierRestError = TwilioRestError


def unavailable(carrier: str, tool: str, tools: frozenset[str] | None = None) -> str:
    """'' when ``carrier`` can do ``tool`` (``tools``: what this deployment's client can do,
    else what the carrier can), else the one line that says why not."""
    if tool in (tools if tools is not None else CALL_TOOLS.get(carrier, ALL_TOOLS)):
        return ""
    why = WHY_NOT.get((carrier, tool), f"{carrier} cannot do it")
    return f"{tool} is not offered on {carrier} calls: {why}"


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class _Http:
    """An httpx client on the event loop that turns transport failures into CarrierRestError."""

    carrier = ""

    def __init__(self, base_url: str, timeout_s: float, **client: Any) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout_s, **client)

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return await self._client.request(method, self.base_url + path, **kw)
        except httpx.HTTPError as exc:
            raise CarrierRestError(0, 0, f"no answer from {self.base_url}: {exc}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class TelnyxRest(_Http):
    """Telnyx Call Control, by ``call_control_id``."""

    carrier = "telnyx"
    tools = CALL_TOOLS["telnyx"]

    def __init__(self, api_key: str, *, base_url: str = TELNYX_API, timeout_s: float = 10.0):
        headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        super().__init__(base_url, timeout_s, headers=headers)

    def __repr__(self) -> str:
        return f"TelnyxRest(base_url={self.base_url!r})"

    async def _action(self, call_id: str, action: str, body: dict[str, Any]) -> bool:
        r = await self._request(
            "POST", f"/v2/calls/{quote(call_id, safe=':')}/actions/{action}", json=body
        )
        if r.status_code == 200:
            return True
        errors = _json(r).get("errors") or [{}]
        first = errors[0] if isinstance(errors[0], dict) else {}
        code = str(first.get("code", ""))
        if code == TELNYX_ENDED:
            return False
        detail = first.get("detail") or first.get("title") or r.text[:200]
        raise CarrierRestError(r.status_code, int(code) if code.isdigit() else 0, str(detail))

    async def hang_up(self, call_id: str) -> bool:
        return await self._action(call_id, "hangup", {})

    async def transfer(self, call_id: str, target: str) -> bool:
        return await self._action(call_id, "transfer", {"to": target})

    async def send_digits(self, call_id: str, digits: str) -> bool:
        return await self._action(call_id, "send_dtmf", {"digits": digits, "duration_millis": 250})


class PlivoRest(_Http):
    """Plivo's Call API, by ``CallUUID``. ``transfer_url`` is where Plivo fetches the
    ``<Dial>`` of a transfer (``PUBLIC/plivo/transfer``; None: no transfer)."""

    carrier = "plivo"

    def __init__(
        self,
        auth_id: str,
        auth_token: str,
        *,
        base_url: str = PLIVO_API,
        timeout_s: float = 10.0,
        transfer_url: str | None = None,
    ):
        super().__init__(base_url, timeout_s, auth=httpx.BasicAuth(auth_id, auth_token))
        self.auth_id = auth_id
        self.transfer_url = transfer_url
        #: a transfer needs the URL Plivo fetches its <Dial> from
        self.tools = CALL_TOOLS["plivo"] - (set() if transfer_url else {"transfer_call"})

    def __repr__(self) -> str:
        return f"PlivoRest(auth_id={self.auth_id!r}, base_url={self.base_url!r})"

    def _call(self, call_id: str, tail: str = "") -> str:
        return f"/v1/Account/{self.auth_id}/Call/{quote(call_id)}/{tail}"

    def _check(self, r: httpx.Response, ok: int) -> bool:
        if r.status_code == ok:
            return True
        if r.status_code == 404:
            return False
        raise CarrierRestError(r.status_code, 0, str(_json(r).get("error", r.text[:200])))

    async def hang_up(self, call_id: str) -> bool:
        return self._check(await self._request("DELETE", self._call(call_id)), 204)

    async def transfer(self, call_id: str, target: str) -> bool:
        if self.transfer_url is None:
            raise CarrierRestError(
                0, 0, "a Plivo transfer needs 'pipeline serve --public-url' (Plivo fetches the "
                "<Dial> from it)",
            )  # fmt: skip
        body = {
            "legs": "aleg",
            "aleg_url": f"{self.transfer_url}?to={quote(target, safe='')}",
            "aleg_method": "POST",
        }
        return self._check(await self._request("POST", self._call(call_id), json=body), 202)

    async def send_digits(self, call_id: str, digits: str) -> bool:
        body = {"digits": digits, "leg": "aleg"}
        return self._check(
            await self._request("POST", self._call(call_id, "DTMF/"), json=body), 202
        )


_PHONE = re.compile(r"^\+?([1-9][0-9]{6,14})$")


def vonage_endpoint(target: str) -> dict[str, str]:
    """An NCCO ``connect`` endpoint for an E.164 number (Vonage writes it without ``+``) or a
    SIP URI."""
    m = _PHONE.match(target)
    if m:
        return {"type": "phone", "number": m.group(1)}
    if target.startswith(("sip:", "sips:")):
        return {"type": "sip", "uri": target}
    raise UsageError(f"transfer target {target!r} is neither an E.164 number nor a SIP URI")


class VonageRest(_Http):
    """The Vonage Voice API, by call ``uuid``, authenticated with a fresh application JWT
    (RS256) per request. ``clock`` gives Unix seconds (tests inject one)."""

    carrier = "vonage"
    tools = CALL_TOOLS["vonage"]

    def __init__(
        self,
        application_id: str,
        private_key_pem: str,
        *,
        base_url: str = VONAGE_API,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(base_url, timeout_s, headers={"Accept": "application/json"})
        self.application_id = application_id
        self._key = load_rsa_key(private_key_pem)
        self._clock = clock

    def __repr__(self) -> str:
        return f"VonageRest(application_id={self.application_id!r}, base_url={self.base_url!r})"

    async def _put(self, path: str, body: dict[str, Any], ok: int) -> bool:
        token = vonage_app_jwt(self.application_id, self._key, now=self._clock())
        r = await self._request(
            "PUT", path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        if r.status_code == ok:
            return True
        if r.status_code == 404:
            return False
        problem = _json(r)
        text = problem.get("detail") or problem.get("title") or r.text[:200]
        raise CarrierRestError(r.status_code, 0, str(text))

    async def hang_up(self, call_id: str) -> bool:
        return await self._put(f"/v1/calls/{quote(call_id)}", {"action": "hangup"}, 204)

    async def transfer(self, call_id: str, target: str) -> bool:
        ncco = [{"action": "connect", "endpoint": [vonage_endpoint(target)]}]
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        return await self._put(f"/v1/calls/{quote(call_id)}", body, 204)

    async def send_digits(self, call_id: str, digits: str) -> bool:
        body = {"digits": digits.replace("w", "p")}
        return await self._put(f"/v1/calls/{quote(call_id)}/dtmf", body, 200)


class ExotelStream:
    """Exotel: no API acts on a streaming call; closing the stream ends the Voicebot applet
    (the tool then closes it: :meth:`hang_up` only says yes)."""

    carrier = "exotel"
    tools = CALL_TOOLS["exotel"]

    def __repr__(self) -> str:
        return "ExotelStream()"

    async def hang_up(self, call_id: str) -> bool:
        return True

    async def transfer(self, call_id: str, target: str) -> bool:
        raise CarrierRestError(0, 0, unavailable("exotel", "transfer_call"))

    async def send_digits(self, call_id: str, digits: str) -> bool:
        raise CarrierRestError(0, 0, "Exotel has no API for digits: send them in-band")

    async def aclose(self) -> None:
        pass


def rest_for(carrier: str, environ: Mapping[str, str], public_url: str | None = None) -> Any:
    """The call-control client for ``carrier`` from the environment, or None when its
    credentials are not set (Twilio's is built by the webhook set-up). UsageError for a
    Vonage private key that cannot be read."""
    if carrier == "telnyx" and environ.get("TELNYX_API_KEY"):
        base = environ.get("TELNYX_API_BASE", TELNYX_API)
        return TelnyxRest(environ["TELNYX_API_KEY"], base_url=base)
    if carrier == "plivo" and environ.get("PLIVO_AUTH_ID") and environ.get("PLIVO_AUTH_TOKEN"):
        return PlivoRest(
            environ["PLIVO_AUTH_ID"],
            environ["PLIVO_AUTH_TOKEN"],
            base_url=environ.get("PLIVO_API_BASE", PLIVO_API),
            transfer_url=public_url.rstrip("/") + "/plivo/transfer" if public_url else None,
        )
    if carrier == "vonage" and environ.get("VONAGE_APPLICATION_ID"):
        pem = environ.get("VONAGE_PRIVATE_KEY", "")
        path = environ.get("VONAGE_PRIVATE_KEY_PATH", "")
        if not pem and path:
            try:
                with open(path, encoding="ascii") as f:
                    pem = f.read()
            except OSError as exc:
                raise UsageError(
                    f"$VONAGE_PRIVATE_KEY_PATH: cannot read {path}: {exc.strerror}"
                ) from None
        if not pem:
            raise UsageError(
                "$VONAGE_APPLICATION_ID is set but the application's private key is not: "
                "export VONAGE_PRIVATE_KEY (the PEM text) or VONAGE_PRIVATE_KEY_PATH"
            )
        try:
            return VonageRest(
                environ["VONAGE_APPLICATION_ID"],
                pem,
                base_url=environ.get("VONAGE_API_BASE", VONAGE_API),
            )
        except ValueError as exc:
            raise UsageError(f"the Vonage private key: {exc}") from None
    if carrier == "exotel":
        return ExotelStream()
    return None
