"""stages.wsframes: incoming frames parsed from the bytes read give exactly what websockets
gives (messages, bytes written back, flow control, close codes), whatever the frames and
wherever the reads cut them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.connection import Connection
from websockets.exceptions import ConcurrencyError, ConnectionClosed
from websockets.frames import OP_CLOSE, OP_TEXT, Frame
from websockets.protocol import CLIENT, OPEN, SERVER, Protocol

from stages.wsframes import FastReads, MessageQueue

# With debug logging on, FastReads leaves every frame to websockets (which logs each): the
# loopback tests' connections log elsewhere, whatever level other tests leave "websockets" at.
QUIET = logging.getLogger("tests.wsframes.websockets")
QUIET.setLevel(logging.INFO)


class StockConnection(Connection):
    pass


class FastConnection(FastReads):
    pass


# ---------------------------------------------------------------------------- a peer in memory


class Transport(asyncio.Transport):
    """Records what the connection writes and its flow control; like a peer that closes the
    TCP connection once it has our close frame or our end of stream."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn
        self.written = bytearray()
        self.log: list[str] = []
        self.lost = False

    def write(self, data: Any) -> None:
        self.written += data
        if _has_close_frame(bytes(self.written), masked=self.conn.protocol.side is CLIENT):
            self._lose()

    def write_eof(self) -> None:
        self.log.append("eof")
        self._lose()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.log.append("close")
        self._lose()

    def abort(self) -> None:
        self.log.append("abort")
        self._lose()

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def is_closing(self) -> bool:
        return self.lost

    def pause_reading(self) -> None:
        self.log.append("pause")

    def resume_reading(self) -> None:
        self.log.append("resume")

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _has_close_frame(data: bytes, *, masked: bool) -> bool:
    pos = 0
    while len(data) - pos >= 2:
        opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2 + {126: 2, 127: 8}.get(length, 0) + (4 if masked else 0)
        if length == 126:
            length = struct.unpack(
                "!H", data[pos - 2 - (4 if masked else 0) : pos - (4 if masked else 0)]
            )[0]
        elif length == 127:
            length = struct.unpack(
                "!Q", data[pos - 8 - (4 if masked else 0) : pos - (4 if masked else 0)]
            )[0]
        if opcode == 8:
            return True
        pos += length
    return False


# ---------------------------------------------------------------------------- frames on the wire


@dataclass(frozen=True)
class RawFrame:
    opcode: int
    payload: bytes
    fin: bool = True
    rsv: int = 0  # the three RSV bits
    masked: bool | None = None  # None: as the side requires
    long_length: bool = False  # the 64-bit length form even for a short payload

    def wire(self, *, client: bool) -> bytes:
        """The frame as the peer sends it (``client``: the peer is a client, so it masks)."""
        masked = client if self.masked is None else self.masked
        head = bytearray([(0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode])
        n = len(self.payload)
        bit = 0x80 if masked else 0
        if self.long_length or n > 0xFFFF:
            head += bytes([bit | 127]) + struct.pack("!Q", n)
        elif n >= 126:
            head += bytes([bit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([bit | n])
        if not masked:
            return bytes(head) + self.payload
        key = os.urandom(4)
        body = bytes(b ^ key[i % 4] for i, b in enumerate(self.payload))
        return bytes(head) + key + body


MAX_SIZE = 300

texts = st.text(max_size=40).map(str.encode) | st.text(min_size=100, max_size=200).map(str.encode)
payloads = st.binary(max_size=60) | st.binary(min_size=120, max_size=MAX_SIZE)
bad_utf8 = st.sampled_from([b"\xff", b"ab\xc3", b"\xed\xa0\x80", b"ok\x80ok", b"\xc0\xaf"])
close_payloads = st.sampled_from(
    [b"", struct.pack("!H", 1000), struct.pack("!H", 1001) + b"bye", struct.pack("!H", 4000),
     struct.pack("!H", 999), b"\x03", struct.pack("!H", 1000) + b"\xff"]
)  # fmt: skip


@st.composite
def one_message(draw: st.DrawFn) -> list[RawFrame]:
    kind = draw(
        st.sampled_from(
            ["text", "text", "text", "binary", "binary", "fragmented", "ping", "pong",
             "bad utf-8", "oversize", "rsv", "bad opcode", "wrong mask", "long control",
             "stray continuation", "long length", "close"]
        )
    )  # fmt: skip
    if kind == "text":
        return [RawFrame(1, draw(texts))]
    if kind == "binary":
        return [RawFrame(2, draw(payloads))]
    if kind == "long length":
        return [RawFrame(draw(st.sampled_from([1, 2])), draw(texts), long_length=True)]
    if kind == "fragmented":
        op = draw(st.sampled_from([1, 2]))
        data = draw(texts) if op == 1 else draw(payloads)
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), min_size=1, max_size=3)))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        frames = [
            RawFrame(op if i == 0 else 0, part, fin=i == len(parts) - 1)
            for i, part in enumerate(parts)
        ]
        if draw(st.booleans()):  # a ping between fragments
            frames.insert(1, RawFrame(9, draw(st.binary(max_size=10))))
        return frames
    if kind == "ping":
        return [RawFrame(9, draw(st.binary(max_size=125)))]
    if kind == "pong":
        return [RawFrame(10, draw(st.binary(max_size=20)))]
    if kind == "bad utf-8":
        return [RawFrame(1, draw(bad_utf8))]
    if kind == "oversize":
        return [
            RawFrame(draw(st.sampled_from([1, 2])), b"x" * draw(st.integers(MAX_SIZE + 1, 400)))
        ]
    if kind == "rsv":
        return [RawFrame(1, b"hi", rsv=draw(st.integers(1, 7)))]
    if kind == "bad opcode":
        return [RawFrame(draw(st.sampled_from([3, 7, 11, 15])), b"?")]
    if kind == "wrong mask":
        return [RawFrame(1, b"hi", masked=draw(st.booleans()))]  # may be right by chance
    if kind == "long control":
        return [RawFrame(9, b"p" * 126)]
    if kind == "stray continuation":
        return [RawFrame(0, b"c")]
    return [RawFrame(8, draw(close_payloads))]


