"""Opening and closing the realtime service's WebSocket: the URL, the key, the headers, and what
each way of failing means (retry, or give up with one line naming the endpoint and the fix).

The API key is read from the environment when connecting and kept in a local variable only: it
is never logged, put in an error, a repr, or a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import ConfigError, SessionRemoteError

from ..listen import is_loopback
from .settings import Settings
from .wire.gemini import GeminiClientBridge, Resumption

#: How long a cancelled run waits for the close handshake before dropping the connection.
CLOSE_GRACE_S = 0.2

# websockets logs the handshake headers (the Authorization one included) at debug level: give
# it a logger of its own that never says more than warnings.
_WS_LOGGER = logging.getLogger("pipeline.realtime.websocket")
_WS_LOGGER.setLevel(logging.WARNING)


class Retry(SessionRemoteError):
    """A connection attempt failed in a way worth retrying."""


def endpoint_of(url: str) -> str:
    """The URL without its query, for messages."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def plain_text_key_problem(url: str, api_key_env: str) -> str | None:
    """Why the key must not go to ``url``: a plain ``ws://`` address to another machine would
    carry it in clear text. None when the URL is fine (``wss://``, or ``ws://`` to loopback)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or is_loopback(parts.hostname):
        return None
    return (
        f"refusing to send the API key from {api_key_env} over unencrypted ws:// to "
        f"{parts.hostname}; use a wss:// url (plain ws:// is allowed to loopback only)"
    )


def api_key(s: Settings) -> str:
    """The key from ``s.api_key_env`` (the emulator takes any). Raises ConfigError if unset."""
    key = os.environ.get(s.api_key_env, "").strip()
    if not key and s.provider == "emulator":
        key = "emulator"
    if not key:
        raise ConfigError(
            f"environment variable {s.api_key_env} is not set (or blank); export your "
            "API key in it (or name another variable with api_key_env)"
        )
    return key


async def open_connection(s: Settings, url: str, resumption: Resumption | None = None) -> Any:
    """Connect to ``url`` with the key of ``s``. Raises ConfigError (bad URL, no key),
    SessionRemoteError (the key or the request refused: retrying cannot help) or
    :class:`Retry`. Gemini: the socket is seen through a bridge that shares ``resumption``
    (the handle and what to send again) with the call's other connections."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    from ..wsbatch import BatchedClientConnection

    endpoint = endpoint_of(url)
    refused = plain_text_key_problem(url, s.api_key_env)
    if refused is not None:
        raise ConfigError(f"parameter 'url': {refused}")
    # Azure OpenAI takes its key in an ``api-key`` header, Gemini in ``x-goog-api-key``, the
    # others as a bearer token
    if s.provider == "azure":
        headers = {"api-key": api_key(s)}
    elif s.dialect == "gemini":
        headers = {"x-goog-api-key": api_key(s)}
    else:
        headers = {"Authorization": f"Bearer {api_key(s)}"}
    if s.dialect == "openai-beta" and s.provider != "azure":
        headers["OpenAI-Beta"] = "realtime=v1"
    try:
        ws = await connect(
            url,
            additional_headers=headers,
            open_timeout=s.connect_timeout_s,
            max_size=s.max_message_bytes,
            compression=None,
            close_timeout=5.0,
            logger=_WS_LOGGER,
            user_agent_header="pipeline-realtime",
            create_connection=BatchedClientConnection,
        )
        if s.dialect == "gemini":  # Gemini Live's messages, bridged to Realtime events
            return BridgedSocket(ws, GeminiClientBridge(s.session.model, resumption))
        return ws
    except InvalidURI:
        raise ConfigError(f"parameter 'url': {endpoint!r} is not a ws:// or wss:// URL") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise SessionRemoteError(
                f"{endpoint} refused the API key from {s.api_key_env} "
                f"(HTTP {status}); check that the key is valid and allowed to use the model",
                code=str(status),
            ) from None
        if 400 <= status < 500 and status not in (408, 429):
            raise SessionRemoteError(
                f"{endpoint} refused the connection (HTTP {status}); check the url and the model",
                code=str(status),
            ) from None
        raise Retry(f"HTTP {status}") from None
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise Retry(_reason(exc)) from None


class BridgedSocket:
    """A socket seen through a :class:`~.wire.gemini.GeminiClientBridge`: what the session sends
    is translated on the way out, what the service sends on the way in, and the events the
    bridge answers by itself are read before the next message from the socket."""

    def __init__(self, ws: Any, bridge: GeminiClientBridge) -> None:
        self._ws = ws
        self.bridge = bridge
        self._back: asyncio.Queue[str] = asyncio.Queue()

    @property
    def transport(self) -> Any:
        return self._ws.transport

    @property
    def close_code(self) -> int | None:
        code: int | None = self._ws.close_code
        return code

    @property
    def close_reason(self) -> str:
        reason: str = self._ws.close_reason or ""
        return reason

    async def send(self, message: str) -> None:
        out, back = self.bridge.outgoing(message)
        for m in out:
            await self._ws.send(m)
        for m in back:
            self._back.put_nowait(m)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def __aiter__(self) -> AsyncIterator[str]:
        it = aiter(self._ws)
        reading: asyncio.Future[Any] | None = None
        try:
            while True:
                while not self._back.empty():
                    yield self._back.get_nowait()
                if reading is None:
                    reading = asyncio.ensure_future(anext(it))
                answered = asyncio.ensure_future(self._back.get())
                waiting: set[asyncio.Future[Any]] = {reading, answered}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if answered.done():
                    yield answered.result()
                else:
                    answered.cancel()
                if reading.done():
                    done, reading = reading, None
                    try:
                        message = done.result()
                    except StopAsyncIteration:
                        return
                    events = self.bridge.incoming(message)
                    sends, self.bridge.to_send = self.bridge.to_send, []
                    for m in sends:  # what a resumed session has not heard yet: before the
                        await self._ws.send(m)  # session hears it is ready and sends more
                    for m in events:
                        yield m
        finally:
            if reading is not None:
                reading.cancel()


async def close_socket(ws: Any) -> None:
    """Close the socket. When the run is being cancelled, do not wait out a peer that is not
    reading (it may be blocked sending to us, and we stopped reading): a short grace, then
    drop the connection."""
    task = asyncio.current_task()
    if task is None or not task.cancelling():
        with contextlib.suppress(Exception):
            await ws.close()
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_GRACE_S):
            await ws.close()
    if ws.transport is not None and not ws.transport.is_closing():
        ws.transport.abort()


def close_info(exc: Any) -> tuple[int | None, str]:
    """The close code and reason a ``ConnectionClosed`` carries (None: no close frame)."""
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    return None, "no close frame"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
