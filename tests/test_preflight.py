"""What a run needs from the machine (an API key) is checked as it starts, not call by call:
`pipeline run` and `pipeline serve` exit 2 with one line, and no output file is created."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KEY_LINE = (
    "environment variable XAI_API_KEY is not set (or blank), and every session with provider "
    "xai needs the API key there; export XAI_API_KEY=... (or name another variable with "
    "api_key_env)"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pipelines.yaml", tmp_path)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def _pipeline(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("{")]


def _located(line: str, project: Path) -> str:
    """The line with its FILE:LINE:COL checked to point at the `api_key_env:` value."""
    file, row, col, rest = line.split(":", 3)
    text = (project / file).read_text(encoding="utf-8").splitlines()[int(row) - 1]
    assert text[int(col) - 1 :].startswith("XAI_API_KEY"), text
    return f"{file}:LINE:COL:{rest}"


def test_run_without_the_key_exits_2_with_one_line_and_writes_nothing(project: Path) -> None:
    r = _pipeline(["run", "pipelines.yaml", "grok", "--no-live"], project)
    assert r.returncode == 2
    (line,) = _lines(r.stderr)
    assert _located(line, project) == (
        f"pipelines.yaml:LINE:COL: stage 'agent' (realtime_session): {KEY_LINE}"
    )
    assert r.stdout == ""
    assert not (project / "out").exists()  # no empty grok-reply.wav, no empty event log


def test_validate_does_not_need_the_key(project: Path) -> None:
    r = _pipeline(["validate", "pipelines.yaml", "grok"], project)
    assert (r.returncode, r.stdout) == (0, "pipelines.yaml: ok (1 pipeline)\n")


def test_serve_without_the_key_exits_2_with_one_line_before_listening(project: Path) -> None:
    r = _pipeline(["serve", "pipelines.yaml", "phone", "--port", "0"], project)
    assert r.returncode == 2
    (line,) = _lines(r.stderr)
    assert _located(line, project) == (
        f"pipelines.yaml:LINE:COL: stage 'agent' (realtime_session): {KEY_LINE}"
    )
    assert "listening" not in r.stderr


def test_a_blank_key_is_no_key(project: Path) -> None:
    r = _pipeline(["run", "pipelines.yaml", "grok", "--no-live"], project, XAI_API_KEY="  ")
    assert r.returncode == 2
    assert KEY_LINE in r.stderr
