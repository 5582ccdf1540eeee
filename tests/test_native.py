"""The compiled kernels: built where their sources are, and make_audio's frames are Audio's."""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline import native
from pipeline.frames import Audio, _make_audio_pure, make_audio

ROOT = Path(__file__).resolve().parents[1]
MAKERS = [pytest.param(_make_audio_pure, id="pure"), pytest.param(make_audio, id="native")]


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI builds every kernel")
def test_every_kernel_in_the_tree_is_built_in_ci() -> None:
    missing = [m for m in native.KERNELS if native.load(m) is None]
    assert not missing, f"not compiled: {missing}"


def test_pure_python_ignores_the_built_kernels() -> None:
    code = "from pipeline import native; print(sorted(native.status().values()))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PIPELINE_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == str([False] * len(native.KERNELS))


@pytest.mark.parametrize("make", MAKERS)
@given(
    data=st.binary(max_size=64),
    encoding=st.sampled_from(["pcm16", "pcmu", "pcma"]),
    rate=st.integers(1, 192000),
    channels=st.integers(1, 8),
    pts=st.floats(allow_nan=False),
)
def test_make_audio_is_the_constructor(
    make: object, data: bytes, encoding: str, rate: int, channels: int, pts: float
) -> None:
    a = make(data, encoding, rate, channels, pts)  # type: ignore[operator]
    b = Audio(data, encoding, rate, channels, pts)  # type: ignore[arg-type]
    assert type(a) is Audio
    assert a == b and hash(a) == hash(b) and repr(a) == repr(b)
    assert (a.data, a.encoding, a.rate, a.channels, a.pts) == (data, encoding, rate, channels, pts)
    assert a.data is data
    assert dataclasses.replace(a, rate=rate + 1) == Audio(data, encoding, rate + 1, channels, pts)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(a)) == a and copy.copy(a) == a


@pytest.mark.parametrize("make", MAKERS)
def test_make_audio_frames_are_frozen_tracked_and_freed(make: object) -> None:
    data = bytes(320)
    before = sys.getrefcount(data)
    frames = [make(data, "pcm16", 16000, 1, 0.0) for _ in range(100)]  # type: ignore[operator]
    assert sys.getrefcount(data) == before + 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        frames[0].rate = 8000  # type: ignore[misc]
    assert gc.is_tracked(frames[0])
    del frames
    assert sys.getrefcount(data) == before


@pytest.mark.parametrize("make", MAKERS)
def test_make_audio_counts_its_arguments(make: object) -> None:
    # the kernel says how many it takes; the pure one is a Python function and says so its way
    match = (
        "5 arguments" if make is not _make_audio_pure and native.load("pipeline._cframes") else ""
    )
    with pytest.raises(TypeError, match=match):
        make(b"", "pcm16", 8000, 1)  # type: ignore[operator]


def test_the_kernel_binds_only_object_slots() -> None:
    cframes = native.load("pipeline._cframes")
    if cframes is None:
        pytest.skip("pipeline._cframes is not built here")

    @dataclasses.dataclass(slots=True)
    class Other:
        a: int

    names = ("data", "encoding", "rate", "channels", "pts")
    with pytest.raises(TypeError, match="has no slot"):
        cframes.bind(Other, names)
    with pytest.raises(TypeError, match="is not a slot"):
        cframes.bind(Audio, ("data", "encoding", "rate", "channels", "format"))
    with pytest.raises(ValueError, match="5 slot names"):
        cframes.bind(Audio, names[:4])
    # a failed bind leaves the binding as it was
    assert make_audio(b"x", "pcmu", 8000, 1, 0.0) == Audio(b"x", "pcmu", 8000, 1, 0.0)
