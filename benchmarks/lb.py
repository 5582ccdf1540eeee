"""Three ``pipeline serve`` processes behind a real HAProxy on loopback, driven by the call
simulator: the load-balancer run of ``docs/scale.md`` (and of ``tests/stages/telephony/
test_haproxy.py``, which asserts on what :func:`scenario` returns).

HAProxy balances with ``leastconn`` (a call is one long-lived WebSocket, so the count of open
connections is the load), checks every backend's ``/readyz`` twice a second, takes a backend out
on the first failed check or refused connection, and retries a refused or ``503`` upgrade on
another backend. The run has three parts, one after the other against the same processes:

1. **ramp**: 150 calls, one started every 0.2 s (30 s), each 2 s of audio: every call must
   complete with every byte echoed back, and each backend's share be within ±15 % of even;
2. **past capacity**: with every backend idle, ``3 × max_calls + extra`` calls at once: as many
   as fit complete, the rest are refused cleanly (HTTP 503, or a close with 1013 ``busy`` when
   two calls race for a backend's last place), none hangs;
3. **failures mid-load**: calls ramped again; once nine are in progress (three per backend),
   backend 0 gets SIGTERM and backend 1 ``kill -9``: backend 0's calls finish (it drains),
   backend 1's calls are lost, backend 2's calls go on untouched, and every call started after
   that goes to backend 2.

Run it by hand: ``python -m benchmarks.lb`` (prints the figures as JSON; about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.callsim import CallRecord, run_call
from pipeline.clock import RealClock

ROOT = Path(__file__).resolve().parents[1]

#: The echo pipeline each backend serves: the caller hears itself, so every byte can be checked.
LOOP_YAML = """version: 1
pipelines:
  loop:
    stages:
      caller: {type: twilio_source}
      phone: {type: twilio_sink}
    links:
      - caller -> phone
"""

#: The HAProxy configuration (docs/scale.md shows it). ``{frontend}``: the bind line's address;
#: ``{servers}``: one ``server`` line per backend.
HAPROXY_CFG = """\
global
    maxconn 4000

defaults
    mode http
    timeout connect 2s
    timeout client 60s          # a call's media never pauses for long; keep above the idle
    timeout server 60s
    timeout tunnel 2h           # once upgraded, a call may last this long
    timeout client-fin 5s
    retries 3
    option redispatch 1         # every retry goes to another backend
    retry-on conn-failure empty-response 503

frontend calls
    bind {frontend}
    default_backend agents

backend agents
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host agents
    http-check expect status 200
    default-server check inter 500ms fall 1 rise 1 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


def haproxy_config(frontend: str, backends: Sequence[int]) -> str:
    """The configuration for a frontend bound at ``frontend`` (``127.0.0.1:8080``, or
    ``fd@N`` for an inherited socket) and backends on these loopback ports."""
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    return HAPROXY_CFG.format(frontend=frontend, servers=servers)


# ---------------------------------------------------------------------------- processes


class Lines:
    """A process's stderr read on a thread (the pipe never fills); wait for a line by pattern."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.eof = False
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on that matches; AssertionError on timeout."""

        def found() -> re.Match[str] | None:
            return next(filter(None, (re.search(pattern, x) for x in self.lines[start:])), None)

        with self._cond:
            self._cond.wait_for(lambda: self.eof or found() is not None, timeout)
            m = found()
        if m is None:
            raise AssertionError(f"no line matches {pattern!r} in:\n{''.join(self.lines)}")
        return m

    async def wait_for_async(self, pattern: str, timeout: float = 30.0, start: int = 0) -> Any:
        return await asyncio.to_thread(self.wait_for, pattern, timeout, start)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose event is ``name``."""
        out = []
        for line in list(self.lines):
            if line.startswith("{") and f'"{name}"' in line:
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == name:
                        out.append(ev)
        return out


@dataclass
class Backend:
    """One ``pipeline serve`` process."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    logs: Lines

    def calls(self, prefix: str = "", before: float | None = None) -> set[str]:
        """The callSids of the calls this backend started (those starting with ``prefix``;
        with ``before``, a ``time.time()``, only those it logged before then)."""
        out = set()
        for ev in self.logs.events("call started"):
            sid = str(ev["call_sid"])
            if not sid.startswith(prefix):
                continue
            if before is not None and _epoch(ev["timestamp"]) >= before:
                continue
            out.add(sid)
        return out


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@contextlib.contextmanager
def serve_backends(
    n: int, tmp: Path, *, max_calls: int, drain_timeout: float = 15.0
) -> Iterator[list[Backend]]:
    """``n`` ``pipeline serve`` processes (one worker each) on free loopback ports."""
    path = tmp / "loop.yaml"
    path.write_text(LOOP_YAML)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PIPELINE_SERVE_TOKEN", None)
    out: list[Backend] = []
    try:
        for i in range(n):
            cmd = [sys.executable, "-m", "pipeline", "--log-format", "json", "serve", str(path)]
            cmd += ["--port", "0", "--workers", "1", "--max-calls", str(max_calls)]
            cmd += ["--drain-timeout", str(drain_timeout)]
            proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
            assert proc.stderr is not None
            logs = Lines(proc.stderr)
            out.append(Backend(f"s{i}", proc, 0, logs))
        for b in out:
            b.port = int(b.logs.wait_for(r"listening on ws://127\.0\.0\.1:(\d+)").group(1))
        yield out
    finally:
        for b in out:
            if b.proc.poll() is None:
                b.proc.kill()
            b.proc.wait()


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.path.exists(p)), None
    )