@dataclass
class Outcome:
    got: list[Any] = field(default_factory=list)
    written: bytes = b""
    log: list[str] = field(default_factory=list)
    state: Any = None
    closed: Any = None


async def run_connection(
    cls: type[Connection],
    wire: bytes,
    cuts: Sequence[int],
    drains: Sequence[bool],
    *,
    server: bool,
    eof: bool,
    max_queue: int,
    decode: bool | None = None,
) -> Outcome:
    protocol = Protocol(SERVER if server else CLIENT, state=OPEN, max_size=MAX_SIZE, logger=QUIET)
    conn = cls(protocol, ping_interval=None, max_queue=max_queue, close_timeout=None)
    assert not conn.debug  # (else FastReads leaves every frame to websockets)
    transport = Transport(conn)
    conn.connection_made(transport)
    out = Outcome()

    async def drain() -> bool:
        """Read every whole message queued; False once the connection reported its end."""
        while _whole_message_queued(conn) and not conn.recv_messages.closed:
            try:
                out.got.append(await conn.recv(decode))
            except ConnectionClosed as exc:
                out.got.append(("closed", type(exc).__name__, exc.rcvd, exc.sent))
                return False
        return True

    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    for piece, read in zip(pieces, drains, strict=False):
        if transport.lost:
            break
        conn.data_received(piece)
        if read and not await drain():
            break
    if not transport.lost:
        if eof:
            conn.eof_received()
        if not transport.lost:
            transport.close()
    for _ in range(3):
        await asyncio.sleep(0)  # connection_lost runs
    while True:
        try:
            out.got.append(await conn.recv(decode))
        except ConnectionClosed as exc:
            out.got.append(("closed", type(exc).__name__, exc.rcvd, exc.sent))
            break
    out.written = bytes(transport.written)
    out.log = transport.log
    out.state = (
        protocol.state,
        protocol.close_rcvd,
        protocol.close_sent,
        protocol.close_rcvd_then_sent,
    )
    out.closed = (
        conn.close_code,
        conn.close_reason,
        type(protocol.parser_exc).__name__,
        str(protocol.parser_exc),
    )
    return out


def _whole_message_queued(conn: Connection) -> bool:
    queue = conn.recv_messages.frames.queue
    return any(not isinstance(item, Frame) or item.fin for item in queue)


