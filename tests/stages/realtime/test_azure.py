"""Azure OpenAI Realtime: OpenAI's dialect at a deployment URL with an ``api-key`` header. The
settings it resolves to, the emulator's Azure route, the ``openai`` SDK's Azure client against
the emulator, and a pipeline run on it."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from pipeline import VirtualClock
from pipeline.config import load
from pipeline.errors import ConfigError
from stages.realtime.emulator import EmulatorConfig, run_emulator
from stages.realtime.settings import resolve_settings

openai = pytest.importorskip("openai", reason="the openai SDK is a dev dependency")

URL = "https://contoso.openai.azure.com/openai/realtime?api-version=2025-08-28&deployment=voice"


def azure_url(port: int, version: str = "2025-08-28", deployment: str = "gpt-realtime") -> str:
    return f"ws://127.0.0.1:{port}/openai/realtime?api-version={version}&deployment={deployment}"


def test_azure_resolves_to_the_openai_dialect_at_the_deployment_url() -> None:
    s = resolve_settings({"provider": "azure", "url": URL, "input_rate": 24000})
    assert (s.provider, s.dialect, s.api_key_env) == ("azure", "openai", "AZURE_OPENAI_API_KEY")
    assert s.url == URL.replace("https://", "wss://")  # no ?model= added
    assert s.session.model == "voice"  # the deployment
    preview = URL.replace("2025-08-28", "2025-04-01-preview")
    assert resolve_settings({"provider": "azure", "url": preview}).dialect == "openai-beta"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (None, "provider azure needs the deployment's realtime URL, wss://RESOURCE"),
        (URL.replace("&deployment=voice", ""), "it lacks deployment"),
        ("https://contoso.openai.azure.com/openai/v1/chat", "its path is not /openai/realtime"),
    ],
)
def test_azure_without_a_deployment_url_is_refused_with_its_shape(
    url: str | None, says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings({"provider": "azure", **({"url": url} if url else {})})
    assert says in str(err.value)


def test_the_emulator_refuses_azure_without_a_key_or_a_deployment() -> None:
    async def go() -> None:
        async with run_emulator(EmulatorConfig()) as emu:
            with pytest.raises(InvalidStatus) as err:
                async with connect(azure_url(emu.port)):
                    pass
            assert err.value.response.status_code == 401
            assert b"Access denied due to invalid subscription key" in err.value.response.body
            bad = f"ws://127.0.0.1:{emu.port}/openai/realtime?api-version=2025-08-28"
            with pytest.raises(InvalidStatus) as err:
                async with connect(bad, additional_headers={"api-key": "k"}):
                    pass
            assert err.value.response.status_code == 400
            assert b"deployment" in err.value.response.body

    asyncio.run(asyncio.wait_for(go(), 30))


def tone(rate: int, ms: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return np.round(0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


async def _events(conn: Any, until: str) -> list[Any]:
    out = []
    async with asyncio.timeout(10):
        while True:
            event = await conn.recv()
            out.append(event)
            if event.type == until:
                return out


def test_openai_sdks_azure_client_holds_a_full_turn_with_the_emulator() -> None:
    cfg = EmulatorConfig(transcripts=("hello there",), reply_text="You said: {user}")

    async def go() -> None:
        async with run_emulator(cfg) as emu:
            client = openai.AsyncAzureOpenAI(
                api_key="azure-key-test",
                api_version="2025-08-28",
                azure_endpoint=f"http://127.0.0.1:{emu.port}",
                websocket_base_url=f"ws://127.0.0.1:{emu.port}/openai",
            )
            async with client.realtime.connect(model="gpt-realtime") as conn:
                first = await _events(conn, "conversation.created")
                assert [e.type for e in first] == ["session.created", "conversation.created"]
                await conn.session.update(
                    session={
                        "type": "realtime",
                        "audio": {"input": {"turn_detection": None}},
                    }
                )
                await _events(conn, "session.updated")
                await conn.input_audio_buffer.append(
                    audio=base64.b64encode(tone(24000, 300)).decode()
                )
                await conn.input_audio_buffer.commit()
                await conn.response.create()
                events = await _events(conn, "response.done")
                text = "".join(
                    e.delta for e in events if e.type == "response.output_audio_transcript.delta"
                )
                assert text == "You said: hello there"
                assert events[-1].response.status == "completed"
            (c,) = emu.connections
            assert c.dialect == "openai" and c.model == "gpt-realtime"
            assert c.headers["api-key"] == "azure-key-test" and "Authorization" not in c.headers
            assert c.path.startswith("/openai/realtime?")
            assert "api-version=2025-08-28" in c.path and "deployment=gpt-realtime" in c.path

    asyncio.run(asyncio.wait_for(go(), 30))


def test_an_azure_pipeline_runs_against_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-pipeline")
    caller = Path(__file__).resolve().parents[3] / "examples" / "caller_8k_ulaw.wav"

    async def go() -> tuple[list[dict[str, Any]], Any]:
        clock = VirtualClock()
        async with run_emulator(EmulatorConfig(reply="echo"), "127.0.0.1", 0, clock=clock) as emu:
            yaml = tmp_path / "azure.yaml"
            yaml.write_text(
                "version: 1\n"
                "pipelines:\n"
                "  azure:\n"
                "    stages:\n"
                f"      caller: {{type: wav_source, path: {caller}, pace: realtime}}\n"
                "      decode: {type: g711_decode}\n"
                "      up:     {type: resample, rate: 24000}\n"
                "      agent:\n"
                "        type: realtime_session\n"
                "        provider: azure\n"
                f"        url: {json.dumps(azure_url(emu.port))}\n"
                "        voice: marin\n"
                "        input_rate: 24000\n"
                "        output_rate: 24000\n"
                "      down:   {type: resample, rate: 8000}\n"
                f"      reply:  {{type: wav_sink, path: {tmp_path / 'reply.wav'}}}\n"
                "    links:\n"
                "      - caller -> decode -> up -> agent -> down -> reply\n"
            )
            await load(yaml, "azure").run_async(clock=clock)
            return list(emu.received), emu.connections[0]

    received, conn = asyncio.run(go())
    assert conn.dialect == "openai" and conn.headers["api-key"] == "azure-key-pipeline"
    session = received[0]["session"]
    assert received[0]["type"] == "session.update" and session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"  # the deployment
    info = sf.info(tmp_path / "reply.wav")
    assert info.samplerate == 8000 and info.frames > 8000


def test_openai_sdks_beta_azure_client_speaks_beta_on_a_preview_api_version() -> None:
    async def go() -> None:
        async with run_emulator(EmulatorConfig(reply_text="hi")) as emu:
            client = openai.AsyncAzureOpenAI(
                api_key="azure-key-test",
                api_version="2025-04-01-preview",
                azure_endpoint=f"http://127.0.0.1:{emu.port}",
                websocket_base_url=f"ws://127.0.0.1:{emu.port}/openai",
            )
            async with client.beta.realtime.connect(model="gpt-4o-realtime-preview") as conn:
                first = await _events(conn, "session.created")
                assert first[0].session.model == "gpt-4o-realtime-preview"
                await conn.session.update(session={"turn_detection": None})
                await _events(conn, "session.updated")
                await conn.conversation.item.create(
                    item={
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hello"}],
                    }
                )
                await conn.response.create()
                events = await _events(conn, "response.done")
                assert "response.audio.delta" in [e.type for e in events]  # the beta name
            (c,) = emu.connections
            assert c.dialect == "openai-beta" and c.headers["api-key"] == "azure-key-test"

    asyncio.run(asyncio.wait_for(go(), 30))
