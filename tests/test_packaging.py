"""An ordinary install works: the wheel holds everything the default pipeline needs (the Silero
VAD model included), and that wheel, installed on its own, runs the default pipeline from a
folder holding only the user's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import pipeline, stages; print(pipeline.__file__, stages.__file__)"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    # build from a copy, so no build/ or egg-info lands in the working tree
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "out", "*.egg-info", "build", "__pycache__", "*.so"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (whl,) = out.glob("pipeline-*.whl")
    yield whl


def test_wheel_holds_the_vad_model_and_its_licence(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "stages/vad/data/silero_vad.onnx" in names
    assert "stages/vad/data/SILERO_VAD_LICENSE" in names
    assert "pipeline/py.typed" in names and "stages/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_wheel_holds_every_compiled_kernel(wheel: Path) -> None:
    """Each C kernel is compiled into the wheel (a platform wheel, then), beside its source."""
    from pipeline import native

    names = set(zipfile.ZipFile(wheel).namelist())
    for module in native.KERNELS:
        stem = module.replace(".", "/")
        assert (ROOT / (stem + ".c")).is_file(), module
        assert [n for n in names if n.startswith(stem + ".") and n.endswith(".so")], module
    assert "-none-any" not in wheel.name


def test_installed_wheel_runs_the_default_pipeline(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    user = tmp_path / "project"
    user.mkdir()
    shutil.copy(ROOT / "pipelines.yaml", user)
    shutil.copytree(ROOT / "examples", user / "examples")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = str(site)
    env["CALLER_PACE"] = "fast"
    where = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=user, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout
    run = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "pipelines.yaml"],
        cwd=user, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    audio, rate = sf.read(user / "out" / "reply.wav", dtype="int16")
    assert rate == 8000 and len(audio) > 8000
