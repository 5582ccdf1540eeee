"""A whole signed phone call: webhook -> TwiML -> signed upgrade -> conversation -> the model
calls end_call -> the (fake) REST API sees the hang-up only after the goodbye's last mark was
echoed. Twilio's side is played by the test over real loopback sockets; the model is the
emulator, scripted to call end_call while it says goodbye."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.graph import Pipeline
from stages.telephony.fake_twilio import FakeTwilio, run_fake_twilio
from stages.telephony.rest import TwilioRest
from stages.telephony.serve import CallServer, run_server
from stages.telephony.twilio import (
    Clear,
    Connected,
    Dtmf,
    Mark,
    OutMedia,
    Start,
    encode,
    parse_outgoing,
)
from stages.telephony.webhook import TwilioWebhook
from tests.phonekit import TONE_MS, http_post, tool_agent

ACCOUNT = "AC" + "a" * 32
TOKEN = "f" * 32
CALL = "CA" + "1" * 32
STREAM = "MZ" + "2" * 32
PUBLIC = "https://agent.example.com"
GOODBYE_MARKS = TONE_MS // 20


def agent_pipeline(*, dtmf_turn: bool = True, say: str = "Goodbye!") -> Pipeline:
    """caller (DTMF as text) -> emulator model that calls end_call while saying goodbye."""
    dtmf = "text" if dtmf_turn else "ignore"
    return tool_agent("phone-end", "end_call", {"name": "end_call", "say": say}, dtmf=dtmf)


async def post(port: int, target: str, form: list[tuple[str, str]], sig: str | None) -> Any:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if sig:
        headers["X-Twilio-Signature"] = sig
    return await http_post(port, target, urlencode(form).encode(), headers)


@dataclass
class Caller:
    """Twilio's side of the media stream, with the echoes of the marks held in the test's
    hands: ``echo_all()`` plays (echoes) what has arrived."""

    ws: ClientConnection
    marks: list[str] = field(default_factory=list)
    echoed: list[tuple[float, str]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    clears: int = 0
    errors: list[str] = field(default_factory=list)
    got_mark: asyncio.Event = field(default_factory=asyncio.Event)
    seq: int = 2

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                msg = parse_outgoing(raw)
                if msg.stream_sid != STREAM:
                    self.errors.append(f"streamSid {msg.stream_sid}")
                match msg:
                    case OutMedia():
                        self.audio += msg.payload
                    case Mark():
                        self.marks.append(msg.name)
                        self.got_mark.set()
                    case Clear():
                        self.clears += 1
        except ConnectionClosed:
            pass

    async def send(self, msg: Any) -> None:
        self.seq += 1
        await self.ws.send(encode(msg))

    async def echo_all(self) -> None:
        for name in self.marks[len(self.echoed) :]:
            self.echoed.append((time.monotonic(), name))
            await self.send(Mark(STREAM, name, self.seq + 1))


@asynccontextmanager
async def phone_server(fake: FakeTwilio) -> AsyncIterator[CallServer]:
    webhook = TwilioWebhook(PUBLIC, TOKEN, parameters={"lang": "en"})
    rest = TwilioRest(ACCOUNT, TOKEN, base_url=fake.url)
    async with run_server(agent_pipeline(), webhook=webhook, rest=rest) as server:
        yield server


def test_signed_call_ends_after_the_goodbye_was_heard() -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        fake.add_call(CALL)
        hung_up = asyncio.Event()
        at_hangup: list[int] = []  # marks echoed when the hang-up came
        caller_box: list[Caller] = []

        def on_update(call: Any, form: dict[str, Any]) -> None:
            if form.get("Status") == "completed":
                at_hangup.append(len(caller_box[0].echoed))
                hung_up.set()

        fake.on_update = on_update
        async with run_fake_twilio(fake), phone_server(fake) as server:
            # 1. the Voice webhook, signed as Twilio signs it
            form = [("CallSid", CALL), ("AccountSid", ACCOUNT), ("From", "+15551230001"),
                    ("To", "+15551230002"), ("Direction", "inbound")]  # fmt: skip
            sig = RequestValidator(TOKEN).compute_signature(PUBLIC + "/twiml", dict(form))
            status, body = await post(server.port, "/twiml", form, sig)
            assert status == 200
            stream = ET.fromstring(body).find("./Connect/Stream")
            assert stream is not None
            url = stream.get("url")
            assert url == "wss://agent.example.com/media"
            params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
            assert params["from"] == "+15551230001" and params["lang"] == "en"
            # 2. the stream's upgrade, signed over the wss:// URL
            up_sig = RequestValidator(TOKEN).compute_signature(url, {})
            ws = await connect(
                server.url + "/media", additional_headers={"X-Twilio-Signature": up_sig}
            )
            caller = Caller(ws)
            caller_box.append(caller)
            reader = asyncio.create_task(caller.read())
            await caller.send(Connected())
            await caller.send(
                Start(STREAM, CALL, ACCOUNT, custom_parameters=params, sequence_number=1)
            )
            # 3. the caller presses 1: the model's turn; it says goodbye and calls end_call
            await caller.send(Dtmf(STREAM, "1", sequence_number=2))
            async with asyncio.timeout(20):
                while len(caller.marks) < GOODBYE_MARKS:
                    caller.got_mark.clear()
                    await caller.got_mark.wait()
                # the goodbye's response is over and end_call runs: it must wait for the echoes
                playback = server._by_call_sid[CALL].playback
                while not (playback.finished and playback.waiters) and not hung_up.is_set():
                    changed = asyncio.ensure_future(playback.next_change())
                    hang = asyncio.ensure_future(hung_up.wait())
                    await asyncio.wait([changed, hang], return_when="FIRST_COMPLETED")
                    changed.cancel()
                    hang.cancel()
                assert not hung_up.is_set()  # nothing heard yet: no hang-up
                assert len(caller.audio) == TONE_MS * 8  # the whole goodbye was sent
                # 4. the caller hears it: echo every mark; the hang-up comes after the last
                await caller.echo_all()
                await hung_up.wait()
                await reader
        assert at_hangup == [GOODBYE_MARKS]
        hang = [r for r in fake.requests if dict(r.form).get("Status") == "completed"]
        assert len(hang) == 1 and hang[0].status == 200
        assert hang[0].path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{CALL}.json"
        assert hang[0].at >= caller.echoed[GOODBYE_MARKS - 1][0]
        assert fake.calls[CALL].status == "completed"
        assert caller.errors == [] and caller.clears == 0
        assert ws.close_code == 1000

    asyncio.run(main())


def test_unsigned_and_wrongly_signed_upgrades_start_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        async with run_fake_twilio(fake), phone_server(fake) as server:
            wrong = RequestValidator("0" * 32).compute_signature(
                PUBLIC.replace("https", "wss") + "/media", {}
            )
            for headers in ({}, {"X-Twilio-Signature": wrong}):
                with pytest.raises(InvalidStatus) as err:
                    await connect(server.url + "/media", additional_headers=headers)
                assert err.value.response.status_code == 403
            status, _ = await post(server.port, "/twiml", [("CallSid", CALL)], None)
            assert status == 403
            assert server.active == 0 and server._calls == 0 and server._live == {}
            text = server.metrics.text().decode()
            assert 'pipeline_connections_refused_total{reason="unsigned"} 1.0' in text
            assert 'pipeline_connections_refused_total{reason="bad_signature"} 1.0' in text
        assert fake.requests == []
        out = capsys.readouterr().out
        refused = [x for x in out.splitlines() if "connection refused" in x]
        assert len(refused) == 2
        assert "reason=unsigned" in refused[0] and "reason=bad_signature" in refused[1]
        assert out.count("request refused: no X-Twilio-Signature") == 1
        assert "call started" not in out and TOKEN not in out

    asyncio.run(main())


def test_answering_machine_verdict_reaches_the_live_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signed POST /amd for a streaming call is handed to that call: its source emits the
    verdict as a system text, which the model answers (here: speaks)."""

    async def main() -> None:
        fake = FakeTwilio(ACCOUNT, TOKEN)
        fake.add_call(CALL)
        async with run_fake_twilio(fake), phone_server(fake) as server:
            url = "wss://agent.example.com/media"
            up_sig = RequestValidator(TOKEN).compute_signature(url, {})
            ws = await connect(
                server.url + "/media", additional_headers={"X-Twilio-Signature": up_sig}
            )
            caller = Caller(ws)
            reader = asyncio.create_task(caller.read())
            await caller.send(Connected())
            await caller.send(Start(STREAM, CALL, ACCOUNT, sequence_number=1))
            async with asyncio.timeout(20):
                await server.wait_active(1)
                while CALL not in server._by_call_sid:
                    await asyncio.sleep(0)  # the call registers once 'start' is read
                assert caller.marks == []  # nothing said yet
                form = [("CallSid", CALL), ("AnsweredBy", "machine_end_beep")]
                sig = RequestValidator(TOKEN).compute_signature(PUBLIC + "/amd", dict(form))
                status, _ = await post(server.port, "/amd", form, sig)
                assert status == 204
                caller.got_mark.clear()
                await caller.got_mark.wait()  # the model answered the verdict
            await ws.close()
            await reader
        out = capsys.readouterr().out
        assert "delivered=True" in out and "answered_by=machine_end_beep" in out

    asyncio.run(main())
