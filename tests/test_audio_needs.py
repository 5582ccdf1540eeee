"""A stage declares the audio it takes on ``@stage``; validate reports other audio at its link."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog

from pipeline import Audio, Frame, stage
from pipeline.cli import main
from pipeline.errors import StageError
from pipeline.spec import REGISTRY, AudioNeeds, builtin_names
from pipeline.testing import check_stage, run_stage

# The README's example, as written there.
MYSTAGES = '''\
from collections.abc import AsyncIterator
from pipeline import Audio, Frame, stage


@stage("gain", accepts=(Audio,), emits=(Audio,), passthrough=True, encodings=("pcm16",))
async def gain(frames: AsyncIterator[Frame], *, db: float = 0.0) -> AsyncIterator[Frame]:
    """Scale pcm16 audio.

    Parameters:
        db: gain in decibels
    """
    k = 10 ** (db / 20)
    async for f in frames:
        yield Audio.from_samples(f.samples() * k, f.rate, f.pts) if isinstance(f, Audio) else f
'''

YAML = """\
version: 1
pipelines:
  louder:
    stages:
      caller: {type: signal_source, rate: 8000, seconds: 0.2, encoding: ENCODING}
      louder: {type: "mystages:gain", db: -6}
      out: {type: wav_sink, path: out.wav}
    links:
      - caller -> louder
      - louder -> out
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "mystages.py").write_text(MYSTAGES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    builtin_names()  # loaded before the snapshot, so restoring it keeps them
    before = dict(REGISTRY)
    yield tmp_path
    # the example registers "gain" when imported: leave the built-in catalogue as it was
    REGISTRY.clear()
    REGISTRY.update(before)
    sys.modules.pop("mystages", None)


def test_mulaw_into_the_readme_gain_is_found_by_validate_at_the_link(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("p.yaml").write_text(YAML.replace("ENCODING", "pcmu"), encoding="utf-8")
    assert main(["validate", "p.yaml"]) == 2
    assert capsys.readouterr().out.splitlines() == [
        "p.yaml:9:9: link 'caller -> louder': stage 'louder' (gain) takes pcm16 audio, "
        "gets pcmu 8000 Hz; add {type: g711_decode} before it",
        "1 problem found",
    ]
    assert main(["run", "p.yaml"]) == 2
    assert not Path("out.wav").exists()
    Path("p.yaml").write_text(YAML.replace("ENCODING", "pcm16"), encoding="utf-8")
    assert main(["validate", "p.yaml"]) == 0


def test_the_fix_names_every_stage_to_add() -> None:
    from pipeline.frames import AudioFormat

    pcm16 = AudioNeeds(encodings=("pcm16",), rates=(16000,))
    assert pcm16.problem(AudioFormat("pcmu", 8000)) == (
        "takes pcm16 audio at 16000 Hz, gets pcmu 8000 Hz",
        "add {type: g711_decode} then {type: resample, rate: 16000} before it",
    )
    assert pcm16.problem(AudioFormat("pcm16", 16000)) is None
    ulaw = AudioNeeds(encodings=("pcmu",), rates=(8000,))
    assert ulaw.problem(AudioFormat("pcm16", 24000)) == (
        "takes pcmu audio at 8000 Hz, gets pcm16 24000 Hz",
        "add {type: resample, rate: 8000} then {type: g711_encode, law: ulaw} before it",
    )
    rates = AudioNeeds(rates=(8000, 16000), channels=(1,))
    assert rates.problem(AudioFormat("pcm16", 24000, 2)) == (
        "takes any audio at 8000 or 16000 Hz, mono, gets pcm16 24000 Hz x2",
        "add {type: resample, rate: 16000} before it; it needs mono audio",
    )


@stage("needs_pcm16_test", accepts=(Audio,), emits=(Audio,), encodings=("pcm16",), register=False)
async def needs_pcm16(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Pass pcm16 audio on."""
    async for f in frames:
        if isinstance(f, Audio):
            f.samples()
        yield f


def test_audio_unknown_before_running_stops_the_run_with_the_same_message() -> None:
    pcm = Audio.from_samples(np.zeros(160), 8000, 0.0)
    assert len(run_stage(needs_pcm16, [pcm])) == 1
    ulaw = Audio(b"\xff" * 160, "pcmu", 8000, 1, 0.0)
    with pytest.raises(StageError) as info:
        run_stage(needs_pcm16, [pcm, ulaw])
    assert str(info.value) == (
        "stage 'needs_pcm16_test' failed: takes pcm16 audio, gets pcmu 8000 Hz; "
        "add {type: g711_decode} before it"
    )
    check_stage(needs_pcm16, [pcm, pcm])


def test_the_catalogue_shows_what_a_stage_takes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stages", "mystages:gain"]) == 0
    assert "(takes pcm16 audio)" in capsys.readouterr().out
    assert textwrap.dedent(MYSTAGES) in (Path(__file__).parents[1] / "README.md").read_text(
        encoding="utf-8"
    )
