"""The ``realtime_session`` stage: a speech-to-speech model over a WebSocket.

The protocol lives in :mod:`stages.realtime.protocol` (no I/O); this module pumps a socket
through it. Theory of operation:

- **Tasks.** The generator runs three tasks and yields what they put in one output queue: the
  *input pump* (frames in → client messages), the *connection* (connect, read server messages →
  frames, reconnect) and the *finisher* (once the input has ended: wait for what is owed, then
  close). A task's failure is re-raised by the generator; its ``finally`` cancels and awaits
  every task, so nothing leaks whether the run ends, fails or is cancelled.
- **Handshake.** ``session.update`` goes out as soon as the socket opens; the input pump holds
  every frame until ``session.updated`` (a timeout is a :class:`SessionRemoteError`).
- **Input.** Audio is checked against ``input_format``/``input_rate`` and sent as
  ``input_audio_buffer.append`` in 20–100 ms messages. Under server VAD, gaps in the input's pts
  (a gate in ``gate`` mode drops silence) are filled with up to 1 s of silence so the server's
  VAD hears the pause. ``text`` → a message item and a response. ``tool_result`` → one
  ``function_call_output`` per call, then exactly one ``response.create`` once every call of the
  response has its output. With ``turn_detection: none`` a ``speech_stopped`` from an upstream
  ``vad_gate`` commits the turn and asks for a response.
- **Output.** Assistant audio at the output format, with continuous pts (stamped when it
  leaves the stage, so dropped audio leaves no hole); transcripts; tool calls; response and
  server-VAD events; non-fatal server errors as ``error`` frames (and a warning).
- **Barge-in.** A ``speech_started`` (from the gate or the server's VAD) while assistant audio
  flows drops the audio in the output queue and any later audio of that response and queues an
  ``interrupt`` frame: it overtakes the dropped audio only, events queued before it (a
  ``tool_call``) stay ahead of it, cancels the response (when our side heard
  it: the server's VAD cancels by itself) and truncates the assistant item at the position a
  sink reported as played (bus topic ``played``), else at what left the stage.
- **Lifecycle.** An abnormal close reconnects with capped exponential backoff (the conversation
  restarts on a new session, said in a warning); ``max_session_s`` recycles the session while
  idle. When the input ends, the stage waits (``response_timeout_s``) for the response in flight
  and the tool results it is owed, closes the socket cleanly and returns. Fatal failures (401/403,
  a refused handshake, repeated connect failures) raise :class:`SessionRemoteError` with one line.

The API key is read from the environment when connecting and kept in a local variable only: it
is never logged, put in an error, a repr, or a frame. Network timeouts are real time (a virtual
clock cannot know when a socket will answer); backoff and recycling use ``ctx.clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, assert_never
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pydantic

from pipeline.errors import ConfigError, FormatError, SessionRemoteError
from pipeline.frames import (
    BYTES_PER_SAMPLE,
    Audio,
    AudioFormat,
    Encoding,
    Error,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Text,
    ToolCall,
    ToolResult,
    Transcript,
)
from pipeline.metrics import Metric
from pipeline.stage import PLAYED, Played, StageContext, stage

from . import protocol as p

#: Sessions opened again within one run after the first (a reconnect).
SESSION_RECONNECTS = Metric(
    "session_reconnects", "Realtime sessions opened again after the first one of a call"
)

Provider = Literal["xai", "openai", "emulator"]
FormatName = Literal[
    "pcm16", "pcmu", "pcma", "g711_ulaw", "g711_alaw", "audio/pcm", "audio/pcmu", "audio/pcma"
]

MIN_APPEND_MS = 20
MAX_APPEND_MS = 100
#: Under server VAD, silence heard after a local speech_stopped beyond the server's
#: silence_duration_ms, so its VAD ends the turn at once.
TURN_END_MARGIN_S = 0.1
#: Longest input gap filled with silence under server VAD.
GAP_FILL_MAX_S = 1.0
#: Silence appended at the end of input when the server heard speech start but not stop.
END_PAD_S = 1.0
#: How long a cancelled run waits for the close handshake before dropping the connection.
CLOSE_GRACE_S = 0.2
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
SILENCE_BYTE: dict[str, bytes] = {"pcm16": b"\x00\x00", "pcmu": b"\xff", "pcma": b"\xd5"}

# websockets logs the handshake headers (the Authorization one included) at debug level: give
# it a logger of its own that never says more than warnings.
_WS_LOGGER = logging.getLogger("pipeline.realtime.websocket")
_WS_LOGGER.setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """The stage's parameters, checked and resolved (no secrets: the key is read at connect)."""

    provider: Provider
    url: str
    api_key_env: str
    session: p.SessionConfig
    connect_timeout_s: float
    ready_timeout_s: float
    response_timeout_s: float
    max_session_s: float | None
    reconnect_attempts: int
    emulator: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> p.Dialect:
        return self.session.dialect

    @property
    def endpoint(self) -> str:
        """The URL without its query, for messages."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _encoding(name: str, param: str) -> Encoding:
    try:
        return p.normalize_encoding(name)
    except ValueError as exc:
        raise ConfigError(f"parameter '{param}': {exc}") from None


def _audio_format(name: str, rate: int | None, dialect: p.Dialect, which: str) -> AudioFormat:
    enc = _encoding(name, f"{which}_format")
    fixed = p.WIRE_FORMATS[enc].fixed_rate
    fmt = AudioFormat(enc, rate if rate is not None else (fixed or p.DEFAULT_PCM_RATE))
    try:
        p.check_format(dialect, fmt)
    except ValueError as exc:
        raise FormatError(
            f"has {which}_format/{which}_rate that the service cannot take: {exc}",
            f"set {which}_rate to a rate the service takes",
        ) from None
    return fmt


def _dialect(provider: str, dialect: str | None, emulator: Mapping[str, Any]) -> p.Dialect:
    name = dialect or (emulator.get("dialect") if provider == "emulator" else None) or provider
    if name == "emulator":
        name = "xai"
    try:
        return p.normalize_dialect(str(name))
    except ValueError as exc:
        raise ConfigError(f"parameter 'dialect': {exc}") from None


def _turn_detection(value: str | Mapping[str, Any] | None) -> p.TurnDetection:
    if value is None or value in ("none", "manual", "null", ""):
        return p.TurnDetection(None)
    if isinstance(value, str):
        value = {"type": value}
    allowed = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"}
    extra = set(value) - allowed
    if extra:
        raise ConfigError(
            f"parameter 'turn_detection': unknown key(s) {', '.join(sorted(extra))}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    kind = value.get("type", "server_vad")
    if kind in (None, "none", "manual"):
        return p.TurnDetection(None)
    if kind not in ("server_vad", "semantic_vad"):
        raise ConfigError(
            f"parameter 'turn_detection': unknown type {kind!r}; use server_vad or none"
        )
    threshold = value.get("threshold")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"parameter 'turn_detection': threshold {threshold} is not in 0..1")
    return p.TurnDetection(
        kind,
        None if threshold is None else float(threshold),
        _opt_int(value.get("prefix_padding_ms")),
        _opt_int(value.get("silence_duration_ms")),
    )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _with_model(url: str, model: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"]
    query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


def resolve_settings(
    params: Mapping[str, Any], tools: tuple[Mapping[str, Any], ...] = ()
) -> Settings:
    """Check the stage's parameters and resolve their defaults. Raises ConfigError/FormatError."""
    provider: Provider = params.get("provider") or "xai"
    emulator = dict(params.get("emulator") or {})
    dialect = _dialect(provider, params.get("dialect"), emulator)
    model = params.get("model") or p.DEFAULT_MODEL[dialect]
    voice = params.get("voice") or p.DEFAULT_VOICE[dialect]
    transcription = params.get("transcription", True)
    if transcription is True:
        transcription = p.DEFAULT_TRANSCRIPTION_MODEL[dialect]  # "": the server's default
    elif not transcription:
        transcription = None
    session = p.SessionConfig(
        dialect=dialect,
        model=model,
        voice=voice,
        instructions=params.get("instructions"),
        input_format=_audio_format(
            params.get("input_format") or "pcm16", params.get("input_rate"), dialect, "input"
        ),
        output_format=_audio_format(
            params.get("output_format") or "pcm16", params.get("output_rate"), dialect, "output"
        ),
        turn_detection=_turn_detection(params.get("turn_detection", "server_vad")),
        tools=tools,
        transcription=transcription,
    )
    url = params.get("url") or ("" if provider == "emulator" else p.DEFAULT_URL[dialect])
    for key in ("connect_timeout_s", "session_timeout_s", "response_timeout_s"):
        value = params.get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"parameter '{key}' must be > 0, got {value}")
    max_s = params.get("max_session_s")
    if max_s is not None and max_s <= 0:
        raise ConfigError(f"parameter 'max_session_s' must be > 0, got {max_s}")
    return Settings(
        provider=provider,
        url=_with_model(url, model) if url else "",
        api_key_env=params.get("api_key_env") or p.DEFAULT_API_KEY_ENV[dialect],
        session=session,
        connect_timeout_s=float(params.get("connect_timeout_s") or 10.0),
        ready_timeout_s=float(params.get("session_timeout_s") or 5.0),
        response_timeout_s=float(params.get("response_timeout_s") or 30.0),
        max_session_s=max_s,
        reconnect_attempts=int(params.get("reconnect_attempts", 5)),
        emulator=emulator,
    )


