"""The Calls REST client against the strict fake of Twilio's API (on loopback), and the fake
against the twilio package's own client."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from stages.telephony.fake_twilio import FakeTwilio, run_fake_twilio
from stages.telephony.rest import TwilioRest, TwilioRestError
from stages.telephony.twiml import dial

SID = "AC" + "a" * 32
TOKEN = "b" * 32
CALL = "CA" + "c" * 32


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_hang_up_then_already_ended() -> None:
    async def main() -> None:
        fake = FakeTwilio(SID, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake), TwilioRest(SID, TOKEN, base_url=fake.url) as rest:
            assert await rest.hang_up(CALL) is True
            assert fake.calls[CALL].status == "completed"
            assert await rest.hang_up(CALL) is False  # 21220: no longer in progress
        path = f"/2010-04-01/Accounts/{SID}/Calls/{CALL}.json"
        assert [(r.method, r.path, r.form, r.status) for r in fake.requests] == [
            ("POST", path, (("Status", "completed"),), 200),
            ("POST", path, (("Status", "completed"),), 400),
        ]

    run(main())


def test_errors_carry_twilios_codes() -> None:
    async def main() -> None:
        fake = FakeTwilio(SID, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake):
            async with TwilioRest(SID, "wrong" + TOKEN[5:], base_url=fake.url) as rest:
                with pytest.raises(TwilioRestError) as err:
                    await rest.hang_up(CALL)
                assert (err.value.status, err.value.code) == (401, 20003)
                assert TOKEN not in repr(rest) and TOKEN[5:] not in str(err.value)
            async with TwilioRest(SID, TOKEN, base_url=fake.url) as rest:
                with pytest.raises(TwilioRestError) as err:
                    await rest.hang_up("CA" + "d" * 32)
                assert (err.value.status, err.value.code) == (404, 20404)
                assert "was not found" in str(err.value)
                with pytest.raises(TwilioRestError) as err:
                    await rest.update_call(CALL, Stauts="completed")  # misspelt
                assert (err.value.status, err.value.code) == (400, 20001)
                with pytest.raises(TwilioRestError) as err:
                    await rest.redirect(CALL, "<Respons><Dial>+1</Dial></Respons>")
                assert err.value.code == 12100
                with pytest.raises(TwilioRestError) as err:
                    await rest.create_call("+15551230002", "", twiml="<Response/>")
                assert err.value.code == 21213
                with pytest.raises(TwilioRestError) as err:
                    await rest.create_call("+15551230002", "+15551230001")
                assert err.value.code == 21205

    run(main())


def test_transfer_and_outbound_form_fields() -> None:
    async def main() -> None:
        fake = FakeTwilio(SID, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake), TwilioRest(SID, TOKEN, base_url=fake.url) as rest:
            await rest.redirect(CALL, dial("+15557654321"))
            info = await rest.create_call(
                "+15551230002",
                "+15551230001",
                twiml="<Response><Connect><Stream url='wss://a/media'/></Connect></Response>",
                machine_detection="DetectMessageEnd",
                async_amd=True,
                async_amd_status_callback="https://a.example.com/amd",
                status_callback="https://a.example.com/status",
                status_callback_events=("initiated", "answered", "completed"),
            )
        assert ET.fromstring(fake.calls[CALL].twiml[0]).find("Dial").text == "+15557654321"  # type: ignore[union-attr]
        assert info.status == "queued" and info.sid in fake.calls
        created = fake.requests[-1]
        assert created.status == 201
        assert [k for k, _ in created.form] == [
            "To", "From", "Twiml", "MachineDetection", "AsyncAmd", "AsyncAmdStatusCallback",
            "StatusCallback", "StatusCallbackEvent", "StatusCallbackEvent", "StatusCallbackEvent",
        ]  # fmt: skip
        assert dict(created.form)["MachineDetection"] == "DetectMessageEnd"

    run(main())


def test_no_answer_is_an_error_not_a_hang() -> None:
    async def main() -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        async with TwilioRest(SID, TOKEN, transport=httpx.MockTransport(refuse)) as rest:
            with pytest.raises(TwilioRestError, match=r"no answer from https://api\.twilio\.com"):
                await rest.hang_up(CALL)

    run(main())


def test_from_env_names_the_missing_variable() -> None:
    with pytest.raises(Exception, match=r"\$TWILIO_AUTH_TOKEN is not set"):
        TwilioRest.from_env({"TWILIO_ACCOUNT_SID": SID})
    with pytest.raises(ValueError, match="32 hex digits"):
        TwilioRest("XX123", TOKEN)


class _ToFake(TwilioHttpClient):
    """The twilio package's own HTTP client, sent to the fake instead of api.twilio.com."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return super().request(
            method, url.replace("https://api.twilio.com", self.base), *args, **kwargs
        )


def test_the_fake_against_the_official_client() -> None:
    async def main() -> None:
        fake = FakeTwilio(SID, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake):
            client = Client(SID, TOKEN, http_client=_ToFake(fake.url))

            def use() -> tuple[str, str, int]:
                fetched = client.calls(CALL).fetch().status
                ended = client.calls(CALL).update(status="completed").status
                try:
                    client.calls(CALL).update(twiml="<Response><Hangup/></Response>")
                except TwilioRestException as exc:
                    return fetched, ended, exc.code
                return fetched, ended, 0

            assert await asyncio.to_thread(use) == ("in-progress", "completed", 21220)
            created = await asyncio.to_thread(
                lambda: client.calls.create(
                    to="+15551230002",
                    from_="+15551230001",
                    twiml="<Response><Say>hi</Say></Response>",
                    machine_detection="Enable",
                    status_callback="https://a.example.com/status",
                    status_callback_event=["initiated", "completed"],
                )
            )
            assert created.status == "queued" and created.sid in fake.calls
            wrong = Client(SID, "x" * 32, http_client=_ToFake(fake.url))
            with pytest.raises(TwilioRestException) as err:
                await asyncio.to_thread(lambda: wrong.calls(CALL).fetch())
            assert (err.value.status, err.value.code) == (401, 20003)

    run(main())
