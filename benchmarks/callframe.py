"""Where a call-frame's CPU goes on the server: the ``phone`` shape (Twilio Media Streams in,
webrtc VAD gate, μ-law passthrough to a realtime model in another process, μ-law back), per
20 ms of a call, piece by piece.

Each row drives the code ``pipeline serve`` runs for that piece, with no event loop and no
socket, and gives the median CPU µs (process time: what other processes take is not counted)
per *call-frame* (20 ms of one call): a piece that happens once
per append, per reply delta or per outgoing chunk is divided by the call-frames it covers. The
rows that depend on a setting (the session's append size, the sink's ``chunk_ms``) come at each
setting, so a cut can be read off before it is made.

* ``ws in``: a client (masked) WebSocket text frame parsed and decoded to str, as the server
  reads Twilio's ``media`` (and, per outgoing chunk, its ``mark`` echo): websockets' frame
  parser alone; then the whole read path of a connection (``data_received`` of the frame and
  the ``recv()`` that returns it), websockets' own against :mod:`stages.wsframes`' (what
  ``pipeline serve`` runs), for a ``media`` and for the model's 100 ms delta (unmasked);
* ``twilio parse``: a ``media`` read into the source's audio frame as the call does it
  (``TwilioCall.take_fast``: JSON, base64, field checks), and ``parse_incoming`` of it (the
  message object: what the call did before);
* ``gate``: μ-law decoded for analysis and the webrtc VAD gate's ``push``;
* ``session append``: ``input_audio_buffer.append`` encoded (base64, JSON) plus the masked
  WebSocket frame to the model, once per append;
* ``reply delta``: a 100 ms ``response.output_audio.delta`` from the model, framed, parsed,
  decoded (one per five call-frames);
* ``sink``: the playout cutting the reply into ``media`` + ``mark`` messages, and both framed;
* ``mark echo``: Twilio's ``mark`` echo framed and taken by the call (per echo: one per
  chunk, or one per ``mark_ms`` of audio with the sink's ``mark_ms``);
* ``task hop``: one ``await`` hand-over between two tasks through an ``asyncio.Queue`` (the
  runtime's links, the reader task, the session's sender); the phone shape makes about eight
  per call-frame.

Whatever the pieces do not cover (the event loop's selector and callbacks, socket syscalls,
the runtime's bookkeeping, garbage collection) is the difference between the sum and the
server's measured CPU per call-frame under load (``python -m benchmarks.callsim load
--external-emulator``; docs/scale.md gives both).

Run: ``python -m benchmarks.callframe`` (about 10 s; ``--json FILE`` for the rows).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pipeline.loops import loop_factory

from .harness import per_call_us

FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
_READS = {False: "websockets", True: "fast frames"}  # the two read paths of a connection
STREAM_SID = "MZ0123456789abcdef0123456789abcdef"


def _ws_frame(text: str, *, masked: bool) -> bytes:
    from websockets.frames import Frame, Opcode

    return Frame(Opcode.TEXT, text.encode()).serialize(mask=masked, extensions=[])


def _ws_parse(data: bytes, *, masked: bool) -> str:
    """Parse one text frame as websockets' protocol does, and decode its UTF-8."""
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(data)
    gen = Frame.parse(reader.read_exact, mask=masked, max_size=2**20, extensions=[])
    try:
        next(gen)
    except StopIteration as done:
        frame = done.value
        return bytes(frame.data).decode()
    raise RuntimeError("incomplete frame")


