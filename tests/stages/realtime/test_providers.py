"""The provider pipelines of the repository's ``pipelines.yaml`` and voice names: the ``openai``
pipeline resolves to gpt-realtime at 24 kHz with its key from ``OPENAI_API_KEY`` and runs end to
end against the emulator speaking the OpenAI GA dialect; ``validate`` warns, and never refuses, a
voice the provider does not document."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import soundfile as sf

from pipeline import VirtualClock
from pipeline.cli import main
from pipeline.config import load
from stages.realtime.emulator import EmulatorConfig, run_emulator
from stages.realtime.settings import resolve_settings, voice_warnings

ROOT = Path(__file__).resolve().parents[3]
REPO_FILE = ROOT / "pipelines.yaml"


def test_openai_pipeline_is_gpt_realtime_at_24k_with_the_openai_key() -> None:
    p = load(REPO_FILE, "openai", env={}).check()
    s = resolve_settings(p.stages["agent"].values)
    assert (s.provider, s.dialect, s.api_key_env) == ("openai", "openai", "OPENAI_API_KEY")
    assert s.session.model == "gpt-realtime"
    assert s.url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert (s.session.input_format.rate, s.session.output_format.rate) == (24000, 24000)
    assert p.warnings == ()  # its voice is one OpenAI documents


def test_openai_pipeline_runs_against_the_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-pipeline")

    async def go() -> list[dict[str, object]]:
        clock = VirtualClock()
        async with run_emulator(EmulatorConfig(reply="echo"), "127.0.0.1", 0, clock=clock) as emu:
            p = load(
                REPO_FILE,
                "openai",
                overrides=[
                    f"agent.url={emu.url}",
                    f"reply.path={tmp_path / 'reply.wav'}",
                    f"log.path={tmp_path / 'events.jsonl'}",
                ],
            )
            await p.run_async(clock=clock)
            return list(emu.received)

    received = asyncio.run(go())
    update = received[0]
    assert update["type"] == "session.update"
    session = update["session"]
    assert isinstance(session, dict) and session["type"] == "realtime"  # the GA shape
    assert session["model"] == "gpt-realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "marin"
    info = sf.info(tmp_path / "reply.wav")
    assert info.samplerate == 8000 and info.frames > 8000  # the echoed caller, back on the line


@pytest.mark.parametrize(
    ("voice", "dialect", "expected"),
    [
        ("ara", "xai", ""),
        ("ARA", "xai", ""),  # xAI voice IDs are case-insensitive
        (
            "Aria",
            "xai",
            "voice 'Aria' is not one xAI documents (ara, rex, sal, eve, leo); did you mean "
            "'ara'? It is sent as is, since providers add voices",
        ),
        (
            "my-cloned-voice-7",
            "xai",
            "voice 'my-cloned-voice-7' is not one xAI documents (ara, rex, sal, eve, leo); it is "
            "sent as is, since providers add voices",
        ),
        ("marin", "openai", ""),
        ("shimer", "openai-beta", "did you mean 'shimmer'?"),
    ],
)
def test_voice_warnings(voice: str, dialect: str, expected: str) -> None:
    found = voice_warnings(voice, dialect)  # type: ignore[arg-type]
    if not expected:
        assert found == []
    else:
        (warning,) = found
        assert warning.param == "voice" and expected in warning.message


def test_validate_warns_on_an_undocumented_voice_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["validate", str(REPO_FILE), "grok", "--set", "agent.voice=Aria"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith(f"{REPO_FILE}:")
    assert ": warning: stage 'agent' (realtime_session): voice 'Aria' is not one xAI" in out[0]
    assert "did you mean 'ara'?" in out[0]
    assert out[-1] == f"{REPO_FILE}: ok (1 pipeline)"
