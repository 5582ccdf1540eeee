"""``pipeline serve`` against hostile callers on loopback: sockets that never authenticate,
floods of bad messages and bad HTTP, audio faster than real time, unsupported formats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from stages.telephony.serve import run_server
from stages.telephony.twilio import Connected, Media, Start, encode
from tests.stages.telephony.test_serve import assert_echoed, call, http_get, loop_pipeline


async def closed(ws: ClientConnection, timeout: float = 10.0) -> tuple[int | None, str | None]:
    """Read until the server closes ``ws``; its close code and reason."""
    async with asyncio.timeout(timeout):
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ---------------------------------------------------------------------------- (2) the call cap


def test_unauthenticated_sockets_do_not_lock_out_the_real_caller() -> None:
    """With --token-parameter and --max-calls 3, three sockets that never show a token hold
    no call slot: the real caller (whose token comes in 'start') gets through, closing the
    socket that has waited longest; silent ones are closed after the short auth deadline."""

    async def main() -> None:
        options: dict[str, Any] = dict(
            token="s3cret", token_parameter=True, max_calls=3, max_unauthenticated=3
        )
        async with run_server(loop_pipeline(), auth_timeout_s=30.0, **options) as server:
            url = server.url + "/media"
            squatters = [await connect(url) for _ in range(3)]
            assert len(server.front.awaiting_token) == 3
            assert server.active == 0
            status, _, body = await http_get(server.port, "/readyz")
            assert status == 200 and '"ready": true' in body
            rec = await call(url, custom_parameters={"token": "s3cret"})
            assert_echoed(rec)
            assert await closed(squatters[0]) == (1008, "no token shown in time")
            for ws in squatters[1:]:
                await ws.close()
            async with asyncio.timeout(10):
                await server.front.wait_awaiting(0)
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="completed"}') == 1.0
            refused = 'pipeline_connections_refused_total{reason="unauthenticated_evicted"}'
            assert metric(text, refused) == 1.0
        async with run_server(loop_pipeline(), auth_timeout_s=0.2, **options) as server:
            ws = await connect(server.url + "/media")
            await ws.send(encode(Connected()))
            assert await closed(ws) == (1008, "no start message")
            async with asyncio.timeout(10):
                await server.front.wait_awaiting(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="no_start"}') == 1.0

    asyncio.run(main())


# ---------------------------------------------------------------------------- (5) log flooding


class StepClock:
    """The server's wall clock (media police, log limiter), stepped by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` (or nothing) on a bare TCP connection, half-close, read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    return got


@pytest.fixture
def json_logs() -> Any:
    """structlog as pipeline serve --log-format json sets it up, into a buffer; every stdlib
    record (websockets' included, at debug) into the same buffer."""
    import io
    import logging

    import structlog

    from pipeline.report import setup_logging

    config = structlog.get_config()
    buf = io.StringIO()
    setup_logging("json", "debug", stream=buf)
    handler = logging.StreamHandler(buf)
    handler.addFilter(lambda r: r.name != "asyncio")  # "Using selector: ..." at debug
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        structlog.configure(**config)


def test_refused_connections_get_one_json_line_each_no_traceback_no_token(json_logs: Any) -> None:
    """Bare TCP connects, garbage and a malformed HTTP/1.0 request carrying the token in its
    query string: one JSON line each, no traceback, the token nowhere; past the burst they
    are counted and summarised."""
    import json

    token = "tok-3f9a1c77d2"
    clock = StepClock()

    async def main() -> None:
        async with run_server(loop_pipeline(), token=token, clock=clock) as server:
            assert await raw(server.port, b"") == b""  # a bare connect
            await raw(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \r\n")
            await raw(server.port, f"GET /media?token={token} HTTP/1.0\r\n\r\n".encode())
            await raw(server.port, f"POST /x?token={token} HTTP/1.0\r\nbad\r\n\r\n".encode())
            async with asyncio.timeout(10):
                await server.front.wait_refused(4)
            for _ in range(60):  # a scanner: past the burst, counted, not written
                await raw(server.port, b"")
            async with asyncio.timeout(10):
                await server.front.wait_refused(64)
            clock.now += 10.0
            await raw(server.port, b"")
            async with asyncio.timeout(10):
                await server.front.wait_refused(65)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_connections_refused_total{reason="no_request"}') == 62
            assert metric(text, 'pipeline_connections_refused_total{reason="bad_http"}') == 3

    asyncio.run(main())
    out = json_logs.getvalue()
    assert token not in out
    assert "Traceback" not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == len(out.splitlines())  # every line is JSON
    refused = [x for x in lines if x["event"] == "connection refused"]
    reasons = [x["reason"] for x in refused]
    assert reasons == ["no_request"] + ["bad_http"] * 3 + ["no_request"] * 5
    assert "?<redacted>" in refused[2]["error"] and "HTTP/1.0" in refused[2]["error"]
    summary = [x for x in lines if x["event"].startswith("suppressed")]
    assert [x["event"] for x in summary] == ["suppressed 56 similar warnings in the last 10 s"]
    assert summary[0]["like"] == "connection refused: no_request"


def test_a_caller_that_keeps_sending_bad_messages_is_disconnected(json_logs: Any) -> None:
    """A thousand bad messages: a few warnings and one summary-worth counted, the caller
    closed with 1008 after max_bad_messages, outcome bad_messages."""

    async def main() -> None:
        async with run_server(loop_pipeline(), max_bad_messages=20) as server:
            async with connect(server.url + "/media") as ws:
                await ws.send(encode(Connected()))
                await ws.send(encode(Start(stream_sid="MZbad", call_sid="CAbad")))
                with contextlib.suppress(ConnectionClosed):
                    for i in range(1000):
                        await ws.send(f'{{"event": "media", "nonsense": {i}}}')
                assert await closed(ws) == (1008, "too many bad messages")
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="bad_messages"}') == 1.0
            assert metric(text, "pipeline_twilio_bad_messages_total") == 20.0

    asyncio.run(main())
    out = json_logs.getvalue()
    assert out.count('"bad twilio message skipped"') == 5  # the burst; the rest counted
    assert out.count("caller disconnected: too many bad messages") == 1


