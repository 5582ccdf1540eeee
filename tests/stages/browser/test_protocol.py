"""The playground's wire protocol and play-position map, without I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.browser.protocol import (
    MAX_AUDIO_BYTES,
    MAX_TEXT_BYTES,
    BrowserMessageError,
    Hangup,
    MicAudio,
    PlayedReport,
    PlayMap,
    StartMessage,
    parse_incoming,
)


def test_the_page_messages() -> None:
    assert parse_incoming('{"type": "start", "rate": 48000}', started=False) == StartMessage(48000)
    assert parse_incoming(b"\x01\x00\x02\x00", started=True) == MicAudio(b"\x01\x00\x02\x00")
    assert parse_incoming('{"type":"played","position":480}', started=True) == PlayedReport(480)
    assert parse_incoming(
        '{"type":"played","position":480,"cleared":96}', started=True
    ) == PlayedReport(480, 96)
    assert parse_incoming('{"type":"hangup"}', started=True) == Hangup()


@pytest.mark.parametrize(
    ("raw", "started", "message", "code"),
    [
        (
            b"\x00\x00",
            False,
            "audio (2 bytes) before 'start'; send {type: start, rate} first",
            1008,
        ),
        (b"\x00" * 3, True, "audio message of 3 bytes: pcm16 needs an even number of bytes", 1008),
        (
            b"\x00" * (MAX_AUDIO_BYTES + 2),
            True,
            f"audio message of {MAX_AUDIO_BYTES + 2} bytes; at most {MAX_AUDIO_BYTES}",
            1009,
        ),
        (
            "x" * (MAX_TEXT_BYTES + 1),
            True,
            f"text message of {MAX_TEXT_BYTES + 1} characters; at most {MAX_TEXT_BYTES}",
            1009,
        ),
        ("{nope", True, "text message is not JSON (", 1008),
        ("[1, 2]", True, "a text message must be a JSON object with a 'type' string", 1008),
        (
            '{"type": "dance"}',
            True,
            "unknown message type 'dance' (expected one of start, played, hangup)",
            1008,
        ),
        ('{"type": "start"}', False, "'start' needs the field 'rate'", 1008),
        ('{"type": "start", "rate": 7999}', False, "'start.rate' must be an integer", 1008),
        ('{"type": "start", "rate": "16000"}', False, "'start.rate' must be an integer", 1008),
        ('{"type": "start", "rate": 16000}', True, "'start' arrived twice", 1008),
        ('{"type": "played", "position": 1}', False, "'played' before 'start'", 1008),
        ('{"type": "played", "position": -1}', True, "'played.position' must be an integer", 1008),
        ('{"type": "played", "position": 1, "x": 2}', True, "'played' has no field 'x'", 1008),
        ('{"type": "hangup", "now": true}', True, "'hangup' has no field 'now'", 1008),
    ],
)
def test_messages_that_break_the_protocol(
    raw: str | bytes, started: bool, message: str, code: int
) -> None:
    with pytest.raises(BrowserMessageError) as err:
        parse_incoming(raw, started=started)
    assert str(err.value).startswith(message)
    assert err.value.code == code


def test_play_positions_become_media_time() -> None:
    m = PlayMap(24000)
    assert m.pts_at(0) is None  # nothing sent yet
    m.sent(0.0, 2400)  # 0.0 .. 0.1 s
    m.sent(0.1, 2400)  # 0.1 .. 0.2 s
    m.sent(5.0, 1200)  # a new reply: 5.0 .. 5.05 s
    assert m.pts_at(0) == 0.0
    assert m.pts_at(1200) == pytest.approx(0.05)
    assert m.pts_at(2400) == pytest.approx(0.1)  # a boundary: the end of the first chunk
    assert m.pts_at(3600) == pytest.approx(0.15)
    assert m.pts_at(4800) == pytest.approx(0.2)
    assert m.pts_at(5400) == pytest.approx(5.025)
    assert m.pts_at(6000) == pytest.approx(5.05)
    assert m.pts_at(6001) is None  # never sent


@given(st.lists(st.integers(1, 5000), min_size=1, max_size=40), st.data())
def test_play_map_of_contiguous_audio_is_exact(sizes: list[int], data: st.DataObject) -> None:
    rate = 16000
    m = PlayMap(rate)
    pos = 0
    for n in sizes:
        m.sent(pos / rate, n)
        pos += n
    position = 0
    for p in sorted(data.draw(st.lists(st.integers(0, pos), max_size=20))):
        position = p
        assert m.pts_at(position) == pytest.approx(position / rate, abs=1e-9)
