"""Incoming WebSocket messages parsed straight from the bytes read.

``websockets`` runs every byte it reads through its sans-I/O protocol: a generator-based frame
parser (``Frame.parse`` reading from a ``StreamReader``), a ``Frame`` object per frame, then the
connection's ``Assembler`` queue. For the messages a call reads (a caller's small masked text
frames of Twilio JSON; a model's unmasked text frames of 1-30 KB) that machinery costs more
than the message itself.

:class:`FastReads` is mixed into a connection class (``serve(create_connection=...)``,
``connect(create_connection=...)``; :mod:`stages.wsbatch`'s connection classes include it).
Its ``data_received`` walks the frames in the bytes read:

* a whole unfragmented data frame (FIN set, RSV bits clear, masked iff read by a server, no
  longer than ``max_size``, text that is valid UTF-8) becomes its message right there
  (unmasked by websockets' C ``apply_mask``, text decoded) and is queued for ``recv()``;
* any other frame (ping, pong, close, a fragment, anything invalid) is handed whole, in its
  place in the stream, to websockets' own protocol, which answers, queues, fails or closes
  exactly as it always does; so is everything from a header websockets would refuse as soon as
  it reads it (a bad opcode or mask bit, a length over ``max_size``) onwards;
* a frame cut across reads waits, its bytes kept, until the rest arrives (or the connection
  ends, when websockets is given them to report the truncated frame as it always does).

Until the opening handshake is done, while the connection is closing, while websockets'
parser is in the middle of a frame, with extensions or with debug logging on, every byte goes
to websockets unchanged. Messages from both paths share one queue, in the order they came;
``max_queue`` flow control counts both. ``recv()``, ``async for``, ``recv_streaming()``,
close codes (1009 for a message over ``max_size``, 1007 for invalid UTF-8, 1002 for protocol
errors), pings, keepalive and the closing handshake behave as in ``websockets``.

:meth:`FastReads.recv_ready` takes every whole message already queued in one call, without
waiting: a consumer woken by ``recv()`` can take the rest of what the same read brought before
it awaits again.

Relies on websockets 15's asyncio connection internals (``Protocol.reader``, ``parser``,
``cur_size``, ``Assembler.frames``); ``pyproject.toml`` pins that major version.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator
from typing import Any, Literal, cast, overload

from websockets.asyncio.connection import Connection
from websockets.asyncio.messages import Assembler
from websockets.exceptions import ConcurrencyError
from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT, Frame
from websockets.protocol import OPEN, SERVER, Protocol
from websockets.streams import StreamReader
from websockets.typing import Data

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["FastReads", "MessageQueue"]

# Opcodes websockets accepts (continuation, text, binary, close, ping, pong); any other makes
# it fail the connection as soon as it has read the first two bytes of the header.
_VALID_OPCODE = tuple(op in (0, 1, 2, 8, 9, 10) for op in range(16))
_AT_EOF = StreamReader.at_eof.__code__
_PARSE_FRAMES = Protocol.parse.__code__
_UTF8 = codecs.getincrementaldecoder("utf-8")


def at_frame_boundary(protocol: Protocol) -> bool:
    """True when ``protocol`` is open, without extensions, and its parser waits for the first
    byte of a frame with nothing buffered: the next frame may be parsed elsewhere."""
    if protocol.state is not OPEN or protocol.extensions or protocol.reader.buffer:
        return False
    # the parser's chain of ``yield from``: ServerProtocol.parse -> Protocol.parse -> at_eof
    outer: Any = protocol.parser
    inner = outer.gi_yieldfrom
    while inner is not None and inner.gi_code is not _AT_EOF:
        outer, inner = inner, inner.gi_yieldfrom
    return inner is not None and outer.gi_code is _PARSE_FRAMES


class MessageQueue(Assembler):
    """websockets' ``Assembler`` that also holds whole messages (``str`` for text, ``bytes``
    for binary) between its frames, in one queue, counted alike for flow control."""

    def put_message(self, message: str | bytes) -> None:
        """Queue a whole message after whatever is queued; pause reading above the high
        water mark as :meth:`put` does."""
        frames = self.frames
        frames.queue.append(message)  # type: ignore[arg-type]
        waiter = frames.get_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self.high is not None and len(frames.queue) > self.high and not self.paused:
            self.paused = True
            self.pause()

    def take_ready(self, decode: bool | None = None) -> list[Data]:
        """Every whole message at the head of the queue, without waiting (stops at a
        fragmented message or one that does not decode: ``get`` reads it)."""
        if self.get_in_progress:
            raise ConcurrencyError("get() or get_iter() is already running")
        out: list[Data] = []
        queue = self.frames.queue
        while queue:
            item: Any = queue[0]
            kind = type(item)
            try:
                if kind is str or kind is bytes:
                    out.append(_as(item, decode))
                elif not item.fin:
                    break
                elif item.opcode is OP_TEXT if decode is None else decode:
                    out.append(bytes(item.data).decode())
                else:
                    out.append(bytes(item.data))
            except UnicodeDecodeError:
                break  # get() reads it, and fails the connection
            queue.popleft()
        if out:
            self.maybe_resume()
        return out

    @overload
    async def get(self, decode: Literal[True]) -> str: ...

    @overload
    async def get(self, decode: Literal[False]) -> bytes: ...

    @overload
    async def get(self, decode: bool | None = None) -> Data: ...

    async def get(self, decode: bool | None = None) -> Data:
        if self.get_in_progress:
            raise ConcurrencyError("get() or get_iter() is already running")
        self.get_in_progress = True
        try:
            queue = self.frames.queue
            item: Any = queue.popleft() if queue else await self.frames.get(not self.closed)
            self.maybe_resume()
            kind = type(item)
            if kind is str or kind is bytes:
                return _as(item, decode)
            # a frame from websockets' parser: as Assembler.get
            frame: Frame = item
            assert frame.opcode is OP_TEXT or frame.opcode is OP_BINARY
            if decode is None:
                decode = frame.opcode is OP_TEXT
            frames = [frame]
            while not frame.fin:
                try:
                    frame = await self.frames.get(not self.closed)
                except asyncio.CancelledError:
                    self.frames.reset(frames)  # the next get() returns them
                    raise
                self.maybe_resume()
                assert frame.opcode is OP_CONT
                frames.append(frame)
        finally:
            self.get_in_progress = False
        data = b"".join(f.data for f in frames)
        return data.decode() if decode else data

    @overload
    def get_iter(self, decode: Literal[True]) -> AsyncIterator[str]: ...

    @overload
    def get_iter(self, decode: Literal[False]) -> AsyncIterator[bytes]: ...

    @overload
    def get_iter(self, decode: bool | None = None) -> AsyncIterator[Data]: ...

    async def get_iter(self, decode: bool | None = None) -> AsyncIterator[Data]:
        if self.get_in_progress:
            raise ConcurrencyError("get() or get_iter() is already running")
        self.get_in_progress = True
        try:
            item: Any = await self.frames.get(not self.closed)
        except asyncio.CancelledError:
            self.get_in_progress = False
            raise
        self.maybe_resume()
        kind = type(item)
        if kind is str or kind is bytes:
            self.get_in_progress = False
            yield _as(item, decode)
            return
        # a frame from websockets' parser: as Assembler.get_iter
        frame: Frame = item
        assert frame.opcode is OP_TEXT or frame.opcode is OP_BINARY
        if decode is None:
            decode = frame.opcode is OP_TEXT
        decoder = _UTF8() if decode else None
        yield cast(bytes, frame.data) if decoder is None else decoder.decode(frame.data, frame.fin)
        while not frame.fin:
            frame = await self.frames.get(not self.closed)
            self.maybe_resume()
            assert frame.opcode is OP_CONT
            yield (
                cast(bytes, frame.data)
                if decoder is None
                else decoder.decode(frame.data, frame.fin)
            )
        self.get_in_progress = False


def _as(message: str | bytes, decode: bool | None) -> Data:
    """A whole message as ``recv(decode)`` returns it."""
    if type(message) is str:
        return message.encode() if decode is False else message
    return cast(bytes, message).decode() if decode else message


class FastReads(Connection):
    """A ``websockets`` connection that parses whole unfragmented data frames straight from
    the bytes read and gives websockets everything else, in order (see the module docstring).
    ``recv()`` and ``async for`` work as always; :meth:`recv_ready` adds a batch read."""

    recv_messages: MessageQueue
    # True while frames are parsed here: the protocol is open and at a frame boundary
    _fast = False
    # the start of a frame cut across reads, and how many bytes it needs before it can be
    # parsed further (its whole header, or its whole payload)
    _held: list[bytes] | None = None
    _held_len = 0
    _held_need = 0
    _masked = 0  # 1 on a server: a client's frames are masked

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._masked = 1 if self.protocol.side is SERVER else 0
        t = cast(asyncio.Transport, transport)
        self.recv_messages = MessageQueue(
            *self.max_queue, pause=t.pause_reading, resume=t.resume_reading
        )

    @overload
    async def recv(self, decode: Literal[True]) -> str: ...

    @overload
    async def recv(self, decode: Literal[False]) -> bytes: ...

    @overload
    async def recv(self, decode: bool | None = None) -> Data: ...

    async def recv(self, decode: bool | None = None) -> Data:
        messages = self.recv_messages
        queue = messages.frames.queue
        if queue and decode is not False and not messages.get_in_progress:
            item: Any = queue[0]
            if type(item) is str:  # the common case, with no await in between
                queue.popleft()
                messages.maybe_resume()
                return item
        return await super().recv(decode)

    def recv_ready(self, decode: bool | None = None) -> list[Data]:
        """Every whole message already received and not yet read, in order, without waiting
        (``[]`` if none). ``decode`` as for ``recv()``. It never raises ``ConnectionClosed``:
        after the last message, ``recv()`` does. A fragmented message, or a text message that
        is not valid UTF-8, ends the batch; ``recv()`` returns (or reports) it. Raises
        ``ConcurrencyError`` while another coroutine waits in ``recv()``."""
        try:
            return self.recv_messages.take_ready(decode)
        except ConcurrencyError:
            raise ConcurrencyError(
                "cannot call recv_ready while another coroutine is already running recv or "
                "recv_streaming"
            ) from None

    # -- reading

    def data_received(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held.append(data)
            self._held_len += len(data)
            if self._held_len < self._held_need and self.protocol.state is OPEN:
                return
            data = b"".join(held)
            self._held = None
        if self._fast and self.protocol.state is OPEN:
            self._parse(data)
            return
        self._fast = False
        if not self.debug and at_frame_boundary(self.protocol):
            self._fast = True
            self._parse(data)
            return
        super().data_received(data)

    def _slow(self, data: bytes) -> None:
        """Give ``data`` (whole frames, or everything from a header websockets refuses) to
        websockets' own protocol and connection."""
        super().data_received(data)
        self._fast = at_frame_boundary(self.protocol)

    def _parse(self, data: bytes) -> None:
        protocol = self.protocol
        messages = self.recv_messages
        masked = self._masked
        n = len(data)
        pos = 0
        need = 0
        while pos < n:
            if n - pos < 2:
                need = 2
                break
            b0 = data[pos]
            b1 = data[pos + 1]
            opcode = b0 & 0x0F
            if b1 >> 7 != masked or not _VALID_OPCODE[opcode]:
                self._slow(data[pos:])  # websockets fails the connection at this header
                return
            length = b1 & 0x7F
            start = pos + 2
            if length >= 126:
                if length == 126:
                    if n - pos < 4:
                        need = 4
                        break
                    length = (data[start] << 8) | data[start + 1]
                    start += 2
                else:
                    if n - pos < 10:
                        need = 10
                        break
                    length = int.from_bytes(data[start : start + 8], "big")
                    start += 8
            max_size = protocol.max_size
            if max_size is not None:
                cur_size = protocol.cur_size
                if length > (max_size if cur_size is None else max_size - cur_size):
                    self._slow(data[pos:])  # websockets fails with 1009 at this header
                    return
            if masked:
                start += 4
            end = start + length
            if end > n:
                need = end - pos
                break
            if (b0 & 0xF0) == 0x80 and (opcode == 1 or opcode == 2) and protocol.cur_size is None:
                payload = data[start:end]
                if masked:
                    payload = apply_mask(payload, data[start - 4 : start])
                if opcode == 2:
                    messages.put_message(payload)
                    pos = end
                    continue
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    pass  # websockets queues the frame and recv() fails the connection (1007)
                else:
                    messages.put_message(text)
                    pos = end
                    continue
            self._slow(data[pos:end])
            pos = end
            if not self._fast:
                if pos < n:
                    super().data_received(data[pos:])
                    self._fast = at_frame_boundary(protocol)
                return
        if pos < n:
            self._held = [data[pos:] if pos else data]
            self._held_len = n - pos
            self._held_need = need

    def _release_held(self) -> bytes:
        held = self._held
        self._held = None
        return b"".join(held) if held else b""

    def eof_received(self) -> None:
        held = self._release_held()
        if held:  # websockets reports the frame the stream ended in, as it always does
            super().data_received(held)
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        held = self._release_held()
        if held and not self.protocol.reader.eof:
            self.protocol.receive_data(held)
        super().connection_lost(exc)
