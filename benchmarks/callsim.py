"""A Twilio Media Streams caller, for tests and load: plays a WAV into ``pipeline serve`` as
Twilio would and records what comes back.

What it does, per call: ``connected``, ``start`` (streamSid, callSid, customParameters,
mediaFormat), then one ``media`` every 20 ms (160 bytes of μ-law, base64) paced in real time
against an injectable clock, with string ``sequenceNumber``/``chunk``/``timestamp``; then waits
for the reply to finish and sends ``stop``. Every message the server sends is checked strictly
(:func:`stages.telephony.twilio.parse_outgoing`: exact fields, right ``streamSid``; violations are
recorded as Twilio's 31950/31951 would be). Outgoing audio goes into a player model
(:class:`Player`): chunks play back to back in arrival order; a ``mark`` is echoed once the audio
sent before it has played (by payload duration); ``clear`` drops the unplayed audio and echoes the
pending marks at once.

Use it as a module (:func:`run_call`, :func:`run_calls`) or from the shell::

    python -m benchmarks.callsim call ws://127.0.0.1:8080/media examples/caller_8k_ulaw.wav
    python -m benchmarks.callsim load --calls 50,100,150 --engine webrtc

``load`` starts one ``pipeline serve`` process on loopback (pinned to one core when the machine
has two or more), runs N simultaneous calls against it from this process (pinned to another
core), and reports for each N the p99 lateness of outgoing frames (the server's histogram and
the callers' own measure), lost audio, and the server's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.clock import Clock, RealClock
from stages.telephony.twilio import (
    Clear,
    Connected,
    Mark,
    Media,
    OutMedia,
    Start,
    Stop,
    TwilioMessageError,
    encode,
    parse_outgoing,
)

from . import loopcount

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
TURN_S = 7.1  # one turn of the load caller (see load_audio)
RATE = 8000
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_WAV = ROOT / "examples" / "caller_8k_ulaw.wav"


# ---------------------------------------------------------------------------- the player


class DueMarks:
    """Marks waiting to be reported played, each with the time its audio ends on the caller's
    player (times only grow, as the player plays in order, until a clear). :meth:`run` hands
    each mark's name to ``release`` once it is due: it sleeps until the head is due or a new
    head or a clear wakes it."""

    def __init__(self) -> None:
        self._due: deque[tuple[float, str]] = deque()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, at: float, name: str) -> None:
        was_empty = not self._due
        self._due.append((at, name))
        if was_empty:  # run() sleeps on the head only
            self._wake.set()

    def clear(self, now: float | None = None) -> None:
        """Drop the pending marks, or (``now`` given) make them all due at ``now``."""
        pending = [(now, name) for _, name in self._due] if now is not None else []
        self._due.clear()
        self._due.extend(pending)
        self._wake.set()

    async def run(self, clock: Clock, release: Callable[[list[str]], Awaitable[None]]) -> None:
        while True:
            if not self._due:
                self._wake.clear()
                await self._wake.wait()
                continue
            now = clock.now()
            if self._due[0][0] > now:
                self._wake.clear()
                sleeper = asyncio.ensure_future(clock.sleep_until(self._due[0][0]))
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([sleeper, waker], return_when="FIRST_COMPLETED")
                sleeper.cancel()
                waker.cancel()
                continue
            names = []
            while self._due and self._due[0][0] <= now:
                names.append(self._due.popleft()[1])
            await release(names)


async def wait_quiet(
    clock: Clock,
    last_media: list[float],
    quiet_s: float,
    tail_s: float,
    settled: Callable[[], bool],
    closed: Callable[[], bool],
) -> None:
    """After the caller's audio: wait until the replies have gone quiet for ``quiet_s`` and
    ``settled()`` (every mark reported), at most ``tail_s``, or until the socket is ``closed()``."""
    last_media[0] = max(last_media[0], clock.now())
    deadline = clock.now() + tail_s
    while clock.now() < deadline and not closed():
        if clock.now() - last_media[0] >= quiet_s and settled():
            return
        await clock.sleep(0.05)


@dataclass
class Player:
    """What a Twilio call does with the audio we get: a playback queue in arrival order.

    ``media(now, n)`` queues ``n`` bytes and returns the chunk's lateness: how long the caller
    heard nothing before it, if the player had run dry within a stretch of audio (a gap shorter
    than ``stretch_gap_s``; a longer silence starts a new stretch and is not lateness).
    ``mark(now, name)`` returns when its echo is due; ``clear(now)`` drops what has not played
    and returns the bytes dropped."""

    stretch_gap_s: float = 0.25
    busy_until: float = 0.0
    chunks: deque[tuple[float, float, int]] = field(default_factory=deque)  # start, end, bytes
    played_bytes: int = 0
    cleared_bytes: int = 0

    def _retire(self, now: float) -> None:
        while self.chunks and self.chunks[0][1] <= now:
            self.played_bytes += self.chunks.popleft()[2]

    def media(self, now: float, n: int) -> float:
        self._retire(now)
        late = 0.0
        if self.busy_until < now:
            gap = now - self.busy_until
            if gap < self.stretch_gap_s:
                late = gap
        start = max(now, self.busy_until)
        self.busy_until = start + n / RATE
        self.chunks.append((start, self.busy_until, n))
        return late

    def mark(self, now: float) -> float:
        return max(now, self.busy_until)

    def clear(self, now: float) -> int:
        self._retire(now)
        dropped = 0
        for start, _end, n in self.chunks:
            if start >= now:
                dropped += n
            else:  # partly played
                heard = round((now - start) * RATE)
                self.played_bytes += heard
                dropped += n - heard
        self.chunks.clear()
        self.busy_until = now
        self.cleared_bytes += dropped
        return dropped

    def finish(self, now: float) -> None:
        self._retire(now)


@dataclass
class CallRecord:
    """What one simulated call sent and got back."""

    call_sid: str
    stream_sid: str
    sent_audio: bytes = b""
    received_audio: bytearray = field(default_factory=bytearray)
    media_times: list[float] = field(default_factory=list)  # arrival, s after the call began
    lateness: list[float] = field(default_factory=list)  # per received chunk
    send_lag: list[float] = field(default_factory=list)  # how late we sent each media
    marks: list[str] = field(default_factory=list)  # names received
    echoed: list[str] = field(default_factory=list)  # names echoed back
    clears: list[float] = field(default_factory=list)
    played_at_clear: list[int] = field(default_factory=list)  # bytes heard when each came
    errors: list[str] = field(default_factory=list)  # protocol violations by the server
    played_bytes: int = 0
    cleared_bytes: int = 0
    close_code: int | None = None
    refused: str = ""  # HTTP refusal of the upgrade, e.g. "HTTP 401"
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and not self.refused and self.close_code in (1000, None)

    def summary(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "sent_bytes": len(self.sent_audio),
            "received_bytes": len(self.received_audio),
            "media_messages": len(self.media_times),
            "marks": len(self.marks),
            "echoed": len(self.echoed),
            "clears": len(self.clears),
            "lateness_p99_ms": _p99_ms(self.lateness),
            "send_lag_p99_ms": _p99_ms(self.send_lag),
            "errors": self.errors[:5],
            "close_code": self.close_code,
            "refused": self.refused,
        }


_SEQ_SENTINEL = 987654321987


def _p99_ms(values: Sequence[float]) -> float:
    return round(float(np.percentile(values, 99)) * 1000, 2) if len(values) else 0.0


def caller_audio(path: str | os.PathLike[str]) -> bytes:
    """The μ-law 8 kHz mono bytes of a WAV (μ-law as stored, PCM16 8 kHz encoded)."""
    from stages.g711 import encode_ulaw
    from stages.wavfile import read_wav

    header, data = read_wav(path)
    fmt = header.format
    if fmt.rate != RATE or fmt.channels != 1:
        raise ValueError(f"{path}: {fmt}; a phone caller needs 8000 Hz mono audio")
    if fmt.encoding == "pcmu":
        return data
    if fmt.encoding == "pcm16":
        return encode_ulaw(data)
    raise ValueError(f"{path}: {fmt.encoding} audio; use a μ-law or PCM16 WAV")


# ---------------------------------------------------------------------------- one call


async def run_call(
    url: str,
    audio: bytes,
    *,
    clock: Clock | None = None,
    token: str | None = None,
    call_sid: str = "CA00000000000000000000000000000001",
    stream_sid: str = "MZ00000000000000000000000000000001",
    custom_parameters: dict[str, str] | None = None,
    tail_s: float = 10.0,
    quiet_s: float = 1.0,
    echo_marks_on_clear: bool = True,
    close_timeout_s: float = 10.0,
    clock_origin: float | None = None,
    heard: asyncio.Event | None = None,
) -> CallRecord:
    """Play ``audio`` (μ-law 8 kHz) into ``url`` as one Twilio call and record the reply.

    After the last media, waits until nothing has arrived for ``quiet_s`` and every mark has
    been echoed (at most ``tail_s``), then sends ``stop`` and waits for the server to close.
    ``clock_origin`` (a ``clock.now()`` value) delays the first media until then (staggers
    many calls). ``heard``, if given, is set when the first reply audio arrives (a test can
    act once a call is under way both ways, without guessing how long that takes)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    clock = clock or RealClock()
    rec = CallRecord(call_sid, stream_sid, sent_audio=audio)
    player = Player()
    seq = 0
    headers = {"Authorization": f"Bearer {token}"} if token else None
    echo_due = DueMarks()
    last_media = [0.0]
    t_begin = clock.now()

    def next_seq() -> str:
        nonlocal seq
        seq += 1
        return str(seq)

    try:
        ws = await connect(url, additional_headers=headers, compression=None, max_size=2**20)
    except InvalidStatus as exc:
        rec.refused = f"HTTP {exc.response.status_code}"
        return rec
    async with ws:
        send_lock = asyncio.Lock()

        async def send(text: str) -> None:
            async with send_lock:
                await ws.send(text)

        def on_message(raw: str | bytes) -> None:
            now = clock.now()
            try:
                msg = parse_outgoing(raw)
            except TwilioMessageError as exc:
                rec.errors.append(f"{exc.code}: {exc}")
                return
            if msg.stream_sid != stream_sid:
                rec.errors.append(f"31951: {msg.event} for streamSid {msg.stream_sid!r}")
                return
            match msg:
                case OutMedia():
                    rec.lateness.append(player.media(now, len(msg.payload)))
                    rec.received_audio += msg.payload
                    rec.media_times.append(now - t_begin)
                    last_media[0] = now
                    if heard is not None:
                        heard.set()
                case Mark():
                    rec.marks.append(msg.name)
                    echo_due.add(player.mark(now), msg.name)
                case Clear():
                    rec.clears.append(now - t_begin)
                    player.clear(now)
                    rec.played_at_clear.append(player.played_bytes)
                    echo_due.clear(now if echo_marks_on_clear else None)

        async def receiver() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    on_message(raw)

        async def echo(names: list[str]) -> None:
            out = []
            for name in names:
                out.append(encode(Mark(stream_sid, name, int(next_seq()))))
                rec.echoed.append(name)
            with contextlib.suppress(ConnectionClosed):
                for text in out:
                    await send(text)

        recv_task = asyncio.create_task(receiver())
        echo_task = asyncio.create_task(echo_due.run(clock, echo))
        try:
            await send(encode(Connected()))
            start = Start(
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid="AC00000000000000000000000000000001",
                custom_parameters=custom_parameters or {},
                sequence_number=int(next_seq()),
            )
            await send(encode(start))
            n = (len(audio) + FRAME_BYTES - 1) // FRAME_BYTES
            # encoded ahead (around the sequence number, which mark echoes share), so the
            # paced loop only sends
            messages = [
                encode(
                    Media(
                        stream_sid=stream_sid,
                        payload=audio[i * FRAME_BYTES : (i + 1) * FRAME_BYTES],
                        timestamp=i * 20,
                        chunk=i + 1,
                        sequence_number=_SEQ_SENTINEL,
                    )
                ).split(str(_SEQ_SENTINEL), 1)
                for i in range(n)
            ]
            t0 = clock_origin if clock_origin is not None else clock.now()
            for i, (head, tail) in enumerate(messages):
                due = t0 + i * FRAME_BYTES / RATE
                await clock.sleep_until(due)
                rec.send_lag.append(max(0.0, clock.now() - due))
                await send(head + next_seq() + tail)
            await wait_quiet(
                clock,
                last_media,
                quiet_s,
                tail_s,
                lambda: not echo_due and len(rec.echoed) == len(rec.marks),
                recv_task.done,
            )
            player.finish(clock.now())
            await send(encode(Stop(stream_sid, call_sid, start.account_sid, int(next_seq()))))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(close_timeout_s):
                    await recv_task
        except ConnectionClosed:
            pass
        finally:
            echo_task.cancel()
            recv_task.cancel()
            await asyncio.gather(echo_task, recv_task, return_exceptions=True)
        rec.close_code = ws.close_code
    rec.played_bytes = player.played_bytes
    rec.cleared_bytes = player.cleared_bytes
    rec.duration_s = clock.now() - t_begin
    return rec


