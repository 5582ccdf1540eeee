"""A small HTTP/1.1 server edge on h11: requests in, responses out, one request per connection.

Used for what a WebSocket server does not carry: the Voice webhook and status callbacks that
Twilio POSTs to ``pipeline serve`` (see :class:`PostSniffer`), and the loopback fakes of the
carriers' REST APIs the tests start (:func:`serve_http`). The handler is a plain function of a
:class:`HttpRequest` to a :class:`HttpResponse` (sync or async); parsing and framing are h11's.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import h11
from websockets.asyncio.server import ServerConnection

from ..wsbatch import BatchedServerConnection

__all__ = [
    "Handler",
    "HttpExchange",
    "HttpRequest",
    "HttpResponse",
    "answer",
    "serve_http",
    "with_posts",
]

#: Largest request body read (webhooks and REST forms are a few kilobytes).
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request: ``target`` is the path with its query string, as sent."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        low = name.lower()
        for k, v in self.headers:
            if k == low:
                return v
        return None

    def form(self) -> list[tuple[str, str]]:
        """The body as ``application/x-www-form-urlencoded`` pairs, in order (names may
        repeat, blank values kept)."""
        return parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def text(cls, status: int, text: str) -> HttpResponse:
        return cls(status, text.encode())


Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


class HttpExchange:
    """One request read with h11 from bytes fed in; ``request`` once it is complete, or
    ``error`` (a response to send) when it cannot be read."""

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.SERVER)
        self._head: h11.Request | None = None
        self._body = bytearray()
        self.request: HttpRequest | None = None
        self.error: HttpResponse | None = None

    @property
    def done(self) -> bool:
        return self.request is not None or self.error is not None

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.conn.receive_data(data)
        try:
            while True:
                event = self.conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    self._head = event
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > MAX_BODY:
                        self.error = HttpResponse.text(413, f"body over {MAX_BODY} bytes\n")
                        return
                elif isinstance(event, h11.EndOfMessage):
                    head = self._head
                    assert head is not None
                    self.request = HttpRequest(
                        head.method.decode("ascii", "replace"),
                        head.target.decode("ascii", "replace"),
                        tuple((k.decode().lower(), v.decode("latin-1")) for k, v in head.headers),
                        bytes(self._body),
                    )
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self.error = HttpResponse.text(400, "connection closed mid-request\n")
                    return
        except h11.RemoteProtocolError as exc:
            self.error = HttpResponse.text(400, f"bad HTTP request: {exc}\n")

    def response_bytes(self, response: HttpResponse) -> bytes:
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            ("Connection", "close"),
            *response.headers,
        ]
        try:
            out = self.conn.send(h11.Response(status_code=response.status, headers=headers))
            out = (out or b"") + (self.conn.send(h11.Data(data=response.body)) or b"")
            return out + (self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # the request could not be parsed: write it by hand
            head = f"HTTP/1.1 {response.status} \r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            return head.encode("latin-1") + b"\r\n" + response.body


async def answer(handler: Handler, request: HttpRequest) -> HttpResponse:
    """Run ``handler`` (sync or async); an exception becomes a 500."""
    try:
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:  # a bug in a handler must not leave the client hanging
        return HttpResponse.text(500, f"internal error: {type(exc).__name__}\n")
    assert isinstance(result, HttpResponse)
    return result


@contextlib.asynccontextmanager
async def serve_http(
    handler: Handler, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[asyncio.Server]:
    """Serve ``handler`` while the block runs (port 0: a free one, see the server's
    ``sockets``). One request per connection (``Connection: close``)."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ex = HttpExchange()
        try:
            while not ex.done:
                data = await reader.read(65536)
                ex.feed(data)
                if not data:
                    break
            if ex.request is not None:
                response = await answer(handler, ex.request)
            else:
                response = ex.error or HttpResponse.text(400, "no request\n")
            writer.write(ex.response_bytes(response))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(on_client, host, port)
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


def with_posts(
    handler: Handler,
    on_bad_request: Callable[[ServerConnection, BaseException], None] | None = None,
) -> type[ServerConnection]:
    """A websockets ``ServerConnection`` that also answers plain HTTP POSTs with ``handler``
    (websockets reads GET requests only): pass it as ``serve(create_connection=...)``. A
    connection whose first bytes are ``POST `` is read with h11, answered, and closed; the
    WebSocket handshake never sees it. ``on_bad_request``, if given, is told of an opening
    request that could not be read (closed early, not HTTP/1.1, malformed) instead of
    websockets logging it with a traceback."""

    class PostOrWebSocket(BatchedServerConnection):
        _http: HttpExchange | None = None
        _head = b""

        def data_received(self, data: bytes) -> None:
            if self._http is None and self.request is None and self._head is not None:
                self._head += data
                if len(self._head) < 5 and b"POST "[: len(self._head)] == self._head:
                    return  # too little to tell yet
                data, self._head = self._head, None  # type: ignore[assignment]
                if data.startswith(b"POST "):
                    self._http = HttpExchange()
            if self._http is None:
                super().data_received(data)
                return
            was_done = self._http.done
            self._http.feed(data)
            if self._http.done and not was_done:
                self.loop.create_task(self._answer(self._http))

        def eof_received(self) -> bool | None:  # type: ignore[override]
            if self._http is not None:
                self._http.feed(b"")
                return True  # keep the transport open to write the answer
            return super().eof_received()

        async def _answer(self, ex: HttpExchange) -> None:
            if ex.request is not None:
                response = await answer(handler, ex.request)
            else:
                response = ex.error or HttpResponse.text(400, "bad request\n")
                if on_bad_request is not None:
                    on_bad_request(self, ValueError(response.body.decode().strip()))
            self.transport.write(ex.response_bytes(response))
            self.transport.close()

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            try:
                await super().handshake(*args, **kwargs)
            except Exception as exc:
                if self._http is not None:
                    return  # answered as plain HTTP: the connection handler closes it
                if on_bad_request is None:
                    raise
                on_bad_request(self, exc)  # the connection handler aborts it

    return PostOrWebSocket
