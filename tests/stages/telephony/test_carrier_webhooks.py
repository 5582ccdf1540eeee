"""Webhook signatures of Telnyx (Ed25519), Plivo (X-Plivo-Signature-V3) and Vonage (HS256
JWT), each checked against an independent reference (cryptography signing with Telnyx's scheme,
the plivo package's validator, PyJWT and vonage-jwt); then through a real `pipeline serve`:
signed requests are answered, unsigned and wrongly signed ones get 403 and one log line, and
nothing starts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
import vonage_jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from plivo.utils import validate_v3_signature

from pipeline.graph import Pipeline
from stages.telephony.carriers.auth import (
    jwt_hs256,
    plivo_v3_sign,
    plivo_v3_valid,
    telnyx_valid,
    vonage_webhook_valid,
)
from stages.telephony.carriers.webhooks import CarrierWebhook, carrier_webhook
from stages.telephony.serve import run_server
from tests.phonekit import http_post

NOW = 1_790_000_000
PUBLIC = "https://agent.example.com"
SECRET = "s" * 32


def telnyx_keys() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def telnyx_sign(key: Ed25519PrivateKey, ts: int, body: bytes) -> str:
    """As Telnyx documents: Ed25519 over "timestamp|body", base64."""
    return base64.b64encode(key.sign(f"{ts}|".encode() + body)).decode()


def test_telnyx_signature() -> None:
    key, public = telnyx_keys()
    body = b'{"data":{"event_type":"call.hangup","payload":{"call_control_id":"v3:c"}}}'
    sig = telnyx_sign(key, NOW, body)
    assert telnyx_valid(public, sig, str(NOW), body, now=NOW + 10) == ""
    assert telnyx_valid(public, sig, str(NOW), body + b" ", now=NOW) == (
        "bad telnyx-signature-ed25519"
    )
    assert telnyx_valid(public, sig, str(NOW + 1), body, now=NOW) == (
        "bad telnyx-signature-ed25519"
    )
    assert telnyx_valid(public, sig, str(NOW), body, now=NOW + 301) == (
        "telnyx-timestamp is 301 s off (the limit is 300 s)"
    )
    assert telnyx_valid(public, None, str(NOW), body, now=NOW) == (
        "no telnyx-signature-ed25519 / telnyx-timestamp"
    )
    other = telnyx_keys()[1]
    assert telnyx_valid(other, sig, str(NOW), body, now=NOW) == "bad telnyx-signature-ed25519"


@pytest.mark.parametrize(
    ("url", "form", "method"),
    [
        (PUBLIC + "/events", [("CallUUID", "u-1"), ("Event", "Hangup"), ("To", "+1555")], "POST"),
        (PUBLIC + ":8443/events?b=2&a=1", [("CallUUID", "u-1")], "POST"),
        (PUBLIC + "/plivo/transfer?to=%2B15551230003", [], "POST"),
        (PUBLIC + "/events", [], "POST"),
        (PUBLIC + "/events?b=2&a=1&a=0", [], "GET"),
        (PUBLIC + "/events", [("A", "2"), ("A", "1"), ("B", "x y")], "POST"),
    ],
)
def test_plivo_v3_signature_matches_plivos_validator(
    url: str, form: list[tuple[str, str]], method: str
) -> None:
    sig = plivo_v3_sign(SECRET, url, "9713", method, form)
    grouped: dict[str, Any] = {}
    for k, v in form:
        grouped.setdefault(k, []).append(v)
    params = {k: v if len(v) > 1 else v[0] for k, v in grouped.items()}
    assert validate_v3_signature(method, url, "9713", SECRET, sig, params)
    assert plivo_v3_valid(SECRET, url, "9713", "other," + sig, method, form) == ""
    assert plivo_v3_valid(SECRET, url, "9714", sig, method, form) == "bad X-Plivo-Signature-V3"
    assert not validate_v3_signature(method, url, "9713", "t" * 32, sig, params)


def test_vonage_signed_webhook() -> None:
    body = b'{"uuid":"u-1","status":"completed"}'
    claims = {"iat": NOW, "jti": "j", "payload_hash": hashlib.sha256(body).hexdigest()}
    token = jwt_hs256(claims, SECRET)
    assert vonage_jwt.verify_signature(token, SECRET)  # Vonage's own verifier
    assert jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_iat": False}) == claims
    theirs = jwt.encode(claims, SECRET, algorithm="HS256")  # PyJWT's token, checked by ours
    assert vonage_webhook_valid(SECRET, f"Bearer {theirs}", body, now=NOW + 5) == ""
    assert vonage_webhook_valid(SECRET, f"Bearer {token}", body + b"x", now=NOW) == (
        "payload_hash does not match the body"
    )
    assert vonage_webhook_valid("x" * 32, f"Bearer {token}", body, now=NOW) == "bad JWT signature"
    assert vonage_webhook_valid(SECRET, f"Bearer {token}", body, now=NOW + 3600) == (
        "the JWT was issued 3600 s ago (the limit is 300 s)"
    )
    assert vonage_webhook_valid(SECRET, None, body, now=NOW) == "no Authorization: Bearer JWT"


def echo_pipeline(carrier: str) -> Pipeline:
    p = Pipeline(f"{carrier}-echo")
    p.add("caller", "phone_source", carrier=carrier)
    p.add("phone", "phone_sink", carrier=carrier)
    p.link("caller", "phone")
    return p


async def post(
    port: int, target: str, body: bytes, headers: dict[str, str], ctype: str
) -> tuple[int, bytes]:
    return await http_post(port, target, body, {"Content-Type": ctype, **headers})


def plivo_headers(signature: str, nonce: str) -> dict[str, str]:
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": nonce}


def test_signed_webhooks_through_serve(capsys: pytest.CaptureFixture[str]) -> None:
    """Each carrier's signed event is answered; unsigned and wrongly signed ones get 403 and one
    log line each; a Plivo transfer fetches its <Dial>; no call starts."""
    tkey, tpub = telnyx_keys()

    async def run(carrier: str, webhook: CarrierWebhook, cases: list[Any]) -> list[int]:
        out = []
        async with run_server(echo_pipeline(carrier), webhook=webhook) as server:
            for target, body, headers, ctype in cases:
                status, answer = await post(server.port, target, body, headers, ctype)
                out.append(status)
                if target.startswith("/plivo/transfer") and status == 200:
                    assert answer == (
                        b'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>'
                        b"<Number>15551230003</Number></Dial></Response>"
                    )
            assert server._calls == 0 and server.active == 0
        return out

    async def main() -> None:
        now = time.time()
        ts = int(now)
        # Telnyx
        tbody = json.dumps(
            {"data": {"event_type": "call.hangup", "payload": {"call_control_id": "v3:c"}}}
        ).encode()
        good = {
            "telnyx-signature-ed25519": telnyx_sign(tkey, ts, tbody),
            "telnyx-timestamp": str(ts),
        }
        wrong = {**good, "telnyx-timestamp": str(ts - 1)}
        hook = CarrierWebhook("telnyx", PUBLIC, tpub)
        statuses = await run(
            "telnyx",
            hook,
            [
                ("/events", tbody, good, "application/json"),
                ("/events", tbody, {}, "application/json"),
                ("/events", tbody, wrong, "application/json"),
            ],
        )
        assert statuses == [200, 403, 403] and hook.refused == 2
        # Plivo: a status callback and a transfer's XML, form-encoded, signed with a nonce
        form = [("CallUUID", "u-1"), ("Event", "Hangup")]
        pbody = urlencode(form).encode()
        target = "/plivo/transfer?to=%2B15551230003"
        psig = plivo_v3_sign(SECRET, PUBLIC + "/events", "123", "POST", form)
        tsig = plivo_v3_sign(SECRET, PUBLIC + target, "124", "POST", form)
        fct = "application/x-www-form-urlencoded"
        hook = CarrierWebhook("plivo", PUBLIC, SECRET)
        statuses = await run(
            "plivo",
            hook,
            [
                ("/events", pbody, plivo_headers(psig, "123"), fct),
                (target, pbody, plivo_headers(tsig, "124"), fct),
                ("/events", pbody, plivo_headers(psig, "999"), fct),
            ],
        )  # fmt: skip
        assert statuses == [204, 200, 403]
        # Vonage: signed event webhook
        vbody = b'{"uuid":"u-1","status":"completed"}'
        claims = {"iat": ts, "jti": "j", "payload_hash": hashlib.sha256(vbody).hexdigest()}
        vtoken = jwt.encode(claims, SECRET, algorithm="HS256")
        bearer = {"Authorization": f"Bearer {vtoken}"}
        hook = CarrierWebhook("vonage", PUBLIC, SECRET)
        statuses = await run(
            "vonage",
            hook,
            [
                ("/events", vbody, bearer, "application/json"),
                ("/events", vbody + b" ", bearer, "application/json"),
            ],
        )  # fmt: skip
        assert statuses == [204, 403]

    asyncio.run(main())
    out = capsys.readouterr().out
    assert out.count("request refused: no telnyx-signature-ed25519 / telnyx-timestamp") == 1
    assert out.count("request refused: bad telnyx-signature-ed25519") == 1
    assert out.count("request refused: bad X-Plivo-Signature-V3") == 1
    assert out.count("request refused: payload_hash does not match the body") == 1
    assert out.count("call event") == 3
    assert SECRET not in out and tpub not in out
    assert "call started" not in out


def test_serve_needs_the_secret_that_checks_the_signatures() -> None:
    with pytest.raises(
        Exception, match=r"--public-url on a telnyx pipeline .*export TELNYX_PUBLIC_KEY"
    ):
        carrier_webhook("telnyx", PUBLIC, {})
    assert carrier_webhook("exotel", PUBLIC, {}) is None  # Exotel signs nothing
    assert carrier_webhook("vonage", None, {"VONAGE_SIGNATURE_SECRET": SECRET}) is None
    hook = carrier_webhook("vonage", PUBLIC, {"VONAGE_SIGNATURE_SECRET": SECRET})
    assert hook is not None and SECRET not in repr(hook)