async def run_calls(
    url: str,
    audio: bytes,
    n: int,
    *,
    spread_s: float = 0.02,
    start_at: float | None = None,
    **options: Any,
) -> list[CallRecord]:
    """``n`` simultaneous calls, their first media spread over ``spread_s`` (so the 20 ms
    ticks of many calls do not all fall on the same instant, as with real callers), the first
    at ``start_at`` (a ``clock.now()`` value; default: once everyone has had time to connect)."""
    clock: Clock = options.pop("clock", None) or RealClock()
    t0 = start_at if start_at is not None else clock.now() + 0.5 + 0.01 * n
    calls = [
        run_call(
            url,
            audio,
            clock=clock,
            call_sid=f"CA{i:032d}",
            stream_sid=f"MZ{i:032d}",
            clock_origin=t0 + spread_s * i / max(1, n),
            **options,
        )
        for i in range(n)
    ]
    return list(await asyncio.gather(*calls))


# ---------------------------------------------------------------------------- load


def phone_yaml(
    engine: str,
    *,
    pace: float = 1.0,
    emulator_url: str = "",
    emulator_chunk_ms: int = 100,
    append_ms: int = 20,
    chunk_ms: int = 20,
    mark_ms: int | None = None,
) -> str:
    """The zero-transcode phone pipeline. The model is the emulator: in-process (``provider:
    emulator``, one per call) or, with ``emulator_url``, a separate ``pipeline emulator``.
    ``append_ms``: the session's append size; ``chunk_ms``: the sink's chunk size;
    ``mark_ms``: the sink's audio per mark (None: a mark per chunk)."""
    marks = f", mark_ms: {mark_ms}" if mark_ms is not None else ""
    if emulator_url:
        agent = (
            f"{{type: realtime_session, provider: xai, url: '{emulator_url}', "
            "api_key_env: CALLSIM_EMULATOR_KEY, input_format: pcmu, output_format: pcmu, "
            f"turn_detection: none, append_ms: {append_ms}}}"
        )
    else:
        agent = (
            "{type: realtime_session, provider: emulator, input_format: pcmu, "
            f"output_format: pcmu, turn_detection: none, append_ms: {append_ms}, "
            f"emulator: {{think_ms: 0, pace: {pace}, reply: echo, "
            f"chunk_ms: {emulator_chunk_ms}}}}}"
        )
    return f"""version: 1
pipelines:
  phone:
    stages:
      caller: {{type: twilio_source}}
      gate:   {{type: vad_gate, engine: {engine}, mode: gate, prefix_ms: 300, hangover_ms: 400}}
      agent:  {agent}
      phone:  {{type: twilio_sink, chunk_ms: {chunk_ms}{marks}}}
    links:
      - caller -> gate -> agent -> phone
"""


