"""The server side of one realtime connection, sans I/O: :class:`EmulatorSession`.

``receive(message, now)`` takes one client message and queues the server events it causes, each
with the clock time at which it is due; ``release(now)`` returns the events due by ``now`` in
order, ``next_deadline()`` says when the next one is. Response pacing (``think_ms``, ``pace``),
delayed ``session.updated`` and ``ping`` keep-alives are due times in that queue. Cancelling a
response (barge-in, ``response.cancel``) drops its queued events and queues ``response.done``
with ``status: cancelled``: the client never sees audio of a cancelled response after the
``response.done``.

What the dialect spells its own way (event names, the session's shape and validation, which
events carry what) comes from its codec (:mod:`stages.realtime.wire`); the session itself is
the codec's typed :class:`~stages.realtime.wire.SessionConfig`.

This module is over 800 lines because it is one state machine over one connection's state
(the input buffer, the conversation's items, the response in flight): the client-event handlers
and the response builders read and write the same fields, and splitting them would pass that
state around instead of making it smaller.
"""

from __future__ import annotations

import base64
import bisect
import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import structlog

from stages import g711

from ..wire import (
    CLIENT_EVENT_ALIASES,
    Dialect,
    SessionConfig,
    TurnDetection,
    WireError,
    codec,
    error_event,
)
from ..wire import client as wc
from ..wire.errors import bad_value
from ..wire.gemini import CLOSING_SOON
from .audio import EnergyVad, VadEvent, split_text, to_output, tone
from .config import EmulatorConfig, ToolCallScript
from .queues import InputBuffer, Outbox

log = structlog.get_logger("pipeline.emulator")

Json = dict[str, Any]


#: bounds (seconds) of the emulator's audio delta lateness counts (the server's outgoing frame
#: lateness histogram has the same)
LATENESS_BOUNDS = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
AUDIO_DELTA = "response.output_audio.delta"

_RATE_LIMITS: list[Json] = [
    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
    {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60.0},
]


@dataclass(frozen=True)
class ConversationState:
    """What a Gemini session resumption handle holds (:meth:`EmulatorSession.snapshot`)."""

    pending_input: bytes
    items: dict[str, Json]
    last_item: str | None
    turn: int
    last_user_pcm: bytes
    last_user_text: str
    calls: dict[str, str]
    outputs: list[tuple[str, str]]
    scripted_turns: set[int]
    audio_ms: dict[str, int]


@dataclass
class _ServerResponse:
    id: str
    items: list[Json] = field(default_factory=list)  # output items released (added)
    done_items: set[str] = field(default_factory=set)
    transcript_sent: dict[str, str] = field(default_factory=dict)


