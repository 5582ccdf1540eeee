"""One browser tab's connection, shared by its ``browser_source`` and ``browser_sink``.

The playground server creates a :class:`BrowserConnection` per WebSocket, feeds it every
message it reads (:meth:`BrowserConnection.receive`) and runs a fresh pipeline under
:func:`bind_connection`; the two stages find it with :func:`current_connection`. A context
variable is the whole mechanism: ``asyncio`` copies the context into every task the runner starts,
so the stages of one tab see that tab and no other (as :mod:`stages.telephony` does per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog

from pipeline.errors import StageError

from .protocol import Hangup, MicAudio, PlayedReport, StartMessage, parse_incoming

__all__ = ["BrowserConnection", "bind_connection", "current_connection"]

SendFn = Callable[[str | bytes], Awaitable[None]]


class _End:
    """The user hung up or the socket closed."""


_END = _End()


class BrowserConnection:
    """A tab's audio and events. ``started`` is set by the page's ``start`` (``rate`` then
    holds its capture rate). Microphone audio waits in a bounded queue for the source (the
    reader waits when it is full: nothing is dropped); ``played`` reports go straight to the
    sink's handler. Sending after the socket closed is counted and skipped."""

    def __init__(self, send: SendFn, *, queue_size: int = 64, log: Any = None) -> None:
        self._send = send
        self.log = log if log is not None else structlog.get_logger("pipeline.browser")
        self.rate = 0
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.inbound: asyncio.Queue[bytes | _End] = asyncio.Queue(queue_size)
        self.on_played: Callable[[PlayedReport], None] | None = None
        self.closed = False
        self.hung_up = False
        self.messages_in = 0
        self.messages_out = 0
        self.samples_in = 0
        self.sent_after_close = 0
        self._lock = asyncio.Lock()

    async def receive(self, raw: str | bytes) -> None:
        """Take one message read from the socket. Raises
        :class:`~stages.browser.protocol.BrowserMessageError` for one that breaks the protocol
        (the server then closes the connection)."""
        self.messages_in += 1
        msg = parse_incoming(raw, started=self.started.is_set())
        match msg:
            case MicAudio():
                self.samples_in += len(msg.data) // 2
                await self.inbound.put(msg.data)
            case PlayedReport():
                if self.on_played is not None:
                    self.on_played(msg)
            case StartMessage():
                self.rate = msg.rate
                self.started.set()
            case Hangup():
                self.hung_up = True
                self.finish()

    def finish(self) -> None:
        """No more microphone audio: the source ends once it has read what is queued."""
        if not self.ended.is_set():
            self.ended.set()
            with contextlib.suppress(asyncio.QueueFull):
                self.inbound.put_nowait(_END)

    def connection_closed(self) -> None:
        """The socket is gone: the source ends, and what the sink sends is discarded."""
        self.closed = True
        if not self.ended.is_set():
            self.ended.set()
            # the reader is gone: make room for the end marker if the source is behind
            while self.inbound.full():
                self.inbound.get_nowait()
            self.inbound.put_nowait(_END)

    async def next_audio(self) -> bytes | None:
        """The next microphone chunk; None once the user hung up or the socket closed."""
        if self.ended.is_set() and self.inbound.empty():
            return None
        item = await self.inbound.get()
        return None if isinstance(item, _End) else item

    async def send(self, message: str | bytes) -> None:
        """Send one message (in order with the others); dropped once the socket closed."""
        async with self._lock:
            if self.closed:
                self.sent_after_close += 1
                return
            try:
                await self._send(message)
                self.messages_out += 1
            except Exception as exc:  # the connection went away under us
                self.log.debug("send failed; connection closed", error=str(exc))
                self.closed = True
                self.sent_after_close += 1


_CURRENT: contextvars.ContextVar[BrowserConnection | None] = contextvars.ContextVar(
    "browser_connection", default=None
)


@contextlib.contextmanager
def bind_connection(conn: BrowserConnection) -> Iterator[BrowserConnection]:
    """Run a pipeline for ``conn``: tasks started inside (the runner's) see it."""
    token = _CURRENT.set(conn)
    try:
        yield conn
    finally:
        _CURRENT.reset(token)


def current_connection(stage_id: str = "") -> BrowserConnection:
    """The browser tab this pipeline runs for (see :func:`bind_connection`)."""
    conn = _CURRENT.get()
    if conn is None:
        raise StageError(
            stage_id or "browser",
            "no browser to attach to: browser_source/browser_sink run inside "
            "'pipeline playground FILE NAME', one pipeline per browser tab",
        )
    return conn