# ---------------------------------------------------------------------------- (8) formats


@pytest.mark.parametrize(("encoding", "rate"), [("audio/x-alaw", 8000), ("audio/x-mulaw", 16000)])
def test_an_unsupported_start_format_is_refused_at_start(
    json_logs: Any, encoding: str, rate: int
) -> None:
    from stages.telephony.twilio_wire import MediaFormat

    async def main() -> None:
        async with run_server(loop_pipeline()) as server:
            async with connect(server.url + "/media") as ws:
                await ws.send(encode(Connected()))
                fmt = MediaFormat(encoding, rate, 1)
                start = Start(stream_sid="MZfmt", call_sid="CAfmt", media_format=fmt)
                await ws.send(encode(start))
                with contextlib.suppress(ConnectionClosed):
                    for _ in range(200):  # what a carrier sends next: media, ignored
                        await ws.send(encode(Media(stream_sid="MZfmt", payload=b"\xd5" * 160)))
                assert await closed(ws) == (1003, "unsupported media format")
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
            assert metric(text, 'pipeline_calls_total{outcome="refused"}') == 1.0

    asyncio.run(main())
    out = json_logs.getvalue()
    assert "arrived before 'start'" not in out
    lines = [x for x in out.splitlines() if "unsupported format" in x]
    assert len(lines) == 1
    assert f"start.mediaFormat is {encoding} {rate} Hz x1" in lines[0]
    assert "this pipeline takes audio/x-mulaw 8000 Hz x1" in lines[0]


# ---------------------------------------------------------------------------- (6) media clock


def test_media_police_keeps_a_caller_to_real_time() -> None:
    from stages.telephony.police import MediaPolice

    clock = StepClock()
    police = MediaPolice(8000, allowance_s=2.0, disconnect_after_s=10.0, clock=clock)
    # a real-time caller with a 1.5 s burst after a stall: all admitted
    assert all(police.admit(160) for _ in range(50))  # 1 s at t=0: ahead 1 s
    clock.now += 1.5
    assert all(police.admit(160) for _ in range(100))  # 2 s more at t=1.5: ahead 1.5 s
    assert police.dropped_bytes == 0
    # 20x real time: beyond the allowance, dropped and counted
    assert sum(police.admit(160) for _ in range(1000)) == 25  # up to 2 s ahead
    assert police.dropped_messages == 975 and police.dropped_s == 975 * 0.02
    assert police.offender
    # one 6 s message at the start of a call: dropped whole
    fresh = MediaPolice(8000, clock=clock)
    assert not fresh.admit(48000) and fresh.dropped_s == 6.0 and not fresh.offender
    # the server stalls 5 s right after accepting a real-time caller, then reads the 5 s of
    # audio queued meanwhile in one burst: nothing is the caller's fault, nothing dropped
    stalled = MediaPolice(8000, clock=clock)
    stalled.begin()
    clock.now += 5.0
    assert all(stalled.admit(160) for _ in range(250)) and stalled.dropped_bytes == 0


def _appended(emu: Any) -> bytes:
    import base64

    return b"".join(
        base64.b64decode(e["audio"])
        for e in emu.received
        if e.get("type") == "input_audio_buffer.append"
    )


def _phone(emu_url: str) -> Any:
    from tests.stages.telephony.test_serve import phone_pipeline

    return phone_pipeline(emu_url, engine="energy", mode="annotate", turn_detection="none")


