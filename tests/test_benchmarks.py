"""Smoke tests of the benchmark suites: each runs in its ``tiny`` mode and returns rows whose
medians are finite numbers. Speed is measured by ``pipeline bench``, never asserted here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks import cli, e2e, framework, goals, hotpath, inplace, latency, load, remote
from benchmarks.harness import (
    Row,
    compare,
    cpu_per_item_us,
    drive,
    fixed,
    per_call_us,
    quiet_pipecat,
    row,
)
from benchmarks.resample_latency import CORE_RATIOS
from pipeline import native


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
    assert chain.baseline.startswith("library path: plain loop") and chain.ratio is not None
    assert "soxr HQ stream 8k→16k" in chain.baseline and chain.goal == "chain"
    call = next(r for r in rows if r.name == "whole call, both directions, fused Runner")
    assert call.goal == "call" and call.baseline.startswith("raw library path")
    assert "soxr HQ streams" in call.baseline and "orjson + pybase64" in call.baseline
    # the same measurements with the pure-Python kernels, from a child process
    pure = [r for r in rows if "pure-Python kernels" in r.name]
    assert [r.group for r in pure] == ["chain", "callpath"]
    assert all("compiled kernels in use: none" in r.note for r in pure)
    found = {v.key: v for v in goals.verdicts(rows)}
    assert list(found) == list(goals.GOALS)
    for key in ("overhead", "wav", "chain", "call", "resampler"):
        assert found[key].met is not None, found[key]
    assert sum(r.goal == "overhead" for r in rows) == 8
    assert sum(r.goal == "resampler" for r in rows) == len(CORE_RATIOS)
    if quiet_pipecat():
        assert found["pipecat"].met is not None
    else:
        assert found["pipecat"].met is None and "pip install --no-deps" in found["pipecat"].detail


def _goal_row(name: str, median: float, ratio: float | None = None, base: str = "") -> Row:
    r = row("g", name, [median])
    r.ratio, r.baseline = ratio, base
    return r


def test_verdicts_say_met_or_missed_with_the_numbers() -> None:
    base = row("g", "loop", [10.0])
    rows = [
        base,
        goals.mark(compare(row("g", "chain", [16.0]), base), "chain"),
        goals.mark(row("g", "a: overhead", [0.5]), "overhead"),
        goals.mark(row("g", "b: overhead", [1.25]), "overhead"),
        goals.mark(_goal_row("pipecat ÷ ours", 160.0, 10.0, "ours"), "pipecat"),
        goals.mark(fixed("g", "wav", float("nan"), "µs/frame", note="no file"), "wav"),
    ]
    assert rows[1].note == "goal ≤ 1.5×: MISSED"
    assert rows[4].note == "goal ≥ 8×: met"
    found = {v.key: v for v in goals.verdicts(rows)}
    assert found["chain"].met is False
    assert found["chain"].detail == "1.60×: 16.00 against 10.00 µs/frame"
    assert found["overhead"].met is False
    assert found["overhead"].detail == (
        "1 of 2 rows; worst 1.25 µs (b: overhead); missed by: b: overhead 1.25 µs"
    )
    assert found["pipecat"].met is True
    assert found["wav"].met is None and "no file" in found["wav"].detail
    assert found["call"].met is None and found["call"].detail == "its suite did not run"
    assert found["chain"].line().startswith("      MISSED  the chain ≤ 1.5×")


def test_remote_runs_measure_themselves_in_a_child_process() -> None:
    with remote.Remote("benchmarks.inplace:chain_runs", [30, 10], inplace.PURE_ENV) as child:
        assert child.kernels and not any(child.kernels.values())
        got = inplace.paired({"pure": child.run("chain ll")}, n=30, n0=10, repeat=2)
        assert got["pure"].shape == (2,) and all(math.isfinite(x) for x in got["pure"])
        with pytest.raises(remote.RemoteError, match="run 'nope': error: KeyError"):
            child.run("nope")(1)


def test_remote_says_why_the_child_failed() -> None:
    with pytest.raises(remote.RemoteError, match=r"exited: .*ModuleNotFoundError"):
        remote.Remote("benchmarks.no_such_module:runs", [], {})
    # optional: the error in place of the child, for rows that say why they are missing
    with remote.optional("benchmarks.no_such_module:runs", [], {}) as got:
        assert isinstance(got, remote.RemoteError)
        assert "No module named 'benchmarks.no_such_module'" in str(got)


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
    assert set(info["kernels_compiled_in_use"]) == set(native.KERNELS)
    assert "soxr" in info["libraries"] and "numpy" in info["libraries"]
    line = cli.machine_line(info)
    assert f"{info['cpus']} cores" in line and f"soxr {info['libraries']['soxr']}" in line
    assert "compiled kernels in use: " in line and "load [" in line
    json.dumps(info)
    png = tmp_path / "chart.png"
    if cli.chart(rows, str(png)):
        assert png.stat().st_size > 1000


def test_paired_runs_take_turns_and_a_slow_run_does_fewer_items() -> None:
    calls: list[tuple[str, int]] = []

    def run(name: str) -> Any:
        return lambda k: calls.append((name, k))

    got = inplace.paired({"a": run("a"), "b": run("b")}, n=100, n0=10, repeat=2, fewer={"b": 5})
    assert set(got) == {"a", "b"} and all(v.shape == (2,) for v in got.values())
    # warm-up, then each repetition in turn, the order reversed every other repetition
    assert calls == [
        ("a", 10), ("b", 2),
        ("a", 10), ("a", 100), ("b", 2), ("b", 20),
        ("b", 2), ("b", 20), ("a", 10), ("a", 100),
    ]  # fmt: skip


def test_bench_prints_a_verdict_per_goal_and_writes_them_to_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse
    import io

    from rich.console import Console

    base = row("chain", "library loop", [10.0])
    rows = [base, goals.mark(compare(row("chain", "the chain", [12.0]), base), "chain")]
    monkeypatch.setattr(cli, "run_all", lambda *a, **k: rows)
    buf = io.StringIO()
    out = tmp_path / "bench.json"
    args = argparse.Namespace(
        quick=True, only=[], json_path=str(out), md_path=None, png_path=None, log_level="warning"
    )
    assert cli.cmd_bench(args, Console(file=buf, width=200)) == 0
    text = buf.getvalue()
    assert "machine: " in text and "compiled kernels in use: " in text
    assert "met  the chain ≤ 1.5× the plain loop over the libraries: 1.20×: 12.00 against" in text
    assert "not measured  the whole call, both directions, ≤ 1.2×" in text
    data = json.loads(out.read_text(encoding="utf-8"))
    chain = next(g for g in data["goals"] if g["key"] == "chain")
    assert chain["met"] is True and chain["detail"].startswith("1.20×")
    assert data["machine"]["kernels_compiled_in_use"] == native.status()