@pytest.fixture(autouse=True)
def _fixed_client_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our client's frames carry random masks: fix them so both runs write the same bytes."""
    import websockets.frames

    monkeypatch.setattr(websockets.frames.secrets, "token_bytes", lambda n: bytes(range(1, n + 1)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=st.lists(one_message(), max_size=12),
    server=st.booleans(),
    eof=st.booleans(),
    max_queue=st.sampled_from([1, 2, 16]),
    decode=st.sampled_from([None, None, False, True]),
    data=st.data(),
)
def test_any_frames_cut_anywhere_give_what_websockets_gives(
    messages: list[list[RawFrame]],
    server: bool,
    eof: bool,
    max_queue: int,
    decode: bool | None,
    data: st.DataObject,
) -> None:
    wire = b"".join(f.wire(client=server) for m in messages for f in m)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(wire)), max_size=8))))
    drains = data.draw(st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1))

    def run(cls: type[Connection]) -> Outcome:
        return asyncio.run(
            run_connection(
                cls, wire, cuts, drains, server=server, eof=eof, max_queue=max_queue, decode=decode
            )
        )

    stock, fast = run(StockConnection), run(FastConnection)
    assert fast.got == stock.got
    assert fast.written == stock.written
    # flow control and the end of the stream each in the same order (within one read, where
    # websockets pauses before or after writing its close frame does not show)
    assert _flow(fast) == _flow(stock)
    assert _ends(fast) == _ends(stock)
    assert fast.state == stock.state
    assert fast.closed == stock.closed


def _flow(o: Outcome) -> list[str]:
    return [e for e in o.log if e in ("pause", "resume")]


def _ends(o: Outcome) -> list[str]:
    return [e for e in o.log if e not in ("pause", "resume")]


# ---------------------------------------------------------------------------- examples


def _outcomes(
    frames: Sequence[RawFrame], cuts: Sequence[int] = (), **kw: Any
) -> tuple[Outcome, Outcome]:
    wire = b"".join(f.wire(client=kw.get("server", True)) for f in frames)
    args = dict(server=True, eof=True, max_queue=16) | kw
    drains = [True] * (len(cuts) + 1)
    return tuple(  # type: ignore[return-value]
        asyncio.run(run_connection(cls, wire, cuts, drains, **args))
        for cls in (StockConnection, FastConnection)
    )


def test_messages_pings_and_close_in_one_read() -> None:
    frames = [RawFrame(1, b'{"event":"media"}'), RawFrame(9, b"hb"), RawFrame(2, b"\x00\x01"),
              RawFrame(8, struct.pack("!H", 1000) + b"done")]  # fmt: skip
    stock, fast = _outcomes(frames)
    assert fast == stock
    assert fast.got[:2] == ['{"event":"media"}', b"\x00\x01"]
    assert fast.got[2][1] == "ConnectionClosedOK"
    assert fast.written.startswith(b"\x8a\x02hb")  # the pong, then the close echoed


def test_a_message_over_max_size_closes_with_1009() -> None:
    stock, fast = _outcomes([RawFrame(1, b"a"), RawFrame(1, b"x" * (MAX_SIZE + 1))])
    assert fast == stock
    assert fast.got[0] == "a"
    assert fast.state[2].code == 1009  # the close frame sent


def test_invalid_utf8_closes_with_1007_after_the_messages_before_it() -> None:
    stock, fast = _outcomes([RawFrame(1, b"ok"), RawFrame(1, b"\xff"), RawFrame(1, b"late")])
    assert fast == stock
    assert fast.got[0] == "ok"
    assert fast.state[2].code == 1007


def test_a_frame_cut_across_reads_is_one_message() -> None:
    frames = [RawFrame(1, "é".encode() * 100), RawFrame(1, b"next")]
    wire_len = sum(len(f.wire(client=True)) for f in frames)
    stock, fast = _outcomes(frames, cuts=[1, 3, 7, 100, wire_len - 3])
    assert fast == stock
    assert fast.got[:2] == ["é" * 100, "next"]


def test_flow_control_pauses_and_resumes_as_websockets_does() -> None:
    frames = [RawFrame(1, b"m%d" % i) for i in range(40)]
    stock, fast = _outcomes(frames, max_queue=4)
    assert fast == stock
    assert "pause" in fast.log and "resume" in fast.log


def test_recv_ready_takes_every_whole_message_queued() -> None:
    async def main() -> list[Any]:
        protocol = Protocol(SERVER, state=OPEN, max_size=MAX_SIZE, logger=QUIET)
        conn = FastConnection(protocol, ping_interval=None)
        conn.connection_made(Transport(conn))
        frames = [RawFrame(1, b"a"), RawFrame(2, b"b"), RawFrame(1, b"c", fin=False),
                  RawFrame(0, b"d")]  # fmt: skip
        conn.data_received(b"".join(f.wire(client=True) for f in frames))
        first = await conn.recv()
        rest = conn.recv_ready()
        return [first, rest, conn.recv_ready(), await conn.recv()]

    assert asyncio.run(main()) == ["a", [b"b"], [], "cd"]  # a fragmented message: recv()