async def _call_the_model(
    sid: str, send: Callable[[ClientConnection], Awaitable[None]]
) -> tuple[tuple[int | None, str | None], str, bytes]:
    """One call through the phone pipeline to an emulated model, on a server clock that does
    not move: ``send`` writes the caller's messages after connected and start. The close
    code and reason, the server's metrics, and the caller audio the model received."""
    from stages.realtime import emulator

    clock = StepClock()
    config = emulator.EmulatorConfig(reply="tone", tone_ms=100, pace=0)
    async with emulator.run_emulator(config) as emu:
        async with run_server(_phone(emu.url), clock=clock) as server:
            async with connect(server.url + "/media") as ws:
                await ws.send(encode(Connected()))
                await ws.send(encode(Start(stream_sid=sid, call_sid="CA" + sid)))
                with contextlib.suppress(ConnectionClosed):
                    await send(ws)
                how = await closed(ws)
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
        await emu.wait(lambda e: all(c.closed for c in e.connections), timeout=10)
    return how, text, _appended(emu)


def test_a_caller_sending_twenty_times_real_time_is_policed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 media messages at once (20 s of audio) on a clock that does not move: the model
    gets the first 2 s (the allowance) and nothing more; the caller is cut off (1008) once
    10 s have been dropped; the outcome is policed."""
    pytest.importorskip("stages.realtime.emulator")
    monkeypatch.setenv("SERVE_TEST_KEY", "k")
    audio = bytes(range(0, 250)) * 640  # no 0xFF: the session's own end padding is 0xFF

    async def flood(ws: ClientConnection) -> None:
        for i in range(1000):
            chunk = audio[i * 160 : (i + 1) * 160]
            await ws.send(encode(Media("MZfast", chunk, 20 * i, i + 1, sequence_number=i + 3)))

    how, text, got = asyncio.run(_call_the_model("MZfast", flood))
    assert how == (1008, "audio faster than real time")
    assert got[:16000] == audio[:16000]  # 2 s: the allowance
    assert set(got[16000:]) <= {0xFF}  # then only the session's own end padding
    assert metric(text, 'pipeline_calls_total{outcome="policed"}') == 1.0
    assert metric(text, "pipeline_caller_audio_dropped_seconds_total") == 10.0


def test_six_seconds_of_audio_in_one_message_are_not_forwarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("stages.realtime.emulator")
    from stages.telephony.twilio_wire import Stop

    monkeypatch.setenv("SERVE_TEST_KEY", "k")

    async def one_big_message(ws: ClientConnection) -> None:
        big = encode(Media("MZbig", b"\x55" * 48000, 0, 1, sequence_number=3))
        assert 60_000 < len(big) < 64 * 1024
        await ws.send(big)
        await ws.send(encode(Stop(stream_sid="MZbig", sequence_number=4)))

    how, text, got = asyncio.run(_call_the_model("MZbig", one_big_message))
    assert how[0] == 1000
    assert 0x55 not in got
    assert metric(text, "pipeline_caller_audio_dropped_seconds_total") == 6.0
    assert metric(text, 'pipeline_calls_total{outcome="completed"}') == 1.0


# ---------------------------------------------------------------------------- (7) outcomes


def _client_bytes(url: str) -> tuple[Any, bytes]:
    """A sans-I/O WebSocket client for ``url`` and its opening request: a caller whose frames
    the test writes by hand, and who never answers a ping."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    proto = ClientProtocol(parse_uri(url))
    proto.send_request(proto.connect())
    return proto, b"".join(proto.data_to_send())


def test_outcomes_say_how_each_call_ended() -> None:
    """Hung up without 'stop', a message over the size limit (1009), pings left unanswered
    (keepalive timeout), a normal 'stop': four outcomes, each counted and in the call's line."""
    from websockets.asyncio.client import connect as ws_connect

    async def main() -> None:
        options: dict[str, Any] = dict(max_message_bytes=4096, ping_interval_s=0.2)
        async with run_server(loop_pipeline(), ping_timeout_s=0.2, **options) as server:
            url = server.url + "/media"
            # completed: the simulator sends 'stop'
            assert_echoed(await call(url))
            # caller_hangup: the socket closes with no 'stop'
            async with ws_connect(url) as ws:
                await ws.send(encode(Connected()))
                await ws.send(encode(Start(stream_sid="MZh", call_sid="CAh")))
                media = Media("MZh", b"\x01" * 160, 0, 1, sequence_number=3)
                await ws.send(encode(media))
                async with asyncio.timeout(10):
                    await server.wait_active(1)
            # too_big: a message over max_message_bytes
            async with ws_connect(url, max_size=None) as ws:
                await ws.send(encode(Connected()))
                await ws.send(encode(Start(stream_sid="MZb", call_sid="CAb")))
                await ws.send("x" * 5000)
                assert (await closed(ws))[0] == 1009
            # keepalive_timeout: a caller that never answers a ping
            proto, opening = _client_bytes(url)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(opening)
            proto.receive_data(await reader.readuntil(b"\r\n\r\n"))  # 101
            proto.send_text(encode(Connected()).encode())
            proto.send_text(encode(Start(stream_sid="MZk", call_sid="CAk")).encode())
            writer.write(b"".join(proto.data_to_send()))
            async with asyncio.timeout(10):
                while await reader.read(65536):  # the server pings, gives up, closes
                    pass
            writer.close()
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
        for outcome in ("completed", "caller_hangup", "too_big", "keepalive_timeout"):
            assert metric(text, f'pipeline_calls_total{{outcome="{outcome}"}}') == 1.0, outcome

    asyncio.run(main())


