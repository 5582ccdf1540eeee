"""``append_ms``: the session's input audio in larger appends (fewer messages per call)."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.frames import Audio, AudioFormat
from stages.realtime.buffers import AudioBatcher
from stages.realtime.settings import resolve_settings

ULAW = AudioFormat("pcmu", 8000)


def frames(n: int) -> list[Audio]:
    return [Audio(bytes([i]) * 160, "pcmu", 8000, pts=i * 0.02) for i in range(n)]


@pytest.mark.parametrize("min_ms, sizes", [(20, [160] * 7), (60, [480, 480]), (100, [800])])
def test_appends_join_frames_up_to_append_ms(min_ms: int, sizes: list[int]) -> None:
    b = AudioBatcher(ULAW, fill_gaps=False, min_ms=min_ms)
    out = [piece for f in frames(7) for piece in b.push(f)]
    assert [len(data) for _, data in out] == sizes
    rest = b.flush()  # speech stopped: what is left goes at once
    assert sum(len(d) for _, d in out + rest) == 7 * 160
    assert b"".join(d for _, d in out + rest) == b"".join(f.data for f in frames(7))
    assert [pts for pts, _ in out] == pytest.approx([i * min_ms / 1000 for i in range(len(out))])


def test_append_ms_is_checked() -> None:
    base = {"provider": "emulator", "input_format": "pcmu", "output_format": "pcmu"}
    assert resolve_settings({**base, "append_ms": 60}).append_ms == 60
    assert resolve_settings(base).append_ms == 20
    with pytest.raises(ConfigError, match=r"'append_ms' must be 20 to 100 .* got 200"):
        resolve_settings({**base, "append_ms": 200})
