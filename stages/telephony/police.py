"""The media clock of a call, policed: a caller may not send audio faster than real time.

A carrier streams the caller's audio as it is spoken (Twilio: 20 ms every 20 ms). A caller
that sends faster (a thousand messages a second, or seconds of audio in one message) would
have it all forwarded to the model, multiplying the audio billed and the CPU spent. The audio
admitted may run ahead of the wall clock by ``allowance_s`` (network jitter, a burst after a stall).
The clock starts when the server accepts the connection (:meth:`begin`): the caller cannot
have sent any audio before that, so a stall of the server itself (messages read late, in a
burst) never looks like a caller running ahead, while a caller that waits before sending gains
at most that wait (bounded by the start and idle timeouts). A message that would go further is
dropped whole and counted; once ``disconnect_after_s`` of audio has been dropped the caller is
an offender and the call is closed. Pure: the clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["MediaPolice"]


class MediaPolice:
    """Admits a call's media messages while they keep to real time (plus ``allowance_s``)."""

    def __init__(
        self,
        bytes_per_second: int,
        *,
        allowance_s: float = 2.0,
        disconnect_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bytes_per_second = bytes_per_second
        self.allowance_s = allowance_s
        self.disconnect_after_s = disconnect_after_s
        self.clock = clock
        self._t0: float | None = None
        self.admitted_bytes = 0
        self.dropped_bytes = 0
        self.dropped_messages = 0

    def begin(self) -> None:
        """Start the clock now: the connection was accepted (else it starts at the first
        media message)."""
        self._t0 = self.clock()

    def ahead_s(self, extra_bytes: int = 0) -> float:
        """How far the admitted audio (plus ``extra_bytes``) runs ahead of the wall clock."""
        elapsed = 0.0 if self._t0 is None else self.clock() - self._t0
        return (self.admitted_bytes + extra_bytes) / self.bytes_per_second - elapsed

    def admit(self, nbytes: int) -> bool:
        """True: forward this message's ``nbytes`` of audio; False: drop it (counted)."""
        if self._t0 is None:
            self._t0 = self.clock()
        if self.ahead_s(nbytes) > self.allowance_s:
            self.dropped_bytes += nbytes
            self.dropped_messages += 1
            return False
        self.admitted_bytes += nbytes
        return True

    @property
    def dropped_s(self) -> float:
        return self.dropped_bytes / self.bytes_per_second

    @property
    def offender(self) -> bool:
        """Enough audio dropped to call it sustained: close the call."""
        return self.dropped_s >= self.disconnect_after_s