@contextlib.contextmanager
def run_haproxy(backends: Sequence[int], tmp: Path) -> Iterator[tuple[int, Lines]]:
    """HAProxy in the foreground with :func:`haproxy_config`; yields (frontend port, stderr).
    The frontend socket is made here and inherited (``bind fd@N``), so it accepts at once."""
    exe = haproxy_binary()
    if exe is None:
        raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    port = int(sock.getsockname()[1])
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(f"fd@{sock.fileno()}", backends))
    proc = subprocess.Popen(
        [exe, "-db", "-f", str(cfg)], stderr=subprocess.PIPE, text=True, pass_fds=(sock.fileno(),)
    )
    sock.close()  # HAProxy has its own copy
    assert proc.stderr is not None
    try:
        yield port, Lines(proc.stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- the run


def audio_of(seconds: float) -> bytes:
    """μ-law bytes that differ frame to frame (so a lost or repeated chunk shows)."""
    n = int(seconds * 8000)
    return (bytes(range(256)) * (n // 256 + 1))[:n]


@dataclass
class Part:
    """What one part of the run measured."""

    records: list[CallRecord] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self, audio: bytes) -> dict[str, Any]:
        ok = [r for r in self.records if r.ok and bytes(r.received_audio) == audio]
        late = [x for r in ok for x in r.lateness]
        return {
            "calls": len(self.records),
            "complete": len(ok),
            "refused": sorted(
                {
                    r.refused or f"close {r.close_code}"
                    for r in self.records
                    if r.refused or r.close_code == 1013
                }
            ),
            "lateness_p99_ms": round(1000 * _pct(late, 99), 1),
            "lateness_max_ms": round(1000 * max(late, default=0.0), 1),
            "wall_s": round(self.wall_s, 1),
        }


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q / 100))]


async def ramp(
    url: str,
    audio: bytes,
    n: int,
    over_s: float,
    *,
    prefix: str,
    heard: dict[int, asyncio.Event] | None = None,
) -> list[CallRecord]:
    """``n`` calls, call ``i`` starting ``i * over_s / n`` seconds in (real time)."""
    clock = RealClock()
    t0 = clock.now()
    tasks = []
    for i in range(n):
        await clock.sleep_until(t0 + i * over_s / n)
        sid = f"{prefix}{i:0{32 - len(prefix)}d}"
        tasks.append(
            asyncio.create_task(
                run_call(
                    url,
                    audio,
                    call_sid="CA" + sid,
                    stream_sid="MZ" + sid,
                    heard=(heard or {}).get(i),
                    quiet_s=0.2,
                    tail_s=5.0,
                )
            )
        )
    return list(await asyncio.gather(*tasks))


async def _part(coro: Any) -> Part:
    t0 = time.monotonic()
    records = await coro
    return Part(records, time.monotonic() - t0)


def shares(backends: Sequence[Backend], records: Sequence[CallRecord]) -> dict[str, int]:
    """Calls of ``records`` each backend started."""
    sids = {r.call_sid for r in records}
    return {b.name: len(b.calls() & sids) for b in backends}