def _fix_for(incoming: AudioFormat, wanted: AudioFormat) -> str:
    steps: list[str] = []
    rate_in = incoming.rate
    if incoming.encoding != "pcm16" and incoming.encoding != wanted.encoding:
        steps.append("{type: g711_decode}")
    if rate_in != wanted.rate:
        steps.append(f"{{type: resample, rate: {wanted.rate}}}")
    if wanted.encoding != "pcm16" and incoming.encoding != wanted.encoding:
        law = "ulaw" if wanted.encoding == "pcmu" else "alaw"
        steps.append(f"{{type: g711_encode, law: {law}}}")
    if incoming.channels != 1:
        return "feed it mono audio"
    alt = (
        f", or set input_rate: {incoming.rate}"
        if incoming.encoding == wanted.encoding == "pcm16"
        else ""
    )
    return f"add {' then '.join(steps)} before it{alt}"


def check_input_format(incoming: AudioFormat, wanted: AudioFormat, where: str = "") -> None:
    """Raise FormatError if ``incoming`` audio is not the session's input format. The message
    starts with ``where`` (e.g. ``stage 'agent'``); without it, with the verb, for the graph
    to put the link and stage in front."""
    if incoming != wanted:
        subject = f"{where} gets" if where else "gets"
        raise FormatError(
            f"{subject} {incoming} audio; its input is {wanted} (input_format/input_rate)",
            _fix_for(incoming, wanted),
        )


