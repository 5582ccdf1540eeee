"""Telephony over Twilio Media Streams: the outgoing chunker, the call, and the two stages of a
call leg (``twilio_source``, ``twilio_sink``). The message model lives in
:mod:`stages.telephony.twilio_wire` (its names are re-exported here).

Theory of operation
-------------------
Twilio opens one WebSocket per call (``<Connect><Stream url=...>``) and talks JSON text frames:
``connected``, ``start``, then ``media`` every 20 ms (base64 μ-law, 8 kHz, mono), ``dtmf``,
``mark`` (the echo of a mark we sent, once the audio before it has played) and ``stop``. We send
``media`` (audio to play), ``mark`` (tell me when you get here) and ``clear`` (barge-in: drop what
you have buffered). Every field is checked: a message with a missing, unknown or ill-typed field
is refused with a :class:`TwilioMessageError` naming the field, as Twilio itself does (31950
"Malformed Message" for a binary frame or bad JSON, 31951 "Invalid Message" for the rest).

The pure, synchronous core (no event loop, no socket):

* :func:`parse_incoming` / :func:`parse_outgoing` (in ``twilio_wire``) read one message each way
  into frozen value objects (:class:`Connected`, :class:`Start`, :class:`Media`, :class:`Dtmf`,
  :class:`Mark`, :class:`Stop`; :class:`OutMedia`, :class:`Mark`, :class:`Clear`);
  ``encode(msg)`` writes one.
* :class:`Playout` cuts outgoing audio into chunks of ``chunk_ms`` (20–50 ms), follows each
  ``media`` with a ``mark``, and keeps the marks not yet echoed. An echo moves the *heard*
  position (media time of the end of the last chunk the caller has heard); ``clear()`` forgets
  every pending mark and the partial chunk, and returns the ``clear`` message and the heard
  position, which the session truncates the assistant's turn at.

The I/O edge: one :class:`TwilioCall` per connection holds the stream's state. The server (see
:mod:`stages.telephony.serve`) creates it, pumps the socket's messages into ``receive()``, and runs
a fresh pipeline with the call bound to the context (:func:`bind_call`): both stages find it with
:func:`current_call`. A context variable is the smallest clean mechanism: ``asyncio`` copies the
context into every task the runner creates, so the stages of one call see that call and no other,
and the runtime needs no new slot. ``twilio_source`` emits the caller's audio (``pcmu`` 8000 Hz,
``pts`` from the media timestamps) and ends on ``stop`` or when the socket closes; ``twilio_sink``
sends audio back and publishes :class:`~pipeline.context.Played` on the bus as marks come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson
from websockets.exceptions import ConnectionClosed

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import FormatError, StageError, UsageError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt, ResponseDone, Text, make_audio
from pipeline.spec import Interface, stage
from pipeline.tasks import StageTasks
from stages.realtime.wire.b64 import encode as b64_encode

from .control import Playback
from .twilio_wire import (
    MULAW_FORMAT,
    RATE,
    Clear,
    Connected,
    Dtmf,
    Inbound,
    Mark,
    Media,
    MediaFormat,
    Outbound,
    OutMedia,
    Start,
    Stop,
    TwilioMessageError,
    UnsupportedFormat,
    encode,
    parse_incoming,
    parse_outgoing,
    read_fast,
)

if TYPE_CHECKING:
    from .carriers.base import Carrier
    from .police import MediaPolice

__all__ = [
    "CALL",
    "MULAW_FORMAT",
    "AnsweredBy",
    "Clear",
    "Connected",
    "Dtmf",
    "Inbound",
    "LatenessMeter",
    "Mark",
    "Media",
    "MediaFormat",
    "OutMedia",
    "Outbound",
    "Playout",
    "Start",
    "Stop",
    "TwilioCall",
    "TwilioMessageError",
    "answered_by_text",
    "bind_call",
    "current_call",
    "encode",
    "parse_incoming",
    "parse_outgoing",
    "twilio_sink",
    "twilio_source",
]

# ---------------------------------------------------------------------------- outgoing audio

#: the longest ``mark_ms``: a mark at least once a second keeps "heard in full" prompt
MAX_MARK_MS = 1000


class LatenessMeter:
    """How late each outgoing chunk is for a caller who plays audio as it arrives.

    The caller's player starts a chunk when it arrives or when the previous one has finished,
    whichever is later. A chunk that continues a stretch of audio (its media time follows on
    from the previous chunk) and arrives after the player ran dry is late by the gap the caller
    hears; the first chunk of a stretch is never late (when a reply starts is a matter of
    response latency, not of lateness). A stretch ends at a jump in media time, a barge-in or
    the end of a reply (:meth:`Playout.end_reply`): a realtime session's output media time runs
    on across replies, so the next reply's first chunk follows on from the last one's end."""

    __slots__ = ("play_end",)

    def __init__(self) -> None:
        self.play_end: float | None = None

    def chunk(self, now: float, duration: float, continues: bool) -> float:
        """Account a chunk of ``duration`` s sent at ``now``; return its lateness in seconds."""
        late = 0.0
        start = now
        if continues and self.play_end is not None:
            late = max(0.0, now - self.play_end)
            start = max(now, self.play_end)
        self.play_end = start + duration
        return late

    def reset(self) -> None:
        self.play_end = None


class Playout:
    """The outgoing side of a stream: audio in, ``media`` + ``mark`` messages out, and what the
    caller has heard so far.

    ``push(data, pts, now)`` buffers μ-law bytes and returns the messages for every full chunk
    (``chunk_ms`` of audio each, 20–50 ms). ``flush(now)`` sends the partial chunk left over;
    ``end_reply(now)`` does so at the end of a response and starts a new stretch. A chunk whose
    media time does not follow on from the buffered audio flushes the buffer first, so a chunk
    never spans two stretches of audio.

    Marks: by default each ``media`` is followed by a ``mark`` named ``"<n>"``. With
    ``mark_ms`` a mark follows the chunk that completes ``mark_ms`` of audio since the last
    one, and :meth:`end_reply` (or ``flush(mark=True)``) marks whatever is left, so the end
    of every reply is marked. :meth:`mark_echoed` takes Twilio's echo and returns the heard
    position it proves (the media time at the end of that chunk). Between echoes, with
    ``mark_ms`` longer than a chunk, :meth:`heard_at` gives the position the caller has
    reached by the clock: the caller's player plays each chunk when it arrives or when the one
    before it ends, so the heard position is what was sent less what is still to play; each
    echo sets the model right (last echo's position plus the time since, capped at what was
    sent). :meth:`clear` (barge-in) drops the partial chunk and every pending mark and returns
    the ``clear`` message (if anything was still unplayed) and the heard position.
    """

    def __init__(
        self,
        stream_sid: str,
        *,
        chunk_ms: int = 20,
        mark_ms: int | None = None,
        on_chunk: Callable[[float], None] | None = None,
        on_sent: Callable[[str, bytes], None] | None = None,
        carrier: Carrier | None = None,
    ) -> None:
        if not 20 <= chunk_ms <= 200:
            raise UsageError(f"chunk_ms must be between 20 and 200, got {chunk_ms}")
        if mark_ms is not None and not chunk_ms <= mark_ms <= MAX_MARK_MS:
            raise UsageError(
                f"mark_ms must be between chunk_ms ({chunk_ms}) and {MAX_MARK_MS}, got {mark_ms}"
            )
        fmt = carrier.format if carrier is not None else MULAW_FORMAT
        if carrier is not None and carrier.frame_ms is not None and chunk_ms != carrier.frame_ms:
            raise UsageError(f"{carrier.name} takes media in {carrier.frame_ms} ms frames only")
        self.stream_sid = stream_sid
        self.carrier = carrier  # None: Twilio, written here around the payload
        self.bps = fmt.bytes_per_second
        self.sample_bytes = fmt.bytes_per_second // fmt.rate
        self.chunk_bytes = self.bps * chunk_ms // 1000
        #: a mark once this many bytes went out unmarked (0: after every chunk)
        self.mark_bytes = self.bps * mark_ms // 1000 if mark_ms is not None else 0
        #: the heard position moves with the clock between echoes (marks sparser than chunks)
        self.interpolates = mark_ms is not None and mark_ms > chunk_ms
        # a partial chunk is padded with silence up to this (carriers with a minimum or a frame)
        self.pad_bytes = 0
        if carrier is not None:
            self.pad_bytes = self.bps * (carrier.frame_ms or carrier.min_chunk_ms) // 1000
        self.on_chunk = on_chunk
        self.on_sent = on_sent  # (mark name or "", chunk): a recorder's view of what was sent
        # Twilio's media and mark, written around the payload and the name: the exact text
        # encode() writes (tests/stages/telephony/test_twilio_wire.py), without its dict
        sid = orjson.dumps(stream_sid).decode()
        self._media_head = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_head = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":"'
        self._buf = bytearray()
        self._buf_pts = 0.0
        self._next_pts: float | None = None  # media time right after the last chunk sent
        self._mark_seq = 0
        #: bytes sent since the last mark
        self.unmarked = 0
        self.pending: deque[tuple[str, float]] = deque()  # (mark name, end pts), oldest first
        self.heard_pts: float | None = None
        # the caller's player, modelled: when it will have played everything sent (None: idle
        # since a clear, or nothing sent yet), and the media time at the end of what was sent
        self._play_end: float | None = None
        self._sent_end = 0.0
        self.meter = LatenessMeter()
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.clears_sent = 0

    @property
    def buffered(self) -> int:
        """Bytes held back until a full chunk (or a flush)."""
        return len(self._buf)

    @property
    def next_pts(self) -> float:
        """The media time right after everything sent or buffered (0 before any audio)."""
        if self._buf:
            return self._buf_pts + len(self._buf) / self.bps
        return self._next_pts or 0.0

    def push(self, data: bytes, pts: float, now: float = 0.0) -> list[Any]:
        """Buffer ``data`` (the stream's format, media time ``pts``); the messages for every
        full chunk."""
        out: list[Any] = []
        buf = self._buf
        if buf and abs(pts - (self._buf_pts + len(buf) / self.bps)) > 0.5e-3:
            out += self.flush(now)
        if len(data) % self.sample_bytes:
            raise ValueError(f"{len(data)} bytes is not a whole number of samples")
        n = self.chunk_bytes
        if not buf:
            if len(data) == n:  # one whole chunk, as a 20 ms frame at chunk_ms 20: no copy
                self._buf_pts = pts
                self._send(data, now, out)
                return out
            self._buf_pts = pts
        buf += data
        while len(buf) >= n:
            self._send(bytes(buf[:n]), now, out)
            del buf[:n]
        return out

    def flush(self, now: float = 0.0, *, mark: bool = False) -> list[Any]:
        """The messages for the partial chunk, if any; with ``mark``, and a mark for what went
        out unmarked."""
        out: list[Any] = []
        if self._buf:
            self._send(bytes(self._buf), now, out)
            self._buf.clear()
        if mark and self.unmarked:
            self._mark(out)
        return out

    def end_reply(self, now: float = 0.0) -> list[Any]:
        """The end of a reply: the messages for the partial chunk, if any, and its mark; the
        next audio starts a new stretch even if its media time follows on (the gap before the
        next reply is response latency, not lateness)."""
        out = self.flush(now, mark=True)
        self.meter.reset()
        return out

    def _send(self, chunk: bytes, now: float, out: list[Any]) -> None:
        pts = self._buf_pts
        carrier = self.carrier
        if carrier is not None and len(chunk) < self.pad_bytes:
            chunk += carrier.silence(self.pad_bytes - len(chunk))
        size = len(chunk)
        dur = size / self.bps
        nxt = self._next_pts
        continues = nxt is not None and abs(pts - nxt) <= 0.5e-3
        late = self.meter.chunk(now, dur, continues)
        if self.on_chunk is not None:
            self.on_chunk(late)
        end = pts + dur
        self._buf_pts = end
        self._next_pts = end
        play_end = self._play_end
        self._play_end = (now if play_end is None or play_end < now else play_end) + dur
        self._sent_end = end
        if carrier is None:
            out.append(self._media_head + b64_encode(chunk) + '"}}')
        else:
            out.append(carrier.media(self.stream_sid, chunk))
        self.bytes_sent += size
        self.chunks_sent += 1
        self.unmarked += size
        if self.unmarked >= self.mark_bytes:
            self._mark(out, chunk)
        elif self.on_sent is not None:
            self.on_sent("", chunk)

    def _mark(self, out: list[Any], chunk: bytes = b"") -> None:
        """A mark after what was sent (``chunk``: the chunk it follows, for the recorder)."""
        self._mark_seq += 1
        name = str(self._mark_seq)
        self.pending.append((name, self._sent_end))
        self.unmarked = 0
        if self.on_sent is not None:
            self.on_sent(name, chunk)
        if self.carrier is None:
            out.append(self._mark_head + name + '"}}')
        else:
            out.append(self.carrier.mark(self.stream_sid, name))

    def mark_echoed(self, name: str, now: float | None = None) -> float | None:
        """Twilio played up to mark ``name`` (its echo arrived at ``now`` on the sink's clock):
        the new heard position, or None for a mark that is not pending (an echo after a
        ``clear``)."""
        if not any(n == name for n, _ in self.pending):
            return None
        while self.pending:
            n, end = self.pending.popleft()
            if n == name:
                self.heard_pts = end
                if now is not None and self._play_end is not None:
                    # what is left to play after the mark starts playing now
                    self._play_end = now + max(0.0, self._sent_end - end)
                return end
        raise AssertionError("unreachable")

    def heard_at(self, now: float) -> float | None:
        """The media time the caller has heard up to at ``now``: with marks sparser than
        chunks, what was sent less what the caller's player still has to play (the last
        echo's position plus the time since, capped at what was sent); else the last echoed
        mark's position. None before anything was heard or sent."""
        play_end = self._play_end
        if not self.interpolates or play_end is None:
            return self.heard_pts
        return self._sent_end - (play_end - now if play_end > now else 0.0)

    def clear(self, now: float | None = None) -> tuple[list[Any], float | None]:
        """Barge-in at ``now``: forget the partial chunk and the pending marks. Returns the
        ``clear`` message (none if nothing was unplayed) and the heard position."""
        out: list[Any] = []
        if self.pending or self._buf or self.unmarked:
            if self.carrier is None:
                out.append(encode(Clear(self.stream_sid)))
            else:
                out.append(self.carrier.clear(self.stream_sid))
            self.clears_sent += 1
        if now is not None and self.interpolates:
            self.heard_pts = self.heard_at(now)
        self.pending.clear()
        self._buf.clear()
        self.unmarked = 0
        self._next_pts = None
        self._play_end = None
        self.meter.reset()
        return out, self.heard_pts


# ---------------------------------------------------------------------------- the call


class _Closed:
    """The socket closed without a ``stop``."""


class _Handover:
    """The reader task stepped aside: the source reads the socket (TwilioCall.read_socket)."""


@dataclass(frozen=True, slots=True)
class AnsweredBy:
    """Answering-machine detection's verdict for this call (Twilio's ``AnsweredBy``:
    ``human``, ``machine_start``, ``machine_end_beep``, ``fax``, ``unknown``...)."""

    value: str


def answered_by_text(value: str) -> str:
    """The text the model reads for a verdict of answering-machine detection."""
    if value.startswith("machine_end"):
        hint = "the greeting has ended: leave your message now, then end the call"
    elif value.startswith("machine"):
        hint = "an answering machine is playing its greeting"
    elif value == "human":
        hint = "a person answered"
    else:
        hint = "it is not known who answered"
    return f"[call answered by: {value}] {hint}"


_CLOSED = _Closed()
_HANDOVER = _Handover()
#: sink reports kept for a recorder that has not attached yet (a few seconds of audio)
_JOURNAL_MAX = 512
SendFn = Callable[[Any], Awaitable[None]]
BatchFn = Callable[[list[Any]], Awaitable[None]]
RecvFn = Callable[[], Awaitable[str | bytes]]


class TwilioCall:
    """One phone call's media stream, shared by its ``twilio_source`` and ``twilio_sink``.

    The server creates it with the connection's ``send`` and feeds every message it reads to
    :meth:`receive`, then runs the call's pipeline under :func:`bind_call`. ``started`` is set by
    the ``start`` message (``start`` then holds the call's metadata). Media, dtmf and stop wait
    in a bounded queue for the source (back-pressure: the reader waits when it is full, so no
    audio is dropped); mark echoes go straight to the sink's handler. Bad messages are logged,
    counted in ``bad_messages`` and skipped, as Twilio does with ours.
    """

    def __init__(
        self,
        send: SendFn,
        *,
        send_batch: BatchFn | None = None,
        queue_size: int = 64,
        log: Any = None,
        on_lateness: Callable[[float], None] | None = None,
        carrier: Carrier | None = None,
        warn: Any = None,
        max_bad_messages: int = 0,
        police: MediaPolice | None = None,
    ) -> None:
        import structlog

        self._send = send
        #: several messages in one write (the server's connection); None: send each
        self._send_batch = send_batch
        #: the carrier's dialect (None: Twilio's, read by parse_incoming)
        self.carrier = carrier
        self.format = carrier.format if carrier is not None else MULAW_FORMAT
        self.log = log if log is not None else structlog.get_logger("pipeline.twilio")
        self.start: Start | None = None
        self.started = asyncio.Event()
        self.ended = asyncio.Event()  # stop received or socket closed
        #: time.monotonic() of the last media message (the server's idle watch reads it)
        self.last_media_at = time.monotonic()
        #: the caller's audio (as the source emits it), key presses, the stop, AMD's verdict
        self.inbound: asyncio.Queue[Audio | Dtmf | Stop | AnsweredBy | _Closed | _Handover] = (
            asyncio.Queue(queue_size)
        )
        #: what the caller has heard of the replies (fed by twilio_sink, read by end_call)
        self.playback = Playback()
        #: end of the caller audio received so far, ms on the stream's clock
        self.media_end_ms = 0
        #: recorders of the call (see attach_tap)
        self.taps: list[Any] = []
        # what the sink reported before a recorder attached (stages start in any order)
        self._journal: list[tuple[str, tuple[Any, ...]]] | None = []
        self.on_mark: Callable[[str], None] | None = None
        #: the sink's hook for each caller frame the source takes (the heard position moves on)
        self.on_caller_audio: Callable[[], None] | None = None
        #: the sink's way to play audio of our own (in-band DTMF) after what it has sent
        self.play_audio: Callable[[bytes], Awaitable[None]] | None = None
        self.on_lateness = on_lateness
        self.connected = False
        self.closed = False
        self.stopped = False  # the carrier's 'stop' arrived (the call ended normally)
        self.bad_messages = 0
        self.sent_after_close = 0
        self.messages_in = 0
        self.messages_out = 0
        self._send_lock = asyncio.Lock()
        #: where repeatable warnings go (a pipeline.loglimit.LimitedLog), else self.log
        self.warn = warn
        #: bad messages after which the caller is disconnected (0: never)
        self.max_bad_messages = max_bad_messages
        #: the media clock's police (None: audio taken as fast as it comes)
        self.police = police
        #: (close code, reason, outcome) once the stream is refused; nothing is read after
        self.refusal: tuple[int, str, str] | None = None
        # Reading the socket (see read_socket): the source reads it itself while it runs
        self._recv: RecvFn | None = None
        self._inline = False  # the source wants to read the socket itself
        self._parked = False  # the reader task has stopped reading for it
        self._unpark = asyncio.Event()

    @property
    def stream_sid(self) -> str:
        return self.start.stream_sid if self.start is not None else ""

    @property
    def call_sid(self) -> str:
        return self.start.call_sid if self.start is not None else ""

    def check(self, msg: Inbound) -> None:
        """Stream-level rules: ``connected`` then ``start`` first, one ``streamSid`` after."""
        if isinstance(msg, Connected):
            if self.connected or self.start is not None:
                raise TwilioMessageError("'connected' arrived twice or after 'start'")
            return
        if isinstance(msg, Start):
            if self.start is not None:
                raise TwilioMessageError("'start' arrived twice")
            return
        if self.start is None:
            raise TwilioMessageError(f"'{msg.event}' arrived before 'start'")
        if msg.stream_sid != self.start.stream_sid:
            raise TwilioMessageError(
                f"'{msg.event}' has streamSid {msg.stream_sid!r}; "
                f"this stream is {self.start.stream_sid!r}"
            )

    def take_fast(self, raw: str | bytes) -> bool:
        """Take the usual message without a coroutine: a well-formed ``media`` of this stream
        (50 a second) or a ``mark`` echo (see :func:`read_fast`). False if it is anything else,
        or cannot be taken now (the queue is full): hand it to :meth:`receive` then."""
        got = self._fast(raw)
        if got.__class__ is Audio:
            self.inbound.put_nowait(got)
            return True
        return got is True

    def _fast(self, raw: str | bytes) -> Audio | bool:
        """:meth:`take_fast`'s work: the caller's audio frame to queue (True: the message was
        taken, nothing to queue; False: not taken)."""
        start = self.start
        if start is None or self.carrier is not None or self.refusal is not None:
            return False
        fast = read_fast(raw)
        if fast is None or fast[0] != start.stream_sid:
            return False
        if len(fast) == 3:
            if self.inbound.full():  # back-pressure: receive() waits for the source
                return False
            self.messages_in += 1
            payload = fast[1]
            if self._admit(len(payload), fast[2]):
                # the payload as decoded from base64, untouched; make_audio: the frame without
                # the dataclass __init__ (50 a second per call)
                return make_audio(payload, "pcmu", RATE, 1, fast[2] / 1000)
            return True
        self.messages_in += 1
        on_mark = self.on_mark
        if on_mark is not None:
            on_mark(fast[1])
        return True

    async def receive(self, raw: str | bytes) -> None:
        """Take one message read from the socket (every kind; :meth:`take_fast` first is
        quicker for the usual ones)."""
        self.messages_in += 1
        if self.refusal is not None:
            return  # refused: the server is closing the socket
        try:
            msgs = [parse_incoming(raw)] if self.carrier is None else self.carrier.parse(raw)
        except UnsupportedFormat as exc:
            self.log.warning("stream refused: unsupported format", error=str(exc))
            self.refuse(1003, "unsupported media format", "refused")
            return
        except TwilioMessageError as exc:
            self._bad(exc)
            return
        for msg in msgs:
            try:
                self.check(msg)
            except TwilioMessageError as exc:
                self._bad(exc)
                continue
            await self._take(msg)

    def _bad(self, exc: TwilioMessageError) -> None:
        self.bad_messages += 1
        (self.warn or self.log).warning("bad twilio message skipped", code=exc.code, error=str(exc))
        if self.max_bad_messages and self.bad_messages >= self.max_bad_messages:
            self.log.warning(
                "caller disconnected: too many bad messages", bad_messages=self.bad_messages
            )
            self.refuse(1008, "too many bad messages", "bad_messages")

    def refuse(self, code: int, reason: str, outcome: str) -> None:
        """Refuse the stream: nothing more is read, the source ends, and the server closes
        the socket with ``code`` and ``reason`` and counts the call as ``outcome``."""
        if self.refusal is None:
            self.refusal = (code, reason, outcome)
            self.end()

    def _police(self, size: int) -> bool:
        """Whether ``size`` bytes of media keep to the media clock (else dropped, or the caller
        cut off)."""
        police = self.police
        if police is None or police.admit(size):
            return True
        if police.offender:
            self.log.warning(
                "caller disconnected: audio faster than real time",
                dropped_s=round(police.dropped_s, 2),
                allowance_s=police.allowance_s,
            )
            self.refuse(1008, "audio faster than real time", "policed")
        else:
            (self.warn or self.log).warning(
                "media ahead of real time dropped",
                ahead_s=round(police.ahead_s(size), 2),
                allowance_s=police.allowance_s,
            )
        return False

    def _admit(self, size: int, timestamp: int) -> bool:
        """A media message: whether it goes to the source (the media police may drop it)."""
        if not self._police(size):
            return False
        self.media_end_ms = timestamp + size * 1000 // self.format.bytes_per_second
        self.last_media_at = time.monotonic()
        return True

    async def _take(self, msg: Inbound) -> None:
        match msg:
            case Media():
                if self._admit(len(msg.payload), msg.timestamp):
                    fmt = self.format
                    frame = make_audio(msg.payload, fmt.encoding, fmt.rate, 1, msg.pts)
                    await self.inbound.put(frame)
            case Dtmf():
                await self.inbound.put(msg)
            case Mark():
                if self.on_mark is not None:
                    self.on_mark(msg.name)
            case Stop():
                self.stopped = True
                self.ended.set()
                await self.inbound.put(msg)
            case Start():
                self.start = msg
                self.started.set()
            case Connected():
                self.connected = True

    def connection_closed(self) -> None:
        """The socket is gone: the source ends, and what the sink sends is discarded."""
        self.closed = True
        self.ended.set()
        with contextlib.suppress(Exception):
            self.inbound.put_nowait(_CLOSED)

    def attach_tap(self, tap: Any) -> None:
        """Add a recorder: it gets ``sent(name, payload, at_ms)``, ``echoed(name)`` and
        ``cleared(at_ms)`` from the sink, starting with what happened before it attached."""
        for method, args in self._journal or ():
            getattr(tap, method)(*args)
        self._journal = None
        self.taps.append(tap)

    def _tap(self, method: str, *args: Any) -> None:
        if self.taps:
            for tap in self.taps:
                getattr(tap, method)(*args)
        elif self._journal is not None:
            self._journal.append((method, args))
            if len(self._journal) > _JOURNAL_MAX:  # no recorder is coming
                self._journal = None

    def tap_sent(self, name: str, payload: bytes) -> None:
        self._tap("sent", name, payload, self.media_end_ms)

    def tap_echoed(self, name: str) -> None:
        self._tap("echoed", name)

    def tap_cleared(self) -> None:
        self._tap("cleared", self.media_end_ms)

    def end(self) -> None:
        """The call is over on the carrier's side (the agent hung up or transferred it): the
        source ends now, without waiting for Twilio's ``stop``."""
        self.ended.set()
        with contextlib.suppress(Exception):
            self.inbound.put_nowait(_CLOSED)

    def deliver_answered_by(self, value: str) -> bool:
        """Hand answering-machine detection's verdict to the source; False if it cannot take
        it (the call has ended, or its queue is full)."""
        if self.ended.is_set():
            return False
        try:
            self.inbound.put_nowait(AnsweredBy(value))
        except asyncio.QueueFull:
            return False
        return True

    async def read_socket(self, recv: RecvFn) -> None:
        """Read the connection's messages (``recv``: the socket's; it raises
        ``ConnectionClosed`` at the end) into :meth:`receive` until it closes. The server runs
        this in a task of its own for the life of the connection.

        While the source runs (:meth:`source_reads`), this task steps aside after its next
        message and the source reads the socket itself whenever it has nothing queued: each
        message of the caller then wakes one task, not the reader and then the source. Marks
        and ``stop`` are read the same way, in the order they came."""
        self._recv = recv
        try:
            while True:
                if self._inline:
                    self._parked = True
                    with contextlib.suppress(asyncio.QueueFull):  # full: the source is busy
                        self.inbound.put_nowait(_HANDOVER)  # a source waiting on the queue
                    await self._unpark.wait()
                    self._unpark.clear()
                    self._parked = False
                    if self.closed:  # the source read the end of the connection
                        return
                    continue
                raw = await recv()
                if not self.take_fast(raw):
                    await self.receive(raw)
        except ConnectionClosed:
            pass
        finally:
            self._parked = False
            self.connection_closed()

    @contextlib.contextmanager
    def source_reads(self) -> Iterator[None]:
        """While inside, :meth:`next_inbound` reads the socket itself once the reader task
        has stepped aside; on the way out the reader task takes over again."""
        self._inline = True
        try:
            yield
        finally:
            self._inline = False
            self._unpark.set()

    async def next_inbound(self) -> Audio | Dtmf | Stop | AnsweredBy | None:
        """The next caller message for the source; None once the socket has closed."""
        recv = self._recv
        while True:
            while self._parked and recv is not None and self.inbound.empty() and not self.closed:
                try:
                    raw = await recv()
                except ConnectionClosed:
                    self.connection_closed()
                    break
                got = self._fast(raw)
                if got.__class__ is Audio:  # the queue is empty: no need to go through it
                    return got
                if got is False:
                    await self.receive(raw)  # the queue is empty: this never waits
            item = await self.inbound.get()
            if isinstance(item, _Handover):  # the reader stepped aside: read on our own now
                continue
            return None if isinstance(item, _Closed) else item

    async def send(self, messages: list[Any]) -> None:
        """Send messages in order (one batch is never interleaved with another); after the
        socket has closed they are counted and dropped."""
        if not messages:
            return
        async with self._send_lock:
            await self._send_all(messages)

    async def _send_all(self, messages: list[Any]) -> None:
        if self._send_batch is not None and len(messages) > 1 and not self.closed:
            try:
                await self._send_batch(messages)
                self.messages_out += len(messages)
            except Exception as exc:  # the connection went away under us
                self.log.debug("send failed; call closed", error=str(exc))
                self.closed = True
                self.sent_after_close += len(messages)
            return
        for text in messages:
            if self.closed:
                self.sent_after_close += 1
                continue
            try:
                await self._send(text)
                self.messages_out += 1
            except Exception as exc:  # the connection went away under us
                self.log.debug("send failed; call closed", error=str(exc))
                self.closed = True
                self.sent_after_close += 1


#: What the two stages of a call leg take from the host running the pipeline: the call of one
#: connection, bound by ``pipeline serve`` (:func:`bind_call`).
CALL: Interface[TwilioCall] = Interface(
    "twilio call", "the phone call of one connection, bound by pipeline serve"
)

_CURRENT: contextvars.ContextVar[TwilioCall | None] = contextvars.ContextVar(
    "twilio_call", default=None
)


@contextlib.contextmanager
def bind_call(call: TwilioCall) -> Iterator[TwilioCall]:
    """Run a pipeline for ``call``: tasks started inside (the runner's) see it."""
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)


def current_call(stage_id: str = "") -> TwilioCall:
    """The call this pipeline runs for (see :func:`bind_call`)."""
    call = _CURRENT.get()
    if call is None:
        raise StageError(
            stage_id or "twilio",
            "no phone call to attach to: twilio_source/twilio_sink run inside "
            "'pipeline serve FILE NAME', one pipeline per call",
        )
    return call


# ---------------------------------------------------------------------------- stages


def _source_format(_params: Mapping[str, Any], _fmt: AudioFormat | None) -> AudioFormat:
    return MULAW_FORMAT


@stage("twilio_source", emits=(Audio, Text), output_format=_source_format, uses=(CALL,))
async def twilio_source(
    *, dtmf: Literal["ignore", "text"] = "ignore", ctx: StageContext
) -> AsyncIterator[Frame]:
    """The caller's audio from a Twilio Media Stream (pcmu 8000 Hz, pts from Twilio's
    timestamps); ends when the call stops or the socket closes.

    Parameters:
        dtmf: ignore key presses (logged only), or pass each as text "DTMF <digit>" (role user)
    """
    async for frame in call_audio(ctx, dtmf, MULAW_FORMAT, "twilio_source"):
        yield frame


async def call_audio(
    ctx: StageContext, dtmf: str, fmt: AudioFormat, stage_type: str
) -> AsyncIterator[Frame]:
    """The body of a call's source stage: the caller's audio in ``fmt`` (checked against the
    call's), key presses, answering-machine verdicts; ends with the call."""
    call = current_call(ctx.id)
    if call.format != fmt:
        raise StageError(
            ctx.id,
            f"{stage_type} expects {fmt} audio but this call's stream carries {call.format}; "
            "set the stage's carrier/encoding/rate to match the carrier's stream",
        )
    answered = call.start.custom_parameters.get("answered_by") if call.start else None
    if answered:  # detection ran before the answer (MachineDetection without AsyncAmd)
        ctx.log.info("answered by", answered_by=answered)
        yield Text(answered_by_text(answered), "system")
    on_wait = ctx.on_wait
    clock_ns = time.perf_counter_ns
    with call.source_reads():
        while True:
            t0 = clock_ns()
            msg = await call.next_inbound()
            if on_wait is not None:  # waiting for the carrier is not work (ctx.waiting, inline)
                on_wait(clock_ns() - t0)
            match msg:
                case Audio():
                    tick = call.on_caller_audio
                    if tick is not None:
                        tick()
                    yield msg
                case AnsweredBy():
                    ctx.log.info("answered by", answered_by=msg.value)
                    yield Text(answered_by_text(msg.value), "system")
                case Dtmf():
                    ctx.log.info("dtmf", digit=msg.digit)
                    if dtmf == "text":
                        yield Text(f"DTMF {msg.digit}", "user")
                case _:  # Stop, or the socket closed
                    return


def _sink_format(_params: Mapping[str, Any], fmt: AudioFormat | None) -> None:
    if fmt is not None and fmt != MULAW_FORMAT:
        fix = "add {type: g711_encode, law: ulaw} before it"
        if fmt.rate != RATE:
            fix = "add {type: resample, rate: 8000} and {type: g711_encode, law: ulaw} before it"
        elif fmt.encoding == "pcmu":
            fix = "mix it down to one channel"
        raise FormatError(f"gets {fmt} audio; a Twilio stream plays pcmu 8000 Hz mono (μ-law)", fix)


def _sink_check(values: Mapping[str, Any], _base_dir: Path) -> list[tuple[str, str]]:
    mark_ms = values.get("mark_ms")
    chunk_ms = values.get("chunk_ms") or 20
    if mark_ms is not None and not (
        isinstance(mark_ms, int) and chunk_ms <= mark_ms <= MAX_MARK_MS
    ):
        return [
            (
                "mark_ms",
                f"must be from chunk_ms ({chunk_ms}) to {MAX_MARK_MS} ms of audio per mark, "
                f"got {mark_ms!r}",
            )
        ]
    return []


@stage(
    "twilio_sink",
    accepts=(Audio, Interrupt, ResponseDone),
    output_format=_sink_format,
    check=_sink_check,
    publishes=(PLAYED,),
    uses=(CALL,),
)
async def twilio_sink(
    frames: AsyncIterator[Frame],
    *,
    chunk_ms: Literal[20, 30, 40, 50] = 20,
    mark_ms: int | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Audio back to the caller over the Twilio Media Stream, with marks; ``interrupt`` sends
    ``clear``. Publishes what the caller has heard (``played``) as marks come back, so the
    session can truncate its turn there.

    Parameters:
        chunk_ms: milliseconds of audio per media message (20 to 50)
        mark_ms: a mark after at least this many ms of audio (chunk_ms to 1000) and at the end of each reply, the heard position following the clock in between; unset: a mark after every chunk. Larger: fewer messages both ways, less CPU per call
    """  # noqa: E501
    await play_to_call(frames, ctx, chunk_ms, MULAW_FORMAT, "twilio_sink", mark_ms=mark_ms)
    return
    yield  # an async generator that yields nothing


async def play_to_call(
    frames: AsyncIterator[Frame],
    ctx: StageContext,
    chunk_ms: int,
    fmt: AudioFormat,
    stage_type: str,
    *,
    mark_ms: int | None = None,
) -> None:
    """The body of a call's sink stage: audio in ``fmt`` to the caller in ``chunk_ms`` chunks,
    a mark after each (or every ``mark_ms`` of audio, and at the end of each reply);
    ``interrupt`` clears; ``played`` published as marks come back and, with ``mark_ms``, as
    the caller's audio arrives (see :meth:`Playout.heard_at`)."""
    call = current_call(ctx.id)
    clock = ctx.clock
    if call.format != fmt:
        raise StageError(
            ctx.id,
            f"{stage_type} plays {fmt} audio but this call's stream carries {call.format}; "
            "set the stage's carrier/encoding/rate to match the carrier's stream",
        )
    playout = Playout(
        call.stream_sid,
        chunk_ms=chunk_ms,
        mark_ms=mark_ms,
        on_chunk=call.on_lateness,
        on_sent=call.tap_sent,
        carrier=call.carrier,
    )
    hold_s = chunk_ms / 1000
    last_push = [0.0]
    wake = asyncio.Event()

    def on_mark(name: str) -> None:
        heard = playout.mark_echoed(name, clock.now())
        if heard is not None:
            last_heard[0] = heard
            ctx.bus.publish(PLAYED, Played(ctx.id, heard))
            call.playback.changed()
            call.tap_echoed(name)

    last_heard = [-1.0]

    def on_caller_audio() -> None:
        # The caller's audio arrives every 20 ms, and a barge-in is decided on it: the heard
        # position the session truncates at is never older than the frame that interrupted.
        heard = playout.heard_at(clock.now())
        if heard is not None and heard != last_heard[0]:
            last_heard[0] = heard
            ctx.bus.publish(PLAYED, Played(ctx.id, heard))

    call.playback.attach(
        lambda: not playout.pending and not playout.buffered and not playout.unmarked
    )

    async def flusher() -> None:
        # A partial chunk waits at most one chunk's duration for more audio, then goes out
        # short: the end of a reply is not held back until the next one.
        while True:
            await wake.wait()
            wake.clear()
            while playout.buffered:
                due = last_push[0] + hold_s
                if clock.now() < due:
                    await clock.sleep_until(due)
                    continue
                await call.send(playout.flush(clock.now()))

    async def play_audio(data: bytes) -> None:  # in-band DTMF: straight after what was sent
        now = clock.now()
        await call.send(playout.push(data, playout.next_pts, now) + playout.flush(now, mark=True))

    call.on_mark = on_mark
    call.play_audio = play_audio
    call.on_caller_audio = on_caller_audio if playout.interpolates else None
    try:
        async with StageTasks[None](ctx) as tasks:
            tasks.start(flusher(), name="flush")
            # the stream's format as three values: compared field by field per frame, not by
            # building the frame's AudioFormat (1.3 µs a frame)
            encoding, rate, channels = fmt.encoding, fmt.rate, fmt.channels
            async for frame in frames:
                tasks.check()  # a failed flush (the socket went away) fails the stage
                match frame:
                    case Audio():
                        if (
                            frame.encoding != encoding
                            or frame.rate != rate
                            or frame.channels != channels
                        ):
                            raise FormatError(
                                f"stage '{ctx.id}' ({stage_type}) got {frame.format} audio; "
                                f"the call's stream plays {fmt}",
                                "convert it before the stage (resample, g711_encode/decode)",
                            )
                        now = clock.now()
                        await call.send(playout.push(frame.data, frame.pts, now))
                        if playout.buffered:
                            last_push[0] = now
                            wake.set()
                    case Interrupt():
                        msgs, heard = playout.clear(clock.now())
                        await call.send(msgs)
                        if msgs:
                            ctx.log.debug("barge-in: clear sent", heard_pts=heard)
                        if heard is not None:
                            last_heard[0] = heard
                            ctx.bus.publish(PLAYED, Played(ctx.id, heard))
                        call.playback.changed()
                        call.tap_cleared()
                    case ResponseDone():
                        await call.send(playout.end_reply(clock.now()))
                        call.playback.response_done(frame.response_id)
            await call.send(playout.flush(clock.now(), mark=True))
    finally:
        call.on_mark = None
        call.play_audio = None
        call.on_caller_audio = None
        ctx.report("chunks_sent", playout.chunks_sent)
        ctx.report("clears_sent", playout.clears_sent)
