"""The playground server over loopback, driven by a WebSocket client standing in for the page:
the page's files, the protocol, security (token, origin, caps) and one pipeline per tab."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipeline.cli import main as cli_main
from pipeline.context import PLAYED, Bus, Played, StageContext
from pipeline.frames import Audio, Frame, Interrupt, Transcript
from pipeline.graph import Pipeline
from stages.browser import BrowserConnection, bind_connection, browser_sink
from stages.browser.cli import token_for
from stages.browser.server import is_loopback, run_playground

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 10


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() points structlog at this test's captured output: put the old set-up back."""
    config = structlog.get_config()
    yield
    structlog.configure(**config)


def echo_pipeline(rate: int = 16000) -> Pipeline:
    """The tab hears itself: browser_source -> browser_sink."""
    p = Pipeline("echo", "the microphone back to the speaker")
    p.add("mic", "browser_source", rate=rate)
    p.add("speaker", "browser_sink")
    p.link("mic", "speaker")
    return p


async def http_get(
    port: int, path: str, host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(re.split(r":\s*", line, maxsplit=1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, body


async def open_tab(url: str, rate: int = 16000) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(url)
    hello = json.loads(await ws.recv())
    await ws.send(json.dumps({"type": "start", "rate": rate}))
    return ws, hello


async def audio_back(ws: ClientConnection, nbytes: int) -> bytes:
    """The binary messages received until ``nbytes`` of audio came back (JSON ones skipped)."""
    got = b""
    while len(got) < nbytes:
        msg = await ws.recv()
        if isinstance(msg, bytes):
            got += msg
    return got


def tone(n: int, rate: int = 16000) -> bytes:
    t = np.arange(n) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def test_the_page_is_served_from_the_package() -> None:
    async def main() -> None:
        async with run_playground(echo_pipeline()) as server:
            status, headers, body = await http_get(server.port, "/")
            assert status == 200
            assert headers["content-type"] == "text/html; charset=utf-8"
            assert b'<script type="module" src="app.js">' in body
            assert headers["content-security-policy"].startswith("default-src 'self'")
            assert headers["referrer-policy"] == "no-referrer"
            for path in ("/app.js", "/graph.js", "/capture-worklet.js", "/playback-worklet.js"):
                status, headers, body = await http_get(server.port, path)
                assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
            status, headers, _ = await http_get(server.port, "/style.css")
            assert headers["content-type"] == "text/css; charset=utf-8"
            status, _, body = await http_get(server.port, "/../pyproject.toml")
            assert (status, body) == (404, b"not found: /../pyproject.toml\n")
            assert (await http_get(server.port, "/", host="localhost"))[0] == 200
            # a site whose name resolves to 127.0.0.1 (DNS rebinding) is not this server
            status, _, body = await http_get(server.port, "/", host="evil.example")
            assert (status, body) == (403, b"this server answers to localhost and 127.0.0.1 only\n")

    asyncio.run(main())


def test_a_tab_hears_itself_sample_exact_and_hangs_up() -> None:
    audio = tone(1600)  # 100 ms

    async def main() -> None:
        async with run_playground(echo_pipeline()) as server:
            ws, hello = await open_tab(server.url.replace("http", "ws") + "ws")
            assert hello["pipeline"] == "echo"
            assert (hello["capture_rate"], hello["playback_rate"]) == (16000, 16000)
            assert hello["graph"]["nodes"] == [
                {"id": "mic", "type": "browser_source"},
                {"id": "speaker", "type": "browser_sink"},
            ]
            for i in range(0, len(audio), 640):
                await ws.send(audio[i : i + 640])
            async with asyncio.timeout(TIMEOUT_S):
                assert await audio_back(ws, len(audio)) == audio
                await ws.send(json.dumps({"type": "hangup"}))
                messages = [json.loads(m) async for m in ws if isinstance(m, str)]
            assert messages[-1] == {"type": "bye", "status": "completed"}
            assert ws.close_code == 1000
            async with asyncio.timeout(TIMEOUT_S):
                await server.wait_active(0)
            summary = server.summaries[0]
            assert summary.status == "completed"
            assert summary.stage("speaker").reports["samples_sent"] == 1600

    asyncio.run(main())


def test_the_source_resamples_when_the_page_cannot_capture_at_its_rate() -> None:
    async def main() -> None:
        async with run_playground(echo_pipeline(16000)) as server:
            ws, _ = await open_tab(server.url.replace("http", "ws") + "ws", rate=48000)
            for _ in range(10):
                await ws.send(tone(960, 48000))  # 20 ms at 48 kHz
            async with asyncio.timeout(TIMEOUT_S):
                back = np.frombuffer(await audio_back(ws, 2 * 2000), dtype="<i2")
            # 440 Hz at 16 kHz: about 36 samples a period, far from silence once the filter
            # has filled
            assert np.abs(back[400:2000]).max() > 6000
            await ws.close()

    asyncio.run(main())


def test_a_broken_tab_beside_a_healthy_one() -> None:
    async def main() -> None:
        async with run_playground(echo_pipeline()) as server:
            url = server.url.replace("http", "ws") + "ws"
            good, _ = await open_tab(url)
            cases: list[tuple[str | bytes, int, bool]] = [
                ("{nope", 1008, True),
                (b"\x00" * 3, 1008, True),
                (b"\x00" * 60_000, 1009, True),
                (json.dumps({"type": "played", "position": -5}), 1008, True),
                (b"\x00\x00", 1008, False),  # audio before start
            ]
            for raw, code, start in cases:
                ws = await connect(url)
                await ws.recv()  # hello
                if start:
                    await ws.send(json.dumps({"type": "start", "rate": 16000}))
                await ws.send(raw)
                async with asyncio.timeout(TIMEOUT_S):
                    with pytest.raises(ConnectionClosed):
                        while True:
                            await ws.recv()
                assert ws.close_code == code, raw[:20]
            audio = tone(320)
            await good.send(audio)
            async with asyncio.timeout(TIMEOUT_S):
                assert await audio_back(good, len(audio)) == audio
                await server.wait_active(1)
            await good.close()

    asyncio.run(main())


def test_token_origin_and_the_tab_cap() -> None:
    async def main() -> None:
        async with run_playground(echo_pipeline(), token="s3cret", max_sessions=1) as server:
            ws_url = server.url.replace("http", "ws") + "ws"
            assert server.page_url() == server.url + "?token=s3cret"
            assert (await http_get(server.port, "/"))[0] == 401
            assert (await http_get(server.port, "/?token=nope"))[0] == 403
            assert (await http_get(server.port, "/?token=s3cret"))[0] == 200
            assert (await http_get(server.port, "/app.js"))[0] == 200  # the code is no secret
            for url, status in ((ws_url, 401), (ws_url + "?token=nope", 403)):
                with pytest.raises(InvalidStatus) as err:
                    await connect(url)
                assert err.value.response.status_code == status
            with pytest.raises(InvalidStatus) as err:
                await connect(ws_url + "?token=s3cret", origin="http://evil.example")  # type: ignore[arg-type]
            assert err.value.response.status_code == 403
            host = f"127.0.0.1:{server.port}"
            first, _ = await open_tab(f"{ws_url}?token=s3cret")
            async with asyncio.timeout(TIMEOUT_S):
                await server.wait_active(1)
            with pytest.raises(InvalidStatus) as err:
                await connect(f"{ws_url}?token=s3cret", origin=f"http://{host}")  # type: ignore[arg-type]
            assert err.value.response.status_code == 503
            await first.close()

    asyncio.run(main())


def test_loopback_hosts_and_tokens() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.5", "::", "example.org"]))
    assert token_for("127.0.0.1", None) is None
    assert token_for("127.0.0.1", "mine") == "mine"
    assert token_for("0.0.0.0", "mine") == "mine"
    made = token_for("0.0.0.0", None)
    assert made is not None and len(made) >= 24 and made != token_for("0.0.0.0", None)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_the_command_serves_the_page_until_stopped(sig: int, code: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "playground", "pipelines.yaml", "browser",
         "--port", "0", "--log-format", "json"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if line.startswith("pipeline playground: open "):
                url = line.split()[-1]
                break
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url), url
        port = int(url.rsplit(":", 1)[1].strip("/"))
        status, headers, _ = asyncio.run(http_get(port, "/"))
        assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
        proc.send_signal(sig)
        assert proc.wait(TIMEOUT_S) == code
    finally:
        proc.kill()
        proc.wait()


def test_the_sink_reports_what_was_played_and_clears_on_barge_in() -> None:
    sent: list[str | bytes] = []
    played: list[Played] = []

    async def send(message: str | bytes) -> None:
        sent.append(message)

    conn = BrowserConnection(send)
    bus = Bus()
    bus.subscribe(PLAYED, played.append)
    ctx = StageContext("speaker", "browser_sink", bus=bus)
    heard = asyncio.Event()

    async def frames() -> AsyncIterator[Frame]:
        yield Audio(tone(2400, 24000), "pcm16", 24000, 1, 0.0)
        yield Audio(tone(2400, 24000), "pcm16", 24000, 1, 0.1)
        await conn.receive('{"type": "start", "rate": 16000}')
        await conn.receive('{"type": "played", "position": 3600}')
        await heard.wait()
        yield Interrupt(pts=0.2)
        yield Transcript("assistant", "hello", final=True, item_id="item_1")

    async def main() -> None:
        with bind_connection(conn):
            gen = browser_sink(frames(), ctx=ctx)
            bus.subscribe(PLAYED, lambda _: heard.set())
            async for _ in gen:
                pass

    asyncio.run(main())
    assert played == [Played("speaker", pytest.approx(0.15))]
    assert [type(m) for m in sent] == [bytes, bytes, str, str, str]
    assert json.loads(sent[2]) == {"type": "clear"}
    assert json.loads(sent[3])["event"] == {
        "type": "interrupt",
        "pts": 0.2,
        "stage": "",
        "response_id": "",
    }
    assert json.loads(sent[4])["event"]["text"] == "hello"
    assert ctx.reports == {"clears_sent": 1, "samples_sent": 4800}


def test_validate_knows_the_browser_formats(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "pipelines:\n"
        "  direct:\n"
        "    stages:\n"
        "      mic: {type: browser_source, rate: 16000}\n"
        "      enc: {type: g711_encode, law: ulaw}\n"
        "      speaker: {type: browser_sink}\n"
        "    links:\n"
        "      - mic -> enc -> speaker\n"
        "  narrow:\n"
        "    stages:\n"
        "      mic: {type: browser_source, rate: 8000}\n"
        "      enc: {type: g711_encode, law: ulaw}\n"
        "      speaker: {type: browser_sink}\n"
        "    links:\n"
        "      - mic -> enc -> speaker\n"
    )
    assert cli_main(["validate", str(tmp_path / "p.yaml")]) == 2
    out = capsys.readouterr().out
    assert "stage 'enc' (g711_encode) gets 16000 Hz audio; G.711 needs 8000 Hz" in out
    assert "gets pcmu 8000 Hz audio; the browser plays pcm16" in out
    assert "add {type: g711_decode} before it" in out


def test_playground_refuses_a_pipeline_without_a_browser(capsys: Any) -> None:
    assert cli_main(["playground", str(ROOT / "pipelines.yaml"), "tone"]) == 2
    err = capsys.readouterr().err
    assert "pipeline 'tone' has no browser_source or browser_sink" in err


def test_the_sink_passes_the_conformance_checks() -> None:
    from pipeline.testing import check_stage

    sent: list[str | bytes] = []

    async def send(message: str | bytes) -> None:
        sent.append(message)

    conn = BrowserConnection(send)
    chunk = tone(480, 24000)
    frames: list[Frame] = [
        Audio(chunk, "pcm16", 24000, 1, 0.0),
        Interrupt(pts=0.02),
        Audio(chunk, "pcm16", 24000, 1, 0.02),
        Transcript("assistant", "hi", final=True),
    ]
    with bind_connection(conn):
        assert check_stage("browser_sink", frames) == []
    assert sent.count(chunk) >= 2
    assert '{"type":"clear"}' in sent
