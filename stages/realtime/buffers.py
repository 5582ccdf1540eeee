"""The realtime session's two pure buffers, no I/O and no event loop.

- :class:`AudioBatcher` (input side): audio frames cut into ``input_audio_buffer.append``-sized
  pieces of 20–100 ms, each with the pts of its first sample; under server VAD, holes in the
  input's pts (a gate that dropped silence) become silence, so the server's VAD hears the pause.
- :class:`ReplyPlayout` (output side): what the stage will yield, in order, and where the
  assistant's audio stands: how much of each item left the stage, how much a sink reported as
  played. A barge-in drops the queued reply audio; :meth:`ReplyPlayout.heard_ms` says where to
  truncate the assistant's item.

Both are driven by :mod:`stages.realtime.session` and tested synchronously.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple, TypeAlias

from pipeline.context import Played
from pipeline.frames import BYTES_PER_SAMPLE, Audio, AudioFormat, Frame, Interrupt, make_audio

from .wire.server import AudioDeltaEvent

MIN_APPEND_MS = 20
MAX_APPEND_MS = 100
#: Longest input gap filled with silence under server VAD.
GAP_FILL_MAX_S = 1.0
#: The silence of each encoding (G.711 silence is not the zero byte).
SILENCE_BYTE: dict[str, bytes] = {"pcm16": b"\x00\x00", "pcmu": b"\xff", "pcma": b"\xd5"}


class AudioBatcher:
    """Input audio cut into ``input_audio_buffer.append``-sized pieces: 20–100 ms each (small
    frames are joined, large ones split), each with the pts of its first sample. With
    ``fill_gaps``, a jump forward in the frames' pts (a gate that dropped silence) becomes up to
    ``GAP_FILL_MAX_S`` of silence, so a server's VAD hears the pause. No I/O."""

    def __init__(self, fmt: AudioFormat, *, fill_gaps: bool, min_ms: int = MIN_APPEND_MS) -> None:
        self.fmt = fmt
        self.fill_gaps = fill_gaps
        width = BYTES_PER_SAMPLE[fmt.encoding]
        self.min_bytes = fmt.rate * min(max(min_ms, MIN_APPEND_MS), MAX_APPEND_MS) // 1000 * width
        self.max_bytes = fmt.rate * MAX_APPEND_MS // 1000 * width
        self._width = width * fmt.channels
        self._buf = bytearray()
        self._buf_pts = 0.0
        #: media time just after the last sample pushed (None before any)
        self.next_pts: float | None = None

    def push(self, frame: Audio) -> list[tuple[float, bytes]]:
        """Add a frame (already checked to be in ``fmt``); the pieces now complete."""
        data, pts = frame.data, frame.pts
        end_pts = pts + len(data) // self._width / self.fmt.rate  # frame.end_pts
        nxt = self.next_pts
        if nxt is not None and (not self.fill_gaps or -0.0005 <= pts - nxt <= 0.005):
            # the usual frame: next to the last one (or gaps not filled), nothing to fix
            if not self._buf:
                self._buf_pts = pts
            self._buf += data
            self.next_pts = end_pts if end_pts > nxt else nxt
            if len(self._buf) < self.min_bytes:
                return []
            return self._take(final=False)
        out: list[tuple[float, bytes]] = []
        if self.fill_gaps and nxt is not None:
            gap = pts - nxt
            if gap > 0.005:
                out += self._add(self.silence_bytes(min(gap, GAP_FILL_MAX_S)), nxt)
            elif gap < -0.0005:
                # Silence padded at a turn's end stands in for audio up to next_pts: drop the
                # part of this frame it already covers, so the server's timeline stays the input's.
                width = BYTES_PER_SAMPLE[self.fmt.encoding] * frame.channels
                skip = min(len(data), round(-gap * frame.rate) * width)
                data, pts = data[skip:], nxt
                if not data:
                    return out
        out += self._add(data, pts)
        self.next_pts = max(end_pts, self.next_pts or 0.0)
        return out

    def pad_turn_end(self, offset_pts: float, silence_s: float) -> list[tuple[float, bytes]]:
        """A gate said speech stopped at ``offset_pts``: make sure the server hears
        ``silence_s`` of silence after it now, not when the caller speaks again (a gate in
        ``gate`` mode passes only its hangover, often shorter than the server's VAD needs)."""
        heard = (self.next_pts if self.next_pts is not None else offset_pts) - offset_pts
        if heard >= silence_s:
            return []
        return self.pad(silence_s - heard) + self.flush()

    def pad(self, seconds: float) -> list[tuple[float, bytes]]:
        """Append ``seconds`` of silence after what was pushed; the pieces now complete."""
        at = self.next_pts if self.next_pts is not None else self._buf_pts
        out = self._add(self.silence_bytes(seconds), at)
        self.next_pts = at + seconds
        return out

    def flush(self) -> list[tuple[float, bytes]]:
        """The rest, however short (end of a turn, end of the input)."""
        return self._take(final=True)

    def silence_bytes(self, seconds: float) -> bytes:
        return SILENCE_BYTE[self.fmt.encoding] * int(seconds * self.fmt.rate)

    def _add(self, data: bytes, pts: float) -> list[tuple[float, bytes]]:
        if not self._buf:
            self._buf_pts = pts
        self._buf += data
        return self._take(final=False)

    def _take(self, *, final: bool) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        while len(self._buf) >= self.min_bytes or (final and self._buf):
            n = min(len(self._buf), self.max_bytes)
            out.append((self._buf_pts, bytes(self._buf[:n])))
            del self._buf[:n]
            self._buf_pts += n / self.fmt.bytes_per_second
        return out


