"""Call control tools (transfer_call, send_dtmf, end_call on an ended call), tool specs with
'with:', answering-machine verdicts as events, and outbound calls, against the strict fake of
Twilio's REST API."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from pipeline.cli import main as cli_main
from pipeline.context import StageContext
from pipeline.errors import ConfigError
from pipeline.frames import Text
from stages.telephony.call_tools import end_call, send_dtmf_via_api, transfer_call
from stages.telephony.control import CallControl, bind_control
from stages.telephony.fake_twilio import FakeTwilio, run_fake_twilio
from stages.telephony.outbound import place_call
from stages.telephony.rest import TwilioRest
from stages.telephony.twilio import (
    Connected,
    Start,
    TwilioCall,
    bind_call,
    encode,
    twilio_source,
)
from stages.tools import load_tool

ACCOUNT = "AC" + "a" * 32
TOKEN = "f" * 32
CALL = "CA" + "1" * 32
STREAM = "MZ" + "2" * 32


async def started_call(params: dict[str, str] | None = None) -> TwilioCall:
    async def send(_text: str) -> None:
        pass

    call = TwilioCall(send)
    await call.receive(encode(Connected()))
    await call.receive(encode(Start(STREAM, CALL, ACCOUNT, custom_parameters=params or {})))
    return call


async def with_call(
    fake: FakeTwilio, tool: Any, *args: Any, **kwargs: Any
) -> tuple[str, TwilioCall]:
    call = await started_call({"lang": "en"})
    async with TwilioRest(ACCOUNT, TOKEN, base_url=fake.url) as rest:
        control = CallControl(rest, "wss://agent.example.com/media", {"token": "t"})
        with bind_call(call), bind_control(control):
            result = await tool(*args, **kwargs)
    return result, call


def test_transfer_call_dials_the_configured_line() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake):
            targets = {"sales": "+15551230003", "desk": "sip:desk@pbx.example.com"}
            text, call = await with_call(fake, transfer_call, "nobody", targets=targets)
            assert text == "unknown destination 'nobody'; choose one of: desk, sales"
            assert fake.requests == [] and not call.ended.is_set()
            text, call = await with_call(fake, transfer_call, "desk", targets=targets)
        assert text == "the call has been transferred to desk; say nothing more"
        assert call.ended.is_set()
        sip = ET.fromstring(fake.calls[CALL].twiml[0]).find("./Dial/Sip")
        assert sip is not None and sip.text == "sip:desk@pbx.example.com"

    asyncio.run(main())


def test_send_dtmf_via_api_plays_digits_then_streams_again() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake):
            text, _ = await with_call(fake, send_dtmf_via_api, "12x")
            assert "not valid" in text and fake.requests == []
            text, _ = await with_call(fake, send_dtmf_via_api, "1A")
            assert text == "Twilio plays 0-9, * and # only; use the in-band route for A-D"
            text, _ = await with_call(fake, send_dtmf_via_api, "1w#")
        assert text == "pressed 1w#; the line reconnects"
        root = ET.fromstring(fake.calls[CALL].twiml[0])
        assert [c.tag for c in root] == ["Play", "Connect"]
        assert root.find("Play").get("digits") == "1w#"  # type: ignore[union-attr]
        stream = root.find("./Connect/Stream")
        assert stream is not None and stream.get("url") == "wss://agent.example.com/media"
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert params == {"lang": "en", "token": "t", "dtmf_sent": "1w#"}

    asyncio.run(main())


def test_end_call_on_a_call_that_already_ended() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        fake.add_call(CALL, status="completed")
        async with run_fake_twilio(fake):
            text, call = await with_call(fake, end_call, "done")
        assert text == "the call had already ended; say nothing more"
        assert [r.status for r in fake.requests] == [400]  # Twilio's 21220
        assert call.ended.is_set()

    asyncio.run(main())


def test_call_tools_without_credentials_say_so() -> None:
    async def main() -> None:
        call = await started_call()
        with (
            bind_call(call),
            bind_control(CallControl(None)),
            pytest.raises(Exception, match="TWILIO_ACCOUNT_SID"),
        ):
            await end_call()

    asyncio.run(main())


def test_with_binds_arguments_the_model_never_sees() -> None:
    ref = "stages.telephony.call_tools:transfer_call"
    tool = load_tool({"ref": ref, "with": {"targets": {"sales": "+15551230003"}}})
    assert list(tool.parameters["properties"]) == ["destination"]
    assert tool.parameters["required"] == ["destination"]
    assert tool.description.startswith("Transfer the caller")
    with pytest.raises(ConfigError, match="'with' sets 'target', which is not a keyword"):
        load_tool({"ref": ref, "with": {"target": {}}})
    with pytest.raises(ConfigError, match=r"'with\.targets' is \['x'\]"):
        load_tool({"ref": ref, "with": {"targets": ["x"]}})


def test_answering_machine_verdicts_are_events() -> None:
    async def main() -> None:
        call = await started_call({"answered_by": "machine_start"})
        assert call.deliver_answered_by("machine_end_beep")
        call.end()
        with bind_call(call):
            frames = [f async for f in twilio_source(ctx=StageContext("caller"))]
        assert frames == [
            Text(
                "[call answered by: machine_start] an answering machine is playing its greeting",
                "system",
            ),
            Text(
                "[call answered by: machine_end_beep] the greeting has ended: leave your "
                "message now, then end the call",
                "system",
            ),
        ]
        assert not call.deliver_answered_by("human")  # the call is over

    asyncio.run(main())


def test_outbound_call_with_machine_detection() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        async with run_fake_twilio(fake), TwilioRest(ACCOUNT, TOKEN, base_url=fake.url) as rest:
            info = await place_call(
                rest,
                "+15551230002",
                "+15551230001",
                "https://agent.example.com",
                pipeline="phone",
                machine_detection="DetectMessageEnd",
            )
        created = fake.calls[info.sid]
        assert info.status == "queued"
        form = fake.requests[0].form
        assert dict(form)["MachineDetection"] == "DetectMessageEnd"
        assert dict(form)["AsyncAmd"] == "true"
        assert dict(form)["AsyncAmdStatusCallback"] == "https://agent.example.com/amd"
        assert dict(form)["StatusCallback"] == "https://agent.example.com/status"
        assert [v for k, v in form if k == "StatusCallbackEvent"] == [
            "initiated", "ringing", "answered", "completed",
        ]  # fmt: skip
        stream = ET.fromstring(created.twiml[0]).find("./Connect/Stream")
        assert stream is not None and stream.get("url") == "wss://agent.example.com/media"
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        assert params == {"pipeline": "phone", "direction": "outbound-api"}

    asyncio.run(main())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() points structlog at this test's captured output: put the old set-up back."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def test_pipeline_call_refuses_bad_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    monkeypatch.delenv("TWILIO_ACCOUNT_SID", raising=False)
    base = [
        "call",
        "+15551230002",
        str(Path(__file__).resolve().parents[3] / "pipelines.yaml"),
        "phone",
        "--public-url",
        "https://a.example.com",
    ]
    assert cli_main([*base, "--from", "5551230001"]) == 2
    assert "'5551230001' is not an E.164 number" in capsys.readouterr().err
    assert cli_main([*base, "--from", "+15551230001"]) == 2
    assert "$TWILIO_ACCOUNT_SID is not set" in capsys.readouterr().err
