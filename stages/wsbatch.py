"""Several WebSocket messages in one write to the socket.

A call sends its audio as small messages: each chunk of a reply is a ``media`` message and a
``mark``, each append to the model one message. ``websockets`` writes every message to the
transport on its own, one ``send`` system call each. Messages that leave together (a chunk's
``media`` and ``mark``, the chunks cut from one reply delta) can share one write:

* :class:`BatchedWrites` is mixed into a connection class (``serve(create_connection=...)``,
  ``connect(create_connection=...)``): whatever the protocol has queued when the connection
  writes goes out as one ``transport.write``;
* :func:`send_batch` queues several messages and writes once. The frames are exactly those
  ``ws.send`` would write for each message in turn (same bytes, same order); only the number
  of writes changes.

On any other object with a ``send`` method (a bridged socket, a test double)
:func:`send_batch` falls back to ``send`` per message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection

from .wsframes import FastReads

__all__ = [
    "BatchedClientConnection",
    "BatchedServerConnection",
    "BatchedWrites",
    "send_batch",
]


class BatchedWrites(Connection):
    """A ``websockets`` connection that writes everything queued at once, in one
    ``transport.write`` (up to a half-close, which stays where the protocol put it)."""

    def send_data(self) -> None:
        pending: list[bytes] = []
        for data in self.protocol.data_to_send():
            if data:
                pending.append(data)
                continue
            self._write(pending)  # what came before the end of the stream, then the end
            pending = []
            if self.transport.can_write_eof():
                # as websockets does (uvloop may raise RuntimeError here)
                with contextlib.suppress(OSError, RuntimeError):
                    self.transport.write_eof()
            else:
                self.transport.close()
        self._write(pending)

    def _write(self, pending: list[bytes]) -> None:
        if len(pending) == 1:
            self.transport.write(pending[0])
        elif pending:
            self.transport.write(b"".join(pending))


class BatchedServerConnection(BatchedWrites, FastReads, ServerConnection):
    """``serve(create_connection=BatchedServerConnection)``: batched writes, and reads
    parsed by :class:`~stages.wsframes.FastReads`."""


class BatchedClientConnection(BatchedWrites, FastReads, ClientConnection):
    """``connect(create_connection=BatchedClientConnection)``: batched writes, and reads
    parsed by :class:`~stages.wsframes.FastReads`."""


async def send_batch(ws: Any, messages: Sequence[str | bytes]) -> None:
    """Send ``messages`` in order (``str`` as text, ``bytes`` as binary, as ``ws.send``
    does), each its own WebSocket message, with one write to the socket when ``ws`` is a
    :class:`BatchedWrites` connection. Raises ``ConnectionClosed`` as ``ws.send`` does; the
    messages before a failure may have been queued."""
    if (
        len(messages) == 1
        or not isinstance(ws, BatchedWrites)
        or ws.fragmented_send_waiter is not None  # send() waits for the fragmented message
    ):
        for m in messages:
            await ws.send(m)
        return
    async with ws.send_context():
        protocol = ws.protocol
        for m in messages:
            if isinstance(m, str):
                protocol.send_text(m.encode())
            else:
                protocol.send_binary(m)