def test_recv_ready_is_refused_while_recv_waits() -> None:
    async def main() -> None:
        conn = FastConnection(Protocol(SERVER, state=OPEN, logger=QUIET), ping_interval=None)
        conn.connection_made(Transport(conn))
        waiting = asyncio.create_task(conn.recv())
        await asyncio.sleep(0)
        with pytest.raises(ConcurrencyError):
            conn.recv_ready()
        conn.data_received(RawFrame(1, b"x").wire(client=True))
        assert await waiting == "x"

    asyncio.run(main())


# ---------------------------------------------------------------------------- over loopback


@pytest.fixture
def fast_messages(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str | bytes]]:
    """The messages the parser here queued (the rest went through websockets' own)."""
    seen: list[str | bytes] = []
    put = MessageQueue.put_message

    def counting(self: MessageQueue, message: str | bytes) -> None:
        seen.append(message)
        put(self, message)

    monkeypatch.setattr(MessageQueue, "put_message", counting)
    serve_log = logging.getLogger("pipeline.serve.websockets")  # pipeline serve's, as QUIET
    level = serve_log.level
    serve_log.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        serve_log.setLevel(level)


def test_a_call_through_pipeline_serve_reads_the_callers_frames_here(
    fast_messages: list[str | bytes],
) -> None:
    from stages.telephony.serve import run_server
    from tests.stages.telephony.test_serve import assert_echoed, call, loop_pipeline

    async def main() -> None:
        async with run_server(loop_pipeline()) as server:
            assert_echoed(await call(server.url + "/media"))

    asyncio.run(main())
    media = [m for m in fast_messages if isinstance(m, str) and '"event":"media"' in m]
    assert len(media) == 8  # every media of the call (and its marks) came this way


def test_frames_in_one_write_with_a_ping_and_a_message_too_big_give_too_big(
    fast_messages: list[str | bytes],
) -> None:
    """One write: connected, start, three media, a ping, then a message over the limit. The
    media are read here, the ping answered, the call ends with 1009 and outcome too_big."""
    from stages.telephony.serve import run_server
    from stages.telephony.twilio import Connected, Media, Start, encode
    from tests.stages.telephony.test_serve import http_get, loop_pipeline
    from tests.stages.telephony.test_serve_hostile import _client_bytes, metric

    async def main() -> tuple[list[Frame], str]:
        async with run_server(loop_pipeline(), max_message_bytes=4096) as server:
            url = server.url + "/media"
            proto, opening = _client_bytes(url)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(opening)
            proto.receive_data(await reader.readuntil(b"\r\n\r\n"))  # 101
            proto.events_received()
            proto.send_text(encode(Connected()).encode())
            proto.send_text(encode(Start(stream_sid="MZt", call_sid="CAt")).encode())
            for i in range(3):
                proto.send_text(encode(Media("MZt", b"\x7f" * 160, 20 * i, i + 1)).encode())
            proto.send_ping(b"are you there")
            proto.send_text(b"x" * 5000)
            writer.write(b"".join(proto.data_to_send()))
            async with asyncio.timeout(10):
                while data := await reader.read(65536):
                    proto.receive_data(data)
            proto.receive_eof()
            writer.close()
            async with asyncio.timeout(10):
                await server.wait_active(0)
            _, _, text = await http_get(server.port, "/metrics")
        return [e for e in proto.events_received() if isinstance(e, Frame)], text

    frames, text = asyncio.run(main())
    pong = [f for f in frames if f.opcode.name == "PONG"]
    assert [bytes(f.data) for f in pong] == [b"are you there"]
    close = [f for f in frames if f.opcode.name == "CLOSE"]
    assert close and struct.unpack("!H", bytes(close[0].data)[:2])[0] == 1009
    assert metric(text, 'pipeline_calls_total{outcome="too_big"}') == 1.0
    assert sum('"event":"media"' in m for m in fast_messages if isinstance(m, str)) == 3