def _output_format(params: Mapping[str, Any], input_format: AudioFormat | None) -> AudioFormat:
    try:
        s = resolve_settings(params)
    except ConfigError as exc:
        # before running, the graph names the stage and the file position itself
        raise ValueError("; ".join(p.message for p in exc.problems)) from None
    if input_format is not None:
        check_input_format(input_format, s.session.input_format)
    return s.session.output_format


def _linked_tools(ctx: StageContext) -> tuple[Mapping[str, Any], ...]:
    refs: list[Any] = []
    seen: set[str] = set()
    for peer in (*ctx.downstream, *ctx.upstream):
        if peer.type == "tool_router" and peer.id not in seen:
            seen.add(peer.id)
            refs.extend(peer.params.get("tools") or ())
    if not refs:
        return ()
    return tuple(_tool_schemas(refs, ctx))


def _tool_schemas(refs: list[Any], ctx: StageContext) -> list[dict[str, Any]]:
    from stages.tools import tool_schemas  # lazily: the tool router is optional

    return tool_schemas(refs, base_dir=ctx.base_dir)


def _explicit_tools(tools: list[Any], ctx: StageContext) -> tuple[Mapping[str, Any], ...]:
    out: list[Mapping[str, Any]] = []
    refs = [t for t in tools if isinstance(t, str)]
    schemas = iter(_tool_schemas(refs, ctx)) if refs else iter(())
    for t in tools:
        if isinstance(t, str):
            out.append(next(schemas))
        elif isinstance(t, Mapping):
            out.append(dict(t))
        else:
            raise ConfigError(
                f"parameter 'tools': {t!r} is neither a 'module:function' nor a tool definition"
            )
    return tuple(out)


# ----------------------------------------------------------------------------- output queue


class AudioBatcher:
    """Input audio cut into ``input_audio_buffer.append``-sized pieces: 20–100 ms each (small
    frames are joined, large ones split), each with the pts of its first sample. With
    ``fill_gaps``, a jump forward in the frames' pts (a gate that dropped silence) becomes up to
    ``GAP_FILL_MAX_S`` of silence, so a server's VAD hears the pause. No I/O."""

    def __init__(self, fmt: AudioFormat, *, fill_gaps: bool) -> None:
        self.fmt = fmt
        self.fill_gaps = fill_gaps
        width = BYTES_PER_SAMPLE[fmt.encoding]
        self.min_bytes = fmt.rate * MIN_APPEND_MS // 1000 * width
        self.max_bytes = fmt.rate * MAX_APPEND_MS // 1000 * width
        self._buf = bytearray()
        self._buf_pts = 0.0
        #: media time just after the last sample pushed (None before any)
        self.next_pts: float | None = None

    def push(self, frame: Audio) -> list[tuple[float, bytes]]:
        """Add a frame (already checked to be in ``fmt``); the pieces now complete."""
        out: list[tuple[float, bytes]] = []
        data, pts = frame.data, frame.pts
        if self.fill_gaps and self.next_pts is not None:
            gap = pts - self.next_pts
            if gap > 0.005:
                out += self._add(self.silence_bytes(min(gap, GAP_FILL_MAX_S)), self.next_pts)
            elif gap < -0.0005:
                # Silence padded at a turn's end stands in for audio up to next_pts: drop the
                # part of this frame it already covers, so the server's timeline stays the input's.
                width = BYTES_PER_SAMPLE[self.fmt.encoding] * frame.channels
                skip = min(len(data), round(-gap * frame.rate) * width)
                data, pts = data[skip:], self.next_pts
                if not data:
                    return out
        out += self._add(data, pts)
        self.next_pts = max(frame.end_pts, self.next_pts or 0.0)
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


