"""How the realtime session judges the service it talks to, without I/O: when to reconnect and
when to give up (:class:`Reconnects`), and whether the service speaks faster than a voice can
(:class:`AudioBudget`). The session asks; these answer with numbers, tested synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0


@dataclass
class Reconnects:
    """Connections in a row that did not prove the service works, and the wait before the next.

    Only a connection that delivered a response (or one we closed to recycle it) proves it: a
    service that accepts the session and closes it again at once counts as failing, so backoff
    spans the whole session and a reconnect storm ends after ``attempts`` retries. Each method
    returns the seconds to wait before connecting again, or None: give up."""

    attempts: int
    failures: int = 0

    def connect_failed(self) -> float | None:
        """A connection attempt failed (refused, timed out, a 5xx)."""
        self.failures += 1
        return self._next()

    def connection_ended(self, *, delivered: bool, recycled: bool = False) -> float | None:
        """A connection closed; ``delivered``: it delivered at least one response."""
        if delivered or recycled:
            self.failures = 0
            return 0.0
        self.failures += 1
        return self._next()

    def _next(self) -> float | None:
        if self.failures > self.attempts:
            return None
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2.0 ** (self.failures - 1))


class AudioBudget:
    """Assistant audio received on one connection against the time it has been open: a service
    cannot speak faster than real time for long, and audio more than ``max_ahead_s`` ahead of the
    clock means a misbehaving service (it would be played, billed and held in memory)."""

    def __init__(self, bytes_per_second: int, max_ahead_s: float, start: float) -> None:
        self.bytes_per_second = bytes_per_second
        self.max_ahead_s = max_ahead_s
        self.start = start
        self.received_s = 0.0

    def add(self, n_bytes: int, now: float) -> bool:
        """Count ``n_bytes`` received at clock time ``now``; False once too far ahead."""
        self.received_s += n_bytes / self.bytes_per_second
        return self.received_s - (now - self.start) <= self.max_ahead_s
