"""The log limiter: its pure core stepped with a fake clock, and its summaries."""

from __future__ import annotations

from typing import Any

from pipeline.loglimit import LimitedLog, LogLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append(("warning", event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self.lines.append(("info", event, kw))


def test_burst_then_counted_then_summarised_after_the_window() -> None:
    clock = Clock()
    limit = LogLimit(burst=3, window_s=10.0, clock=clock)
    got = [limit.admit("bad") for _ in range(1000)]
    assert got[:3] == [(True, 0)] * 3
    assert set(got[3:]) == {(False, 0)}
    assert limit.admit("other") == (True, 0)  # keys are limited apart
    clock.now = 9.999
    assert limit.admit("bad") == (False, 0)
    clock.now = 10.0
    assert limit.admit("bad") == (True, 998)  # 997 + the one at 9.999
    assert limit.admit("bad") == (True, 0)


def test_limited_log_writes_one_summary_line_per_window() -> None:
    clock = Clock()
    out = Lines()
    log = LimitedLog(out, LogLimit(burst=2, window_s=10.0, clock=clock))
    for i in range(952):
        log.warning("bad twilio message skipped", n=i)
    assert [e for _, e, _ in out.lines] == ["bad twilio message skipped"] * 2
    clock.now = 12.0
    log.warning("bad twilio message skipped", n=952)
    assert out.lines[2] == (
        "warning",
        "suppressed 950 similar warnings in the last 10 s",
        {"like": "bad twilio message skipped", "suppressed": 950, "window_s": 10.0},
    )
    assert out.lines[3][2] == {"n": 952}
    for _ in range(5):
        log.info("x", key="k")
    log.flush()
    assert out.lines[-1][1] == "suppressed 3 similar warnings in the last 10 s"
    log.flush()
    assert out.lines[-1][1] == "suppressed 3 similar warnings in the last 10 s"  # once only
