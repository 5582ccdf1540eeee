"""Soak: ``pipeline serve`` taking calls for a long while, watched for leaks.

Starts one ``pipeline serve`` (the zero-transcode phone pipeline with the emulator in the
server process, as in ``callsim load``) and places calls at a steady rate (``--calls-per-hour``,
100 by default), each ``--call-seconds`` long, paced in real time, for ``--duration`` seconds.
Every ``--sample-seconds`` it records the server's resident memory (``/proc/PID/status``),
the calls running and the asyncio tasks alive (``pipeline_tasks_alive`` from ``/metrics``).
At the end it waits for the last call, then reports memory over time, the tasks alive when
idle at the start and at the end (the same number: nothing leaked), and the calls by
outcome. ``--short`` is a few minutes at a higher rate, for a quick look.

    python -m benchmarks.soak                      # an hour, 100 calls
    python -m benchmarks.soak --duration 900       # 15 minutes
    python -m benchmarks.soak --short              # 3 minutes, a call every 6 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.callsim import _get as http_text
from benchmarks.callsim import caller_audio, phone_yaml, run_call, serve_process

ROOT = Path(__file__).resolve().parents[1]
WAV = ROOT / "examples" / "caller_8k_ulaw.wav"


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (Linux ``/proc``)."""
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def outcomes(text: str) -> dict[str, int]:
    found = re.findall(r'^pipeline_calls_total\{outcome="([^"]+)"\} (\S+)$', text, re.M)
    return {k: int(float(v)) for k, v in found}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    audio = caller_audio(WAV)
    per_call = int(args.call_seconds * 8000)
    audio = (audio * (per_call // len(audio) + 1))[:per_call]
    gap_s = 3600.0 / args.calls_per_hour
    samples: list[dict[str, Any]] = []
    records: list[Any] = []
    with serve_process(phone_yaml("webrtc"), max_calls=1000) as (proc, port):
        url = f"ws://127.0.0.1:{port}/media"

        async def sample(t0: float) -> dict[str, Any]:
            text = await http_text(port, "/metrics")
            row = {
                "t_s": round(time.monotonic() - t0, 1),
                "rss_mib": round(rss_kib(proc.pid) / 1024, 1),
                "calls_active": int(gauge(text, "pipeline_calls_active")),
                "tasks_alive": int(gauge(text, "pipeline_tasks_alive")),
            }
            samples.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            return row

        t0 = time.monotonic()
        first = await sample(t0)
        calls: list[asyncio.Task[Any]] = []
        next_call = t0
        next_sample = t0 + args.sample_seconds
        n = 0
        while time.monotonic() - t0 < args.duration:
            now = time.monotonic()
            if now >= next_call:
                n += 1
                sid = f"{n:032d}"
                calls.append(
                    asyncio.create_task(
                        run_call(url, audio, call_sid="CA" + sid, stream_sid="MZ" + sid)
                    )
                )
                next_call += gap_s
            if now >= next_sample:
                await sample(t0)
                next_sample += args.sample_seconds
            await asyncio.sleep(min(next_call, next_sample) - time.monotonic())
        records = list(await asyncio.gather(*calls))
        for _ in range(100):  # the server closes its side a moment after the caller's
            last = await sample(t0)
            if last["calls_active"] == 0:
                break
            await asyncio.sleep(0.1)
        text = await http_text(port, "/metrics")
    rss = [s["rss_mib"] for s in samples]
    settled = rss[len(rss) // 4 :] or rss  # after warm-up (imports, first calls, pools)
    return {
        "machine": f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "duration_s": args.duration,
        "calls_per_hour": args.calls_per_hour,
        "call_seconds": args.call_seconds,
        "calls": len(records),
        "calls_ok": sum(1 for r in records if r.ok),
        "outcomes": outcomes(text),
        "rss_mib_start": first["rss_mib"],
        "rss_mib_after_warmup": settled[0],
        "rss_mib_end": last["rss_mib"],
        "rss_mib_max": max(rss),
        "tasks_alive_start": first["tasks_alive"],
        "tasks_alive_end": last["tasks_alive"],
        "calls_active_end": last["calls_active"],
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    ap.add_argument("--duration", type=float, default=3600.0, help="seconds of calls (3600)")
    ap.add_argument("--calls-per-hour", type=float, default=100.0, help="call rate (100)")
    ap.add_argument("--call-seconds", type=float, default=30.0, help="length of a call (30)")
    ap.add_argument("--sample-seconds", type=float, default=30.0, help="between samples (30)")
    ap.add_argument("--short", action="store_true", help="3 minutes, a call every 6 s")
    ap.add_argument("--json", type=Path, help="write the report here too")
    args = ap.parse_args(argv)
    if args.short:
        args.duration, args.calls_per_hour, args.sample_seconds = 180.0, 600.0, 10.0
    report = asyncio.run(soak(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    leaked = report["tasks_alive_end"] != report["tasks_alive_start"]
    failed = report["calls_ok"] != report["calls"]
    return 1 if leaked or failed or report["calls_active_end"] != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
