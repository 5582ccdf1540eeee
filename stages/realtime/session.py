"""The ``realtime_session`` stage: a speech-to-speech model over a WebSocket.

This module is the pump; each part of the work lives in a module of its own:

- :mod:`stages.realtime.protocol`: the protocol without I/O (server messages in, typed events
  out, client messages to send), with the turn, response and barge-in state of
  :mod:`stages.realtime.turns` (tables);
- :mod:`stages.realtime.outputs`: :func:`~stages.realtime.outputs.to_frames`, the frames each
  protocol event means;
- :mod:`stages.realtime.buffers`: the input :class:`~stages.realtime.buffers.AudioBatcher` and
  the output :class:`~stages.realtime.buffers.ReplyPlayout`;
- :mod:`stages.realtime.settings`: the parameters, checked and resolved;
- :mod:`stages.realtime.connection`: opening and closing the socket, the key, the errors.

Theory of operation:

- **Tasks.** The generator runs three tasks in a :class:`~pipeline.tasks.StageTasks` group and
  yields what they queue in the playout: the *input pump* (frames in → client messages), the
  *connection* (connect, read server messages → frames, reconnect) and the *finisher* (once the
  input has ended: wait for what is owed, then close). A task's failure is re-raised by the
  generator after the frames queued before it; leaving the group cancels and awaits every task,
  so nothing leaks whether the run ends, fails or is cancelled.
- **Handshake.** ``session.update`` goes out as soon as the socket opens; the input pump holds
  every frame until ``session.updated`` (``session_timeout_s`` on ``ctx.clock``: then a
  :class:`SessionRemoteError`).
- **Input.** Audio is checked against ``input_format``/``input_rate`` and sent as
  ``input_audio_buffer.append`` in 20–100 ms messages; under server VAD, gaps in the input's pts
  are filled with up to 1 s of silence so the server's VAD hears the pause. ``text`` → a message
  item and a response. ``tool_result`` → one ``function_call_output`` per call, then exactly one
  ``response.create`` once every call of the response has its output. With ``turn_detection:
  none`` a ``speech_stopped`` from an upstream ``vad_gate`` commits the turn and asks for a
  response; under server VAD it makes sure the server hears enough silence to end the turn.
- **Output.** Assistant audio at the output format, with continuous pts (stamped when it leaves
  the stage, so dropped audio leaves no hole); transcripts; tool calls; response and server-VAD
  events; non-fatal server errors as ``error`` frames (and a warning).
- **Barge-in.** A ``speech_started`` (from the gate or the server's VAD) while assistant audio
  flows drops the audio in the playout and any later audio of that response and queues an
  ``interrupt`` frame: it overtakes the dropped audio only, events queued before it (a
  ``tool_call``) stay ahead of it. The protocol cancels the response (when our side heard it:
  the server's VAD cancels by itself) and truncates the assistant item at the position a sink
  reported as played (bus topic ``played``), else at what left the stage.
- **Lifecycle.** An abnormal close reconnects with capped exponential backoff (the conversation
  restarts on a new session, said in a warning); ``max_session_s`` recycles the session while
  idle. When the input ends, the stage waits (``response_timeout_s`` on ``ctx.clock``) until the
  protocol is quiescent, closes the socket cleanly and returns. Fatal failures (401/403, a
  refused handshake, repeated connect failures) raise :class:`SessionRemoteError` with one line.

Backoff, recycling and both timeouts run on ``ctx.clock``, so tests run them on a virtual clock.
Only the TCP/TLS connect (``connect_timeout_s``) is real time: a clock cannot know when a
socket will answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from pipeline.context import PLAYED, TOOLS, StageContext
from pipeline.errors import ConfigError, SessionRemoteError
from pipeline.frames import (
    Audio,
    ErrorReport,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Text,
    ToolCall,
    ToolCancel,
    ToolResult,
    Transcript,
)
from pipeline.metrics import Metric
from pipeline.spec import stage
from pipeline.tasks import StageTasks

from ..wsbatch import send_batch
from . import protocol as p
from .buffers import AudioBatcher, Reply, ReplyPlayout
from .connection import (
    BridgedSocket,
    Retry,
    close_info,
    close_socket,
    endpoint_of,
    open_connection,
)
from .deadline import clock_timeout
from .outputs import to_frames
from .policy import AudioBudget, Reconnects
from .settings import (
    ForcedMessage,
    FormatName,
    Provider,
    Settings,
    check_input_format,
    check_params,
    explicit_tools,
    linked_tools,
    output_format,
    preflight,
    resolve_settings,
    with_model,
)
from .wire.gemini import GEMINI_PATH, Resumption
from .wire.server import AudioDeltaEvent

__all__ = ["AudioBatcher", "ReplyPlayout", "Settings", "realtime_session", "resolve_settings"]

#: Sessions opened again within one run after the first (a reconnect).
SESSION_RECONNECTS = Metric(
    "session_reconnects", "Realtime sessions opened again after the first one of a call"
)

#: Under server VAD, silence heard after a local speech_stopped beyond the server's
#: silence_duration_ms, so its VAD ends the turn at once.
TURN_END_MARGIN_S = 0.1
#: Silence appended at the end of input when the server heard speech start but not stop.
END_PAD_S = 1.0
#: how much of the conversation (characters of transcript, the latest turns) a renewed session
#: is given
CARRY_CHARS = 20000


class _Run:
    """One run of the stage: the state the three tasks share."""

    def __init__(self, s: Settings, ctx: StageContext, url: str) -> None:
        self.s = s
        self.ctx = ctx
        self.log = ctx.log
        self.url = url
        self.endpoint = endpoint_of(url)
        self.cfg = s.session
        self.proto = p.RealtimeProtocol(self.cfg)
        self.ws: Any = None
        #: Gemini: session resumption across this call's connections
        self.resumption = Resumption() if self.cfg.dialect == "gemini" else None
        self.next_ws: Any = None  # opened ahead of a goAway's close
        self.switching = False
        self.sent_end_pts: float | None = None  # end of the last audio sent
        self.sessions = 0
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.input_done = asyncio.Event()
        self.closing = False
        self.recycling = False
        #: a forced message marked interruptible: false is being said: no local barge-in until
        #: its audio has played out here (xAI drops the caller's audio until then)
        self.uninterruptible = False
        self.forced_pending = False  # the next response created is the forced message's
        self.forced_response = ""
        #: the conversation's final transcripts (role, text), carried to a renewed session
        self.history: list[tuple[str, str]] = []
        self.delivered = False  # this connection delivered a response
        self.responses = 0  # responses delivered in the whole run
        self.last_close: tuple[int | None, str] = (None, "")
        self.audio_budget = AudioBudget(self.cfg.output_format.bytes_per_second, 1.0, 0.0)
        self.send_lock = asyncio.Lock()
        # input
        self.batcher = AudioBatcher(
            self.cfg.input_format, fill_gaps=self.cfg.server_vad, min_ms=s.append_ms
        )
        self.conn_origin: float | None = None  # pts of the first audio sent on this connection
        # output
        self.out = ReplyPlayout(self.cfg.output_format)
        self.wake = asyncio.Event()
        self.ended = False
        ctx.bus.subscribe(PLAYED, self.out.on_played)

    # -- output

    def emit(self, item: Frame | Reply) -> None:
        self.out.put(item)
        self.wake.set()

    def start(
        self,
        tasks: StageTasks[None],
        coro: Coroutine[Any, Any, None],
        name: str,
        *,
        ends: bool = False,
    ) -> None:
        """Run ``coro`` in the group; when it ends, wake the pump (after the group's own
        done-callback has recorded a failure: callbacks run in the order they were added).
        ``ends``: its return ends the output."""

        def done(task: asyncio.Task[Any]) -> None:
            if ends and not task.cancelled() and task.exception() is None:
                self.ended = True
            self.wake.set()

        tasks.start(coro, name=name).add_done_callback(done)

    async def next_frame(self, tasks: StageTasks[None]) -> Frame | None:
        """The next frame to yield; None once the run is over. Raises a task's failure after
        the frames queued before it."""
        while True:
            item = self.out.take()
            if item is not None:
                return item
            tasks.check()  # ours say what happened; anything else is a bug: as is
            if self.ended:
                return None
            self.wake.clear()
            with self.ctx.waiting():  # waiting for the server is not work
                await self.wake.wait()

    async def flush(self) -> None:
        """Send what the protocol has queued, in order."""
        if not self.proto.has_data_to_send:  # most input frames queue nothing (append_ms)
            return
        async with self.send_lock:
            msgs = self.proto.data_to_send()
            ws = self.ws
            if ws is None:
                return
            if not msgs:
                return
            if isinstance(ws, BridgedSocket):
                # each is offered even after a failure: the Gemini bridge keeps what a
                # resumed session must be sent again
                failed = False
                for m in msgs:
                    try:
                        await ws.send(m)
                    except Exception as exc:  # the reader sees the close and reconnects
                        if not failed:
                            self.log.debug("send failed; the connection is closing", error=str(exc))
                        failed = True
                return
            try:
                await send_batch(ws, msgs)  # one write for all of them
            except Exception as exc:  # the reader sees the close and reconnects
                self.log.debug("send failed; the connection is closing", error=str(exc))

    # -- input pump

    async def pump_input(self, frames: AsyncIterator[Frame]) -> None:
        want = self.cfg.input_format
        fmt = (want.encoding, want.rate, want.channels)
        push = self.batcher.push
        ready = self.ready
        async for f in frames:
            # The usual frame (audio in the input format on a ready session) in line: what
            # on_frame does for it, without its coroutine and its match.
            if (
                isinstance(f, Audio)
                and (f.encoding, f.rate, f.channels) == fmt
                and ready.is_set()
                and self.proto.ready
            ):
                pieces = push(f)
                if pieces:
                    self.send_audio(pieces)
                if self.proto.has_data_to_send:
                    await self.flush()
                continue
            await self.on_frame(f)
        self.input_done.set()

    async def wait_ready(self) -> None:
        """Until the session is ready. Re-checked on waking: the connection may have dropped
        between the event being set and this task running, and the protocol refuses
        conversation messages on a session that is not ready."""
        while not (self.ready.is_set() and self.proto.ready):
            if self.ready.is_set():  # cleared in the same turn the connection drops
                await asyncio.sleep(0)
            else:
                await self.ready.wait()

    async def on_frame(self, f: Frame) -> None:
        match f:
            case Audio():
                want = self.cfg.input_format  # the check builds its message only on a mismatch
                if (f.encoding, f.rate, f.channels) != (want.encoding, want.rate, want.channels):
                    check_input_format(f.format, want, f"stage '{self.ctx.id}'")
                if not (self.ready.is_set() and self.proto.ready):
                    await self.wait_ready()
                self.send_audio(self.batcher.push(f))
            case Text(role="assistant") if self.cfg.dialect == "xai":
                # xAI speaks it verbatim (force_message), in the session's voice
                await self.wait_ready()
                self.send_audio(self.batcher.flush())
                self.force(ForcedMessage(f.text))
            case Text():
                await self.wait_ready()
                self.send_audio(self.batcher.flush())
                self.proto.send_text(f.text, f.role)
                if f.role == "user" and f.text.strip():
                    self.history.append(("user", f.text))
            case ToolResult():
                await self.wait_ready()
                if self.proto.was_withdrawn(f.call_id):
                    self.log.debug(
                        "tool result for a call the model cancelled; not sent",
                        call_id=f.call_id,
                    )
                elif not self.proto.tool_output(f.call_id, f.output):
                    self.log.warning(
                        "tool result for a call this session is not waiting for; dropped",
                        call_id=f.call_id,
                    )
                self.changed.set()
            case SpeechStarted():
                self.emit(f)
                await self.barge_in(local=True)
            case SpeechStopped():
                self.emit(f)
                if not self.ready.is_set():
                    return
                if self.cfg.server_vad and f.pts is not None:
                    silence_ms = self.cfg.turn_detection.silence_duration_ms or 500
                    margin = silence_ms / 1000 + TURN_END_MARGIN_S
                    self.send_audio(self.batcher.pad_turn_end(f.pts, margin))
                elif not self.cfg.server_vad:
                    self.send_audio(self.batcher.flush())
                    self.proto.user_turn_ended()
                    self.changed.set()
            case _:
                return
        await self.flush()

    def send_audio(self, pieces: list[tuple[float, bytes]]) -> None:
        for pts, data in pieces:
            if self.conn_origin is None:
                self.conn_origin = pts
            self.proto.append_audio(data)
            self.sent_end_pts = pts + len(data) / self.cfg.input_format.bytes_per_second

    # -- barge-in

    def force(self, message: ForcedMessage) -> None:
        """Have the assistant say ``message`` verbatim (xAI's force_message)."""
        self.proto.force_message(
            message.text, voice=message.voice, interruptible=message.interruptible
        )
        self.uninterruptible = not message.interruptible
        self.forced_pending = not message.interruptible
        self.log.info(
            "forced message", chars=len(message.text), interruptible=message.interruptible
        )

    async def barge_in(self, *, local: bool) -> None:
        """The user spoke: if assistant audio is arriving, queued here or still playing at a
        sink, cut it."""
        if not (self.proto.assistant_playing or self.out.has_audio() or self.out.lagging()):
            return
        if self.uninterruptible:
            self.log.info("caller spoke over a forced message marked interruptible: false")
            return
        rid = self.proto.last_response
        dropped = self.out.interrupt(Interrupt(pts=self.out.pts, response_id=rid))
        self.wake.set()
        played_ms = self.out.heard_ms(self.proto.assistant_item)
        self.log.info(
            "barge-in: interrupting the assistant",
            by="vad_gate" if local else "server_vad",
            response_id=rid,
            dropped_chunks=dropped,
            played_ms=played_ms,
        )
        self.proto.interrupt(played_ms, local=local)
        await self.flush()

    # -- server events

    async def on_event(self, ev: p.ServerEvent) -> None:
        """One protocol event: log what is worth it, queue its frames, react to the user
        speaking over the assistant."""
        match ev:
            case p.SessionReadyEvent() if not self.ready.is_set():
                self.log.info("session ready", session=self.sessions, dialect=self.cfg.dialect)
                if self.sessions > 1:
                    self.ctx.metrics.count(SESSION_RECONNECTS)
                self._check_echo(ev)
                if isinstance(self.ws, BridgedSocket) and self.ws.bridge.resumed:
                    bridge = self.ws.bridge
                    if self.sent_end_pts is not None:  # the replayed audio comes first
                        self.conn_origin = self.sent_end_pts - bridge.replayed_s
                    self.log.info(
                        "resumed session: Gemini goes on from its resumption handle, the "
                        "audio sent since the handle sent again",
                        session=self.sessions,
                        replayed_s=round(bridge.replayed_s, 3),
                        replayed_messages=bridge.replayed_messages,
                    )
                    if bridge.replay_overflow:
                        self.log.warning(
                            "audio older than the replay limit since the last resumption handle "
                            "was not sent again",
                        )
                elif self.sessions > 1 and self.history:
                    turns = self.carried()
                    self.proto.replay(turns)
                    self.log.info(
                        "renewed session: the conversation so far carried over",
                        session=self.sessions,
                        turns=len(turns),
                    )
                self.ready.set()
                if self.s.greeting is not None and self.sessions == 1:
                    self.force(self.s.greeting)
            case p.ErrorEvent() if ev.fatal:
                raise SessionRemoteError(
                    f"the realtime service refused the session: {ev.code}: {ev.message}",
                    code=ev.code,
                )
            case p.ErrorEvent() if ev.benign:
                self.log.debug("server error (benign race)", code=ev.code, message=ev.message)
            case p.ErrorEvent():
                self.log.warning("server error", code=ev.code, message=ev.message, param=ev.param)
            case p.MalformedEvent():
                self.log.warning("unreadable message from the server", reason=ev.reason)
            case p.RateLimitsEvent():
                self.log.debug("rate limits", limits=[dict(x) for x in ev.limits])
            case p.CallsCancelledEvent() if ev.calls:
                self.log.info(
                    "the model cancelled tool calls; they are stopped and get no result",
                    calls=[f"{name} {call_id}" for call_id, name in ev.calls],
                )
            case p.IgnoredEvent() if ev.type != "ping":
                self.log.debug("server event ignored", server_event=ev.type)
            case p.ResponseCreatedEvent() if self.forced_pending:
                self.forced_pending = False
                self.forced_response = ev.response_id
            case p.ResponseCreatedEvent() if ev.response_id != self.forced_response:
                # another response: the forced message's protection ends (what is left of its
                # audio here goes on playing; nothing new is protected)
                self.uninterruptible = False
        if isinstance(ev, p.ResponseDoneEvent):
            self.delivered = True
            self.responses += 1
        elif isinstance(ev, p.AudioDeltaEvent):
            self.police_audio(len(ev.data))
        for item in to_frames(ev, input_origin=self.conn_origin):
            if isinstance(item, Transcript) and item.final and item.text.strip():
                self.history.append((item.role, item.text))
            self.emit(item)
        if isinstance(ev, p.SpeechStartedEvent):
            await self.barge_in(local=False)

    def on_audio(self, ev: p.AudioDeltaEvent) -> None:
        """An audio delta: what :meth:`on_event` does for one, without its dispatch (and with
        :meth:`police_audio` and :meth:`emit` in line)."""
        data = ev.data
        now = self.ctx.clock.now()
        if not self.audio_budget.add(len(data), now):
            raise self.flood(now)
        if not ev.discarded:
            self.out.put(ev)  # (the playout reads its data, item_id, response_id)
            self.wake.set()

    def carried(self) -> list[tuple[str, str]]:
        """The most recent turns of the conversation that fit in :data:`CARRY_CHARS`."""
        out: list[tuple[str, str]] = []
        total = 0
        for role, text in reversed(self.history):
            total += len(text)
            if total > CARRY_CHARS:
                break
            out.append((role, text))
        return out[::-1]

    def police_audio(self, n_bytes: int) -> None:
        """Audio too far ahead of real time ends the run (see :class:`AudioBudget`)."""
        now = self.ctx.clock.now()
        if not self.audio_budget.add(n_bytes, now):
            raise self.flood(now)

    def flood(self, now: float) -> SessionRemoteError:
        """The error that ends a run whose service sent audio too far ahead of real time."""
        return SessionRemoteError(
            f"{self.endpoint} sent {self.audio_budget.received_s:.1f} s of audio in "
            f"{now - self.audio_budget.start:.1f} s, more than {self.s.max_audio_ahead_s:g} s "
            "ahead of real time (max_audio_ahead_s): the service is misbehaving",
            code="audio_flood",
        )

    def _check_echo(self, ev: p.SessionReadyEvent) -> None:
        for which, got, want in (
            ("output", ev.output_format, self.cfg.output_format),
            ("input", ev.input_format, self.cfg.input_format),
        ):
            if got is not None and got != want:
                self.log.warning(
                    f"the server echoed {which} audio {got}, not the {want} asked for; "
                    f"if the audio sounds wrong, set {which}_format/{which}_rate to one it takes"
                )

    # -- connection

    async def connection_loop(self) -> None:
        policy = Reconnects(self.s.reconnect_attempts)
        while not self.closing:
            try:
                ws, self.next_ws = self.next_ws, None
                if ws is None:
                    ws = await open_connection(self.s, self.url, self.resumption)
            except Retry as exc:
                delay = policy.connect_failed()
                if delay is None:
                    raise SessionRemoteError(
                        f"cannot connect to {self.endpoint} after {policy.failures} attempts: "
                        f"{exc}; check the url and the network",
                        code="connect_failed",
                    ) from None
                self.log.warning(
                    "connect failed; retrying", error=str(exc), attempt=policy.failures
                )
                await self.ctx.clock.sleep(delay)
                continue
            became_ready = await self.serve(ws)
            if self.closing:
                return
            delay = policy.connection_ended(delivered=self.delivered, recycled=self.recycling)
            if delay is None and became_ready:
                code, reason = self.last_close
                raise SessionRemoteError(
                    f"{self.endpoint} closed the connection {policy.failures} times in a row "
                    f"without delivering a response (last close: {code} "
                    f"{reason or 'no reason'}); check the service's status, the model and the "
                    "session parameters",
                    code="no_response",
                )
            if delay is None:
                raise SessionRemoteError(
                    f"{self.endpoint} closed the connection {policy.failures} times before the "
                    "session was ready; check the model and the session parameters",
                    code="connect_failed",
                )
            if delay:
                await self.ctx.clock.sleep(delay)

    async def serve(self, ws: Any) -> bool:
        """Run one connection until it closes. Returns whether the session became ready."""
        from websockets.exceptions import ConnectionClosed

        self.sessions += 1
        self.proto = p.RealtimeProtocol(self.cfg)
        self.ws = ws
        self.conn_origin = None
        self.recycling = False
        self.delivered = False
        self.audio_budget = AudioBudget(
            self.cfg.output_format.bytes_per_second, self.s.max_audio_ahead_s, self.ctx.clock.now()
        )
        if self.closing:  # the input ended while we were connecting
            await close_socket(ws)
            self.ws = None
            return False
        self.proto.connection_made()
        recycle = None
        if self.s.max_session_s is not None:
            recycle = asyncio.create_task(self.recycle_after(self.s.max_session_s))
        switch: asyncio.Task[None] | None = None
        became_ready = False
        try:
            await self.flush()
            async with clock_timeout(self.ctx.clock, self.s.ready_timeout_s) as deadline:
                async for message in ws:
                    events = self.proto.receive(message)
                    if became_ready and len(events) == 1 and type(events[0]) is AudioDeltaEvent:
                        # The usual message (one audio delta) in line: it changes nothing the
                        # other tasks wait on (no changed.set) and never the resumption.
                        self.on_audio(events[0])
                        if self.proto.has_data_to_send:
                            await self.flush()
                        continue
                    for ev in events:
                        await self.on_event(ev)
                    if self.proto.ready and not became_ready:
                        became_ready = True
                        deadline.disarm()
                    await self.flush()
                    self.changed.set()
                    r = self.resumption
                    if r is not None and r.time_left_s is not None and switch is None:
                        switch = asyncio.create_task(self.switch_before_close(ws, r.time_left_s))
            code, reason = ws.close_code, ws.close_reason
            self.last_close = (code, reason)
        except TimeoutError:
            raise SessionRemoteError(
                f"no session.updated from {self.endpoint} within {self.s.ready_timeout_s:g} s "
                "of session.update; the service may not accept the session parameters "
                "(raise session_timeout_s if it is just slow)",
                code="session_timeout",
            ) from None
        except ConnectionClosed as exc:
            code, reason = close_info(exc)
            self.last_close = (code, reason)
            sent = getattr(exc, "sent", None)
            if sent is not None and sent.code == 1009:  # we refused an oversized message
                raise SessionRemoteError(
                    f"{self.endpoint} sent a message of more than {self.s.max_message_bytes} "
                    "bytes (max_message_bytes); refused and closed: realtime events are far "
                    "smaller, raise max_message_bytes only if the service really sends such",
                    code="message_too_big",
                ) from None
        finally:
            for task in (recycle, switch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            self.ws = None
            self.ready.clear()
            self.proto.connection_lost()
            self.changed.set()
            await close_socket(ws)
        if (
            isinstance(ws, BridgedSocket)
            and ws.bridge.resuming
            and not became_ready
            and self.resumption is not None
        ):
            self.log.warning(
                "Gemini refused the session resumption handle; the next session carries the "
                "conversation over instead",
                code=code,
                reason=reason or None,
            )
            self.resumption.forget()
        if not self.closing and not self.recycling:
            self.log.warning(
                "connection to the realtime service lost; the call goes on on a new session, "
                "the conversation so far carried over",
                code=code,
                reason=reason or None,
                was_ready=became_ready,
            )
        return became_ready

    async def switch_before_close(self, ws: Any, time_left: float) -> None:
        """Gemini said ``goAway``: at the first idle moment (no response in flight, no tool
        result owed), or a second before the end at the latest, open the next connection and
        close this one; the next one resumes from the latest handle, or carries the
        conversation over when there is none."""
        r = self.resumption
        assert r is not None
        self.log.info(
            "Gemini will close the connection (goAway); switching to a new one",
            time_left_s=time_left,
            resumable=bool(r.handle),
        )
        margin = min(1.0, time_left / 2)
        try:
            async with clock_timeout(self.ctx.clock, max(0.0, time_left - margin)):
                await self.until(lambda: not self.proto.owes)
        except TimeoutError:
            self.log.warning(
                "switching before the close with a response or tool result still owed",
                pending_calls=list(self.proto.pending_calls),
            )
        try:
            self.next_ws = await open_connection(self.s, self.url, self.resumption)
        except Retry as exc:  # the usual reconnect takes over once this one closes
            self.log.warning("could not open the next connection ahead", error=str(exc))
        self.recycling = True
        await ws.close(1000, "going away")

    async def recycle_after(self, seconds: float) -> None:
        await self.ctx.clock.sleep(seconds)
        await self.until(lambda: not self.proto.owes)
        self.log.warning(
            "recycling the session after max_session_s; the call goes on on a new session, "
            "the conversation so far carried over",
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
        await self.wait_ready()
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
        if not self.ctx.stopping.is_set():  # asked to stop (Ctrl-C): close at once
            try:
                async with clock_timeout(self.ctx.clock, self.s.response_timeout_s):
                    await self.until(lambda: not self.ready.is_set() or self.proto.quiescent)
            except TimeoutError:
                self.log.warning(
                    "input ended; stopped waiting for the response and tool results",
                    response_timeout_s=self.s.response_timeout_s,
                    pending_calls=list(self.proto.pending_calls),
                )
            code, reason = self.last_close
            if not self.ready.is_set() and self.responses == 0 and code != 1000:
                # the service dropped us and never answered once: not a quiet success
                raise SessionRemoteError(
                    f"{self.endpoint} closed the connection before delivering a response (last "
                    f"close: {code} {reason or 'no reason'}), and the input has ended; check "
                    "the service's status, the model and the session parameters",
                    code="no_response",
                )
        self.closing = True
        ws = self.ws
        if ws is not None:
            await ws.close()


# ----------------------------------------------------------------------------- the stage


@stage(
    "realtime_session",
    accepts=(Audio, Text, ToolResult, SpeechStarted, SpeechStopped),
    emits=(
        Audio,
        Transcript,
        ToolCall,
        ToolCancel,
        SpeechStarted,
        SpeechStopped,
        Interrupt,
        ResponseStarted,
        ResponseDone,
        ErrorReport,
    ),
    output_format=output_format,
    cycle_aware=True,
    check=check_params,
    preflight=preflight,
    uses=(TOOLS,),
    subscribes=(PLAYED,),
    metrics=(SESSION_RECONNECTS,),
)
async def realtime_session(
    frames: AsyncIterator[Frame],
    *,
    provider: Provider = "xai",
    dialect: Literal["xai", "openai", "openai-ga", "openai-beta", "gemini"] | None = None,
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
    server_tools: list[Any] | None = None,
    greeting: str | dict[str, Any] | None = None,
    transcription: bool | str = True,
    response_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
    session_timeout_s: float = 5.0,
    max_session_s: float | None = None,
    reconnect_attempts: int = 5,
    max_message_bytes: int = 8 * 1024 * 1024,
    max_audio_ahead_s: float = 120.0,
    append_ms: int = 20,
    emulator: dict[str, Any] | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """A speech-to-speech model (xAI Grok voice agent, OpenAI Realtime, or the emulator).

    Parameters:
        provider: xai | openai | azure (url: the deployment's realtime URL) | gemini | emulator (in-process)
        dialect: wire dialect (default: the provider's; for the emulator, its own dialect)
        url: the endpoint, overriding the provider's (?model= is still added)
        model: model name (xai: grok-voice-latest, openai: gpt-realtime)
        api_key_env: environment variable holding the API key (XAI_API_KEY / OPENAI_API_KEY / AZURE_OPENAI_API_KEY)
        voice: ara, rex, sal, eve, leo (xai; default ara) or an OpenAI voice (default alloy)
        instructions: the system prompt
        input_format: pcm16 | pcmu | pcma (also by their wire names, e.g. g711_ulaw, audio/pcmu)
        input_rate: input sample rate (default 24000 for pcm16, 8000 for G.711)
        output_format: pcm16 | pcmu | pcma: the audio this stage emits
        output_rate: output sample rate (default 24000 for pcm16, 8000 for G.711)
        turn_detection: server_vad (optionally {type, threshold, prefix_padding_ms, silence_duration_ms}) or none
        tools: tool definitions or 'module:function' refs (default: those the linked stages provide, e.g. a tool_router)
        server_tools: xAI's server-side tools: web_search, x_search, file_search (collections), mcp (remote MCP servers)
        greeting: xAI: said verbatim when the call starts: text, or {text, voice, interruptible}
        transcription: transcribe the user's audio: true, false, or a transcription model name
        response_timeout_s: at end of input, how long to wait for the response and tool results
        connect_timeout_s: timeout of one connection attempt
        session_timeout_s: how long to wait for session.updated after session.update
        max_session_s: recycle the session (while idle) after this many seconds
        reconnect_attempts: connections in a row that fail, or close without delivering a response, before giving up
        max_message_bytes: largest message taken from the service; a larger one ends the run
        max_audio_ahead_s: how far ahead of real time the service's audio may run before the run ends
        append_ms: input audio sent in appends of at least this many ms (20-100); the rest of a turn goes at once when speech stops. Larger: fewer messages, less CPU per call
        emulator: settings for the emulator when provider is emulator (e.g. dialect, think_ms)
    """  # noqa: E501
    params = {k: v for k, v in locals().items() if k not in ("frames", "ctx")}
    schemas = explicit_tools(tools, ctx) if tools is not None else linked_tools(ctx)
    settings = resolve_settings(params, schemas)
    async with contextlib.AsyncExitStack() as stack:
        url_ = settings.url
        if settings.provider == "emulator":
            url_ = await _start_emulator(stack, settings, ctx)
        run = _Run(settings, ctx, url_)
        try:
            # The group runs the tasks and cancels them on the way out; the output is the
            # playout (a barge-in drops what it holds), not the group's bounded queue.
            async with StageTasks[None](ctx) as tasks:
                run.start(tasks, run.connection_loop(), "connection", ends=True)
                run.start(tasks, run.pump_input(frames), "input")
                run.start(tasks, run.finish(), "finish")
                take = run.out.take
                while True:
                    # what is queued, without a coroutine per frame; else wait for more
                    frame = take()
                    if frame is None and (frame := await run.next_frame(tasks)) is None:
                        break
                    yield frame
        finally:
            for ws in (run.ws, run.next_ws):
                if ws is not None:
                    with contextlib.suppress(Exception):
                        await ws.close()


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
    if s.dialect == "gemini":  # Gemini Live's route, where the emulator speaks its messages
        return base.replace("/v1/realtime", GEMINI_PATH)
    return with_model(base, s.session.model)
