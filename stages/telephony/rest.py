"""Twilio's REST API for call control: hang up, transfer, send digits, place a call.

Media Streams carry audio only: ending the call, moving it elsewhere or playing DTMF to the far
end goes through the Calls resource (``/2010-04-01/Accounts/{AccountSid}/Calls``), form-encoded,
with HTTP Basic auth (the account SID and its auth token). :class:`TwilioRest` makes those
requests with ``httpx`` on the event loop (it never blocks it) and turns Twilio's JSON errors
(``{"code", "message", "more_info", "status"}``) into :class:`TwilioRestError` with Twilio's
code: 20003 (authentication), 20404 (no such resource), 21220 (the call is no longer in
progress), ...

Credentials come from the environment (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, see
:meth:`TwilioRest.from_env`); the token is never logged or shown in a repr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.errors import PipelineError, UsageError

__all__ = [
    "ACCOUNT_ENV",
    "API_BASE",
    "ENDED_STATUSES",
    "NOT_IN_PROGRESS",
    "TOKEN_ENV",
    "CallInfo",
    "TwilioRest",
    "TwilioRestError",
]

API_BASE = "https://api.twilio.com"
ACCOUNT_ENV = "TWILIO_ACCOUNT_SID"
TOKEN_ENV = "TWILIO_AUTH_TOKEN"
#: Twilio's code for an update of a call that is no longer in progress.
NOT_IN_PROGRESS = 21220
NOT_FOUND = 20404
#: Call statuses after which the call is over.
ENDED_STATUSES = frozenset({"completed", "canceled", "busy", "failed", "no-answer"})


class TwilioRestError(PipelineError):
    """Twilio refused a REST request. ``status`` is the HTTP status, ``code`` Twilio's error
    number (0 when the answer was not Twilio's JSON error)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"Twilio answered HTTP {status}, error {code}: {message}")


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The fields of a Call resource the call tools use."""

    sid: str
    status: str
    to: str = ""
    from_: str = ""
    answered_by: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


class TwilioRest:
    """Async client of the Calls resource. ``base_url`` points elsewhere for tests (a fake of
    the API on loopback). Use as an async context manager, or call :meth:`aclose`."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = API_BASE,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not account_sid.startswith("AC") or len(account_sid) != 34:
            raise UsageError(
                f"account SID {account_sid[:6]!r}... is not 'AC' and 32 hex digits; "
                f"set {ACCOUNT_ENV} to the SID shown in the Twilio console"
            )
        self.account_sid = account_sid
        self._token = auth_token
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            auth=httpx.BasicAuth(account_sid, auth_token),
            timeout=timeout_s,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"TwilioRest(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> TwilioRest:
        """A client with the credentials in ``TWILIO_ACCOUNT_SID`` / ``TWILIO_AUTH_TOKEN``
        (``TWILIO_API_BASE`` overrides the API's address). Raises PipelineError naming the
        variable that is missing."""
        env = os.environ if environ is None else environ
        sid, token = env.get(ACCOUNT_ENV), env.get(TOKEN_ENV)
        for name, value in ((ACCOUNT_ENV, sid), (TOKEN_ENV, token)):
            if not value:
                raise PipelineError(
                    f"${name} is not set: call control needs the Twilio account's credentials; "
                    "export it before starting"
                )
        assert sid is not None and token is not None
        options.setdefault("base_url", env.get("TWILIO_API_BASE", API_BASE))
        return cls(sid, token, **options)

    async def __aenter__(self) -> TwilioRest:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def _calls(self, call_sid: str = "") -> str:
        tail = f"/{call_sid}.json" if call_sid else ".json"
        return f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Calls{tail}"

    async def _post(self, url: str, form: Sequence[tuple[str, str]]) -> dict[str, Any]:
        try:
            response = await self._client.post(url, data=dict(_group(form)))
        except httpx.HTTPError as exc:
            raise TwilioRestError(0, 0, f"no answer from {self.base_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            if isinstance(body, dict) and isinstance(body.get("code"), int):
                raise TwilioRestError(response.status_code, body["code"], str(body.get("message")))
            raise TwilioRestError(response.status_code, 0, response.text[:200])
        if not isinstance(body, dict):
            raise TwilioRestError(response.status_code, 0, "the answer is not a JSON object")
        return body

    async def update_call(self, call_sid: str, **fields: str) -> CallInfo:
        """``POST .../Calls/{CallSid}.json`` with the given fields (``Status``, ``Twiml``,
        ``Url``...)."""
        return _info(await self._post(self._calls(call_sid), list(fields.items())))

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (``Status=completed``). True if this request ended it, False if it had
        already ended (Twilio's 21220, or a status that is already final)."""
        try:
            info = await self.update_call(call_sid, Status="completed")
        except TwilioRestError as exc:
            if exc.code == NOT_IN_PROGRESS:
                return False
            raise
        return info.status == "completed"

    async def redirect(self, call_sid: str, twiml: str) -> CallInfo:
        """Replace what the call is doing with this TwiML (a transfer, DTMF, ...)."""
        return await self.update_call(call_sid, Twiml=twiml)

    async def create_call(
        self,
        to: str,
        from_: str,
        *,
        twiml: str | None = None,
        url: str | None = None,
        machine_detection: str | None = None,
        async_amd: bool = False,
        async_amd_status_callback: str | None = None,
        status_callback: str | None = None,
        status_callback_events: Sequence[str] = (),
    ) -> CallInfo:
        """Place a call (``POST .../Calls.json``) that runs ``twiml`` (or fetches ``url``)
        once answered. ``machine_detection`` is ``Enable`` or ``DetectMessageEnd``."""
        form: list[tuple[str, str]] = [("To", to), ("From", from_)]
        if twiml is not None:
            form.append(("Twiml", twiml))
        if url is not None:
            form.append(("Url", url))
        if machine_detection:
            form.append(("MachineDetection", machine_detection))
            if async_amd:
                form.append(("AsyncAmd", "true"))
                if async_amd_status_callback:
                    form.append(("AsyncAmdStatusCallback", async_amd_status_callback))
        if status_callback:
            form.append(("StatusCallback", status_callback))
            form.extend(("StatusCallbackEvent", e) for e in status_callback_events)
        return _info(await self._post(self._calls(), form))


def _group(form: Sequence[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for name, value in form:
        prev = out.get(name)
        if prev is None:
            out[name] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out[name] = [prev, value]
    return out


def _info(body: Mapping[str, Any]) -> CallInfo:
    return CallInfo(
        sid=str(body.get("sid", "")),
        status=str(body.get("status", "")),
        to=str(body.get("to") or ""),
        from_=str(body.get("from") or ""),
        answered_by=body.get("answered_by"),
    )