def test_a_client_reads_a_models_frames_here(fast_messages: list[str | bytes]) -> None:
    """Our client side: unmasked text frames of 1-30 KB, a ping and binary between them,
    through a real websockets server on loopback. (What comes in the read that ends the
    opening handshake goes through websockets, so the server waits for a first message.)"""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    from stages.wsbatch import BatchedClientConnection

    sent: list[str | bytes] = [
        json.dumps({"type": "response.output_audio.delta", "delta": "A" * n}) for n in
        (1300, 30000, 5, 12000)
    ]  # fmt: skip
    sent.insert(2, b"\x00\x01binary")

    async def main() -> list[Any]:
        async def handler(ws: Any) -> None:
            await ws.recv()  # the client's first message: the handshake read is over
            for m in sent[:3]:
                await ws.send(m)
            await ws.ping(b"keep")
            for m in sent[3:]:
                await ws.send(m)
            await ws.close()

        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with connect(
                f"ws://127.0.0.1:{port}",
                compression=None,
                create_connection=BatchedClientConnection,
                logger=QUIET,
            ) as ws:
                await ws.send("session.update")
                got = [m async for m in ws]
                return [got, ws.close_code]

    got, code = asyncio.run(main())
    assert got == sent and code == 1000
    assert fast_messages == sent


def test_recv_streaming_gives_a_whole_message_as_one_piece_and_fragments_as_they_come() -> None:
    async def main() -> list[list[Any]]:
        conn = FastConnection(Protocol(CLIENT, state=OPEN, logger=QUIET), ping_interval=None)
        conn.connection_made(Transport(conn))
        frames = [RawFrame(1, "ça".encode()), RawFrame(2, b"\x00"), RawFrame(1, b"\xc3", fin=False),
                  RawFrame(0, b"\xa7a")]  # fmt: skip
        conn.data_received(b"".join(f.wire(client=False) for f in frames))
        return [
            [p async for p in conn.recv_streaming()],
            [p async for p in conn.recv_streaming(decode=True)],
            [p async for p in conn.recv_streaming()],
        ]

    assert asyncio.run(main()) == [["ça"], ["\x00"], ["", "ça"]]


def test_frames_in_the_read_that_ends_the_handshake_and_a_frame_cut_there(
    fast_messages: list[str | bytes],
) -> None:
    """The server's 101 response, a whole frame and the first bytes of the next in one write:
    websockets reads them, and the whole next read too (its parser was mid-frame when it
    came); the reads after that are parsed here."""
    from websockets.asyncio.client import connect
    from websockets.server import ServerProtocol

    from stages.wsbatch import BatchedClientConnection

    texts = ["first", "second " * 300, "third", "fourth"]
    wires = [Frame(OP_TEXT, t.encode()).serialize(mask=False) for t in texts]

    async def main() -> list[Any]:
        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            proto = ServerProtocol()
            proto.receive_data(await reader.readuntil(b"\r\n\r\n"))
            (request,) = proto.events_received()
            proto.send_response(proto.accept(request))
            writer.write(b"".join(proto.data_to_send()) + wires[0] + wires[1][:9])
            await reader.readexactly(8)  # the client's "go" (masked): its reads so far are done
            writer.write(wires[1][9:] + wires[2])
            await writer.drain()
            await reader.readexactly(8)
            writer.write(wires[3] + Frame(OP_CLOSE, b"\x03\xe8").serialize(mask=False))
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with (
            server,
            connect(
                f"ws://127.0.0.1:{port}",
                compression=None,
                create_connection=BatchedClientConnection,
                logger=QUIET,
            ) as ws,
        ):
            got = [await ws.recv()]
            await ws.send("go")
            got += [await ws.recv(), await ws.recv()]
            await ws.send("go")
            got += [m async for m in ws]
            return [got, ws.close_code]

    got, code = asyncio.run(main())
    assert got == texts and code == 1000
    assert fast_messages == texts[3:]


def test_recv_ready_stops_before_a_message_that_does_not_decode() -> None:
    async def main() -> list[Any]:
        conn = FastConnection(Protocol(SERVER, state=OPEN, logger=QUIET), ping_interval=None)
        transport = Transport(conn)
        conn.connection_made(transport)
        frames = [RawFrame(2, b"ok"), RawFrame(2, b"\xff"), RawFrame(1, b"after")]
        conn.data_received(b"".join(f.wire(client=True) for f in frames))
        ready = conn.recv_ready(decode=True)
        with pytest.raises(ConnectionClosed) as closed:
            await conn.recv(decode=True)
        return [ready, closed.value.sent.code if closed.value.sent else None]

    assert asyncio.run(main()) == [["ok"], 1007]
