"""Call control on Telnyx, Plivo, Vonage and Exotel: the call tools through each carrier's API,
against strict fakes on loopback (bodies on the wire, auth, error shapes); what a carrier cannot
do is not offered and validate says so; the Vonage application JWT checked with PyJWT."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from pipeline.errors import UsageError
from pipeline.graph import Pipeline
from stages.telephony.call_tools import end_call, send_dtmf_via_api, transfer_call
from stages.telephony.carriers import CARRIERS, SIDES
from stages.telephony.carriers.auth import vonage_app_jwt
from stages.telephony.carriers.fakes import FakePlivo, FakeTelnyx, FakeVonage
from stages.telephony.carriers.rest import (
    CarrierRestError,
    ExotelStream,
    PlivoRest,
    TelnyxRest,
    VonageRest,
    rest_for,
)
from stages.telephony.control import CallControl, bind_control
from stages.telephony.http import serve_http
from stages.telephony.offer import withhold_unavailable
from stages.telephony.twilio import TwilioCall, bind_call
from tests.phonekit import TONE_MS, tool_agent

TARGETS = {"desk": "+15551230003", "pbx": "sip:desk@pbx.example.com"}
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
APP_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"


@functools.cache
def rsa_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem() -> str:
    return (
        rsa_key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


async def call_on(carrier: str, call_id: str) -> TwilioCall:
    async def send(_m: object) -> None:
        pass

    fmt = CARRIERS[carrier].formats[0]
    call = TwilioCall(send, carrier=CARRIERS[carrier](fmt))
    for message in SIDES[carrier](fmt, call_id, "stream-1").opening({}):
        await call.receive(message)
    assert call.call_sid == call_id
    return call


async def run_tool(carrier: str, call_id: str, rest: Any, tool: Callable[..., Any], *a: Any,
                   **kw: Any) -> str:  # fmt: skip
    call = await call_on(carrier, call_id)
    with bind_call(call), bind_control(CallControl(rest)):
        result: str = await tool(*a, **kw)
    return result


@asynccontextmanager
async def fake_server(fake: Any) -> AsyncIterator[str]:
    async with serve_http(fake.handle) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}"


def make(carrier: str, base: str, *, wrong: bool = False) -> Any:
    match carrier:
        case "telnyx":
            return TelnyxRest("wrong" if wrong else "KEY0123", base_url=base)
        case "plivo":
            return PlivoRest(
                AUTH_ID,
                "wrong" if wrong else "tok",
                base_url=base,
                transfer_url="https://agent.example.com/plivo/transfer",
            )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048) if wrong else None
    key = pem() if other is None else other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    return VonageRest(APP_ID, key, base_url=base)


def fake_for(carrier: str) -> Any:
    live = {"call-1", "call-2"}
    if carrier == "telnyx":
        return FakeTelnyx("KEY0123", live=live)
    if carrier == "plivo":
        return FakePlivo(AUTH_ID, "tok", live=live)
    return FakeVonage(APP_ID, rsa_key().public_key(), live=live)


#: what each carrier's API must receive: (method, path, body) for dtmf, transfer, hang-up
WIRE: dict[str, list[tuple[str, str, Any]]] = {
    "telnyx": [
        ("POST", "/v2/calls/call-1/actions/send_dtmf", {"digits": "1w#", "duration_millis": 250}),
        ("POST", "/v2/calls/call-1/actions/transfer", {"to": "sip:desk@pbx.example.com"}),
        ("POST", "/v2/calls/call-1/actions/hangup", {}),
        ("POST", "/v2/calls/call-2/actions/hangup", {}),
    ],
    "plivo": [
        ("POST", f"/v1/Account/{AUTH_ID}/Call/call-1/DTMF/", {"digits": "1w#", "leg": "aleg"}),
        (
            "POST",
            f"/v1/Account/{AUTH_ID}/Call/call-1/",
            {
                "legs": "aleg",
                "aleg_url": "https://agent.example.com/plivo/transfer"
                "?to=sip%3Adesk%40pbx.example.com",
                "aleg_method": "POST",
            },
        ),
        ("DELETE", f"/v1/Account/{AUTH_ID}/Call/call-1/", None),
        ("DELETE", f"/v1/Account/{AUTH_ID}/Call/call-2/", None),
    ],
    "vonage": [
        ("PUT", "/v1/calls/call-1/dtmf", {"digits": "1p#"}),
        (
            "PUT",
            "/v1/calls/call-1",
            {
                "action": "transfer",
                "destination": {
                    "type": "ncco",
                    "ncco": [
                        {
                            "action": "connect",
                            "endpoint": [{"type": "sip", "uri": "sip:desk@pbx.example.com"}],
                        }
                    ],
                },
            },
        ),
        ("PUT", "/v1/calls/call-1", {"action": "hangup"}),
        ("PUT", "/v1/calls/call-2", {"action": "hangup"}),
    ],
}
STATUSES = {
    "telnyx": [200, 200, 422, 200],
    "plivo": [202, 202, 404, 204],
    "vonage": [200, 204, 404, 204],
}


@pytest.mark.parametrize("carrier", ["telnyx", "plivo", "vonage"])
def test_call_tools_through_each_carriers_api(carrier: str) -> None:
    """Digits, a transfer (the call then over: a hang-up finds it ended), a hang-up; the fake
    sees exactly the documented requests; wrong credentials are refused with the HTTP 401."""

    async def main() -> list[str]:
        fake = fake_for(carrier)
        async with fake_server(fake) as base:
            rest = make(carrier, base)
            results = [
                await run_tool(carrier, "call-1", rest, send_dtmf_via_api, "1w#"),
                await run_tool(carrier, "call-1", rest, transfer_call, "pbx", targets=TARGETS),
                await run_tool(carrier, "call-1", rest, end_call, "done"),
                await run_tool(carrier, "call-2", rest, end_call, "done"),
            ]
            await rest.aclose()
            bad = make(carrier, base, wrong=True)
            with pytest.raises(CarrierRestError, match="HTTP 401"):
                await bad.hang_up("call-2")
            await bad.aclose()
        assert [(r.method, r.path, r.body) for r in fake.requests[:4]] == WIRE[carrier]
        assert [r.status for r in fake.requests] == [*STATUSES[carrier], 401]
        return results

    assert asyncio.run(main()) == [
        "pressed 1w#",
        "the call has been transferred to pbx; say nothing more",
        "the call had already ended; say nothing more",
        "the call has ended; say nothing more",
    ]


def test_fakes_refuse_what_the_apis_refuse() -> None:
    async def main() -> None:
        telnyx = FakeTelnyx("KEY0123", live={"c"})
        async with fake_server(telnyx) as base:
            rest = TelnyxRest("KEY0123", base_url=base)
            with pytest.raises(CarrierRestError, match=r"HTTP 422, error 10015: .*digits 'x'"):
                await rest.send_digits("c", "x")
            with pytest.raises(CarrierRestError, match="HTTP 404, error 90015: Call not found"):
                await rest.hang_up("nope")
            await rest.aclose()
        vonage = FakeVonage(APP_ID, rsa_key().public_key(), live={"c"})
        async with fake_server(vonage) as base:
            late = VonageRest(APP_ID, pem(), base_url=base, clock=lambda: time.time() - 3600)
            with pytest.raises(CarrierRestError, match="HTTP 401, error 0: Expired Token"):
                await late.hang_up("c")
            await late.aclose()
            vrest = VonageRest(APP_ID, pem(), base_url=base)
            with pytest.raises(UsageError, match=r"neither an E\.164 number nor a SIP URI"):
                await vrest.transfer("c", "+1555")
            endpoint = {"type": "phone", "number": "+15551230003"}  # Vonage wants no "+"
            body = {"action": "connect", "endpoint": [endpoint]}
            transfer = {"action": "transfer", "destination": {"type": "ncco", "ncco": [body]}}
            with pytest.raises(CarrierRestError, match=r"HTTP 400.*digits only, no \+"):
                await vrest._put("/v1/calls/c", transfer, 204)
            with pytest.raises(CarrierRestError, match=r"HTTP 400.*'mute!' is not one of"):
                await vrest._put("/v1/calls/c", {"action": "mute!"}, 204)
            await vrest.aclose()
        assert vonage.requests[-1].status == 400

    asyncio.run(main())


def test_vonage_application_jwt_reads_back_with_pyjwt() -> None:
    token = vonage_app_jwt(APP_ID, rsa_key(), now=1_700_000_000, jti="j-1")
    claims = jwt.decode(
        token,
        rsa_key().public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "application_id": APP_ID,
        "iat": 1_700_000_000,
        "exp": 1_700_000_900,
        "jti": "j-1",
    }
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}


def test_exotel_closes_the_stream_and_offers_no_transfer() -> None:
    async def main() -> list[str]:
        rest = ExotelStream()
        call = await call_on("exotel", "CA-exotel")
        with bind_call(call), bind_control(CallControl(rest)):
            out = [await transfer_call("desk", targets=TARGETS), await end_call("bye")]
        assert call.ended.is_set()
        return out

    transfer, ended = asyncio.run(main())
    assert transfer == (
        "transfer_call is not offered on exotel calls: Exotel documents no transfer of a call "
        "inside its Voicebot applet; end the stream and let the flow's next applet (Connect) "
        "transfer it; tell the caller you cannot transfer"
    )
    assert ended == (
        "the stream is closed (Exotel has no hang-up for a streaming call: its flow goes on to "
        "the applet after the Voicebot applet, which should hang up); say nothing more"
    )


def exotel_agent() -> Pipeline:
    p = Pipeline("exotel-agent")
    p.add("caller", "phone_source", carrier="exotel")
    p.add("agent", "realtime_session", provider="emulator", input_rate=8000, output_rate=8000)
    p.add(
        "tools",
        "tool_router",
        tools=[
            "stages.telephony.call_tools:end_call",
            {"ref": "stages.telephony.call_tools:transfer_call", "with": {"targets": TARGETS}},
            "stages.telephony.call_tools:send_dtmf",
            "stages.telephony.call_tools:send_dtmf_via_api",
        ],
    )
    p.add("phone", "phone_sink", carrier="exotel")
    p.link("caller", "agent", "phone")
    p.link("agent", "tools", "agent")
    return p


def test_validate_names_the_tools_a_carrier_cannot_do() -> None:
    p = exotel_agent()
    plan = p.check()
    assert plan.problems == ()
    warnings = [w.message for w in plan.warnings]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "stage 'tools' (tool_router): transfer_call is not offered on exotel calls: Exotel "
        "documents no transfer"
    )
    assert "send_dtmf_via_api is not offered on exotel calls" in warnings[1]
    # pipeline serve withholds them: the model is never told about them
    said = withhold_unavailable(p.nodes)
    assert len(said) == 2
    names = [s if isinstance(s, str) else s["ref"] for s in p.nodes["tools"].raw_params["tools"]]
    prefix = "stages.telephony.call_tools:"
    assert names == [prefix + "end_call", prefix + "send_dtmf"]
    assert p.check().warnings == ()


def test_rest_for_reads_credentials_from_the_environment(tmp_path: Any) -> None:
    assert rest_for("telnyx", {}) is None
    assert isinstance(rest_for("exotel", {}), ExotelStream)
    plivo = rest_for("plivo", {"PLIVO_AUTH_ID": AUTH_ID, "PLIVO_AUTH_TOKEN": "t"}, "https://a.b")
    assert plivo.transfer_url == "https://a.b/plivo/transfer"
    assert "t'" not in repr(plivo) and "tok" not in repr(plivo)
    with pytest.raises(Exception, match="export VONAGE_PRIVATE_KEY"):
        rest_for("vonage", {"VONAGE_APPLICATION_ID": APP_ID})
    with pytest.raises(Exception, match="the Vonage private key: not a PEM private key"):
        rest_for("vonage", {"VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY": "secret!"})
    key = tmp_path / "private.key"
    key.write_text(pem())
    vonage = rest_for(
        "vonage", {"VONAGE_APPLICATION_ID": APP_ID, "VONAGE_PRIVATE_KEY_PATH": str(key)}
    )
    assert (
        repr(vonage) == f"VonageRest(application_id='{APP_ID}', base_url='https://api.nexmo.com')"
    )

    async def close() -> None:
        await plivo.aclose()
        await vonage.aclose()

    asyncio.run(close())


def test_plivo_transfer_is_withheld_without_a_public_url() -> None:
    p = exotel_agent()
    for sid in ("caller", "phone"):
        p.nodes[sid].raw_params["carrier"] = "plivo"
    assert p.check().warnings == ()  # Plivo can transfer: validate has nothing to say
    rest = PlivoRest(AUTH_ID, "tok")  # no transfer_url: serve runs without --public-url
    said = withhold_unavailable(p.nodes, rest)
    assert said == [
        "transfer_call is not offered on plivo calls: a Plivo transfer runs the <Dial> that "
        "Plivo fetches from this server: start 'pipeline serve' with --public-url"
    ]
    assert len(p.nodes["tools"].raw_params["tools"]) == 3
    asyncio.run(rest.aclose())


def test_end_call_on_a_live_telnyx_call_waits_for_the_goodbye() -> None:
    """Through `pipeline serve`: a Telnyx stream, the model says goodbye and calls end_call;
    the (fake) Call Control API sees the hang-up only once every mark of the goodbye has been
    reported played."""
    from websockets.asyncio.client import connect

    from stages.telephony.carriers.telnyx import TelnyxSide
    from stages.telephony.serve import run_server

    tone_ms = TONE_MS
    p = tool_agent(
        "telnyx-end",
        "end_call",
        {"name": "end_call", "say": "Goodbye!"},
        carrier="telnyx",
        timeout_s=None,
    )

    async def main() -> tuple[list[str], list[str], int]:
        fake = FakeTelnyx("KEY0123", live={"v3:call-9"})
        hung_up = asyncio.Event()
        handle = fake.handle

        at_hangup: list[str] = []

        def watch(request: Any) -> Any:
            at_hangup.extend(marks)  # what had been sent when the hang-up came
            hung_up.set()
            return handle(request)

        fake.handle = watch  # type: ignore[method-assign]
        side = TelnyxSide(CARRIERS["telnyx"].formats[0], "v3:call-9", "stream-9")
        marks: list[str] = []
        played: list[str] = []
        got = asyncio.Event()
        async with fake_server(fake) as base:
            rest = TelnyxRest("KEY0123", base_url=base)
            async with run_server(p, rest=rest) as server:
                ws = await connect(server.url + "/media")

                async def read() -> None:
                    async for raw in ws:
                        kind, value = side.read(raw)
                        if kind == "mark":
                            marks.append(value)
                            got.set()

                reader = asyncio.create_task(read())
                for message in side.opening({}):
                    await ws.send(message)
                await ws.send(side.dtmf("1"))
                async with asyncio.timeout(20):
                    while len(marks) < tone_ms // 20:
                        got.clear()
                        await got.wait()
                    playback = server._by_call_sid["v3:call-9"].playback
                    while not (playback.finished and playback.waiters):
                        await playback.next_change()
                    assert not hung_up.is_set()  # nothing reported played: no hang-up yet
                    for name in marks:
                        played.append(name)
                        await ws.send(side.mark_played(name))
                    await hung_up.wait()
                    stop = side.stop()  # Telnyx ends the stream of a call that hung up
                    assert stop is not None
                    await ws.send(stop)
                    await reader
                assert ws.close_code == 1000
        return at_hangup, played, len(fake.requests)

    at_hangup, played, requests = asyncio.run(main())
    assert at_hangup == [str(i) for i in range(1, tone_ms // 20 + 1)] == played
    assert requests == 1