@dataclass(frozen=True, slots=True)
class _AudioOut:
    data: bytes
    item_id: str
    response_id: str


class _End:
    pass


@dataclass(frozen=True, slots=True)
class _Failed:
    exc: BaseException


_OutItem = Frame | _AudioOut | _End | _Failed


class Playout:
    """The stage's output side: what it will yield, and where the assistant's audio stands.

    The queue never blocks a producer: the reader must keep reading (a barge-in can arrive
    while downstream is slow), and what it holds is what the server sent ahead, which a
    barge-in drops. Audio is stamped with its pts as it leaves (counted in samples: exact, and
    dropped audio leaves no hole); :meth:`heard_ms` says how much of an item was heard: up to
    the position a sink reported as played (:meth:`on_played`), else what left the stage."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self._q: deque[_OutItem] = deque()
        self._ev = asyncio.Event()
        self.samples_out = 0
        self.played: float | None = None
        self._item = ""
        self._item_start: dict[str, float] = {}
        self.interrupted_at = -1.0

    @property
    def pts(self) -> float:
        """Media time of the end of the audio that left the stage."""
        return self.samples_out / self.fmt.rate

    def put(self, item: _OutItem) -> None:
        self._q.append(item)
        self._ev.set()

    def interrupt(self, frame: Interrupt) -> int:
        """Drop the queued audio and queue ``frame``; returns how many chunks were dropped.

        The interrupt overtakes queued audio only (all of it is gone): events queued before it
        (a ``tool_call`` of the interrupted response, a transcript) keep their order and stay
        ahead of it, so a tool router sees the call before the interrupt, as it happened."""
        kept = [x for x in self._q if not isinstance(x, _AudioOut)]
        dropped = len(self._q) - len(kept)
        self._q = deque([*kept, frame])
        self._ev.set()
        self.interrupted_at = self.pts
        return dropped

    def has_audio(self) -> bool:
        return any(isinstance(x, _AudioOut) for x in self._q)

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

    async def get(self) -> Frame | _End | _Failed:
        while not self._q:
            self._ev.clear()
            await self._ev.wait()
        item = self._q.popleft()
        if not isinstance(item, _AudioOut):
            return item
        if item.item_id != self._item:
            self._item = item.item_id
            self._item_start.setdefault(item.item_id, self.pts)
        fmt = self.fmt
        frame = Audio(item.data, fmt.encoding, fmt.rate, fmt.channels, self.pts)
        self.samples_out += frame.num_samples
        return frame


# ----------------------------------------------------------------------------- the run


class _Run:
    """One run of the stage: the state the three tasks share."""

    def __init__(self, s: Settings, ctx: StageContext, url: str) -> None:
        self.s = s
        self.ctx = ctx
        self.log = ctx.log
        self.url = url
        self.cfg = s.session
        self.out = Playout(self.cfg.output_format)
        self.proto = p.RealtimeProtocol(self.cfg)
        self.ws: Any = None
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.input_done = asyncio.Event()
        self.closing = False
        self.recycling = False
        self.send_lock = asyncio.Lock()
        self.sessions = 0
        # input
        self.batcher = AudioBatcher(self.cfg.input_format, fill_gaps=self.cfg.server_vad)
        self.conn_origin: float | None = None  # pts of the first audio sent on this connection
        self.server_speaking = False
        self.expect_response = False
        # output
        self.response = ""
        self.response_audio = False
        self.muted = ""
        ctx.bus.subscribe(PLAYED, self.out.on_played)

    # -- helpers

    @property
    def endpoint(self) -> str:
        """The URL connected to, without its query, for messages."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def emit(self, frame: Frame) -> None:
        self.out.put(frame)

    async def flush(self) -> None:
        """Send what the protocol has queued, in order."""
        async with self.send_lock:
            msgs = self.proto.data_to_send()
            ws = self.ws
            if ws is None:
                return
            for m in msgs:
                try:
                    await ws.send(m)
                except Exception as exc:  # the reader sees the close and reconnects
                    self.log.debug("send failed; the connection is closing", error=str(exc))
                    return

    # -- input pump

    async def pump_input(self, frames: AsyncIterator[Frame]) -> None:
        async for f in frames:
            await self.on_frame(f)
        self.input_done.set()

    async def wait_ready(self) -> None:
        await self.ready.wait()

    async def on_frame(self, f: Frame) -> None:
        match f:
            case Audio():
                check_input_format(f.format, self.cfg.input_format, f"stage '{self.ctx.id}'")
                await self.wait_ready()
                self.send_audio(self.batcher.push(f))
                await self.flush()
            case Text():
                await self.wait_ready()
                self.send_audio(self.batcher.flush())
                self.proto.send_text(f.text, f.role)
                await self.flush()
            case ToolResult():
                await self.wait_ready()
                if not self.proto.tool_output(f.call_id, f.output):
                    self.log.warning(
                        "tool result for a call this session is not waiting for; dropped",
                        call_id=f.call_id,
                    )
                await self.flush()
                self.changed.set()
            case SpeechStarted():
                self.emit(f)
                await self.barge_in(local=True)
            case SpeechStopped():
                self.emit(f)
                if self.cfg.server_vad and self.ready.is_set() and f.pts is not None:
                    silence_ms = self.cfg.turn_detection.silence_duration_ms or 500
                    pad = self.batcher.pad_turn_end(f.pts, silence_ms / 1000 + TURN_END_MARGIN_S)
                    if pad:
                        self.send_audio(pad)
                        await self.flush()
                elif not self.cfg.server_vad and self.ready.is_set():
                    self.send_audio(self.batcher.flush())
                    self.proto.user_turn_ended()
                    await self.flush()
                    self.changed.set()
            case _:
                pass

    def send_audio(self, pieces: list[tuple[float, bytes]]) -> None:
        for pts, data in pieces:
            if self.conn_origin is None:
                self.conn_origin = pts
            self.proto.append_audio(data)

    # -- barge-in

    def audio_flowing(self) -> bool:
        """Assistant audio is queued here, arriving, or still playing at a sink."""
        rid = self.proto.active_response
        arriving = rid is not None and rid != self.muted and self.response_audio
        return arriving or self.out.has_audio() or self.out.lagging()

    async def barge_in(self, *, local: bool) -> None:
        if not self.audio_flowing():
            return
        rid = self.proto.active_response or self.response
        dropped = self.out.interrupt(Interrupt(pts=self.out.pts, response_id=rid))
        self.muted = rid
        played_ms = self.out.heard_ms(self.proto.assistant_item)
        self.log.info(
            "barge-in: interrupting the assistant",
            by="vad_gate" if local else "server_vad",
            response_id=rid,
            dropped_chunks=dropped,
            played_ms=played_ms,
        )
        if self.ready.is_set():
            self.proto.interrupt(played_ms, local=local)
            await self.flush()

    # -- server events

    async def on_event(self, ev: p.ProtocolEvent) -> None:
        """One typed protocol event: frames out, turn state, barge-in. Every event type of the
        protocol has its case (checked by mypy: ``assert_never``)."""
        match ev:
            case p.SessionReady():
                if not self.ready.is_set():
                    self.log.info("session ready", session=self.sessions, dialect=self.cfg.dialect)
                    if self.sessions > 1:
                        self.ctx.metrics.count(SESSION_RECONNECTS)
                    self._check_echo(ev)
                    self.ready.set()
            case p.SessionCreated():
                self.log.debug("session created")
            case p.SpeechStarted():
                self.server_speaking = True
                self.emit(SpeechStarted(pts=self._in_pts(ev.audio_start_ms)))
                await self.barge_in(local=False)
            case p.SpeechStopped():
                self.server_speaking = False
                self.expect_response = True  # server VAD answers a finished turn
                self.emit(SpeechStopped(pts=self._in_pts(ev.audio_end_ms)))
            case p.ResponseCreated():
                self.expect_response = False
                self.response = ev.response_id
                self.response_audio = False
                if self.muted and self.muted != ev.response_id:
                    self.muted = ""
                self.emit(ResponseStarted(ev.response_id))
            case p.ResponseDone():
                self.emit(ResponseDone(ev.response_id, ev.status))
            case p.AudioDelta():
                rid = ev.response_id or self.response
                if rid and rid == self.muted:
                    return
                self.response_audio = True
                self.out.put(_AudioOut(ev.data, ev.item_id, rid))
            case p.TranscriptDelta():
                self.emit(Transcript(ev.role, ev.text, False, item_id=ev.item_id))
            case p.TranscriptDone():
                self.emit(Transcript(ev.role, ev.text, True, item_id=ev.item_id))
            case p.FunctionCallDone():
                self.emit(ToolCall(ev.call_id, ev.name, ev.arguments, ev.response_id))
            case p.ServerError():
                self._server_error(ev)
            case p.Malformed():
                self.log.warning("unreadable message from the server", reason=ev.reason)
                self.emit(Error("malformed_message", f"unreadable server message: {ev.reason}"))
            case p.RateLimits():
                self.log.debug("rate limits", limits=[dict(x) for x in ev.limits])
            case p.Ignored():
                if ev.type != "ping":
                    self.log.debug("server event ignored", server_event=ev.type)
            case p.InputCommitted() | p.AudioDone() | p.Truncated():
                self.log.debug("server event", server_event=type(ev).__name__)
            case _:
                # ProtocolEvent is a closed union: mypy fails here if a new event has no case
                assert_never(ev)

    def _in_pts(self, ms: int) -> float | None:
        if self.conn_origin is None:
            return ms / 1000
        return round(self.conn_origin + ms / 1000, 6)

    def _check_echo(self, ev: p.SessionReady) -> None:
        for which, got, want in (
            ("output", ev.output_format, self.cfg.output_format),
            ("input", ev.input_format, self.cfg.input_format),
        ):
            if got is not None and got != want:
                self.log.warning(
                    f"the server echoed {which} audio {got}, not the {want} asked for; "
                    f"if the audio sounds wrong, set {which}_format/{which}_rate to one it takes"
                )

    def _server_error(self, ev: p.ServerError) -> None:
        if ev.fatal:
            raise SessionRemoteError(
                f"the realtime service refused the session: {ev.code}: {ev.message}",
                code=ev.code,
            )
        if ev.benign:
            self.log.debug("server error (benign race)", code=ev.code, message=ev.message)
            return
        self.log.warning("server error", code=ev.code, message=ev.message, param=ev.param)
        self.emit(Error(ev.code, ev.message))

    # -- connection

    async def connection_loop(self) -> None:
        failures = 0
        while not self.closing:
            try:
                ws = await self.connect()
            except _Retry as exc:
                failures += 1
                if failures > self.s.reconnect_attempts:
                    raise SessionRemoteError(
                        f"cannot connect to {self.endpoint} after {failures} attempts: "
                        f"{exc}; check the url and the network",
                        code="connect_failed",
                    ) from None
                self.log.warning("connect failed; retrying", error=str(exc), attempt=failures)
                await self.backoff(failures)
                continue
            became_ready = await self.serve(ws)
            if self.closing:
                return
            failures = 0 if became_ready else failures + 1
            if failures > self.s.reconnect_attempts:
                raise SessionRemoteError(
                    f"{self.endpoint} closed the connection {failures} times before the "
                    "session was ready; check the model and the session parameters",
                    code="connect_failed",
                )
            if failures:
                await self.backoff(failures)

    async def backoff(self, failures: int) -> None:
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (failures - 1))
        await self.ctx.clock.sleep(delay)

    def api_key(self) -> str:
        key = os.environ.get(self.s.api_key_env, "").strip()
        if not key and self.s.provider == "emulator":
            key = "emulator"
        if not key:
            raise ConfigError(
                f"environment variable {self.s.api_key_env} is not set (or blank); export your "
                "API key in it (or name another variable with api_key_env)"
            )
        return key

    async def connect(self) -> Any:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        headers = {"Authorization": f"Bearer {self.api_key()}"}
        if self.cfg.dialect == "openai-beta":
            headers["OpenAI-Beta"] = "realtime=v1"
        try:
            return await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.s.connect_timeout_s,
                max_size=None,
                compression=None,
                close_timeout=5.0,
                logger=_WS_LOGGER,
                user_agent_header="pipeline-realtime",
            )
        except InvalidURI:
            raise ConfigError(
                f"parameter 'url': {self.endpoint!r} is not a ws:// or wss:// URL"
            ) from None
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                raise SessionRemoteError(
                    f"{self.endpoint} refused the API key from {self.s.api_key_env} "
                    f"(HTTP {status}); check that the key is valid and allowed to use the model",
                    code=str(status),
                ) from None
            if 400 <= status < 500 and status not in (408, 429):
                raise SessionRemoteError(
                    f"{self.endpoint} refused the connection (HTTP {status}); check the url "
                    "and the model",
                    code=str(status),
                ) from None
            raise _Retry(f"HTTP {status}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _Retry(_reason(exc)) from None

    async def serve(self, ws: Any) -> bool:
        """Run one connection until it closes. Returns whether the session became ready."""
        from websockets.exceptions import ConnectionClosed

        self.sessions += 1
        self.proto = p.RealtimeProtocol(self.cfg)
        self.ws = ws
        self.conn_origin = None
        self.server_speaking = False
        self.expect_response = False
        self.recycling = False
        if self.closing:  # the input ended while we were connecting
            await _close(ws)
            self.ws = None
            return False
        self.proto.connection_made()
        recycle = None
        if self.s.max_session_s is not None:
            recycle = asyncio.create_task(self.recycle_after(self.s.max_session_s))
        became_ready = False
        try:
            await self.flush()
            async with asyncio.timeout(self.s.ready_timeout_s) as deadline:
                async for message in ws:
                    for ev in self.proto.receive(message):
                        await self.on_event(ev)
                    if self.proto.ready and not became_ready:
                        became_ready = True
                        deadline.reschedule(None)
                    await self.flush()
                    self.changed.set()
            code, reason = ws.close_code, ws.close_reason
        except TimeoutError:
            raise SessionRemoteError(
                f"no session.updated from {self.endpoint} within {self.s.ready_timeout_s:g} s "
                "of session.update; the service may not accept the session parameters "
                "(raise session_timeout_s if it is just slow)",
                code="session_timeout",
            ) from None
        except ConnectionClosed as exc:
            code, reason = _close_info(exc)
        finally:
            if recycle is not None:
                recycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recycle
            self.ws = None
            self.ready.clear()
            self.proto.connection_lost()
            self.changed.set()
            await _close(ws)
        if not self.closing and not self.recycling:
            self.log.warning(
                "connection to the realtime service lost; the conversation restarts on a "
                "new session",
                code=code,
                reason=reason or None,
                was_ready=became_ready,
            )
        return became_ready

    async def recycle_after(self, seconds: float) -> None:
        await self.ctx.clock.sleep(seconds)
        await self.until(lambda: not self.proto.owes)
        self.log.warning(
            "recycling the session after max_session_s; the conversation restarts on a new session",
            max_session_s=seconds,
        )
        self.recycling = True
        ws = self.ws
        if ws is not None:
            await ws.close(1000, "recycling")

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, re-checked whenever the session state changes."""
        while True:
            self.changed.clear()  # before checking: a change after the check wakes us
            if condition():
                return
            await self.changed.wait()

    # -- end of input

    async def finish(self) -> None:
        """Once the input has ended: wait for what is owed, then close cleanly."""
        forward = asyncio.ensure_future(self.ctx.forward_ended.wait())
        done = asyncio.ensure_future(self.input_done.wait())
        try:
            await asyncio.wait({forward, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forward.cancel()
            done.cancel()
        await self.ready.wait()
        if not self.cfg.server_vad:
            self.send_audio(self.batcher.flush())
            self.proto.user_turn_ended()
        elif self.conn_origin is not None:
            # Let the server's VAD hear the end of a turn cut short by the end of the input.
            silence_ms = self.cfg.turn_detection.silence_duration_ms or 500
            self.send_audio(self.batcher.pad(max(END_PAD_S, silence_ms / 1000 + 0.2)))
            self.send_audio(self.batcher.flush())
        else:
            self.send_audio(self.batcher.flush())
        self.proto.sync()  # answered once the server has handled everything sent before
        await self.flush()
        # asked to stop (Ctrl-C): close at once; else wait for what is owed
        wait_s = 0.0 if self.ctx.stopping.is_set() else self.s.response_timeout_s
        try:
            async with asyncio.timeout(wait_s):
                await self.until(
                    lambda: (
                        not self.ready.is_set()
                        or (
                            self.proto.synced
                            and not self.proto.owes
                            and not self.server_speaking
                            and not self.expect_response
                        )
                    )
                )
        except TimeoutError:
            if wait_s:
                self.log.warning(
                    "input ended; stopped waiting for the response and tool results",
                    response_timeout_s=self.s.response_timeout_s,
                    pending_calls=list(self.proto.pending_calls),
                )
        self.closing = True
        ws = self.ws
        if ws is not None:
            await ws.close()


async def _close(ws: Any) -> None:
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


class _Retry(Exception):
    """A connection attempt failed in a way worth retrying."""


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _close_info(exc: Any) -> tuple[int | None, str]:
    rcvd = getattr(exc, "rcvd", None)
    if rcvd is not None:
        return rcvd.code, rcvd.reason
    return None, "no close frame"


# ----------------------------------------------------------------------------- the stage


def _check(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Every problem with the parameters, before running (``pipeline validate``): the settings as
    the stage resolves them, the URL, the retry count, the emulator settings and tool refs."""
    problems: list[tuple[str, str]] = []

    def strip(exc: Exception) -> str:
        text = exc.message if isinstance(exc, FormatError) else str(exc)
        if isinstance(exc, FormatError) and exc.fix:
            text += f"; {exc.fix}"
        return text.removeprefix("<pipeline>: ")

    try:
        resolve_settings(values)
    except (ConfigError, FormatError) as exc:
        text = strip(exc)
        name = next((n for n in values if f"'{n}'" in text or text.startswith(n)), "")
        problems.append((name, text))
    url = values.get("url")
    if url and not str(url).startswith(("ws://", "wss://")):
        problems.append(("url", f"'url' must be a ws:// or wss:// address, got {url!r}"))
    attempts = values.get("reconnect_attempts", 5)
    if isinstance(attempts, int) and attempts < 0:
        problems.append(
            ("reconnect_attempts", f"'reconnect_attempts' must be 0 or more, got {attempts}")
        )
    emu = values.get("emulator")
    if emu:
        from .emulator import EmulatorConfig

        try:
            EmulatorConfig(**dict(emu))
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(x) for x in err["loc"])
                if err["type"] == "extra_forbidden":
                    text = f"'emulator' has no setting '{where}'; see docs/realtime-emulator.md"
                else:
                    text = f"'emulator.{where}': {err['msg']}, got {err.get('input')!r}"
                problems.append(("emulator", text))
    refs = [t for t in values.get("tools") or [] if isinstance(t, str)]
    if refs:
        from stages.tools import check_tools

        problems += [("tools", msg) for msg in check_tools({"tools": refs}, base_dir=base_dir)]
    return problems