async def scenario(
    tmp: Path,
    *,
    ramp_calls: int = 150,
    ramp_s: float = 30.0,
    call_s: float = 2.0,
    max_calls: int = 20,
    extra: int = 6,
    failure_calls: int = 24,
    failure_ramp_s: float = 3.0,
) -> dict[str, Any]:
    """The three parts (module docstring); returns the records and figures of each."""
    out: dict[str, Any] = {}
    with (
        serve_backends(3, tmp, max_calls=max_calls) as backends,
        run_haproxy([b.port for b in backends], tmp) as (port, hap),
    ):
        url = f"ws://127.0.0.1:{port}/media"
        # 1. ramp
        audio = audio_of(call_s)
        part = await _part(ramp(url, audio, ramp_calls, ramp_s, prefix="ramp"))
        out["ramp"] = part
        out["ramp_shares"] = shares(backends, part.records)
        out["ramp_audio"] = audio

        # 2. past capacity: every call at once, each long enough to outlast the burst
        await _all_up(hap, backends)
        burst = audio_of(5.0)  # outlasts the setup of every call of the burst
        n = 3 * max_calls + extra
        part = await _part(ramp(url, burst, n, 0.0, prefix="cap"))
        out["capacity"] = part
        out["capacity_audio"] = burst
        out["capacity_total"] = 3 * max_calls

        # 3. SIGTERM to s0 and kill -9 to s1 once nine calls are in progress
        await _all_up(hap, backends)
        audio = audio_of(4.0)
        heard = {8: asyncio.Event()}
        task = asyncio.create_task(
            ramp(url, audio, failure_calls, failure_ramp_s, prefix="fail", heard=heard)
        )
        t0 = time.monotonic()
        await heard[8].wait()
        signalled = time.time()
        backends[0].proc.send_signal(signal.SIGTERM)
        backends[1].proc.send_signal(signal.SIGKILL)
        out["failure_at_s"] = round(time.monotonic() - t0, 2)
        records = await task
        # the calls each backend had started when the signals went (by its log's timestamps)
        before = {b.name: b.calls("CAfail", before=signalled) for b in backends}
        out["failure"] = Part(records, time.monotonic() - t0)
        out["failure_audio"] = audio
        out["failure_before"] = before
        out["failure_after"] = {b.name: b.calls("CAfail") for b in backends}
        out["s0_exit"] = backends[0].proc.wait(30)
        out["s1_exit"] = backends[1].proc.wait(30)
        out["haproxy_log"] = list(hap.lines)
        out["backend_names"] = [b.name for b in backends]
    return out


async def _all_up(hap: Lines, backends: Sequence[Backend]) -> None:
    """Wait until no backend has calls left and HAProxy has every backend up (a backend at its
    cap fails its check; it comes back on the next one once a call ends)."""
    for b in backends:
        await asyncio.to_thread(_wait_idle, b)
    start = 0
    while True:
        down = _down(hap.lines)
        if not down:
            return
        start = len(hap.lines)
        await hap.wait_for_async(r"Server agents/\S+ is UP", start=start)


def _down(lines: Sequence[str]) -> set[str]:
    state: dict[str, bool] = {}
    for line in lines:
        m = re.search(r"Server agents/(\S+) is (UP|DOWN)", line)
        if m:
            state[m.group(1)] = m.group(2) == "UP"
    return {s for s, up in state.items() if not up}


def _wait_idle(b: Backend) -> None:
    cond = b.logs._cond
    with cond:
        cond.wait_for(
            lambda: len(b.logs.events("call started")) == len(b.logs.events("call ended")), 30
        )


def figures(out: dict[str, Any]) -> dict[str, Any]:
    """The run as JSON-able figures (docs/scale.md)."""
    fail: Part = out["failure"]
    after = out["failure_after"]
    by_backend = {name: [r for r in fail.records if r.call_sid in after[name]] for name in after}
    return {
        "ramp": out["ramp"].summary(out["ramp_audio"]),
        "ramp_shares": out["ramp_shares"],
        "capacity": out["capacity"].summary(out["capacity_audio"]),
        "capacity_total": out["capacity_total"],
        "failure_at_s": out["failure_at_s"],
        "failure": {
            name: Part(recs).summary(out["failure_audio"]) for name, recs in by_backend.items()
        },
        "s0_exit": out["s0_exit"],
        "s1_exit": out["s1_exit"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lb", description=__doc__)
    parser.add_argument("--calls", type=int, default=150, help="calls in the ramp (150)")
    parser.add_argument("--over", type=float, default=30.0, help="seconds of ramp (30)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(scenario(Path(tmp), ramp_calls=args.calls, ramp_s=args.over))
    print(json.dumps(figures(out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
