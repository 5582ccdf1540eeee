"""The two buffers of one emulated connection: the timed :class:`Outbox` of server events, and
the :class:`InputBuffer` of the caller's audio. Plain data structures, no protocol."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass
class Due:
    """A queued server event: due at clock time ``due``; ``seq`` keeps emission order among
    events due at once; ``response_id`` ties it to a response (dropped if that is cancelled);
    ``on_release`` runs when it is released."""

    due: float
    seq: int
    event: Json
    response_id: str | None = None
    on_release: Callable[[], None] | None = None


class Outbox:
    """Server events with due times, released in (due, emission) order."""

    def __init__(self) -> None:
        self._queue: list[Due] = []
        self._seq = 0

    def put(
        self,
        event: Json,
        due: float,
        response_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._seq += 1
        self._queue.append(Due(due, self._seq, event, response_id, on_release))

    def next_due(self) -> float | None:
        """The earliest due time queued (None: empty)."""
        return min((o.due for o in self._queue), default=None)

    def pop(self, now: float) -> Due | None:
        """The first event due by ``now``, removed from the queue (None: nothing due)."""
        due = [o for o in self._queue if o.due <= now]
        if not due:
            return None
        first = min(due, key=lambda o: (o.due, o.seq))
        self._queue.remove(first)
        return first

    def drop_response(self, response_id: str) -> None:
        """Forget every queued event of ``response_id`` (it was cancelled)."""
        self._queue = [o for o in self._queue if o.response_id != response_id]

    def clear(self) -> None:
        self._queue.clear()


class InputBuffer:
    """The caller's audio as pcm16, from the last commit on. Sample indexes count from the
    session's first sample; committed audio is dropped so memory stays flat in long sessions."""

    def __init__(self) -> None:
        self._pcm = bytearray()
        self._offset = 0  # the session sample index of _pcm[0]
        #: the session sample index where the uncommitted buffer starts
        self.start = 0

    @property
    def samples_in(self) -> int:
        """Input samples received in this session."""
        return self._offset + len(self._pcm) // 2

    def append(self, pcm: bytes) -> None:
        self._pcm += pcm

    def samples(self, start: int, end: int) -> bytes:
        """Input samples [start, end) (session sample indexes) as pcm16 bytes."""
        lo, hi = start - self._offset, end - self._offset
        return bytes(self._pcm[2 * max(lo, 0) : 2 * max(hi, 0)])

    def restart_at(self, sample: int) -> None:
        """The uncommitted buffer now starts at ``sample``; what is before it is dropped."""
        self.start = sample
        cut = sample - self._offset
        if cut > 0:
            del self._pcm[: 2 * cut]
            self._offset = sample