class ReplyAudio(NamedTuple):
    """Assistant audio waiting to leave the stage: raw bytes in the session's output format, with
    the item and response they belong to (a frame is made, with its pts, as it leaves). One per
    reply delta: a named tuple, immutable and a third of a frozen dataclass's cost to make."""

    data: bytes
    item_id: str
    response_id: str


#: What the playout takes as assistant audio: a :class:`ReplyAudio`, or the protocol's
#: :class:`~stages.realtime.wire.server.AudioDeltaEvent` itself (the same fields, by name: the
#: stage queues a delta's event as it is, with nothing made per delta)
REPLY_AUDIO = (ReplyAudio, AudioDeltaEvent)
Reply: TypeAlias = ReplyAudio | AudioDeltaEvent


class ReplyPlayout:
    """The stage's output queue, and where the assistant's audio stands.

    :meth:`put` never blocks: the reader must keep reading (a barge-in can arrive while
    downstream is slow), and what the queue holds is what the server sent ahead, which a
    barge-in drops (:meth:`interrupt`). Audio is stamped with its pts as it leaves
    (:meth:`take`; counted in samples: exact, and dropped audio leaves no hole).
    :meth:`heard_ms` says how much of an item was heard: up to the position a sink reported as
    played (:meth:`on_played`), else what left the stage."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._width = BYTES_PER_SAMPLE[fmt.encoding] * fmt.channels  # bytes per sample frame
        self._q: deque[Frame | Reply] = deque()
        self.samples_out = 0
        self.played: float | None = None
        self._item = ""
        self._item_start: dict[str, float] = {}
        self.interrupted_at = -1.0

    @property
    def pts(self) -> float:
        """Media time of the end of the audio that left the stage."""
        return self.samples_out / self.fmt.rate

    def __len__(self) -> int:
        return len(self._q)

    def put(self, item: Frame | Reply) -> None:
        self._q.append(item)

    def interrupt(self, frame: Interrupt) -> int:
        """Drop the queued audio and queue ``frame``; returns how many chunks were dropped.

        The interrupt overtakes queued audio only (all of it is gone): events queued before it
        (a ``tool_call`` of the interrupted response, a transcript) keep their order and stay
        ahead of it, so a tool router sees the call before the interrupt, as it happened."""
        kept = [x for x in self._q if not isinstance(x, REPLY_AUDIO)]
        dropped = len(self._q) - len(kept)
        self._q = deque([*kept, frame])
        self.interrupted_at = self.pts
        return dropped

    def has_audio(self) -> bool:
        return any(isinstance(x, REPLY_AUDIO) for x in self._q)

    def lagging(self) -> bool:
        """A sink reported playing behind what left the stage (and it was not cut since)."""
        if self.played is None:
            return False
        return self.played < self.pts - 0.02 and self.pts > self.interrupted_at

    def on_played(self, value: Any) -> None:
        """Bus callback (topic ``played``): reports outside our output's timeline are ignored."""
        if isinstance(value, Played) and 0.0 <= value.pts <= self.pts + 1e-6:
            self.played = value.pts

    def heard_ms(self, item_id: str) -> int:
        """Milliseconds of ``item_id`` heard (0 if none of it left the stage)."""
        start = self._item_start.get(item_id)
        if start is None:
            return 0
        heard = self.pts if self.played is None else min(self.played, self.pts)
        return max(0, round((heard - start) * 1000))

    def take(self) -> Frame | None:
        """The next frame to yield (audio stamped with its pts now), or None if nothing is
        queued."""
        if not self._q:
            return None
        item = self._q.popleft()
        if not isinstance(item, REPLY_AUDIO):
            return item
        data, fmt = item.data, self.fmt
        pts = self.samples_out / fmt.rate  # (self.pts)
        if item.item_id != self._item:
            self._item = item.item_id
            self._item_start.setdefault(item.item_id, pts)
        self.samples_out += len(data) // self._width
        return make_audio(data, fmt.encoding, fmt.rate, fmt.channels, pts)