class _NoSocket(asyncio.Transport):
    """What a connection needs of a transport to read (nothing is written when reading data
    frames)."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _reader(fast: bool, *, server: bool) -> Callable[[bytes], str]:
    """``read(frame)``: an open connection's ``data_received(frame)`` and the ``recv()`` that
    returns its message (websockets' connection, or :class:`stages.wsframes.FastReads`)."""
    from websockets.asyncio.connection import Connection
    from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

    from stages.wsframes import FastReads

    async def make() -> Connection:
        cls = FastReads if fast else Connection
        conn = cls(Protocol(SERVER if server else CLIENT, state=OPEN), ping_interval=None)
        conn.connection_made(_NoSocket())
        return conn

    conn = asyncio.run(make())  # (recv never waits below: the loop is not needed again)

    def read(frame: bytes) -> str:
        conn.data_received(frame)
        step = conn.recv()
        try:
            step.send(None)
        except StopIteration as done:
            return str(done.value)
        raise RuntimeError("recv() waited")

    return read


def _audio(n: int) -> bytes:
    return bytes((i * 37 + 11) & 0xFF for i in range(n))


def _started_call() -> Any:
    """A Twilio call past its ``start``, as the server holds one (a no-op mark handler)."""
    from stages.telephony.twilio import Connected, Start, TwilioCall, encode

    async def send(_text: str) -> None:
        return None

    call = TwilioCall(send)
    for msg in (Connected(), Start(stream_sid=STREAM_SID, call_sid="CA1")):
        with contextlib.suppress(StopIteration):
            call.receive(encode(msg)).send(None)  # nothing in it waits
    assert call.start is not None
    call.on_mark = lambda _name: None
    return call


def pieces(inner: int = 2000, repeat: int = 15) -> list[dict[str, Any]]:
    """The rows: piece, setting, µs per call-frame (median of ``repeat`` samples)."""
    from pipeline.frames import Audio, AudioFormat
    from stages.realtime import protocol as rp
    from stages.telephony.twilio import Mark, Media, Playout, encode, parse_incoming

    call = _started_call()
    from stages.vad.engines import WebrtcEngine
    from stages.vad.gate import VadGate

    rows: list[dict[str, Any]] = []

    def add(piece: str, setting: str, fn: Callable[[], object], per_frames: float = 1.0) -> None:
        samples = per_call_us(fn, inner=inner, repeat=repeat, clock=time.process_time_ns)
        us = float(statistics.median(samples))
        rows.append({"piece": piece, "setting": setting, "us_per_call_frame": us / per_frames})

    payload = _audio(FRAME_BYTES)
    media = encode(
        Media(stream_sid=STREAM_SID, payload=payload, timestamp=123480, chunk=6175,
              sequence_number=6177)
    )  # fmt: skip
    media_frame = _ws_frame(media, masked=True)
    add("ws in", "media (masked, 20 ms)", lambda: _ws_parse(media_frame, masked=True))
    for fast in (False, True):
        read = _reader(fast, server=True)
        add("ws in", f"media, {_READS[fast]} read + recv", lambda read=read: read(media_frame))
    queue = call.inbound

    def take_media() -> object:
        call.take_fast(media)
        return queue.get_nowait()

    add("twilio parse", "media → the source's frame (take_fast)", take_media)
    add("twilio parse", "media → Media (parse_incoming)", lambda: parse_incoming(media))

    gate = VadGate(WebrtcEngine(8000), mode="gate", prefix_ms=300, hangover_ms=400)
    pts = [0.0]

    def gate_push() -> object:
        pts[0] += 0.02
        return gate.push(Audio(payload, "pcmu", 8000, pts=pts[0]))

    add("gate", "webrtc, μ-law in (decoded for analysis)", gate_push)

    fmt = AudioFormat("pcmu", 8000)
    proto = rp.RealtimeProtocol(rp.SessionConfig(input_format=fmt, output_format=fmt))
    proto.connection_made()
    proto.receive('{"type":"session.updated","session":{}}')
    proto.data_to_send()
    for ms in (20, 40, 60, 100):
        chunk = _audio(8 * ms)

        def append(chunk: bytes = chunk) -> object:
            proto.append_audio(chunk)
            return [_ws_frame(m, masked=True) for m in proto.data_to_send()]

        add("session append", f"every {ms} ms", append, per_frames=ms / 20)

    delta = orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "evt_0001",
            "response_id": "resp_0001",
            "item_id": "item_0002",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(_audio(800)).decode(),
        }
    ).decode()
    delta_frame = _ws_frame(delta, masked=False)
    for fast in (False, True):
        read = _reader(fast, server=False)
        add(
            "ws in",
            f"100 ms delta (unmasked), {_READS[fast]} read + recv",
            lambda read=read: read(delta_frame),
            per_frames=5,
        )
    add(
        "reply delta",
        "100 ms delta in",
        lambda: proto.receive(_ws_parse(delta_frame, masked=False)),
        per_frames=5,
    )

    mark = encode(Mark(STREAM_SID, "1234", 6200))
    mark_frame = _ws_frame(mark, masked=True)
    for chunk_ms, mark_ms in ((20, None), (40, None), (40, 200)):
        playout = Playout(STREAM_SID, chunk_ms=chunk_ms, mark_ms=mark_ms)
        block = _audio(8 * chunk_ms)
        clock = [0.0]

        def sink(
            playout: Playout = playout,
            block: bytes = block,
            ms: int = chunk_ms,
            clock: list[float] = clock,
        ) -> object:
            clock[0] += ms / 1000
            msgs = playout.push(block, clock[0], clock[0])
            playout.pending.clear()  # (marks echo elsewhere; keep the deque from growing)
            return [_ws_frame(m, masked=False) for m in msgs]

        marks = f", mark_ms {mark_ms}" if mark_ms else ""
        add("sink", f"media + mark, chunk_ms {chunk_ms}{marks}", sink, per_frames=chunk_ms / 20)
        add(
            "mark echo",
            f"chunk_ms {chunk_ms}{marks}",
            lambda: call.take_fast(_ws_parse(mark_frame, masked=True)),
            per_frames=(mark_ms or chunk_ms) / 20,
        )

    return rows