def test_health_stays_up_while_draining() -> None:
    """During a drain /healthz answers 200 with status draining, /readyz 503, and a new call
    is refused with 503 draining; the call in progress finishes."""
    from websockets.exceptions import InvalidStatus

    async def main() -> None:
        async with run_server(loop_pipeline()) as server:
            url = server.url + "/media"
            heard = asyncio.Event()
            running = asyncio.create_task(call(url, audio=bytes(range(256)) * 25, heard=heard))
            async with asyncio.timeout(10):
                await heard.wait()
            drain = asyncio.create_task(server.drain(30.0))
            await asyncio.sleep(0)  # the drain's first step: draining, no await before it
            assert server.draining
            status, _, body = await http_get(server.port, "/healthz")
            assert status == 200 and '"status": "draining"' in body
            status, _, body = await http_get(server.port, "/readyz")
            assert status == 503 and '"reason": "draining"' in body
            with pytest.raises(InvalidStatus) as refused:
                await connect(url)
            assert refused.value.response.status_code == 503
            rec = await running
            assert rec.errors == [] and rec.close_code == 1000
            assert await drain == 0

    asyncio.run(main())


def test_an_unreachable_model_gets_the_caller_a_message_and_a_prompt_hang_up(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from pipeline.frames import AudioFormat
    from stages.wavfile import WavWriter
    from tests.stages.telephony.test_serve import phone_pipeline

    monkeypatch.setenv("SERVE_TEST_KEY", "k")
    message = bytes(range(0, 250, 2)) * 16  # 2,000 bytes: 250 ms of μ-law
    wav = tmp_path / "sorry.wav"
    w = WavWriter(wav, AudioFormat("pcmu", 8000, 1))
    w.write(message)
    w.close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = phone_pipeline(
        f"ws://127.0.0.1:{port}/v1/realtime",
        engine="energy",
        mode="annotate",
        reconnect_attempts=0,
    )

    async def main() -> None:
        async with run_server(p, unavailable_wav=wav) as server:
            rec = await call(server.url + "/media", audio=b"\x01" * 1600)
            _, _, text = await http_get(server.port, "/metrics")
        assert bytes(rec.received_audio) == message
        assert rec.marks == ["unavailable"] and rec.echoed == ["unavailable"]
        assert (rec.close_code, rec.refused) == (1011, "")
        assert metric(text, 'pipeline_calls_total{outcome="model_unreachable"}') == 1.0

    asyncio.run(main())


def test_the_shipped_message_plays_on_a_phone_line() -> None:
    from stages.telephony.serve import UNAVAILABLE_WAV, unavailable_audio

    audio = unavailable_audio(UNAVAILABLE_WAV)
    assert 2 * 8000 < len(audio) < 8 * 8000  # a few seconds of μ-law


def test_a_message_that_cannot_play_on_a_phone_line_is_refused_at_start(tmp_path: Any) -> None:
    from pipeline.errors import ConfigError
    from pipeline.frames import AudioFormat
    from stages.telephony.serve import unavailable_audio
    from stages.wavfile import WavWriter

    wide = tmp_path / "wide.wav"
    w = WavWriter(wide, AudioFormat("pcm16", 16000, 1))
    w.write(b"\x00\x00" * 1600)
    w.close()
    with pytest.raises(ConfigError) as bad:
        unavailable_audio(wide)
    assert str(bad.value.problems[0]).startswith(f"{wide}: pcm16 16000 Hz x1; ")
    assert "give an 8000 Hz mono WAV" in str(bad.value.problems[0])
    with pytest.raises(ConfigError) as missing:
        unavailable_audio(tmp_path / "nope.wav")
    assert str(missing.value.problems[0]).count("nope.wav") == 1
    assert unavailable_audio("") == b"" and unavailable_audio(None) == b""