def _port_of(url: str) -> int | None:
    """The port of a ``ws://host:port/...`` URL (None for no URL)."""
    return urllib.parse.urlsplit(url).port if url else None


@contextlib.contextmanager
def emulator_process(*, cpu: int | None = None, pace: float = 1.0, chunk_ms: int = 100) -> Any:
    """``pipeline emulator`` in a subprocess on a free loopback port; yields its URL."""
    cmd = [sys.executable, "-c", "from pipeline.cli import run_main; run_main()", "emulator"]
    cmd += ["--port", "0", "--think-ms", "0", "--pace", str(pace), "--reply", "echo"]
    cmd += ["--chunk-ms", str(chunk_ms)]
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = _wait_line(proc, r"listening on (ws://\S+)")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_metrics(text: str) -> dict[str, Any]:
    """The figures ``load`` reads from ``/metrics``: the lateness histogram's buckets and the
    calls by outcome."""
    buckets: dict[float, float] = {}
    lag: dict[float, float] = {}
    outcomes: dict[str, float] = {}
    gc_pauses: dict[float, float] = {}  # all generations together
    gc_s = 0.0
    for line in text.splitlines():
        if line.startswith("pipeline_gc_pause_seconds"):
            m = re.match(
                r'pipeline_gc_pause_seconds_bucket\{generation="\d",le="([^"]+)"\} (\S+)', line
            )
            if m:
                bound = float(m.group(1))
                gc_pauses[bound] = gc_pauses.get(bound, 0.0) + float(m.group(2))
            m = re.match(r"pipeline_gc_pause_seconds_sum\{[^}]*\} (\S+)", line)
            if m:
                gc_s += float(m.group(1))
            continue
        m = re.match(r'pipeline_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            lag[float(m.group(1))] = float(m.group(2))
        m = re.match(r'pipeline_outgoing_frame_lateness_seconds_bucket\{le="([^"]+)"\} (\S+)', line)
        if m:
            buckets[float(m.group(1))] = float(m.group(2))
        m = re.match(r'pipeline_calls_total\{outcome="([^"]+)"\} (\S+)', line)
        if m:
            outcomes[m.group(1)] = float(m.group(2))
    return {
        "lateness_buckets": buckets,
        "loop_lag_buckets": lag,
        "calls": outcomes,
        "gc_pause_buckets": gc_pauses,
        "gc_s": gc_s,
    }


def bucket_p99(buckets: dict[float, float]) -> float | None:
    """The smallest bucket bound at or under which 99 % of the observations fall."""
    if not buckets:
        return None
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return 0.0
    for bound in sorted(buckets):
        if buckets[bound] >= 0.99 * total:
            return bound
    return float("inf")


def bucket_max(buckets: dict[float, float]) -> float | None:
    """The smallest bucket bound at or under which every observation falls (None: none)."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for bound in sorted(buckets):
        if buckets[bound] >= total:
            return bound
    return float("inf")


def _gc_figures(after: dict[str, Any], before: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A process's garbage collections between two readings: how many, the longest pause's
    bucket and the seconds paused in all."""
    pauses = _diff(after["gc_pause_buckets"], before["gc_pause_buckets"])
    return {
        f"{prefix}gc_collections": int(pauses.get(float("inf"), 0.0)),
        f"{prefix}gc_pause_max_le_s": bucket_max(pauses),
        f"{prefix}gc_pause_s": round(after["gc_s"] - before["gc_s"], 4),
    }


def _late_figures(buckets: dict[float, float], prefix: str) -> dict[str, Any]:
    """The emulator's delta lateness: its p99 bucket and how many deltas left over 20 ms
    late."""
    over = buckets.get(float("inf"), 0.0) - buckets.get(0.02, 0.0)
    return {
        f"{prefix}delta_lateness_p99_le_s": bucket_p99(buckets),
        f"{prefix}deltas_over_20ms": int(over),
    }


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


async def _get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.decode(errors="replace").split("\r\n\r\n", 1)[-1]


@contextlib.contextmanager
def serve_process(
    yaml_text: str,
    *,
    cpu: int | None = None,
    max_calls: int = 1000,
    prefix: str = "",
    nice: int = 0,
    workers: int = 1,
    loop: str = "",
    env: dict[str, str] | None = None,
) -> Any:
    """Start ``pipeline serve`` on a free loopback port in a subprocess; yields (process,
    port). SIGTERM and a wait on the way out."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phone.yaml"
        path.write_text(yaml_text)
        main = prefix.split() or ["-c", "from pipeline.cli import run_main; run_main()"]
        cmd = [sys.executable, *main]
        cmd += ["--log-format", "json", "--log-level", "warning"]
        cmd += ["serve", str(path), "--port", "0", "--max-calls", str(max_calls)]
        cmd += ["--workers", str(workers)]
        cmd += ["--drain-timeout", "5"]
        if loop:
            cmd += ["--loop", loop]
        if cpu is not None and hasattr(os, "sched_setaffinity"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        environ = dict(os.environ, PYTHONUNBUFFERED="1", CALLSIM_EMULATOR_KEY="callsim")
        environ.update(env or {})
        environ.pop("PIPELINE_SERVE_TOKEN", None)
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=environ, cwd=ROOT)
        try:
            port = int(_wait_line(proc, r"listening on ws://[^ ]+:(\d+)"))
            yield proc, port
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _drain(stream: Any) -> None:
    show = bool(os.environ.get("CALLSIM_SHOW_SERVER_STDERR"))
    for line in stream:
        if show:
            sys.stderr.write(line)


def _wait_line(proc: subprocess.Popen[str], pattern: str) -> str:
    """Read the process's stderr until a line matches; then keep draining it in a thread."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            continue
        m = re.search(pattern, line)
        if m:
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return m.group(1)
    raise RuntimeError(f"{proc.args!r} did not print {pattern!r} within 30 s")


def _diff(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in after}


def _core_busy(cpu: int | None) -> tuple[float, float]:
    """(busy, total) jiffies of one core (all of them with None), from /proc/stat."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == name:
                v = [float(x) for x in parts[1:]]
                idle = v[3] + v[4]
                return sum(v) - idle, sum(v)
    return 0.0, 0.0


async def _emulator_late(port: int | None) -> dict[str, Any]:
    """The external emulator's figures (``GET /stats``): its audio delta lateness and, as
    in :func:`parse_metrics`, its garbage-collection pauses, as buckets; empty without one."""
    if port is None:
        return {}
    doc = json.loads(await _get(port, "/stats"))

    def buckets(hist: dict[str, Any]) -> dict[float, float]:
        return {float(k.replace("+Inf", "inf")): float(v) for k, v in hist.items()}

    pauses: dict[float, float] = {}
    for hist in doc.get("gc_pause_seconds", {}).values():
        for bound, n in buckets(hist).items():
            pauses[bound] = pauses.get(bound, 0.0) + n
    return {
        "late": buckets(doc["audio_delta_lateness_seconds"]),
        "gc_pause_buckets": pauses,
        "gc_s": sum(doc.get("gc_pause_seconds_total", {}).values()),
    }


async def load_step(
    port: int,
    audio: bytes,
    n: int,
    spread_s: float = TURN_S,
    pid: int | None = None,
    emulator_port: int | None = None,
) -> dict[str, Any]:
    """One load step: ``n`` calls, their starts spread over ``spread_s`` (real calls are not
    in step). Between the last call's start and the first call's end every call is up: the
    *peak* window, whose figures decide the step (with two turns of 7.1 s per call and a
    spread of one turn, the window is one turn long). Whole-step figures are given too.

    With an external emulator (``emulator_port``), how late it sent its audio deltas against
    their pace is given beside the server's lateness: the emulator paces replies in real time,
    so the caller's player has no audio in hand and a delta the emulator sends late reaches
    the caller late by as much, wherever the server is."""
    url = f"ws://127.0.0.1:{port}/media"
    clock = RealClock()
    before = parse_metrics(await _get(port, "/metrics"))
    e_before = await _emulator_late(emulator_port)
    t0 = time.monotonic()
    first = clock.now() + 0.5 + 0.01 * n
    window = (first + spread_s + 0.5, first + len(audio) / RATE - 0.2)
    task = asyncio.create_task(
        run_calls(
            url, audio, n, spread_s=spread_s, start_at=first, tail_s=15.0, quiet_s=1.0, clock=clock
        )
    )
    peak: dict[str, Any] = {}
    if window[1] - window[0] >= 1.0:
        await clock.sleep_until(window[0])
        w0 = parse_metrics(await _get(port, "/metrics"))
        e0 = await _emulator_late(emulator_port)
        c0, m0 = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
        await clock.sleep_until(window[1])
        w1 = parse_metrics(await _get(port, "/metrics"))
        e1 = await _emulator_late(emulator_port)
        c1, m1 = (_cpu_seconds(pid) if pid else 0.0), time.monotonic()
        peak = {
            "peak_window_s": round(m1 - m0, 2),
            "peak_lateness_p99_le_s": bucket_p99(
                _diff(w1["lateness_buckets"], w0["lateness_buckets"])
            ),
            "peak_loop_lag_p99_le_s": bucket_p99(
                _diff(w1["loop_lag_buckets"], w0["loop_lag_buckets"])
            ),
            "peak_server_cpu": round((c1 - c0) / (m1 - m0), 2) if pid else None,
        }
        if emulator_port is not None:
            peak.update(_late_figures(_diff(e1["late"], e0["late"]), "peak_emulator_"))
            peak.update(_gc_figures(e1, e0, "peak_emulator_"))
        peak.update(_gc_figures(w1, w0, "peak_server_"))
    records = await task
    wall = time.monotonic() - t0
    after = parse_metrics(await _get(port, "/metrics"))
    buckets = _diff(after["lateness_buckets"], before["lateness_buckets"])
    emulator: dict[str, Any] = {}
    if emulator_port is not None:
        e_after = await _emulator_late(emulator_port)
        emulator = _late_figures(_diff(e_after["late"], e_before["late"]), "emulator_")
        emulator.update(_gc_figures(e_after, e_before, "emulator_"))
    lag_buckets = _diff(after["loop_lag_buckets"], before["loop_lag_buckets"])
    received = [len(r.received_audio) for r in records]
    lateness = [x for r in records for x in r.lateness]
    lag = [x for r in records for x in r.send_lag]
    return {
        "calls": n,
        "wall_s": round(wall, 2),
        "ok_calls": sum(r.ok for r in records),
        "received_bytes_min": min(received),
        "received_bytes_max": max(received),
        "clears": sum(len(r.clears) for r in records),
        "server_lateness_p99_le_s": bucket_p99(buckets),
        "server_loop_lag_p99_le_s": bucket_p99(lag_buckets),
        **_gc_figures(after, before, "server_"),
        **emulator,
        **peak,
        "caller_lateness_p99_ms": _p99_ms(lateness),
        "caller_send_lag_p99_ms": _p99_ms(lag),
        "errors": sorted({e for r in records for e in r.errors})[:3],
    }


def _autogroup_nice(nice: int) -> None:
    """Where the kernel groups processes by session for scheduling (Linux autogroup), a
    process's niceness only counts within its session's group, and every group gets an equal
    share of the CPU: on a box shared with other work, ``--nice`` must also set the group's
    (the server, the emulator and the callers share this session's). Best effort: it needs
    privileges, and many kernels have no autogroup."""
    path = Path("/proc/self/autogroup")
    try:
        if path.exists():
            path.write_text(str(nice))
    except OSError as exc:
        print(f"callsim: the session's scheduling group keeps its share ({exc})", file=sys.stderr)


def load_audio(path: str | os.PathLike[str] = EXAMPLE_WAV, turns: int = 2) -> bytes:
    """The caller of the load test: ``turns`` times the example's first utterance (0-2.6 s)
    then 4.5 s of silence (Twilio keeps streaming while the caller listens) in which the whole
    reply plays. No barge-in: every call must get exactly the same reply bytes."""
    audio = caller_audio(path)
    return (audio[: 130 * FRAME_BYTES] + b"\xff" * (225 * FRAME_BYTES)) * turns


async def _load(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.wav == str(EXAMPLE_WAV):
        audio = load_audio(args.wav, args.turns)
    else:
        audio = caller_audio(args.wav)
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    server_cpu = client_cpu = None
    if len(cpus) >= 2 and not args.no_pin:
        server_cpu, client_cpu = sorted(cpus)[-1], sorted(cpus)[0]
        os.sched_setaffinity(0, {client_cpu})
    if args.nice:
        os.nice(args.nice)  # the callers too (a negative value needs privileges)
        _autogroup_nice(args.nice)
    rows = []
    for engine in args.engine:
        with contextlib.ExitStack() as stack:
            emulator_url = ""
            if args.external_emulator:
                emulator_url = stack.enter_context(
                    emulator_process(
                        cpu=client_cpu, pace=args.pace, chunk_ms=args.emulator_chunk_ms
                    )
                )
            if args.yaml:
                yaml_text = Path(args.yaml).read_text()
            else:
                yaml_text = phone_yaml(
                    engine,
                    pace=args.pace,
                    emulator_url=emulator_url,
                    emulator_chunk_ms=args.emulator_chunk_ms,
                    append_ms=args.append_ms,
                    chunk_ms=args.chunk_ms,
                    mark_ms=args.mark_ms,
                )
            prefix, loop, env = args.prefix, args.loop, {}
            if args.count_callbacks:  # asyncio's loop, every callback counted (loopcount)
                prefix, loop = "-m benchmarks.loopcount", "asyncio"
                env = {loopcount.OUT_ENV: str(Path(args.count_callbacks).resolve())}
            proc, port = stack.enter_context(
                serve_process(
                    yaml_text, cpu=server_cpu, prefix=prefix, nice=args.nice, loop=loop, env=env
                )
            )
            reference = await run_calls(f"ws://127.0.0.1:{port}/media", audio, 1, tail_s=15.0)
            expected = len(reference[0].received_audio)
            for n in args.calls:
                cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
                own0 = time.process_time()
                busy0, total0 = _core_busy(server_cpu)
                load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                row = await load_step(
                    port, audio, n, pid=proc.pid, emulator_port=_port_of(emulator_url)
                )
                wall = time.monotonic() - t0
                cpu = (_cpu_seconds(proc.pid) - cpu0) / wall
                busy1, total1 = _core_busy(server_cpu)
                row["callers_cpu"] = round((time.process_time() - own0) / wall, 2)
                if load0 is not None:  # the machine's 1-minute load average, before and after
                    row["load_average"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
                # the server's core: how busy it was in all, and how much of it others took
                core = (busy1 - busy0) / max(1.0, total1 - total0)
                row["server_core_busy"] = round(core, 2)
                row["server_core_others"] = round(max(0.0, core - cpu), 2)
                # CPU per call while it is up (the step's wall also holds the ramp and tail)
                call_s = n * len(audio) / RATE
                per_call = (cpu * wall) / call_s if call_s else 0.0
                row["server_cpu_per_call"] = round(per_call, 5)
                row["calls_per_core_by_cpu"] = round(1 / per_call) if per_call else None
                # both the peak window (every call up) and the whole step must pass
                p99s = [row["server_lateness_p99_le_s"], row.get("peak_lateness_p99_le_s", 0.0)]
                p99 = None if None in p99s else max(p99s)
                row.update(
                    engine=engine,
                    emulator="external" if args.external_emulator else "in-process",
                    loop=args.loop or "auto",
                    expected_bytes=expected,
                    server_cpu=round(cpu, 2),
                    lost_audio=row["received_bytes_min"] < expected,
                    passed=(
                        row["ok_calls"] == n
                        and row["received_bytes_min"] >= expected
                        and p99 is not None
                        and p99 <= 0.02
                    ),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
                if not row["passed"] and not args.keep_going:
                    break
            served = 1 + sum(r["calls"] for r in rows if r["engine"] == engine)
        if args.count_callbacks:  # the server has exited and written its counts
            frames = served * len(audio) / FRAME_BYTES
            print("\n".join(loopcount.summary(args.count_callbacks, frames)), flush=True)
    return rows


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callsim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("call", help="one call: play a WAV, print what came back")
    c.add_argument("url", help="ws://HOST:PORT/PATH of 'pipeline serve'")
    c.add_argument("wav", nargs="?", default=str(EXAMPLE_WAV), help="8 kHz mono WAV")
    c.add_argument("--token", help="shared token (Authorization: Bearer)")
    c.add_argument("--out", help="write the audio that came back to this μ-law WAV")
    c.add_argument("--tail", type=float, default=10.0, help="max seconds to wait for replies")
    c.add_argument("--calls", type=int, default=1, help="simultaneous calls (1)")
    ld = sub.add_parser("load", help="N calls against a 'pipeline serve' subprocess")
    ld.add_argument("--calls", default="25,50,100,150,200", help="steps, e.g. 50,100,150")
    ld.add_argument(
        "--engine", default="webrtc", help="VAD engines, comma separated (webrtc,energy,silero)"
    )
    ld.add_argument("--wav", default=str(EXAMPLE_WAV))
    ld.add_argument("--turns", type=int, default=2, help="turns per call (2, of 7.1 s each)")
    ld.add_argument("--pace", type=float, default=1.0, help="emulator reply pace (1: real time)")
    ld.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ld.add_argument(
        "--nice", type=int, default=0, help="niceness of the server and callers (a shared box)"
    )
    ld.add_argument("--keep-going", action="store_true", help="run every step even after a fail")
    ld.add_argument("--json", help="write the rows to this file")
    ld.add_argument("--yaml", help="serve this pipelines file instead of the phone pipeline")
    ld.add_argument(
        "--external-emulator",
        action="store_true",
        help="run the emulator as its own process (on the callers' core), not inside serve",
    )
    ld.add_argument("--emulator-chunk-ms", type=int, default=100, help="audio per delta (100)")
    ld.add_argument("--append-ms", type=int, default=20, help="the session's append size, ms (20)")
    ld.add_argument("--chunk-ms", type=int, default=20, help="the sink's chunk size, ms (20)")
    ld.add_argument(
        "--mark-ms", type=int, default=None, help="the sink's audio per mark, ms (a mark per chunk)"
    )
    ld.add_argument(
        "--loop", default="", help="the server's event loop: auto, asyncio or uvloop (auto)"
    )
    ld.add_argument("--prefix", default="", help="command prefix for the server (profiling)")
    ld.add_argument(
        "--count-callbacks",
        metavar="FILE",
        help="run the server on asyncio's loop with every callback counted (benchmarks."
        "loopcount), write the counts to FILE and print them per call-frame",
    )
    args = parser.parse_args(argv)
    if args.command == "call":
        audio = caller_audio(args.wav)
        records = asyncio.run(run_calls(args.url, audio, args.calls, token=args.token))
        for r in records:
            print(json.dumps(r.summary()))
        if args.out and records:
            from pipeline.frames import AudioFormat
            from stages.wavfile import WavWriter

            w = WavWriter(args.out, AudioFormat("pcmu", RATE))
            w.write(bytes(records[0].received_audio))
            w.close()
        return 0 if all(r.ok for r in records) else 1
    args.calls = [int(x) for x in str(args.calls).split(",")]
    args.engine = [x.strip() for x in str(args.engine).split(",")]
    rows = asyncio.run(_load(args))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
