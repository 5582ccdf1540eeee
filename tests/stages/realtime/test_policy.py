"""The session's judgement of the service (``stages.realtime.policy``), synchronously."""

from __future__ import annotations

from stages.realtime.policy import AudioBudget, Reconnects


def test_backoff_doubles_to_eight_seconds_then_gives_up() -> None:
    r = Reconnects(attempts=6)
    assert [r.connect_failed() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, None]


def test_a_ready_session_that_closes_without_a_response_counts_as_failing() -> None:
    r = Reconnects(attempts=2)
    assert r.connection_ended(delivered=False) == 0.5
    assert r.connection_ended(delivered=False) == 1.0
    assert r.connection_ended(delivered=False) is None  # a storm ends


def test_a_delivered_response_or_a_recycle_resets_the_count() -> None:
    r = Reconnects(attempts=1)
    assert r.connect_failed() == 0.5
    assert r.connection_ended(delivered=True) == 0.0
    assert r.connection_ended(delivered=False) == 0.5
    assert r.connection_ended(delivered=False, recycled=True) == 0.0
    assert r.failures == 0


def test_audio_budget_allows_bursts_up_to_the_lead() -> None:
    b = AudioBudget(bytes_per_second=48000, max_ahead_s=10.0, start=100.0)
    assert b.add(48000 * 10, now=100.0)  # 10 s at once: at the limit
    assert not b.add(48000, now=100.5)  # 11 s in 0.5 s: 10.5 s ahead
    later = AudioBudget(bytes_per_second=48000, max_ahead_s=10.0, start=0.0)
    for second in range(60):  # a minute of audio in real time, 2 s ahead all along
        assert later.add(48000, now=second - 2.0 if second >= 2 else 0.0)
    assert later.received_s == 60.0
