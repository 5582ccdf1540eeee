"""`pipeline run --json FILE`: the summary as JSON, for scripts and CI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from pipeline.cli import main

YAML = """\
version: 1
pipelines:
  tone:
    stages:
      tone: {type: signal_source, rate: 8000, seconds: 0.5, pace: fast}
      enc:  {type: g711_encode}
      wav:  {type: wav_sink, path: out/tone.wav}
    links:
      - tone -> enc -> wav
  fails:
    stages:
      src:  {type: "tests.stagekit:source", n: 10}
      bad:  {type: "tests.stagekit:fail_after", after: 2}
      out:  {type: "tests.stagekit:collect"}
    links:
      - src -> bad
      - {chain: "bad -> out", capacity: 4}
"""


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    config = structlog.get_config()
    yield
    structlog.configure(**config)


@pytest.fixture
def yaml_path(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(YAML, encoding="utf-8")
    return path


def test_a_completed_run_writes_every_figure_of_the_summary(yaml_path: Path) -> None:
    out = yaml_path.parent / "results" / "run.json"
    assert main(["run", str(yaml_path), "--no-live", "--json", str(out)]) == 0
    data = json.loads(out.read_text(encoding="utf-8"))
    assert set(data) == {
        "pipeline",
        "status",
        "exit_code",
        "media_s",
        "wall_s",
        "realtime_factor",
        "timed_every",
        "stages",
        "links",
        "events",
        "conversation",
        "error",
    }
    assert (data["pipeline"], data["status"], data["exit_code"], data["error"]) == (
        "tone",
        "completed",
        0,
        None,
    )
    assert data["media_s"] == 0.5
    assert data["realtime_factor"] == pytest.approx(0.5 / data["wall_s"], rel=1e-2)
    stages = {s["id"]: s for s in data["stages"]}
    assert [(s["type"], s["frames_in"], s["frames_out"]) for s in stages.values()] == [
        ("signal_source", 0, 25),
        ("g711_encode", 25, 25),
        ("wav_sink", 25, 0),
    ]
    # every frame counted, one in 16 timed (the 1st and the 17th), the estimate over 25
    assert data["timed_every"] == 16
    assert [(s["timed"], s["timed_every"]) for s in stages.values()] == [(2, 16)] * 3
    assert stages["wav"]["reports"] == {"seconds": 0.5}
    assert [(lk["name"], lk["fused"], lk["sent"]) for lk in data["links"]] == [
        ("tone -> enc", True, 25),
        ("enc -> wav", True, 25),
    ]
    assert not list(out.parent.glob(".*.tmp"))


def test_a_failed_run_writes_the_error_and_its_exit_code(yaml_path: Path) -> None:
    out = yaml_path.parent / "run.json"
    assert main(["run", str(yaml_path), "fails", "--no-live", "--json", str(out)]) == 1
    data = json.loads(out.read_text(encoding="utf-8"))
    assert (data["status"], data["exit_code"]) == ("failed", 1)
    assert data["error"] == {
        "type": "StageError",
        "stage": "bad",
        "message": "stage 'bad' failed: ValueError: boom after 2",
    }
    link = next(lk for lk in data["links"] if lk["name"] == "bad -> out")
    assert (link["fused"], link["capacity"], link["overflow"]) == (False, 4, "block")


def test_json_to_standard_output_moves_the_table_to_stderr(
    yaml_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(yaml_path), "--no-live", "--json", "-"]) == 0
    cap = capsys.readouterr()
    data = json.loads(cap.out)  # nothing but the JSON on stdout
    assert data["stages"][0]["frames_out"] == 25
    assert "pipeline 'tone' completed" in cap.err
