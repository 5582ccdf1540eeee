"""The call-frame breakdown benchmark runs and covers every piece it names (figures are
measured in benchmarks, never asserted)."""

from __future__ import annotations

from benchmarks import callframe


def test_breakdown_rows() -> None:
    rows = callframe.pieces(inner=20, repeat=3)
    pieces = {(r["piece"], r["setting"]) for r in rows}
    assert {p for p, _ in pieces} == {
        "ws in", "twilio parse", "gate", "session append", "reply delta", "sink", "mark echo",
    }  # fmt: skip
    assert ("session append", "every 60 ms") in pieces and (
        "sink",
        "media + mark, chunk_ms 40",
    ) in pieces
    assert all(r["us_per_call_frame"] > 0 for r in rows)
    hop = {"piece": "task hop", "setting": "one await through a queue, asyncio",
           "us_per_call_frame": 5.0}  # fmt: skip
    b20 = callframe.budget([*rows, hop], append_ms=20, chunk_ms=20, hops=8, loop="asyncio")
    parts = [r for r in rows if r["setting"] not in ("every 40 ms", "every 60 ms", "every 100 ms")]
    parts = [r for r in parts if "chunk_ms 40" not in r["setting"]]
    parts = [r for r in parts if r["piece"] != "ws in" or "fast frames" in r["setting"]]
    parts = [r for r in parts if "delta (unmasked)" not in r["setting"]]
    parts = [r for r in parts if "(parse_incoming)" not in r["setting"]]
    expected = sum(r["us_per_call_frame"] for r in parts) + 8 * 5.0
    assert abs(b20 - expected) < 1e-9


def test_socket_rows_run_over_a_real_socket() -> None:
    rows = callframe.socket_rows("asyncio", n=30, gap_s=0.0)
    assert [(r["piece"], r["setting"]) for r in rows] == [
        ("socket out", "two sends, asyncio"),
        ("socket out", "one batch, asyncio"),
        ("socket in", "reader task + queue, websockets, asyncio"),
        ("socket in", "reader task + queue, fast frames, asyncio"),
        ("socket in", "source reads, websockets, asyncio"),
        ("socket in", "source reads, fast frames, asyncio"),
        ("task hop", "one await through a queue, asyncio"),
    ]
    assert all(r["us_per_call_frame"] > 0 for r in rows)