class EmulatorSession:
    """The server side of one realtime connection, sans I/O. See the module docstring.

    Call ``open(now)`` once, ``receive(message, now)`` for every client message, and send what
    ``release(now)`` returns; sleep until ``next_deadline()`` (or the next client message).
    ``received`` holds every client event parsed, in order; ``warnings`` what was accepted but
    is not the current protocol (``conversation.item.commit``).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        dialect: Dialect = "xai",
        model: str | None = None,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.config = config
        self.dialect: Dialect = dialect
        self.codec = codec(dialect)
        self.model = model or self.codec.default_model
        self.received: list[Json] = []
        self.warnings: list[str] = []
        self._turns: TurnDetection | None = None
        self.state = self.codec.default_session(self.model)
        # Shared by every connection of one server: ids stay unique across reconnects, so a
        # client de-duplicating by call_id never mistakes a new call for a repeat.
        self._counters: dict[str, int] = {} if counters is None else counters
        self._outbox = Outbox()
        self._now = 0.0
        #: audio deltas by how late they were released against their pace (``now`` given to
        #: :meth:`release` minus the due time): one count per :data:`LATENESS_BOUNDS` bucket
        #: (at or under that bound, over the one before), the last for later than them all
        self.delta_lateness = [0] * (len(LATENESS_BOUNDS) + 1)
        self.session_id = self._id("sess")
        self.conversation_id = self._id("conv")
        self.configured = False  # session.updated released
        self._audio_seen = False
        self._input = InputBuffer()  # pcm16 at the input rate
        self._vad: EnergyVad | None = None
        self._vad_item: str | None = None
        self._speech_start_ms = 0
        self._turn = 0
        self._last_user_pcm = b""
        self._last_user_text = ""
        self._items: dict[str, Json] = {}
        self._last_item: str | None = None
        self._audio_ms: dict[str, int] = {}  # assistant item -> ms of audio sent
        self._response: _ServerResponse | None = None
        self._calls: dict[str, str] = {}  # call_id -> tool name
        self._outputs: list[tuple[str, str]] = []  # (tool name, output) not yet answered
        self._scripted_turns: set[int] = set()
        #: the response saying a forced message marked ``interruptible: false``: until it is
        #: done the caller's audio is dropped (replaced by silence, so the timeline stays)
        self._uninterruptible: str | None = None
        self._next_ping: float | None = None
        self._expires_at: float | None = None
        self._notice_at: float | None = None  # Gemini's goAway, ahead of the limit
        #: the session hit ``max_session_s``: the edge closes the socket with 1001
        self.expired = False

    # -- ids and queue

    def _id(self, kind: str) -> str:
        n = self._counters.get(kind, 0) + 1
        self._counters[kind] = n
        return f"{kind}_{n:04d}"

    def _emit(
        self,
        event: Json,
        *,
        at: float | None = None,
        response_id: str | None = None,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._outbox.put(event, self._now if at is None else at, response_id, on_release)

    def next_deadline(self) -> float | None:
        """The clock time of the next queued event, ping or session expiry (None: nothing
        until a message)."""
        first = self._outbox.next_due()
        times = [] if first is None else [first]
        if self._next_ping is not None:
            times.append(self._next_ping)
        if self._expires_at is not None and not self.expired:
            times.append(self._expires_at)
        if self._notice_at is not None:
            times.append(self._notice_at)
        return min(times) if times else None

    def _expire(self) -> None:
        self.expired = True
        self._outbox.clear()
        self._next_ping = None
        limit = self.config.max_session_s
        span = f"{limit / 60:g} minutes" if limit % 60 == 0 else f"{limit:g} seconds"
        self._error(
            WireError("session_expired", f"Your session hit the maximum duration of {span}.")
        )

    def release(self, now: float) -> list[Json]:
        """The events due by ``now``, in order, each with its ``event_id``."""
        self._now = now
        out: list[Json] = []
        if self._notice_at is not None and now >= self._notice_at:
            self._notice_at = None
            left = max(0.0, (self._expires_at or now) - now)
            self._emit({"type": CLOSING_SOON, "time_left_s": left})
        if self._expires_at is not None and now >= self._expires_at and not self.expired:
            self._expire()
        while True:
            if self._next_ping is not None and self._next_ping <= now:
                out.append({"type": "ping", "timestamp": round(self._next_ping * 1000)})
                self._next_ping += self.config.ping_interval_ms / 1000
                continue
            first = self._outbox.pop(now)
            if first is None:
                return out
            if first.event["type"] == AUDIO_DELTA:
                self.delta_lateness[bisect.bisect_left(LATENESS_BOUNDS, now - first.due)] += 1
            for event in self.codec.encode_server(first.event):
                out.append({"type": event["type"], "event_id": self._id("evt"), **event})
            if first.on_release is not None:
                first.on_release()

    # -- errors

    def _error(self, err: WireError, client_event_id: Any = None) -> None:
        self._emit(error_event(err, self.config.error_shape, client_event_id))

    # -- handshake

    def open(self, now: float) -> None:
        """The socket is open: queue ``session.created`` and ``conversation.created``."""
        self._now = now
        if self.config.send_session_created:
            self._emit(
                {
                    "type": "session.created",
                    "session": self.state.server_object(self.session_id),
                }
            )
        if self.config.send_conversation_created:
            self._emit(
                {
                    "type": "conversation.created",
                    "conversation": {"id": self.conversation_id, "object": "realtime.conversation"},
                }
            )
        if self.config.ping_interval_ms:
            self._next_ping = now + self.config.ping_interval_ms / 1000
        if self.config.max_session_s:
            self._expires_at = now + self.config.max_session_s
            notice = min(self.config.go_away_s, self.config.max_session_s)
            if self.dialect == "gemini" and notice:
                self._notice_at = self._expires_at - notice

    # -- session resumption (Gemini)

    def snapshot(self) -> ConversationState:
        """The conversation as it stands (its items, the turns counted, what is owed, the audio
        received since the last turn ended): what a Gemini session resumption handle restores
        on a new connection."""
        return ConversationState(
            pending_input=self._input.samples(self._input.start, self._input.samples_in),
            items=copy.deepcopy(self._items),
            last_item=self._last_item,
            turn=self._turn,
            last_user_pcm=self._last_user_pcm,
            last_user_text=self._last_user_text,
            calls=dict(self._calls),
            outputs=list(self._outputs),
            scripted_turns=set(self._scripted_turns),
            audio_ms=dict(self._audio_ms),
        )

    def restore(self, state: ConversationState) -> None:
        """Go on from ``state`` (a resumed session): the conversation, not the connection. Call
        it before any audio arrives."""
        self._input.append(state.pending_input)
        self._items = copy.deepcopy(state.items)
        self._last_item = state.last_item
        self._turn = state.turn
        self._last_user_pcm = state.last_user_pcm
        self._last_user_text = state.last_user_text
        self._calls = dict(state.calls)
        self._outputs = list(state.outputs)
        self._scripted_turns = set(state.scripted_turns)
        self._audio_ms = dict(state.audio_ms)

    # -- client messages

    def receive(self, message: str | bytes, now: float) -> None:
        """Handle one client message; queue what it causes (see ``release``)."""
        self._now = now
        if isinstance(message, bytes):
            self._error(
                WireError(
                    "invalid_json",
                    f"Expected a JSON text message, got a {len(message)}-byte binary message.",
                )
            )
            return
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._error(WireError("invalid_json", f"Invalid JSON: {exc}."))
            return
        if not isinstance(event, dict):
            self._error(WireError("invalid_json", "Expected a JSON object."))
            return
        self.received.append(event)
        eid = event.get("event_id")
        try:
            self._dispatch(event)
        except WireError as err:
            self._error(err, eid)
        except Exception as exc:  # an emulator bug: say so on the wire and in the log
            log.exception("emulator.bug", type=event.get("type"))
            self._error(
                WireError("server_error", f"emulator bug: {exc!r}", type="server_error"), eid
            )

    def _dispatch(self, event: Json) -> None:
        kind = event.get("type")
        if isinstance(kind, str) and kind in CLIENT_EVENT_ALIASES:
            real = CLIENT_EVENT_ALIASES[kind]
            note = f"'{kind}' is not a current event name; handled as '{real}'"
            self.warnings.append(note)
            log.warning("emulator.alias", name=kind, handled_as=real)
            event = {**event, "type": real}
        typed = self.codec.decode_client(event, self.state)
        handler = getattr(self, "_on_" + typed.type.replace(".", "_"))
        handler(typed)

    def _on_session_update(self, event: wc.SessionUpdate) -> None:
        new = SessionConfig.from_wire(event.session, self.state)
        if self._audio_seen and new.input_format != self.state.input_format:
            a, b = self.state.input_format, new.input_format
            raise WireError(
                "internal_error",
                f"Multiple frame rates in the concatenated frames: {{{a.rate}, {b.rate}}}"
                if a.rate != b.rate
                else f"Input format changed from {a} to {b} after audio was received.",
                self.codec.input_format_param(),
                type="server_error",
                flat_message="ValueError",
            )
        self.state = new
        turns = self._turns
        if turns is None:
            self._vad = None
        elif (
            self._vad is None or self._vad.rate != new.input_format.rate or self._vad_changed(turns)
        ):
            floor = self._ms(self._input.start)
            self._vad = EnergyVad.for_turns(new.input_format.rate, turns, self._input.samples_in)
            self._vad.reset(floor)
        if not self.config.ack_session_update:
            # the update took effect; the server just never says so
            self.configured = True
            return

        def ready() -> None:
            self.configured = True

        self._emit(
            {
                "type": "session.updated",
                "session": self.state.server_object(self.session_id),
            },
            at=self._now + self.config.session_updated_delay_ms / 1000,
            on_release=ready,
        )

    @property
    def state(self) -> SessionConfig:
        """The session as configured so far (the typed model client updates are read into)."""
        return self._state

    @state.setter
    def state(self, config: SessionConfig) -> None:
        self._state = config
        td = config.turn_detection
        #: the server VAD's settings, every field resolved (None: manual turns)
        self._turns = None if td.type is None else self.codec.resolve_turn_detection(td)

    @property
    def _modalities(self) -> tuple[str, ...]:
        return self.state.modalities or self.codec.default_modalities

    def _vad_changed(self, turns: TurnDetection) -> bool:
        assert self._vad is not None
        return not self._vad.matches(turns)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.state.input_format.rate

    def _on_input_audio_buffer_append(self, event: wc.InputAudioBufferAppend) -> None:
        data = event.audio
        fmt = self.state.input_format
        if not self.configured and self.config.audio_before_session_updated == "error":
            raise WireError(
                "audio_before_session_updated",
                "input_audio_buffer.append before session.updated: the emulator drops this "
                f"audio ({len(data)} bytes; xAI would read it as 24000 Hz PCM); wait for "
                "session.updated before sending audio.",
                "audio",
            )
        self._audio_seen = True
        pcm = g711.decode(data, fmt.encoding)
        if self._response is not None and self._response.id == self._uninterruptible:
            # xAI: a forced message marked interruptible: false drops the caller's audio until
            # it has been played, so the caller can neither cut it nor start a turn over it
            pcm = bytes(len(pcm))
        self._input.append(pcm)
        if self._vad is None or self._turns is None:
            return
        for ev in self._vad.feed(np.frombuffer(pcm, dtype="<i2")):
            if ev.kind == "start":
                self._speech_started(ev.ms)
            else:
                self._speech_stopped(ev)

    def _speech_started(self, start_ms: int) -> None:
        self._vad_item = self._id("item")
        self._speech_start_ms = start_ms
        self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": start_ms,
                "item_id": self._vad_item,
            }
        )
        turns = self._turns
        if self._response is not None and turns is not None and turns.interrupt_response:
            self._cancel("turn_detected")

    def _speech_stopped(self, ev: VadEvent) -> None:
        item_id = self._vad_item or self._id("item")
        self._vad_item = None
        self._emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.ms, "item_id": item_id}
        )
        rate = self.state.input_format.rate
        start = self._input.start
        end = min(self._input.samples_in, ev.ms * rate // 1000)
        speech_end = min(end, ev.speech_end_ms * rate // 1000)
        # the utterance starts where speech_started said (prefix padding included)
        started = max(start, self._speech_start_ms * rate // 1000)
        self._commit(item_id, self._input.samples(started, speech_end), end)
        turns = self._turns
        if turns is not None and turns.create_response and self._response is None:
            self._start_response()

    def _commit(self, item_id: str, pcm: bytes, end_sample: int) -> None:
        self._input.restart_at(end_sample)
        if self._vad is not None:
            self._vad.reset(self._ms(end_sample))
        self._turn += 1
        previous = self._last_item if self.codec.previous_item_ids else None
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            }
        )
        item: Json = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item)
        seconds = len(pcm) / 2 / self.state.input_format.rate
        n = self._turn
        if n <= len(self.config.transcripts):
            text = self.config.transcripts[n - 1]
        else:
            text = f"utterance {n} ({seconds:.2f} s)"
        self._last_user_pcm = bytes(pcm)
        self._last_user_text = text
        usage = {"type": "duration", "seconds": round(seconds, 3)}
        if self.codec.transcribes_always or self.state.transcription is not None:
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": text,
                    **({"usage": usage} if self.codec.transcription_usage else {}),
                }
            )

    def _add_item(self, item: Json) -> None:
        previous = self._last_item if self.codec.previous_item_ids else None
        self._items[item["id"]] = item
        self._last_item = item["id"]
        self._emit(
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": item,
            }
        )
        if self.codec.item_done_events:
            self._emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )

    def _on_input_audio_buffer_commit(self, event: wc.InputAudioBufferCommit) -> None:
        if self.codec.commit_needs_manual_turns and self._turns is not None:
            raise WireError(
                "invalid_request",
                "input_audio_buffer.commit is only available when turn_detection type is null.",
                "type",
            )
        rate = self.state.input_format.rate
        start, end = self._input.start, self._input.samples_in
        ms = (end - start) * 1000 / rate
        if ms < 100:
            raise WireError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self._commit(self._id("item"), self._input.samples(start, end), end)

    def _on_input_audio_buffer_clear(self, event: wc.InputAudioBufferClear) -> None:
        self._input.restart_at(self._input.samples_in)
        self._vad_item = None
        if self._vad is not None:
            self._vad.reset(self._ms(self._input.start))
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_conversation_item_create(self, event: wc.ConversationItemCreate) -> None:
        item = event.item
        kind = item.get("type")
        types = self.codec.item_types
        if kind not in types:
            raise bad_value("item.type", kind, ", ".join(f"'{t}'" for t in types))
        item_id = item.get("id") or self._id("item")
        if item_id in self._items:
            raise WireError(
                "item_id_already_exists", f"Item with id '{item_id}' already exists.", "item.id"
            )
        stored: Json = {"id": item_id, "object": "realtime.item", **dict(item)}
        stored["id"] = item_id
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._calls:
                raise WireError(
                    "invalid_value",
                    f"Tool call ID '{call_id}' not found in conversation.",
                    "item.call_id",
                )
            output = item.get("output")
            if not isinstance(output, str):
                raise bad_value("item.output", output)
            stored.setdefault("status", "completed")
            self._add_item(stored)
            self._outputs.append((self._calls[call_id], output))
            return
        if kind == "force_message":
            text = "".join(
                str(c.get("text", "")) for c in item.get("content") or [] if isinstance(c, Mapping)
            )
            self._add_item(stored)
            if self._response is None:
                self._start_response(text_override=text)
                if item.get("interruptible") is False and self._response is not None:
                    self._uninterruptible = self._response.id
            return
        role = item.get("role")
        if kind == "message" and role not in ("user", "assistant", "system"):
            raise bad_value("item.role", role, "'user', 'assistant', 'system'")
        content = item.get("content")
        if kind == "message" and not isinstance(content, list):
            raise bad_value("item.content", content)
        stored.setdefault("status", "completed")
        self._add_item(stored)
        if kind == "message" and role == "user":
            texts = [
                str(c.get("text", ""))
                for c in content or []
                if isinstance(c, Mapping) and c.get("type") in ("input_text", "text")
            ]
            self._turn += 1
            self._last_user_text = " ".join(texts)
            self._last_user_pcm = b""

    def _on_conversation_item_retrieve(self, event: wc.ConversationItemRetrieve) -> None:
        item_id = event.item_id
        if item_id not in self._items:
            raise WireError("invalid_value", f"Item with item_id not found: {item_id}", "item_id")
        self._emit({"type": "conversation.item.retrieved", "item": self._items[item_id]})

    def _on_conversation_item_delete(self, event: wc.ConversationItemDelete) -> None:
        item_id = event.item_id
        if item_id not in self._items:
            raise WireError("invalid_value", f"Item with item_id not found: {item_id}", "item_id")
        del self._items[item_id]
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_truncate(self, event: wc.ConversationItemTruncate) -> None:
        item_id, end = event.item_id, event.audio_end_ms
        if item_id not in self._audio_ms:
            raise WireError(
                "invalid_value",
                f"Item with item_id not found or has no assistant audio: {item_id}",
                "item_id",
            )
        have = self._audio_ms[item_id]
        if end > have:
            raise WireError(
                "invalid_value",
                f"Audio content of {have}ms is shorter than requested audio_end_ms {end}ms",
                "audio_end_ms",
            )
        index = event.content_index
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": index,
                "audio_end_ms": end,
            }
        )

    def _on_response_cancel(self, event: wc.ResponseCancel) -> None:
        wanted = event.response_id
        if self._response is None or (wanted is not None and wanted != self._response.id):
            raise WireError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        self._cancel("client_cancelled")

    def _on_response_create(self, event: wc.ResponseCreate) -> None:
        if self._response is not None:
            raise WireError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        mods = event.response.get(self.codec.response_modalities_key)
        self._start_response(modalities=list(mods) if isinstance(mods, list) else None)

    # -- responses

    def _start_response(
        self, *, modalities: list[str] | None = None, text_override: str | None = None
    ) -> None:
        resp = _ServerResponse(self._id("resp"))
        self._response = resp
        mods = modalities or self._modalities
        self._emit(
            {
                "type": "response.created",
                "response": self._response_obj(resp, "in_progress", None, []),
            }
        )
        rate_limits = self.config.rate_limits
        if rate_limits or (rate_limits is None and self.codec.rate_limits):
            self._emit({"type": "rate_limits.updated", "rate_limits": _RATE_LIMITS})
        t = self._now + self.config.think_ms / 1000
        turn = self._turn
        names = {t_.get("name") for t_ in self.state.tools if t_.get("type") == "function"}
        script = [c for c in self.config.tool_calls if c.turn == turn]
        if text_override is None and script and turn not in self._scripted_turns:
            self._scripted_turns.add(turn)
            declared = [c for c in script if c.name in names]
            for c in script:
                if c.name not in names:
                    note = f"scripted tool '{c.name}' is not in the session's tools; not called"
                    self.warnings.append(note)
                    log.warning("emulator.tool_not_declared", tool=c.name)
            if declared:
                self._function_calls(resp, declared, t)
                return
        if text_override is not None:
            text = text_override
        elif self._outputs:
            text = "; ".join(f"{name} says: {out}" for name, out in self._outputs)
            self._outputs = []
        else:
            text = self.config.reply_text.replace("{user}", self._last_user_text)
        self._message(resp, text, t, audio="audio" in mods)

    def _response_obj(
        self, resp: _ServerResponse, status: str, details: Json | None, output: list[Json]
    ) -> Json:
        obj: Json = {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
        }
        if status != "in_progress":
            obj["usage"] = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}
        if self.codec.response_conversation:
            obj["conversation_id"] = self.conversation_id
            obj["output_modalities"] = list(self._modalities)
        return obj

    def _finish(self, resp: _ServerResponse) -> Callable[[], None]:
        def hook() -> None:
            if self._response is resp:
                self._response = None

        return hook

    def _audio_reply(self) -> tuple[bytes, int]:
        """The reply as pcm16 bytes at some rate."""
        if self.config.reply == "echo" and self._last_user_pcm:
            return self._last_user_pcm, self.state.input_format.rate
        rate = self.state.output_format.rate
        return tone(rate, self.config.tone_ms, self.config.tone_hz), rate

    def _message_item(self, item_id: str, status: str, part: Json) -> Json:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part] if part else [],
        }

    def _output_item(
        self,
        resp: _ServerResponse,
        stage: Literal["added", "done"],
        index: int,
        item: Json,
        at: float,
    ) -> None:
        """``response.output_item.added`` / ``.done``; the response records it once released."""
        if stage == "done":
            self._items[item["id"]] = item

        def released() -> None:
            if stage == "added":
                resp.items.append(item)
            else:
                resp.done_items.add(item["id"])

        self._emit(
            {
                "type": f"response.output_item.{stage}",
                "response_id": resp.id,
                "output_index": index,
                "item": item,
            },
            at=at,
            response_id=resp.id,
            on_release=released,
        )

    def _response_done(self, resp: _ServerResponse, output: list[Json], at: float) -> None:
        self._emit(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "completed", None, output),
            },
            at=at,
            response_id=resp.id,
            on_release=self._finish(resp),
        )

    def _message(
        self,
        resp: _ServerResponse,
        text: str,
        t: float,
        *,
        audio: bool,
        index: int = 0,
        before: Sequence[Json] = (),
    ) -> None:
        """An assistant message item at ``output_index`` ``index`` (spoken with the reply audio,
        or text only), then ``response.done`` (whose output lists ``before``, the items already
        sent in this response, then this one)."""
        rid = resp.id
        item_id = self._id("item")
        base = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
        self._output_item(resp, "added", index, self._message_item(item_id, "in_progress", {}), t)
        empty = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        self._emit(
            {"type": "response.content_part.added", **base, "part": empty}, at=t, response_id=rid
        )
        if audio:
            end = self._speak(resp, base, text, t)
            part = {"type": "audio", "transcript": text}
            kind = self.codec.audio_part
            done_events = [
                {"type": "response.output_audio.done", **base},
                {
                    "type": "response.output_audio_transcript.done",
                    **base,
                    "transcript": text,
                },
            ]
        else:
            end = t
            for piece in re.findall(r"\s*\S+", text) or [text]:
                delta = {"type": "response.output_text.delta", **base, "delta": piece}
                self._emit(delta, at=t, response_id=rid)
            part = {"type": "text", "text": text}
            kind = self.codec.text_part
            done_events = [{"type": "response.output_text.done", **base, "text": text}]
        done_events.append({"type": "response.content_part.done", **base, "part": part})
        for event in done_events:
            self._emit(event, at=end, response_id=rid)
        done = self._message_item(item_id, "completed", {**part, "type": kind})
        self._output_item(resp, "done", index, done, end)
        self._response_done(resp, [*before, done], end)

    def _speak(self, resp: _ServerResponse, base: Json, text: str, t: float) -> float:
        """The reply audio and its transcript as deltas from ``t`` on, paced; returns the due
        time of the last one."""
        rid, item_id = resp.id, base["item_id"]
        self._audio_ms[item_id] = 0
        pcm, rate = self._audio_reply()
        out = self.state.output_format
        audio = to_output(pcm, rate, out)
        width = 2 if out.encoding == "pcm16" else 1
        step = out.rate * self.config.chunk_ms // 1000 * width
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)] or [b""]
        pieces = split_text(text, len(chunks))
        period = self.config.chunk_ms / 1000 * self.config.pace
        for i, (chunk, piece) in enumerate(zip(chunks, pieces, strict=True)):
            at = t + i * period
            ms = len(chunk) // width * 1000 // out.rate

            def sent(ms: int = ms, piece: str = piece) -> None:
                self._audio_ms[item_id] += ms
                resp.transcript_sent[item_id] = resp.transcript_sent.get(item_id, "") + piece

            self._emit(
                {
                    "type": AUDIO_DELTA,
                    **base,
                    "delta": base64.b64encode(chunk).decode(),
                },
                at=at,
                response_id=rid,
                on_release=sent,
            )
            if piece:
                self._emit(
                    {
                        "type": "response.output_audio_transcript.delta",
                        **base,
                        "delta": piece,
                    },
                    at=at,
                    response_id=rid,
                )
        return t + (len(chunks) - 1) * period

    def _function_calls(
        self, resp: _ServerResponse, script: list[ToolCallScript], t: float
    ) -> None:
        rid = resp.id
        done_items: list[Json] = []
        for index, call in enumerate(script):
            item_id, call_id = self._id("item"), self._id("call")
            self._calls[call_id] = call.name
            args = orjson.dumps(call.arguments).decode()
            item: Json = {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": call.name,
                "call_id": call_id,
                "arguments": "",
            }
            base = {
                "response_id": rid,
                "item_id": item_id,
                "output_index": index,
                "call_id": call_id,
            }
            self._output_item(resp, "added", index, item, t)
            for _ in range(self.config.function_call_item_added):
                self._emit(
                    {
                        "type": "conversation.item.added",
                        "previous_item_id": None,
                        "item": item,
                    },
                    at=t,
                    response_id=rid,
                )
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                if piece:
                    self._emit(
                        {"type": "response.function_call_arguments.delta", **base, "delta": piece},
                        at=t,
                        response_id=rid,
                    )
            self._emit(
                {
                    "type": "response.function_call_arguments.done",
                    **base,
                    "name": call.name,
                    "arguments": args,
                },
                at=t,
                response_id=rid,
            )
            done = {**item, "status": "completed", "arguments": args}
            done_items.append(done)
            self._output_item(resp, "done", index, done, t)
        say = " ".join(c.say for c in script if c.say)
        if say and "audio" in self._modalities:
            self._message(resp, say, t, audio=True, index=len(script), before=done_items)
            return
        self._response_done(resp, done_items, t)

    def _cancel(self, reason: str) -> None:
        resp = self._response
        assert resp is not None
        self._response = None
        self._outbox.drop_response(resp.id)
        output: list[Json] = []
        for index, item in enumerate(resp.items):
            if item["type"] == "message":
                said = resp.transcript_sent.get(item["id"], "")
                part = {"type": self.codec.audio_part, "transcript": said}
                item = self._message_item(item["id"], "incomplete", part)
                self._items[item["id"]] = item
            elif item["id"] in resp.done_items:  # a finished function_call stays completed
                item = self._items.get(item["id"], item)
            else:
                item = {**item, "status": "incomplete"}
            output.append(item)
            if item["id"] not in resp.done_items:
                self._emit(
                    {
                        "type": "response.output_item.done",
                        "response_id": resp.id,
                        "output_index": index,
                        "item": item,
                    }
                )
        details = {"type": "cancelled", "reason": reason}
        self._emit(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "cancelled", details, output),
            }
        )
