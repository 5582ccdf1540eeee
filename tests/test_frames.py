"""Audio frames: the slot-setting constructor behaves exactly as the frozen dataclass's own."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.frames import Audio

formats = st.tuples(
    st.binary(max_size=64),
    st.sampled_from(["pcm16", "pcmu", "pcma"]),
    st.integers(1, 96000),
    st.integers(1, 4),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(formats)
def test_positional_keyword_and_defaults_build_the_same_frame(
    f: tuple[bytes, str, int, int, float],
) -> None:
    data, enc, rate, ch, pts = f
    a = Audio(data, enc, rate, ch, pts)  # type: ignore[arg-type]
    b = Audio(data=data, encoding=enc, rate=rate, channels=ch, pts=pts)  # type: ignore[arg-type]
    assert a == b and hash(a) == hash(b)
    assert (a.data, a.encoding, a.rate, a.channels, a.pts) == (data, enc, rate, ch, pts)
    assert dataclasses.astuple(a) == (data, enc, rate, ch, pts)
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.copy(a) == a
    assert dataclasses.replace(a, pts=pts + 1).pts == pts + 1
    assert Audio(data, enc, rate) == Audio(data, enc, rate, 1, 0.0)  # type: ignore[arg-type]


def test_frames_stay_frozen_and_slotted() -> None:
    a = Audio(b"\0\0", "pcm16", 8000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.rate = 16000  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        a.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(a, "__dict__")


def test_the_signature_and_its_errors_are_the_dataclasses() -> None:
    params = inspect.signature(Audio).parameters
    assert list(params) == ["data", "encoding", "rate", "channels", "pts"]
    assert (params["channels"].default, params["pts"].default) == (1, 0.0)
    with pytest.raises(TypeError, match="missing 2 required positional arguments"):
        Audio(b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'rates'"):
        Audio(b"", "pcm16", rates=8000)  # type: ignore[call-arg]


def test_duration_and_samples_by_format() -> None:
    assert Audio(b"\0" * 320, "pcm16", 8000).duration == 0.02
    assert Audio(b"\0" * 160, "pcmu", 8000).duration == 0.02
    assert Audio(b"\0" * 1280, "pcm16", 16000, 2).duration == 0.02
    assert Audio(b"\0" * 1281, "pcm16", 16000, 2).num_samples == 320
