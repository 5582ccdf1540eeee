"""Our client protocol and the emulator joined in memory: :class:`ConnectionPair`.

As h11's ``ConnectionPair`` does for HTTP, it tests protocol against server with no socket and
no event loop: what :class:`~stages.realtime.protocol.RealtimeProtocol` queues is handed to an
:class:`~stages.realtime.emulator.core.EmulatorSession` as text, and what the emulator releases
goes back to the protocol as text, on an explicit clock the test moves
(:meth:`ConnectionPair.advance`), so ``think_ms``, pacing and pings take no real time.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..protocol import RealtimeProtocol, ServerEvent
from ..wire import SessionConfig
from .config import EmulatorConfig
from .core import EmulatorSession

Json = dict[str, Any]


class ConnectionPair:
    """A client protocol for ``client`` and an emulator session of the same dialect.

    ``exchange()`` delivers both ways until neither side has anything due at :attr:`now`;
    ``advance(seconds)`` moves the clock through every due time on the way. ``events`` is every
    protocol event the client produced, ``to_server`` / ``to_client`` every message each way.
    """

    def __init__(
        self,
        client: SessionConfig | None = None,
        config: EmulatorConfig | None = None,
        *,
        now: float = 0.0,
    ) -> None:
        self.now = now
        self.client = RealtimeProtocol(client or SessionConfig())
        cfg = self.client.config
        self.server = EmulatorSession(
            config or EmulatorConfig(), dialect=cfg.dialect, model=cfg.model
        )
        self.events: list[ServerEvent] = []
        self.to_server: list[str] = []
        self.to_client: list[Json] = []
        self.server.open(now)

    def connect(self) -> list[ServerEvent]:
        """The socket opened: the client sends ``session.update``; deliver until quiet."""
        self.client.connection_made()
        return self.exchange()

    def exchange(self) -> list[ServerEvent]:
        """Deliver both ways until neither side has anything due now; the client's events."""
        out: list[ServerEvent] = []
        while True:
            sent = self.client.data_to_send()
            for message in sent:
                self.to_server.append(message)
                self.server.receive(message, self.now)
            released = self.server.release(self.now)
            for event in released:
                self.to_client.append(event)
                out += self.client.receive(orjson.dumps(event).decode())
            if not sent and not released:
                self.events += out
                return out

    def advance(self, seconds: float) -> list[ServerEvent]:
        """Move the clock ``seconds`` on, exchanging at every due time on the way."""
        end = self.now + seconds
        out = self.exchange()
        while (due := self.server.next_deadline()) is not None and due <= end:
            self.now = max(self.now, due)
            out += self.exchange()
        self.now = end
        return out + self.exchange()

    def settle(self, limit_s: float = 3600.0) -> list[ServerEvent]:
        """Advance through due times until nothing is queued (at most ``limit_s`` on)."""
        out = self.exchange()
        end = self.now + limit_s
        while (due := self.server.next_deadline()) is not None and due <= end:
            self.now = max(self.now, due)
            out += self.exchange()
        return out
