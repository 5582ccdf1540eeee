"""Smoke tests of the benchmark suites: each runs in its ``tiny`` mode and returns rows whose
medians are finite numbers. Speed is measured by ``pipeline bench``, never asserted here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cli, e2e, framework, hotpath, latency, load
from benchmarks.harness import Row, cpu_per_item_us, drive, per_call_us, row


def _finite(rows: list[Row]) -> None:
    """Every median is a finite number, except rows that say why they were not measured (an
    optional model missing)."""
    assert rows
    bad = [(r.group, r.name, r.median) for r in rows if not math.isfinite(r.median) and not r.note]
    assert not bad, bad
    for r in rows:
        if not math.isfinite(r.median):
            continue
        assert r.p99 >= r.median or math.isclose(r.p99, r.median) or r.n == 1, r
        if r.ratio is not None:
            assert r.baseline and math.isfinite(r.ratio)


def test_harness_helpers() -> None:
    assert len(per_call_us(lambda: None, inner=10, repeat=3)) == 3
    assert len(cpu_per_item_us(lambda n: sum(range(n)), n=1000, n0=10, repeat=2)) == 2

    async def seven() -> int:
        return 7

    assert drive(seven()) == 7
    r = row("g", "x", [1.0, 2.0, 3.0])
    assert r.median == 2.0 and r.n == 3 and "samples" not in r.as_dict()


def test_hotpath_tiny() -> None:
    rows = hotpath.run(quick=True, tiny=True)
    _finite(rows)
    names = {r.name for r in rows}
    assert "session encode: append 20 ms (ours)" in names
    assert "session decode: 960-byte delta (ours)" in names
    assert "whole call, both directions, fused Runner" in names
    for stage in ("g711_decode μ-law", "resample 8k→16k soxr HQ", "vad_gate webrtc annotate"):
        assert {f"{stage}: raw core", f"{stage}: in place", f"{stage}: overhead"} <= names
    assert "wav_source → null_sink" in names
    assert "8k→16k low_latency core" in names  # the resampler engine's rows beside soxr's call
    chain = next(r for r in rows if r.group == "chain" and r.name.startswith("wav_source"))
    assert chain.baseline.startswith("plain loop") and chain.ratio is not None


def test_framework_tiny() -> None:
    rows = framework.run(quick=True, tiny=True)
    _finite(rows)
    names = {r.name for r in rows}
    assert {"pipeline, per fused hop", "pipeline, per queued hop"} <= names
    assert {"latency pipeline queued", "latency asyncio.Queue + tasks"} <= names


@pytest.mark.skipif(not e2e.CALLER.exists(), reason="examples/caller_8k_ulaw.wav is missing")
def test_latency_and_e2e_tiny() -> None:
    rows = latency.run(quick=True, tiny=True)
    _finite(rows)
    ll = next(r for r in rows if r.name == "resample 8k→16k low_latency")
    assert ll.median < 5.0  # the filter's delay, computed, not timed
    rows = e2e.run(quick=True, tiny=True)
    turn = next(r for r in rows if "speech end → first reply audio" in r.name)
    barge = next(r for r in rows if "barge-in onset → reply stops" in r.name)
    assert math.isfinite(turn.median) and math.isfinite(barge.median)
    assert "reply audio after it: 0 frames" in barge.note


def test_speech_spans_of_the_example_caller() -> None:
    if not e2e.CALLER.exists():
        pytest.skip("examples/caller_8k_ulaw.wav is missing")
    spans = e2e.speech_spans(e2e._read_codes())
    assert len(spans) == 2
    assert 0.3 < spans[0][0] < 0.6 and spans[1][0] - spans[0][1] > 1.0


def test_load_rows_from_the_load_test(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = [
        {"calls": 25, "passed": True, "server_cpu": 0.3, "caller_lateness_p99_ms": 1.0},
        {"calls": 50, "passed": False, "server_cpu": 0.9, "caller_lateness_p99_ms": 40.0},
    ]

    def fake(steps_arg: str, engine: str, timeout_s: float) -> tuple[list[dict[str, Any]], str]:
        return steps, ""

    monkeypatch.setattr(load, "load_steps", fake)
    rows = load.run(quick=True, tiny=True)
    _finite(rows)
    assert rows[0].name.startswith("calls per core") and rows[0].median == 25
    assert "next step failed" in rows[0].note

    failed = [{"calls": 50, "passed": False, "server_cpu": 0.4}]
    monkeypatch.setattr(load, "load_steps", lambda *a, **k: (failed, ""))
    top = load.run(quick=True, tiny=True)[0]
    assert math.isnan(top.median) and top.note.startswith("fewer than 50")

    monkeypatch.setattr(
        load, "load_steps", lambda *a, **k: ([], "benchmarks/callsim.py is missing")
    )
    (only,) = load.run(quick=True, tiny=True)
    assert math.isnan(only.median) and "missing" in only.note


def test_cli_outputs(tmp_path: Path) -> None:
    rows = [row("g", "a", [1.0, 2.0]), row("g", "b", [3.0])]
    md = cli.markdown(rows)
    assert md.count("\n") == 4 and "| g | a |" in md
    info = cli.machine()
    assert info["cpus"] and "processor" in info
    json.dumps(info)
    png = tmp_path / "chart.png"
    if cli.chart(rows, str(png)):
        assert png.stat().st_size > 1000