# ---------------------------------------------------------------------------- over a socket

# The peer of the socket rows, in a process of its own (its CPU is not counted): a client that
# either reads everything until the server closes ("sink") or sends ``n`` Twilio media
# messages, one every ``gap`` seconds, so that each arrives on its own as on a real call.
_PEER = r"""
import sys, time
from websockets.sync.client import connect
url, mode, n, gap, msg = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
with connect(url, compression=None, max_size=None) as ws:
    if mode == "sink":
        for _ in ws:
            pass
    else:
        for _ in range(n):
            ws.send(msg)
            time.sleep(gap)
"""


def socket_rows(loop: str, n: int = 4000, gap_s: float = 0.0004) -> list[dict[str, Any]]:
    """The rows that need a real socket and event loop, on ``loop`` (``asyncio`` or
    ``uvloop``): µs of this process's CPU per call-frame for

    * ``socket out``: a chunk's ``media`` and ``mark`` sent as two messages (two writes) or as
      one batch (one write; :func:`stages.wsbatch.send_batch`), per 40 ms chunk (so per two
      call-frames);
    * ``socket in``: a caller's ``media`` read by a reader task and handed to the source's task
      through a queue (two task wake-ups), or read by the source's task itself (one), each
      message arriving on its own; each with websockets' own read path and with
      :mod:`stages.wsframes`' (what ``pipeline serve`` runs), run alternately;
    * ``task hop``: one hand-over between two tasks through an ``asyncio.Queue``.
    """
    from websockets.asyncio.server import ServerConnection, serve

    from pipeline.loops import run
    from stages.telephony.twilio import Mark, Media, OutMedia, encode
    from stages.wsbatch import BatchedServerConnection, BatchedWrites, send_batch

    class StockReads(BatchedWrites, ServerConnection):
        """Batched writes, websockets' own read path."""

    media_out = encode(OutMedia(STREAM_SID, _audio(320)))
    mark_out = encode(Mark(STREAM_SID, "1234"))
    media_in = encode(
        Media(stream_sid=STREAM_SID, payload=_audio(FRAME_BYTES), timestamp=123480, chunk=6175,
              sequence_number=6177)
    )  # fmt: skip
    rows: list[dict[str, Any]] = []

    async def measure(case: str, fast: bool = True) -> float:
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def handler(ws: Any) -> None:
            t0 = time.process_time_ns()
            count = 0
            if case in ("two sends", "one batch"):
                for _ in range(n):
                    if case == "two sends":
                        await ws.send(media_out)
                        await ws.send(mark_out)
                    else:
                        await send_batch(ws, [media_out, mark_out])
                count = n
                await ws.close()
            elif case == "reader task + queue":
                q: asyncio.Queue[Any] = asyncio.Queue(64)

                async def reader() -> None:
                    async for m in ws:
                        await q.put(m)
                    await q.put(None)

                task = asyncio.create_task(reader())
                while await q.get() is not None:
                    count += 1
                await task
            else:  # the source reads the socket itself
                async for _ in ws:
                    count += 1
            done.set_result((time.process_time_ns() - t0) / max(1, count) / 1e3)

        conn = BatchedServerConnection if fast else StockReads
        async with serve(
            handler, "127.0.0.1", 0, create_connection=conn, compression=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            mode = "sink" if case in ("two sends", "one batch") else "send"
            peer = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _PEER, f"ws://127.0.0.1:{port}", mode, str(n), str(gap_s),
                media_in,
            )  # fmt: skip
            result = await done
            await peer.wait()
        return result

    for case, piece, per_frames in (
        ("two sends", "socket out", 2.0),
        ("one batch", "socket out", 2.0),
    ):
        us = min(run(measure(case), loop) for _ in range(5))  # noise only adds
        setting = f"{case}, {loop}"
        rows.append({"piece": piece, "setting": setting, "us_per_call_frame": us / per_frames})
    for case in ("reader task + queue", "source reads"):
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(5):
            for fast in (False, True):  # alternately, so that both see the same load
                runs[fast].append(run(measure(case, fast), loop))
        for fast in (False, True):
            setting = f"{case}, {_READS[fast]}, {loop}"
            rows.append({"piece": "socket in", "setting": setting,
                         "us_per_call_frame": min(runs[fast])})  # fmt: skip
    rows.append({"piece": "task hop", "setting": f"one await through a queue, {loop}",
                 "us_per_call_frame": hop_us(loop=loop)})  # fmt: skip
    return rows


