"""The playground's wire protocol, sans I/O: the page's messages, checked, and the play-position
map the browser sink keeps.

Theory of operation
-------------------
One WebSocket per browser tab. Audio goes both ways as binary messages of little-endian pcm16
mono samples, nothing else; everything else is a JSON text message with a ``type``.

Page → server:

* ``{"type": "start", "rate": R}`` first (the capture rate of the page's microphone);
* binary: microphone audio at ``R`` Hz;
* ``{"type": "played", "position": N}``: the page's play position, in samples of the audio the
  server sent (in order of sending; audio dropped by a ``clear`` counts as passed). Sent while
  audio plays and once right after each ``clear``, with ``"cleared": K`` (samples dropped);
* ``{"type": "hangup"}``: the user hung up (closing the socket does the same).

Server → page: ``hello`` (rates, the graph, the VAD settings), ``event`` (a frame's event-log
form: transcripts, tool calls and results, errors, speech and response events), ``clear``
(barge-in: drop everything queued now), ``stats`` (link depths, frame counts), ``bye`` (the
pipeline ended; ``error`` says why if it failed), and binary audio at the playback rate.

Every incoming message is checked by :func:`parse_incoming`: a message that breaks the protocol
raises :class:`BrowserMessageError` naming the fault, and the server closes that connection (and
only that one) with code 1008 or 1009.

:class:`PlayMap` is the sink's record of what it sent: sample positions ↔ media time, so a
``played`` position becomes the media time the user has heard (the session truncates there).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson

from pipeline.errors import PipelineError

__all__ = [
    "MAX_AUDIO_BYTES",
    "MAX_RATE",
    "MAX_TEXT_BYTES",
    "MIN_RATE",
    "BrowserMessageError",
    "Hangup",
    "Incoming",
    "MicAudio",
    "PlayMap",
    "PlayedReport",
    "StartMessage",
    "dumps",
    "parse_incoming",
]

#: Largest JSON message the page may send (its messages are a few dozen bytes).
MAX_TEXT_BYTES = 4096
#: Largest binary message: 0.5 s of 48 kHz pcm16 (the page sends 20 ms at a time).
MAX_AUDIO_BYTES = 48_000
MIN_RATE = 8000
MAX_RATE = 96000
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


class BrowserMessageError(PipelineError):
    """A message from the page that breaks the protocol; ``code`` is the WebSocket close code
    the connection is closed with (1008 policy violation, 1009 too big)."""

    def __init__(self, message: str, code: int = POLICY_VIOLATION) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class StartMessage:
    """The page is ready: its microphone runs at ``rate`` Hz."""

    rate: int


@dataclass(frozen=True, slots=True)
class MicAudio:
    """Microphone samples (pcm16 little-endian, mono)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PlayedReport:
    """The page has played (or dropped) the first ``position`` samples sent to it; ``cleared``:
    samples just dropped by a ``clear`` (0 for a periodic report)."""

    position: int
    cleared: int = 0


@dataclass(frozen=True, slots=True)
class Hangup:
    """The user hung up."""


Incoming: TypeAlias = StartMessage | MicAudio | PlayedReport | Hangup

_FIELDS: dict[str, dict[str, bool]] = {  # type -> field -> required
    "start": {"rate": True},
    "played": {"position": True, "cleared": False},
    "hangup": {},
}


def _int(data: dict[str, Any], name: str, lo: int, hi: int) -> int:
    v = data[name]
    if type(v) is not int or not lo <= v <= hi:
        where = f"{data['type']}.{name}"
        raise BrowserMessageError(f"'{where}' must be an integer {lo}..{hi}, got {v!r}")
    return v


def parse_incoming(raw: str | bytes, *, started: bool) -> Incoming:
    """Read one message from the page; ``started``: a ``start`` was already received."""
    if isinstance(raw, bytes):
        if not started:
            raise BrowserMessageError(
                f"audio ({len(raw)} bytes) before 'start'; send {{type: start, rate}} first"
            )
        if len(raw) > MAX_AUDIO_BYTES:
            raise BrowserMessageError(
                f"audio message of {len(raw)} bytes; at most {MAX_AUDIO_BYTES}", MESSAGE_TOO_BIG
            )
        if len(raw) % 2:
            raise BrowserMessageError(
                f"audio message of {len(raw)} bytes: pcm16 needs an even number of bytes"
            )
        return MicAudio(raw)
    if len(raw) > MAX_TEXT_BYTES:
        raise BrowserMessageError(
            f"text message of {len(raw)} characters; at most {MAX_TEXT_BYTES}", MESSAGE_TOO_BIG
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BrowserMessageError(f"text message is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BrowserMessageError("a text message must be a JSON object with a 'type' string")
    kind = data["type"]
    fields = _FIELDS.get(kind)
    if fields is None:
        expected = ", ".join(_FIELDS)
        raise BrowserMessageError(f"unknown message type '{kind}' (expected one of {expected})")
    for key in data:
        if key != "type" and key not in fields:
            raise BrowserMessageError(f"'{kind}' has no field '{key}'")
    for key, required in fields.items():
        if required and key not in data:
            raise BrowserMessageError(f"'{kind}' needs the field '{key}'")
    if kind == "start":
        if started:
            raise BrowserMessageError("'start' arrived twice")
        return StartMessage(_int(data, "rate", MIN_RATE, MAX_RATE))
    if not started:
        raise BrowserMessageError(f"'{kind}' before 'start'")
    if kind == "played":
        cleared = _int(data, "cleared", 0, 2**53) if "cleared" in data else 0
        return PlayedReport(_int(data, "position", 0, 2**53), cleared)
    return Hangup()


def dumps(message: dict[str, Any]) -> str:
    """A server message as JSON text."""
    return orjson.dumps(message).decode()


class PlayMap:
    """Sample positions of the audio sent to the page ↔ its media time.

    ``sent(pts, n)`` records ``n`` samples starting at media time ``pts``; ``pts_at(position)``
    is the media time of the end of the first ``position`` samples (None before any was sent or
    for a position never sent). Chunks fully passed are forgotten, so the map stays small."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.position = 0  # samples sent
        self._chunks: deque[tuple[int, float, int]] = deque()  # (start, pts, n)
        self.heard_pts: float | None = None

    def sent(self, pts: float, n: int) -> None:
        if n > 0:
            self._chunks.append((self.position, pts, n))
            self.position += n

    def pts_at(self, position: int) -> float | None:
        """Media time at the end of the first ``position`` samples sent."""
        if position > self.position:
            return None
        chunks = self._chunks
        while len(chunks) > 1 and chunks[1][0] < position:
            chunks.popleft()
        if not chunks or position < chunks[0][0]:
            return self.heard_pts
        start, pts, n = chunks[0]
        self.heard_pts = pts + min(position - start, n) / self.rate
        return self.heard_pts
