"""X-Twilio-Signature and the Voice webhook, checked against the twilio package's
RequestValidator (the independent reference)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from stages.telephony import signature
from stages.telephony.http import HttpExchange, HttpRequest
from stages.telephony.twiml import TwimlError, connect_stream, dial, play_digits, stream_url
from stages.telephony.webhook import TwilioWebhook

TOKEN = "12345678901234567890123456789012"
CALL = "CA" + "1" * 32
FORM = [
    ("CallSid", CALL),
    ("AccountSid", "AC" + "2" * 32),
    ("From", "+15551230001"),
    ("To", "+15551230002"),
    ("Direction", "inbound"),
    ("CallStatus", "ringing"),
]

URLS = [
    "https://agent.example.com/twiml",
    "https://agent.example.com:8443/twiml",
    "https://agent.example.com/twiml?tenant=acme&lang=en-US",
    "https://agent.example.com:443/status?x=1&x=2&empty=",
    "http://127.0.0.1:8080/twiml?a=b%20c",
    "wss://agent.example.com/media",
    "wss://agent.example.com:9443/media?k=v",
]


@pytest.mark.parametrize("url", URLS)
def test_sign_matches_the_reference(url: str) -> None:
    ref = RequestValidator(TOKEN)
    params = dict(FORM)
    assert signature.sign(TOKEN, url, FORM) == ref.compute_signature(url, params)
    assert signature.sign(TOKEN, url) == ref.compute_signature(url, {})


@pytest.mark.parametrize("url", URLS)
def test_valid_accepts_what_the_reference_accepts(url: str) -> None:
    ref = RequestValidator(TOKEN)
    params = dict(FORM)
    good = ref.compute_signature(url, params)
    assert ref.validate(url, params, good)
    assert signature.valid(TOKEN, url, FORM, good)
    # signed without the port, checked on a URL with it (and the other way round)
    bare = url.replace(":8443", "").replace(":443", "").replace(":9443", "")
    if bare != url:
        assert signature.valid(TOKEN, url, FORM, ref.compute_signature(bare, params))
        assert ref.validate(url, params, ref.compute_signature(bare, params))
    if url.startswith("https://agent.example.com/"):
        with_port = url.replace("agent.example.com/", "agent.example.com:443/")
        assert signature.valid(TOKEN, url, FORM, ref.compute_signature(with_port, params))
        assert ref.validate(url, params, ref.compute_signature(with_port, params))


@pytest.mark.parametrize("url", URLS)
def test_wrong_signatures_are_refused(url: str) -> None:
    good = signature.sign(TOKEN, url, FORM)
    assert not signature.valid(TOKEN, url, FORM, None)
    assert not signature.valid(TOKEN, url, FORM, "")
    assert not signature.valid("0" * 32, url, FORM, good)  # another account's token
    assert not signature.valid(TOKEN, url, [*FORM[:-1], ("CallStatus", "completed")], good)
    assert not signature.valid(TOKEN, url + "x", FORM, good)
    assert not RequestValidator(TOKEN).validate(url + "x", dict(FORM), good)


@given(
    st.lists(
        st.tuples(st.text("ABCDEFabc_", min_size=1, max_size=6), st.text(max_size=12)),
        max_size=8,
    ),
    st.sampled_from(URLS),
)
def test_repeated_and_unicode_parameters_like_the_reference(
    pairs: list[tuple[str, str]], url: str
) -> None:
    class Multi(dict[str, list[str]]):
        def getall(self, name: str) -> list[str]:
            return self[name]

    multi = Multi()
    for k, v in pairs:
        multi.setdefault(k, []).append(v)
    assert signature.sign(TOKEN, url, pairs) == RequestValidator(TOKEN).compute_signature(
        url, multi
    )


# ---------------------------------------------------------------------------- TwiML


def test_connect_stream_twiml() -> None:
    xml = connect_stream("wss://a.example.com/media", {"from": "+1555", "note": 'a<b>"&'})
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    assert root.tag == "Response" and stream is not None
    assert stream.get("url") == "wss://a.example.com/media"
    assert [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")] == [
        ("from", "+1555"),
        ("note", 'a<b>"&'),
    ]
    assert stream_url("https://a.example.com/") == "wss://a.example.com/media"
    with pytest.raises(TwimlError, match="https://"):
        stream_url("ftp://a.example.com")
    with pytest.raises(TwimlError, match="Parameter"):
        connect_stream("wss://a/media", {"bad name": "x"})


def test_dial_and_digits_twiml() -> None:
    assert ET.fromstring(dial("+15551234567")).find("Dial").text == "+15551234567"  # type: ignore[union-attr]
    sip = ET.fromstring(dial("sip:desk@pbx.example.com")).find("./Dial/Sip")
    assert sip is not None and sip.text == "sip:desk@pbx.example.com"
    with pytest.raises(TwimlError, match=r"E\.164"):
        dial("5551234")
    root = ET.fromstring(play_digits("1w2#", "wss://a/media", {"resumed": "1"}))
    assert [c.tag for c in root] == ["Play", "Connect"]
    assert root.find("Play").get("digits") == "1w2#"  # type: ignore[union-attr]
    with pytest.raises(TwimlError, match="digits"):
        play_digits("12a", "wss://a/media")


# ---------------------------------------------------------------------------- the webhook


def post(url: str, form: list[tuple[str, str]], sig: str | None) -> HttpRequest:
    target = url.split("agent.example.com", 1)[1]
    target = target[target.index("/") :]
    headers = [("content-type", "application/x-www-form-urlencoded")]
    if sig is not None:
        headers.append(("x-twilio-signature", sig))
    return HttpRequest("POST", target, tuple(headers), urlencode(form).encode())


def test_webhook_answers_a_signed_call_with_its_parameters() -> None:
    hook = TwilioWebhook(
        "https://agent.example.com", TOKEN, parameters={"token": "t0k", "lang": "fr"}
    )
    url = "https://agent.example.com/twiml?tenant=acme"
    sig = RequestValidator(TOKEN).compute_signature(url, dict(FORM))
    response = hook.handle(post(url, FORM, sig))
    assert response.status == 200 and response.content_type == "text/xml"
    stream = ET.fromstring(response.body).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://agent.example.com/media"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {
        "token": "t0k",
        "lang": "fr",
        "from": "+15551230001",
        "to": "+15551230002",
        "direction": "inbound",
    }


def test_webhook_refuses_unsigned_and_wrongly_signed_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    answered: list[tuple[str, str]] = []
    hook = TwilioWebhook(
        "https://agent.example.com",
        TOKEN,
        on_answered_by=lambda sid, by: answered.append((sid, by)) is None,
    )
    amd = [("CallSid", CALL), ("AnsweredBy", "machine_start")]
    for path, form in (("/twiml", FORM), ("/status", FORM), ("/amd", amd)):
        url = "https://agent.example.com" + path
        wrong = RequestValidator("9" * 32).compute_signature(url, dict(form))
        for sig in (None, wrong):
            response = hook.handle(post(url, form, sig))
            assert (response.status, response.body) == (
                403,
                b"invalid or missing X-Twilio-Signature\n",
            )
    assert hook.refused == 6 and answered == []
    out = capsys.readouterr().out
    assert out.count("request refused") == 6
    assert TOKEN not in out
    good = RequestValidator(TOKEN).compute_signature("https://agent.example.com/amd", dict(amd))
    assert hook.handle(post("https://agent.example.com/amd", amd, good)).status == 204
    assert answered == [(CALL, "machine_start")]


def test_webhook_status_callback_is_logged_against_the_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    hook = TwilioWebhook("https://agent.example.com", TOKEN)
    form = [*FORM[:-1], ("CallStatus", "completed"), ("CallDuration", "42")]
    url = "https://agent.example.com/status"
    response = hook.handle(post(url, form, signature.sign(TOKEN, url, form)))
    assert response.status == 204
    line = next(x for x in capsys.readouterr().out.splitlines() if "call status" in x)
    assert CALL in line and "completed" in line and "42" in line


def test_upgrade_signature() -> None:
    hook = TwilioWebhook("https://agent.example.com", TOKEN)
    good = RequestValidator(TOKEN).compute_signature("wss://agent.example.com/media", {})
    assert hook.upgrade_refusal("/media", {"X-Twilio-Signature": good}) == ""
    assert hook.upgrade_refusal("/media", {}) == "unsigned"
    assert hook.upgrade_refusal("/other", {"X-Twilio-Signature": good}) == "bad_signature"


def test_http_exchange_reads_a_request_in_pieces() -> None:
    body = urlencode(FORM).encode()
    raw = (
        b"POST /twiml?x=1 HTTP/1.1\r\nHost: agent.example.com\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"X-Twilio-Signature: abc=\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    ) + body
    ex = HttpExchange()
    for i in range(0, len(raw), 7):
        ex.feed(raw[i : i + 7])
    assert ex.request is not None
    assert (ex.request.method, ex.request.target, ex.request.path) == (
        "POST",
        "/twiml?x=1",
        "/twiml",
    )
    assert ex.request.header("X-Twilio-Signature") == "abc="
    assert ex.request.form() == FORM
    bad = HttpExchange()
    bad.feed(b"NOT HTTP\r\n\r\n")
    assert bad.error is not None and bad.error.status == 400