@stage(
    "realtime_session",
    accepts=(Audio, Text, ToolResult, SpeechStarted, SpeechStopped),
    emits=(
        Audio,
        Transcript,
        ToolCall,
        SpeechStarted,
        SpeechStopped,
        Interrupt,
        ResponseStarted,
        ResponseDone,
        Error,
    ),
    output_format=_output_format,
    cycle_aware=True,
    check=_check,
    metrics=(SESSION_RECONNECTS,),
)
async def realtime_session(
    frames: AsyncIterator[Frame],
    *,
    provider: Provider = "xai",
    dialect: Literal["xai", "openai", "openai-ga", "openai-beta"] | None = None,
    url: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    voice: str | None = None,
    instructions: str | None = None,
    input_format: FormatName = "pcm16",
    input_rate: int | None = None,
    output_format: FormatName = "pcm16",
    output_rate: int | None = None,
    turn_detection: str | dict[str, Any] | None = "server_vad",
    tools: list[Any] | None = None,
    transcription: bool | str = True,
    response_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
    session_timeout_s: float = 5.0,
    max_session_s: float | None = None,
    reconnect_attempts: int = 5,
    emulator: dict[str, Any] | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """A speech-to-speech model (xAI Grok voice agent, OpenAI Realtime, or the emulator).

    Parameters:
        provider: xai | openai | emulator (in-process, on an ephemeral loopback port)
        dialect: wire dialect (default: the provider's; for the emulator, its own dialect)
        url: the endpoint, overriding the provider's (?model= is still added)
        model: model name (xai: grok-voice-latest, openai: gpt-realtime)
        api_key_env: environment variable holding the API key (XAI_API_KEY / OPENAI_API_KEY)
        voice: ara, rex, sal, eve, leo (xai; default ara) or an OpenAI voice (default alloy)
        instructions: the system prompt
        input_format: pcm16 | pcmu | pcma (also by their wire names, e.g. g711_ulaw, audio/pcmu)
        input_rate: input sample rate (default 24000 for pcm16, 8000 for G.711)
        output_format: pcm16 | pcmu | pcma: the audio this stage emits
        output_rate: output sample rate (default 24000 for pcm16, 8000 for G.711)
        turn_detection: server_vad (optionally {type, threshold, prefix_padding_ms, silence_duration_ms}) or none
        tools: tool definitions or 'module:function' refs (default: those of linked tool_router stages)
        transcription: transcribe the user's audio: true, false, or a transcription model name
        response_timeout_s: at end of input, how long to wait for the response and tool results
        connect_timeout_s: timeout of one connection attempt
        session_timeout_s: how long to wait for session.updated after session.update
        max_session_s: recycle the session (while idle) after this many seconds
        reconnect_attempts: consecutive failed connections before giving up
        emulator: settings for the emulator when provider is emulator (e.g. dialect, think_ms)
    """  # noqa: E501
    params = {k: v for k, v in locals().items() if k not in ("frames", "ctx")}
    schemas = _explicit_tools(tools, ctx) if tools is not None else _linked_tools(ctx)
    settings = resolve_settings(params, schemas)
    async with contextlib.AsyncExitStack() as stack:
        url_ = settings.url
        if settings.provider == "emulator":
            url_ = await _start_emulator(stack, settings, ctx)
        run = _Run(settings, ctx, url_)
        tasks: list[asyncio.Task[None]] = []

        async def guard(coro: Any, *, ends: bool) -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                run.out.put(_Failed(exc))
            else:
                if ends:
                    run.out.put(_End())

        tasks.append(asyncio.create_task(guard(run.connection_loop(), ends=True)))
        tasks.append(asyncio.create_task(guard(run.pump_input(frames), ends=False)))
        tasks.append(asyncio.create_task(guard(run.finish(), ends=False)))
        try:
            while True:
                with ctx.waiting():  # waiting for the server is not work
                    item = await run.out.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, _Failed):
                    raise item.exc  # ours say what happened; anything else is a bug: as is
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if run.ws is not None:
                with contextlib.suppress(Exception):
                    await run.ws.close()


async def _start_emulator(stack: contextlib.AsyncExitStack, s: Settings, ctx: StageContext) -> str:
    import pydantic

    try:
        from .emulator import EmulatorConfig, run_emulator
    except ImportError as exc:
        raise ConfigError(
            f"provider 'emulator' is not available ({exc}); use provider xai or openai"
        ) from None
    options = dict(s.emulator)
    options["dialect"] = s.dialect
    try:
        config = EmulatorConfig(**options)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"parameter 'emulator': {where}: {first['msg']}") from None
    emu = await stack.enter_async_context(
        run_emulator(config, host="127.0.0.1", port=0, clock=ctx.clock)
    )
    base = str(emu.url)
    return _with_model(base, s.session.model)
