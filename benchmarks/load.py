"""Calls per core, from the telephony load test (:mod:`benchmarks.callsim`, ``load``).

A thin wrapper: it runs ``python -m benchmarks.callsim load`` in a subprocess (the load test
pins its server and its callers to cores of their own, which must not pin this process) and
reads the JSON rows it writes. ``pipeline serve`` runs on one core; for each step of N
simultaneous calls the load test reports whether every call got all its audio with the p99
lateness of outgoing frames ≤ 20 ms, and the server's CPU use (cores).

Rows: **calls per core** = the largest N that passed (the server has one core), with the
server's CPU use at that step in the note; and, per step, the server's CPU per call.
``--quick`` runs one step (50 calls: "at least 50"), a full run 25 … 300 until a step fails.
If the load test is missing or fails, one row says "not measured" and why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import Row, fixed

ROOT = Path(__file__).resolve().parents[1]


def load_steps(steps: str, engine: str, timeout_s: float) -> tuple[list[dict[str, Any]], str]:
    """Run the load test; (its rows, an error text or "")."""
    if not (ROOT / "benchmarks" / "callsim.py").exists():
        return [], "benchmarks/callsim.py is missing"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "load.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.callsim",
            "load",
            "--calls",
            steps,
            "--engine",
            engine,
            "--json",
            str(out),
        ]
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return [], f"the load test took longer than {timeout_s:.0f} s"
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return [], f"the load test failed (exit {proc.returncode}): {tail[0][:120]}"
        rows: list[dict[str, Any]] = json.loads(out.read_text())
        return rows, ""


def run(quick: bool = False, tiny: bool = False) -> list[Row]:
    """Calls per core (webrtc VAD), or "not measured" with the reason."""
    g = "calls"
    engine = "webrtc"
    steps = "4" if tiny else "50" if quick else "25,50,100,150,200,300"
    t0 = time.monotonic()
    got, err = load_steps(steps, engine, timeout_s=60 if tiny else 80 if quick else 900)
    if err:
        return [fixed(g, f"calls per core ({engine} VAD)", float("nan"), "calls", note=err)]
    rows: list[Row] = []
    for r in got:
        cpu = float(r.get("server_cpu") or 0.0)
        n = int(r["calls"])
        per_call = cpu / n * 1000 if n else float("nan")
        status = "passed" if r.get("passed") else "FAILED"
        rows.append(
            fixed(
                g,
                f"{n} calls: server CPU per call",
                per_call,
                "m-core",
                note=f"{status}; server {cpu:.2f} cores; caller p99 lateness "
                f"{r.get('caller_lateness_p99_ms')} ms, server ≤ "
                f"{r.get('server_lateness_p99_le_s')} s",
            )
        )
    passed = [r for r in got if r.get("passed")]
    best = max(passed, key=lambda r: int(r["calls"]), default=None)
    took = time.monotonic() - t0
    if best is None:
        first = got[0] if got else {}
        rows.insert(
            0,
            fixed(
                g,
                f"calls per core ({engine} VAD)",
                float("nan"),
                "calls",
                note=f"fewer than {first.get('calls', steps)}: no step passed "
                f"(server at {float(first.get('server_cpu') or 0):.2f} cores; {took:.0f} s)",
            ),
        )
    else:
        cpu = float(best.get("server_cpu") or 0.0)
        last = int(got[-1]["calls"])
        more = "; the next step failed" if last > int(best["calls"]) else "; no higher step run"
        rows.insert(
            0,
            fixed(
                g,
                f"calls per core ({engine} VAD)",
                float(best["calls"]),
                "calls",
                note=f"largest step passed, server on 1 core at {cpu:.2f} cores{more}",
            ),
        )
    return rows
