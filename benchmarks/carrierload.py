"""Calls per core for each carrier's media stream: ``python -m benchmarks.carrierload``.

One ``pipeline serve`` process (pinned to one core) runs a pipeline on the carrier's stream:
``phone_source -> vad_gate (webrtc, annotate) -> phone_sink``, the caller hearing themselves,
so what is measured is the carrier's wire (parsing, base64 or binary frames, chunking, marks)
plus a VAD on every frame, without a model. N simulated callers (benchmarks.carriersim, in this
process, pinned to the other core) call at once, their starts spread over one second, each
playing ``--seconds`` of audio in the carrier's frames. A step passes when every call ends
normally with every byte echoed and the server's p99 outgoing lateness
(``pipeline_outgoing_frame_lateness_seconds``) is at most 20 ms. Each row gives the server's CPU
over the step (from ``/proc``) and its CPU per second of call audio; ``calls per core`` is
1 / (CPU per call-second): the ceiling if nothing else ran on that core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.callsim import _cpu_seconds, _get, bucket_p99, parse_metrics, serve_process
from benchmarks.carriersim import run_carrier_call
from pipeline.frames import AudioFormat

STREAMS: dict[str, AudioFormat] = {
    "twilio": AudioFormat("pcmu", 8000),
    "telnyx": AudioFormat("pcmu", 8000),
    "plivo": AudioFormat("pcmu", 8000),
    "vonage": AudioFormat("pcm16", 16000),
    "exotel": AudioFormat("pcm16", 8000),
}


def echo_yaml(carrier: str, fmt: AudioFormat) -> str:
    stream = f"carrier: {carrier}, encoding: {fmt.encoding}, rate: {fmt.rate}"
    return f"""version: 1
pipelines:
  {carrier}-echo:
    stages:
      caller: {{type: phone_source, {stream}}}
      gate:   {{type: vad_gate, engine: webrtc, mode: annotate}}
      phone:  {{type: phone_sink, {stream}}}
    links:
      - caller -> gate -> phone
"""


def caller_audio(fmt: AudioFormat, seconds: float) -> bytes:
    n = int(fmt.bytes_per_second * seconds)
    n -= n % 2
    return bytes((i * 7 + 3) % 251 for i in range(n))


async def step(
    carrier: str, fmt: AudioFormat, n: int, seconds: float, port: int, pid: int
) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/media"
    audio = caller_audio(fmt, seconds)
    before = parse_metrics(await _get(port, "/metrics"))
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    loop = asyncio.get_running_loop()
    origin = loop.time()
    calls = [
        run_carrier_call(
            url,
            carrier,
            fmt,
            audio,
            call_id=f"call-{i:04d}",
            stream_id=f"stream-{i:04d}",
            quiet_s=0.3,
            tail_s=10.0,
            clock_origin=None,
        )
        for i in range(n)
    ]

    async def staggered(i: int, coro: Any) -> Any:
        await asyncio.sleep(max(0.0, origin + i / n - loop.time()))
        return await coro

    records = await asyncio.gather(*(staggered(i, c) for i, c in enumerate(calls)))
    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
    after = parse_metrics(await _get(port, "/metrics"))
    diff = {
        b: after["lateness_buckets"].get(b, 0.0) - before["lateness_buckets"].get(b, 0.0)
        for b in after["lateness_buckets"]
    }
    ok = sum(r.ok for r in records)
    exact = sum(bytes(r.received_audio) == r.sent_audio for r in records)
    p99 = bucket_p99(diff)
    cores = (cpu1 - cpu0) / (t1 - t0)

    # CPU per second of call audio: what a call costs, however long the step took to run
    per_call_second = (cpu1 - cpu0) / (n * seconds)
    return {
        "carrier": carrier,
        "format": str(fmt),
        "calls": n,
        "ok": ok,
        "echoed_exactly": exact,
        "lateness_p99_ms": None if p99 is None else p99 * 1000,
        "server_cores": round(cores, 3),
        "step_s": round(t1 - t0, 1),
        "cpu_ms_per_call_second": round(per_call_second * 1000, 2),
        "calls_per_core": int(1 / per_call_second) if per_call_second > 0 else None,
        "passed": ok == n and exact == n and p99 is not None and p99 <= 0.02,
        "errors": sorted({e for r in records for e in r.errors})[:3],
        "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    cpus = os.cpu_count() or 1
    # the server on core 1 (as `taskset -c 1`), the callers on core 0
    server_cpu = 1 if cpus >= 2 and hasattr(os, "sched_setaffinity") else None
    if server_cpu is not None:
        os.sched_setaffinity(0, {0})
    for run_index in range(args.repeat):
        for carrier in args.carrier:
            fmt = STREAMS[carrier]
            yaml = echo_yaml(carrier, fmt)
            with serve_process(yaml, cpu=server_cpu, max_calls=2000) as (proc, port):
                await step(carrier, fmt, 5, 1.0, port, proc.pid)  # warm-up, not reported
                for n in args.calls:
                    row = await step(carrier, fmt, n, args.seconds, port, proc.pid)
                    row["run"] = run_index + 1
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.carrierload", description=__doc__)
    p.add_argument("--carrier", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    p.add_argument("--calls", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100])
    p.add_argument("--seconds", type=float, default=6.0, help="audio each caller plays (6)")
    p.add_argument("--repeat", type=int, default=1, help="runs of every step, for the spread (1)")
    args = p.parse_args(argv)
    print(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                }
            }
        ),
        flush=True,
    )
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
