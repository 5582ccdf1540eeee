"""Several WebSocket messages in one write: the bytes on the wire are exactly those of one
``send`` per message, in order; only the number of writes changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

from stages.wsbatch import (
    BatchedClientConnection,
    BatchedServerConnection,
    BatchedWrites,
    send_batch,
)

Message = str | bytes


def frames_of(messages: Sequence[Message]) -> bytes:
    """What a server writes for ``messages``, one unmasked frame each (RFC 6455)."""
    out = b""
    for m in messages:
        if isinstance(m, str):
            out += Frame(Opcode.TEXT, m.encode()).serialize(mask=False, extensions=[])
        else:
            out += Frame(Opcode.BINARY, m).serialize(mask=False, extensions=[])
    return out


@asynccontextmanager
async def server(
    handler: Callable[[ServerConnection], Any], connection: type[ServerConnection]
) -> AsyncIterator[int]:
    async with serve(
        handler, "127.0.0.1", 0, create_connection=connection, compression=None
    ) as srv:
        yield next(iter(srv.sockets)).getsockname()[1]


async def raw_client(port: int, n_bytes: int) -> bytes:
    """Open the WebSocket by hand and return the first ``n_bytes`` after the handshake: the
    server's frames exactly as they came off the wire."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    data = await asyncio.wait_for(reader.readexactly(n_bytes), 10)
    writer.close()
    return data


def run_batch(
    messages: Sequence[Message], connection: type[ServerConnection]
) -> tuple[bytes, list[bytes]]:
    """Serve one connection that sends ``messages`` with :func:`send_batch`; the bytes the
    client read and the server's writes during the batch."""
    writes: list[bytes] = []

    async def handler(ws: ServerConnection) -> None:
        write = ws.transport.write

        def recording(data: Any) -> None:
            writes.append(bytes(data))
            write(data)

        ws.transport.write = recording  # type: ignore[method-assign]
        await send_batch(ws, messages)
        ws.transport.write = write  # type: ignore[method-assign]
        await ws.wait_closed()

    async def main() -> bytes:
        async with server(handler, connection) as port:
            return await raw_client(port, len(frames_of(messages)))

    return asyncio.run(main()), writes


MEDIA = '{"event":"media","streamSid":"MZ1","media":{"payload":"/////w=="}}'
MARK = '{"event":"mark","streamSid":"MZ1","mark":{"name":"1"}}'


def test_a_batch_is_one_write_of_exactly_the_frames_of_each_message() -> None:
    messages: list[Message] = [MEDIA, MARK, "é\u2603", b"\x00\x01\xff", "x" * 200]
    got, writes = run_batch(messages, BatchedServerConnection)
    assert got == frames_of(messages)
    assert writes == [frames_of(messages)]


def test_a_plain_connection_gets_the_same_bytes_one_write_per_message() -> None:
    messages: list[Message] = [MEDIA, MARK, b"\x80" * 130]
    got, writes = run_batch(messages, ServerConnection)
    assert got == frames_of(messages)
    assert writes == [frames_of([m]) for m in messages]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.one_of(st.text(max_size=300), st.binary(max_size=70000)),
        min_size=1,
        max_size=6,
    )
)
def test_any_messages_arrive_byte_exact_and_in_order(messages: list[Message]) -> None:
    """Every frame length encoding (7-bit, 16-bit, 64-bit), text and binary, mixed."""
    got, writes = run_batch(messages, BatchedServerConnection)
    assert got == frames_of(messages)
    assert len(writes) == 1


def test_a_client_batch_reaches_a_server_as_separate_messages_in_order() -> None:
    """The model's side: the session's appends from a client connection (masked frames)."""
    messages: list[Message] = [f'{{"type":"input_audio_buffer.append","n":{i}}}' for i in range(5)]
    messages.append(b"\x01\x02")
    received: list[Message] = []

    async def handler(ws: ServerConnection) -> None:
        async for m in ws:
            received.append(m)

    async def main() -> int:
        async with server(handler, ServerConnection) as port:
            async with connect(
                f"ws://127.0.0.1:{port}",
                create_connection=BatchedClientConnection,
                compression=None,
            ) as ws:
                assert isinstance(ws, BatchedWrites)
                writes = 0
                write = ws.transport.write

                def counting(data: Any) -> None:
                    nonlocal writes
                    writes += 1
                    write(data)

                ws.transport.write = counting  # type: ignore[method-assign]
                await send_batch(ws, messages)
                ws.transport.write = write  # type: ignore[method-assign]
            return writes

    assert asyncio.run(main()) == 1
    assert received == messages


def test_closing_after_a_batch_still_delivers_the_batch_then_the_close() -> None:
    """The close frame and the half-close come after the batched frames."""
    messages: list[Message] = [MEDIA, MARK]
    seen: list[Message] = []
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await send_batch(ws, messages)
        await ws.close(1000, "done")

    async def main() -> None:
        async with (
            server(handler, BatchedServerConnection) as port,
            connect(f"ws://127.0.0.1:{port}", compression=None) as ws,
        ):
            async for m in ws:
                seen.append(m)
            codes.append(ws.close_code)

    asyncio.run(main())
    assert seen == messages
    assert codes == [1000]


class Recorder:
    """Not a websockets connection: send_batch falls back to send() per message."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def test_anything_else_gets_one_send_per_message() -> None:
    rec = Recorder()
    asyncio.run(send_batch(rec, [MEDIA, MARK, b"\x00"]))
    assert rec.sent == [MEDIA, MARK, b"\x00"]
