"""The call-frame breakdown benchmark runs and covers every piece it names (figures are
measured in benchmarks, never asserted)."""

from __future__ import annotations

from benchmarks import callframe


def test_breakdown_rows() -> None:
    rows = callframe.pieces(inner=20, repeat=3)
    pieces = {(r["piece"], r["setting"]) for r in rows}
    assert {p for p, _ in pieces} == {
        "ws in", "twilio parse", "gate", "session append", "reply delta", "sink", "mark echo",
        "task hop",
    }  # fmt: skip
    assert ("session append", "every 60 ms") in pieces and (
        "sink",
        "media + mark, chunk_ms 40",
    ) in pieces
    assert all(r["us_per_call_frame"] > 0 for r in rows)
    b20 = callframe.budget(rows, append_ms=20, chunk_ms=20, hops=8)
    parts = [r for r in rows if r["setting"] not in ("every 40 ms", "every 60 ms", "every 100 ms")]
    parts = [r for r in parts if "chunk_ms 40" not in r["setting"]]
    expected = sum(r["us_per_call_frame"] * (8 if r["piece"] == "task hop" else 1) for r in parts)
    assert abs(b20 - expected) < 1e-9