def hop_us(n: int = 20000, loop: str = "asyncio") -> float:
    """µs for one hand-over between two tasks through an asyncio.Queue (put, the consumer
    wakes, get), on a loop with nothing else to do."""

    async def main() -> float:
        q: asyncio.Queue[int | None] = asyncio.Queue(1)

        async def consumer() -> None:
            while await q.get() is not None:
                pass

        task = asyncio.create_task(consumer())
        t0 = time.process_time_ns()
        for i in range(n):
            await q.put(i)
        await q.put(None)
        await task
        return (time.process_time_ns() - t0) / n / 1e3

    from pipeline.loops import run

    return min(run(main(), loop) for _ in range(3))


def budget(
    rows: Sequence[dict[str, Any]],
    *,
    append_ms: int,
    chunk_ms: int,
    hops: int,
    loop: str,
    mark_ms: int | None = None,
) -> float:
    """µs per call-frame of the pieces that run without a socket, for one setting of the append
    size, chunk size and the sink's ``mark_ms``, plus ``hops`` task hand-overs on ``loop``."""
    marks = f", mark_ms {mark_ms}" if mark_ms else ""
    pick = {
        "ws in": "media, fast frames read + recv",  # what ``pipeline serve`` runs
        "twilio parse": "media → the source's frame (take_fast)",
        "session append": f"every {append_ms} ms",
        "sink": f"media + mark, chunk_ms {chunk_ms}{marks}",
        "mark echo": f"chunk_ms {chunk_ms}{marks}",
    }
    total = 0.0
    for r in rows:
        if r["piece"] in ("socket out", "socket in"):
            continue
        if r["piece"] == "task hop":
            if r["setting"].endswith(loop):
                total += hops * r["us_per_call_frame"]
            continue
        want = pick.get(r["piece"])
        if want is not None and r["setting"] != want:
            continue
        total += r["us_per_call_frame"]
    return total


def machine() -> str:
    import websockets

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, Python {platform.python_version()}, websockets {websockets.__version__}, "
        f"orjson {orjson.__version__}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.callframe", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args(argv)
    rows = pieces(*((300, 5) if args.quick else (2000, 15)))
    loops = ["asyncio"]
    if loop_factory("auto")[0] == "uvloop":
        loops.append("uvloop")
    for loop in loops:
        rows += socket_rows(loop, n=1000 if args.quick else 4000)
    print(f"# {machine()}")
    print(f"{'piece':16} {'setting':48} {'µs per call-frame':>18}")
    for r in rows:
        print(f"{r['piece']:16} {r['setting']:48} {r['us_per_call_frame']:18.1f}")
    for loop in loops:
        for append_ms, chunk_ms, mark_ms in ((20, 20, None), (60, 40, None), (60, 40, 200)):
            b = budget(
                rows, append_ms=append_ms, chunk_ms=chunk_ms, hops=8, loop=loop, mark_ms=mark_ms
            )
            marks = f", mark_ms {mark_ms}" if mark_ms else ""
            print(
                f"pieces, appends every {append_ms} ms, chunk_ms {chunk_ms}{marks}, 8 hops on "
                f"{loop}: {b:.1f} µs per call-frame = {b * 50 / 1e6 * 100:.2f} % of a core per call"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
