"""A strict, deterministic realtime voice server: xAI's Grok Voice Agent API (``xai``, the
default), OpenAI Realtime GA (``openai``) and beta (``openai-beta``), on a loopback WebSocket.

What it is for: offline runs, tests and benchmarks of realtime clients (our ``realtime_session``
stage, the ``openai`` SDK's realtime client) without a key or a network. Everything it sends is
a function of what it received and of :class:`EmulatorConfig`: ids count up per connection
(``evt_0001``, ``item_0001``, ``resp_0001``, ``call_0001``), reply audio is the caller's last
utterance played back (``reply="echo"``) or a sine (``reply="tone"``), transcripts come from the
config.

Theory of operation
-------------------
:class:`EmulatorSession` is the server side of one connection, sans I/O (no socket, no event
loop): ``receive(message, now)`` takes one client message and queues the server events it
causes, each with the clock time at which it is due; ``release(now)`` returns the events due by
``now`` in order, ``next_deadline()`` says when the next one is. Response pacing (``think_ms``,
``pace``), delayed ``session.updated`` and ``ping`` keep-alives are due times in that queue.
Cancelling a response (barge-in, ``response.cancel``) drops its queued events and queues
``response.done`` with ``status: cancelled``: the client never sees audio of a cancelled
response after the ``response.done``.

:func:`run_emulator` is the thin edge: a ``websockets`` server whose handler pumps the socket
through one :class:`EmulatorSession` and sleeps on an injectable clock between due times.

Behaviour (see ``docs/realtime-emulator.md`` for the tables):

* Handshake ``session.created`` → ``conversation.created`` (each switchable), ``session.update``
  → ``session.updated`` with the effective session in the dialect's shape.
* Strict validation with the error events the real services send (nested or flat shape):
  unknown event, bad JSON, bad base64, parameters of another dialect, unsupported rates, audio
  before ``session.updated``, ``input_audio_buffer.commit`` under server VAD (xai), a commit of an
  empty buffer, ``response.cancel`` with nothing active, ``response.create`` during a response,
  an input format change after audio.
* Server VAD: an energy detector on the decoded input (10 ms frames; speech when the frame's
  level reaches ``-70 + 50 × threshold`` dBFS, so 0.5 → -45 dBFS and xAI's 0.85 → -27.5 dBFS),
  with ``prefix_padding_ms`` and ``silence_duration_ms`` as in OpenAI's docs.
* Scripted tool calls (``tool_calls``), barge-in, truncation, fault injection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import copy
import errno
import http
import logging
import math
import re
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import soxr
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from pipeline.clock import Clock, RealClock
from pipeline.frames import AudioFormat
from stages import g711
from stages.realtime.protocol import (
    CLIENT_EVENT_ALIASES,
    CLIENT_EVENTS,
    DEFAULT_MODEL,
    DEFAULT_VOICE,
    PCM_RATES,
    WIRE_FORMATS,
    Dialect,
    format_to_wire,
)

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorConnection",
    "EmulatorSession",
    "EnergyVad",
    "ToolCallScript",
    "add_parser",
    "run_emulator",
]

log = structlog.get_logger("pipeline.emulator")

# websockets' server logs every request header it receives (Authorization: Bearer <key>
# included) at debug level on ``websockets.server``: give it a logger of its own that never says
# more than warnings, as the client side does (stages.realtime.session).
_WS_LOGGER = logging.getLogger("pipeline.emulator.websocket")
_WS_LOGGER.setLevel(logging.WARNING)

Json = dict[str, Any]

# ----------------------------------------------------------------------------- config


class ToolCallScript(BaseModel):
    """One scripted function call: the response to user turn ``turn`` (1-based) calls ``name``
    with ``arguments`` instead of speaking, or, with ``say``, calls it and then speaks ``say``
    in the same response (as models do: "let me check that for you"), with the reply audio."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    turn: int = Field(ge=1)
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    say: str | None = None


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Every field has a default that models the real service."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: protocol dialect; ``auto``: ``openai-beta`` with an ``OpenAI-Beta: realtime=v1`` header,
    #: ``openai`` for a ``gpt-*`` model, else ``xai``
    dialect: Literal["xai", "openai", "openai-beta", "auto"] = "xai"
    #: refuse (HTTP 401) a connection without ``Authorization: Bearer <token>`` or an
    #: ``xai-client-secret.<token>`` subprotocol
    require_auth: bool = True
    #: answer every upgrade with this HTTP status (401 or 403, to test fatal auth errors)
    reject_status: int | None = None
    send_session_created: bool = True
    send_conversation_created: bool = True
    #: answer ``session.update`` with ``session.updated`` (False: never, as one integrator saw)
    ack_session_update: bool = True
    #: fault: hold ``session.updated`` back this long
    session_updated_delay_ms: int = Field(default=0, ge=0)
    error_shape: Literal["nested", "flat"] = "nested"
    #: ``error``: audio before ``session.updated`` is refused with an error event (strict);
    #: ``accept``: read at the current input format, as the real services do
    audio_before_session_updated: Literal["error", "accept"] = "error"
    #: reply audio: the caller's last utterance played back, or a sine
    reply: Literal["echo", "tone"] = "echo"
    #: reply transcript; ``{user}`` is replaced by the user's transcript (or text)
    reply_text: str = "You said: {user}"
    tone_ms: int = Field(default=1000, ge=0)
    tone_hz: float = Field(default=440.0, gt=0)
    #: audio per ``output_audio.delta``
    chunk_ms: int = Field(default=100, ge=1)
    #: delay between the response's start (``response.created``) and its first output
    think_ms: int = Field(default=0, ge=0)
    #: audio delivery speed: 0 = as fast as possible, 1.0 = real time
    pace: float = Field(default=0.0, ge=0)
    #: user transcripts, by turn; past the end: ``utterance N (1.23 s)``
    transcripts: tuple[str, ...] = ()
    tool_calls: tuple[ToolCallScript, ...] = ()
    #: copies of ``conversation.item.added`` per function_call item (Grok sends it, sometimes
    #: several times: clients de-duplicate by ``call_id``)
    function_call_item_added: int = Field(default=0, ge=0)
    #: ``{"type": "ping"}`` keep-alive period (0: off)
    ping_interval_ms: int = Field(default=0, ge=0)
    #: session limit: after this long, a ``session_expired`` error, then close code 1001
    #: (0: none; the real services allow 30 to 60 minutes)
    max_session_s: float = Field(default=0, ge=0)
    #: send ``rate_limits.updated`` after ``response.created`` (None: as the dialect does,
    #: i.e. OpenAI yes, xAI no)
    rate_limits: bool | None = None
    #: fault: after this many server events, drop the TCP connection (no close frame: 1006)
    close_after_events: int | None = Field(default=None, ge=0)
    #: fault: after this many server events, send one message that is not JSON
    malformed_after_events: int | None = Field(default=None, ge=0)


# ----------------------------------------------------------------------------- audio


def _dbfs(frame: np.ndarray[Any, np.dtype[np.int16]]) -> float:
    if frame.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(frame.astype(np.float64) ** 2)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


def vad_level_dbfs(threshold: float) -> float:
    """The frame level (dBFS) at and above which :class:`EnergyVad` calls a frame speech."""
    return -70.0 + 50.0 * threshold


@dataclass
class VadEvent:
    """``start`` (``ms`` = audio_start_ms, prefix padding included) or ``stop`` (``ms`` =
    audio_end_ms, silence included; ``speech_end_ms`` = end of the last speech frame)."""

    kind: Literal["start", "stop"]
    ms: int
    speech_end_ms: int = 0


class EnergyVad:
    """A deterministic energy detector with server VAD's semantics, on int16 samples.

    Times are milliseconds since the first sample of the session. ``start`` is reported at the
    first speech frame, back-dated by ``prefix_padding_ms`` (never before ``floor_ms``, the start
    of the uncommitted buffer); ``stop`` after ``silence_duration_ms`` without a speech frame.
    """

    FRAME_MS = 10

    def __init__(
        self,
        rate: int,
        threshold: float,
        prefix_padding_ms: int,
        silence_duration_ms: int,
        *,
        start_sample: int = 0,
    ) -> None:
        self.rate = rate
        self.level = vad_level_dbfs(threshold)
        self.prefix_padding_ms = prefix_padding_ms
        self.silence_duration_ms = silence_duration_ms
        self.floor_ms = 0
        self.in_speech = False
        self._frame = rate * self.FRAME_MS // 1000
        self._pending = np.zeros(0, dtype=np.int16)
        self._samples = start_sample  # samples consumed since the session started
        self._last_speech_end = 0

    def feed(self, samples: np.ndarray[Any, np.dtype[np.int16]]) -> list[VadEvent]:
        """Consume samples; return the starts and stops they complete, in order."""
        buf = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = buf.size // self._frame
        events: list[VadEvent] = []
        for i in range(n):
            frame = buf[i * self._frame : (i + 1) * self._frame]
            # times from sample counts, so rates like 22050 Hz do not drift
            start_ms = self._samples * 1000 // self.rate
            self._samples += self._frame
            end_ms = self._samples * 1000 // self.rate
            speech = _dbfs(frame) >= self.level
            if speech:
                self._last_speech_end = end_ms
                if not self.in_speech:
                    self.in_speech = True
                    padded = max(self.floor_ms, start_ms - self.prefix_padding_ms)
                    events.append(VadEvent("start", padded))
            elif self.in_speech:
                silent_ms = end_ms - self._last_speech_end
                if silent_ms >= max(self.silence_duration_ms, self.FRAME_MS):
                    self.in_speech = False
                    events.append(VadEvent("stop", end_ms, self._last_speech_end))
        self._pending = buf[n * self._frame :].copy()
        return events

    def reset(self, floor_ms: int) -> None:
        """Forget any speech in progress (the buffer was cleared at ``floor_ms``)."""
        self.in_speech = False
        self.floor_ms = floor_ms


def _tone(rate: int, ms: int, hz: float) -> bytes:
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    return (np.round(0.3 * 32767 * np.sin(2 * np.pi * hz * t))).astype("<i2").tobytes()


def _to_output(pcm: bytes, in_rate: int, out: AudioFormat) -> bytes:
    """pcm16 at ``in_rate`` → bytes in the output format (resampled, G.711-encoded as needed)."""
    if in_rate != out.rate and pcm:
        x = np.frombuffer(pcm, dtype="<i2")
        y = soxr.resample(x, in_rate, out.rate)
        pcm = np.asarray(y, dtype="<i2").tobytes()
    return g711.encode(pcm, out.encoding)


def _split_text(text: str, parts: int) -> list[str]:
    """``text`` in ``parts`` consecutive pieces on word boundaries (some may be empty); their
    concatenation is ``text``."""
    tokens = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    if parts <= 1 or len(tokens) <= 1:
        return [text] + [""] * max(parts - 1, 0)
    out = []
    for i in range(parts):
        # ceil boundaries: the first piece always has words, the rest spread evenly
        lo, hi = -(-i * len(tokens) // parts), -(-(i + 1) * len(tokens) // parts)
        out.append("".join(tokens[lo:hi]))
    return out


# ----------------------------------------------------------------------------- session state


@dataclass(frozen=True)
class _Vad:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    eagerness: str = "auto"


@dataclass
class _State:
    model: str
    voice: str
    instructions: str = ""
    input: AudioFormat = field(default_factory=lambda: AudioFormat("pcm16", 24000))
    output: AudioFormat = field(default_factory=lambda: AudioFormat("pcm16", 24000))
    vad: _Vad | None = None
    tools: list[Json] = field(default_factory=list)
    tool_choice: Any = "auto"
    transcription: Json | None = None
    modalities: list[str] = field(default_factory=lambda: ["audio"])
    temperature: float = 0.8
    speed: float = 1.0
    extra: Json = field(default_factory=dict)


def _default_state(dialect: Dialect, model: str) -> _State:
    if dialect == "xai":
        return _State(model=model, voice=DEFAULT_VOICE["xai"], vad=None, modalities=["audio"])
    if dialect == "openai":
        return _State(model=model, voice=DEFAULT_VOICE["openai"], vad=_Vad(silence_duration_ms=200))
    return _State(
        model=model, voice=DEFAULT_VOICE["openai-beta"], vad=_Vad(), modalities=["text", "audio"]
    )


_SESSION_KEYS: dict[Dialect, frozenset[str]] = {
    "xai": frozenset(
        {
            "instructions", "voice", "turn_detection", "audio", "tools", "tool_choice",
            "temperature", "modalities", "reasoning", "resumption", "replace", "model",
        }
    ),
    "openai": frozenset(
        {
            "type", "model", "output_modalities", "instructions", "audio", "tools",
            "tool_choice", "max_output_tokens", "tracing", "truncation", "prompt", "include",
        }
    ),
    "openai-beta": frozenset(
        {
            "model", "modalities", "instructions", "voice", "input_audio_format",
            "output_audio_format", "input_audio_transcription", "input_audio_noise_reduction",
            "turn_detection", "tools", "tool_choice", "temperature",
            "max_response_output_tokens", "speed", "tracing", "client_secret",
        }
    ),
}  # fmt: skip


class _ClientError(Exception):
    """A client message the server refuses: becomes an ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        *,
        type: str = "invalid_request_error",
        flat_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type
        self.flat_message = flat_message


def _unknown(param: str) -> _ClientError:
    return _ClientError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def _bad_value(param: str, value: Any, supported: str = "") -> _ClientError:
    msg = f"Invalid value: {orjson.dumps(value).decode()}."
    if supported:
        msg += f" Supported values are: {supported}."
    return _ClientError("invalid_value", msg, param)


def _check_keys(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _unknown(f"{prefix}.{key}")


def _parse_format(value: Any, dialect: Dialect, param: str) -> AudioFormat:
    if dialect == "openai-beta":
        names = {w.beta_name: w for w in WIRE_FORMATS.values()}
        if not isinstance(value, str) or value not in names:
            raise _bad_value(param, value, "'pcm16', 'g711_ulaw', and 'g711_alaw'")
        wire = names[value]
        return AudioFormat(wire.encoding, wire.fixed_rate or 24000)
    types = {w.ga_type: w for w in WIRE_FORMATS.values()}
    if not isinstance(value, Mapping):
        raise _bad_value(param, value)
    _check_keys(value, frozenset({"type", "rate"}), param)
    if value.get("type") not in types:
        raise _bad_value(
            f"{param}.type", value.get("type"), "'audio/pcm', 'audio/pcmu', 'audio/pcma'"
        )
    wire = types[value["type"]]
    rate = value.get("rate")
    if wire.fixed_rate is not None:
        if rate is not None and rate != wire.fixed_rate:
            raise _bad_value(f"{param}.rate", rate, str(wire.fixed_rate))
        return AudioFormat(wire.encoding, wire.fixed_rate)
    rates = PCM_RATES[dialect]
    if rate is None:
        rate = 24000
    if not isinstance(rate, int) or isinstance(rate, bool) or rate not in rates:
        raise _bad_value(f"{param}.rate", rate, ", ".join(str(r) for r in rates))
    return AudioFormat("pcm16", rate)


def _parse_vad(value: Any, dialect: Dialect, param: str) -> _Vad | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad_value(param, value)
    kind = value.get("type", "server_vad")
    if kind is None:
        if dialect != "xai":
            raise _bad_value(f"{param}.type", None, "'server_vad' and 'semantic_vad'")
        return None
    kinds = ("server_vad",) if dialect == "xai" else ("server_vad", "semantic_vad")
    if kind not in kinds:
        raise _bad_value(f"{param}.type", kind, ", ".join(f"'{k}'" for k in kinds))
    allowed = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"}
    if dialect != "xai":
        allowed |= {"create_response", "interrupt_response", "eagerness"}
    _check_keys(value, frozenset(allowed), param)
    base = _Vad(threshold=0.85, prefix_padding_ms=333) if dialect == "xai" else _Vad()
    if dialect == "openai":
        base = _Vad(silence_duration_ms=200)
    lo, hi = (0.1, 0.9) if dialect == "xai" else (0.0, 1.0)
    threshold = value.get("threshold", base.threshold)
    if not isinstance(threshold, int | float) or not lo <= threshold <= hi:
        raise _ClientError(
            "decimal_out_of_range" if isinstance(threshold, int | float) else "invalid_type",
            f"Invalid '{param}.threshold': expected a number between {lo} and {hi}, "
            f"got {threshold!r}.",
            f"{param}.threshold",
        )
    ints: dict[str, int] = {}
    for key in ("prefix_padding_ms", "silence_duration_ms"):
        v = value.get(key, getattr(base, key))
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10000:
            raise _ClientError(
                "integer_out_of_range",
                f"Invalid '{param}.{key}': expected an integer between 0 and 10000, got {v!r}.",
                f"{param}.{key}",
            )
        ints[key] = v
    if kind == "semantic_vad":
        # semantic VAD has no silence setting; its eagerness maps onto one
        eager = value.get("eagerness", "auto")
        ints["silence_duration_ms"] = {"low": 1500, "medium": 800, "high": 300}.get(eager, 500)
    return _Vad(
        type=str(kind),
        threshold=float(threshold),
        prefix_padding_ms=ints["prefix_padding_ms"],
        silence_duration_ms=ints["silence_duration_ms"],
        create_response=bool(value.get("create_response", True)),
        interrupt_response=bool(value.get("interrupt_response", True)),
        idle_timeout_ms=value.get("idle_timeout_ms"),
        eagerness=str(value.get("eagerness", "auto")),
    )


def _parse_tools(value: Any, param: str) -> list[Json]:
    if not isinstance(value, list):
        raise _bad_value(param, value)
    for i, tool in enumerate(value):
        if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
            raise _ClientError(
                "missing_required_parameter",
                f"Missing required parameter: '{param}[{i}].type'.",
                f"{param}[{i}].type",
            )
        if tool["type"] == "function":
            if "function" in tool:
                # the Chat Completions nesting; realtime tools are flat
                raise _unknown(f"{param}[{i}].function")
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise _ClientError(
                    "missing_required_parameter",
                    f"Missing required parameter: '{param}[{i}].name'.",
                    f"{param}[{i}].name",
                )
    return [dict(t) for t in value]


def _apply_update(state: _State, session: Any, dialect: Dialect) -> _State:
    """The state after a ``session.update``; raises _ClientError and leaves ``state`` alone."""
    if not isinstance(session, Mapping):
        raise _ClientError(
            "missing_required_parameter", "Missing required parameter: 'session'.", "session"
        )
    _check_keys(session, _SESSION_KEYS[dialect], "session")
    new = copy.deepcopy(state)
    if dialect == "openai":
        if "type" not in session:
            raise _ClientError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
            )
        if session["type"] != "realtime":
            raise _bad_value("session.type", session["type"], "'realtime'")
        if isinstance(session.get("model"), str):
            new.model = session["model"]
    if isinstance(session.get("instructions"), str):
        new.instructions = session["instructions"]
    elif "instructions" in session:
        raise _bad_value("session.instructions", session["instructions"])
    if "tools" in session:
        new.tools = _parse_tools(session["tools"], "session.tools")
    if "tool_choice" in session:
        new.tool_choice = session["tool_choice"]
    if dialect == "openai-beta":
        if "voice" in session:
            new.voice = str(session["voice"])
        if "input_audio_format" in session:
            new.input = _parse_format(
                session["input_audio_format"], dialect, "session.input_audio_format"
            )
        if "output_audio_format" in session:
            new.output = _parse_format(
                session["output_audio_format"], dialect, "session.output_audio_format"
            )
        if "turn_detection" in session:
            new.vad = _parse_vad(session["turn_detection"], dialect, "session.turn_detection")
        if "input_audio_transcription" in session:
            new.transcription = session["input_audio_transcription"]
        if "modalities" in session:
            new.modalities = list(session["modalities"])
        if "temperature" in session:
            new.temperature = float(session["temperature"])
        return new
    if dialect == "xai":
        if "voice" in session:
            if not isinstance(session["voice"], str) or not session["voice"]:
                raise _bad_value("session.voice", session["voice"])
            new.voice = session["voice"]
        if "turn_detection" in session:
            new.vad = _parse_vad(session["turn_detection"], dialect, "session.turn_detection")
        for key in ("reasoning", "resumption", "replace"):
            if key in session:
                new.extra[key] = session[key]
    elif "output_modalities" in session:
        mods = session["output_modalities"]
        if not isinstance(mods, list) or not mods or not set(mods) <= {"audio", "text"}:
            raise _bad_value("session.output_modalities", mods, "['audio'], ['text']")
        new.modalities = list(mods)
    audio = session.get("audio")
    if audio is not None:
        if not isinstance(audio, Mapping):
            raise _bad_value("session.audio", audio)
        _check_keys(audio, frozenset({"input", "output"}), "session.audio")
        a_in, a_out = audio.get("input") or {}, audio.get("output") or {}
        in_keys = {"format", "transcription"}
        out_keys = {"format"}
        if dialect == "openai":
            in_keys |= {"turn_detection", "noise_reduction"}
            out_keys |= {"voice", "speed"}
        else:
            in_keys |= {"transport"}
            out_keys |= {"speed", "transport"}
        _check_keys(a_in, frozenset(in_keys), "session.audio.input")
        _check_keys(a_out, frozenset(out_keys), "session.audio.output")
        if "format" in a_in:
            new.input = _parse_format(a_in["format"], dialect, "session.audio.input.format")
        if "format" in a_out:
            new.output = _parse_format(a_out["format"], dialect, "session.audio.output.format")
        if "transcription" in a_in:
            new.transcription = a_in["transcription"]
        if "turn_detection" in a_in:
            new.vad = _parse_vad(
                a_in["turn_detection"], dialect, "session.audio.input.turn_detection"
            )
        if "voice" in a_out:
            new.voice = str(a_out["voice"])
        if "speed" in a_out:
            new.speed = float(a_out["speed"])
    return new


def _vad_wire(vad: _Vad | None, dialect: Dialect) -> Json | None:
    if vad is None:
        return {"type": None} if dialect == "xai" else None
    out: Json = {"type": vad.type}
    if vad.type == "semantic_vad":
        out["eagerness"] = vad.eagerness
    else:
        out |= {
            "threshold": vad.threshold,
            "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms,
        }
    if dialect == "xai":
        if vad.idle_timeout_ms is not None:
            out["idle_timeout_ms"] = vad.idle_timeout_ms
        return out
    out["create_response"] = vad.create_response
    out["interrupt_response"] = vad.interrupt_response
    if dialect == "openai" and vad.type == "server_vad":
        out["idle_timeout_ms"] = vad.idle_timeout_ms
    return out


def _session_wire(state: _State, dialect: Dialect, session_id: str) -> Json:
    """The session object of ``session.created`` / ``session.updated`` in the dialect's shape."""
    if dialect == "openai-beta":
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": state.model,
            "expires_at": 0,
            "modalities": state.modalities,
            "instructions": state.instructions,
            "voice": state.voice,
            "input_audio_format": format_to_wire(state.input, dialect),
            "output_audio_format": format_to_wire(state.output, dialect),
            "input_audio_transcription": state.transcription,
            "input_audio_noise_reduction": None,
            "turn_detection": _vad_wire(state.vad, dialect),
            "tools": state.tools,
            "tool_choice": state.tool_choice,
            "temperature": state.temperature,
            "max_response_output_tokens": "inf",
            "speed": state.speed,
            "tracing": None,
        }
    if dialect == "openai":
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": state.model,
            "output_modalities": state.modalities,
            "instructions": state.instructions,
            "audio": {
                "input": {
                    "format": format_to_wire(state.input, dialect),
                    "noise_reduction": None,
                    "transcription": state.transcription,
                    "turn_detection": _vad_wire(state.vad, dialect),
                },
                "output": {
                    "format": format_to_wire(state.output, dialect),
                    "voice": state.voice,
                    "speed": state.speed,
                },
            },
            "tools": state.tools,
            "tool_choice": state.tool_choice,
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "include": None,
        }
    audio_in: Json = {"format": format_to_wire(state.input, dialect)}
    if state.transcription is not None:
        audio_in["transcription"] = state.transcription
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": state.model,
        "instructions": state.instructions,
        "voice": state.voice,
        "modalities": state.modalities,
        "turn_detection": _vad_wire(state.vad, dialect),
        "audio": {"input": audio_in, "output": {"format": format_to_wire(state.output, dialect)}},
        "tools": state.tools,
        **state.extra,
    }


# ----------------------------------------------------------------------------- the core

_RATE_LIMITS: list[Json] = [
    {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
    {"name": "tokens", "limit": 50000, "remaining": 49950, "reset_seconds": 60.0},
]


@dataclass
class _Out:
    due: float
    seq: int
    event: Json
    response_id: str | None = None
    on_release: Callable[[], None] | None = None


@dataclass
class _Response:
    id: str
    items: list[Json] = field(default_factory=list)  # output items released (added)
    done_items: set[str] = field(default_factory=set)
    transcript_sent: dict[str, str] = field(default_factory=dict)


#: Server event names per dialect; ``part.*`` is the content type inside items (the
#: ``content_part`` events say ``audio`` / ``text`` in every dialect, as the GA SDK types do).
_EVENT_NAMES: dict[Dialect, dict[str, str]] = {
    "xai": {
        "audio.delta": "response.output_audio.delta",
        "audio.done": "response.output_audio.done",
        "transcript.delta": "response.output_audio_transcript.delta",
        "transcript.done": "response.output_audio_transcript.done",
        "text.delta": "response.text.delta",
        "text.done": "response.text.done",
        "item.added": "conversation.item.added",
        "part.audio": "audio",
        "part.text": "text",
    },
    "openai": {
        "audio.delta": "response.output_audio.delta",
        "audio.done": "response.output_audio.done",
        "transcript.delta": "response.output_audio_transcript.delta",
        "transcript.done": "response.output_audio_transcript.done",
        "text.delta": "response.output_text.delta",
        "text.done": "response.output_text.done",
        "item.added": "conversation.item.added",
        "part.audio": "output_audio",
        "part.text": "output_text",
    },
    "openai-beta": {
        "audio.delta": "response.audio.delta",
        "audio.done": "response.audio.done",
        "transcript.delta": "response.audio_transcript.delta",
        "transcript.done": "response.audio_transcript.done",
        "text.delta": "response.text.delta",
        "text.done": "response.text.done",
        "item.added": "conversation.item.created",
        "part.audio": "audio",
        "part.text": "text",
    },
}


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
        self.model = model or DEFAULT_MODEL[dialect]
        self.names = _EVENT_NAMES[dialect]
        self.received: list[Json] = []
        self.warnings: list[str] = []
        self.state = _default_state(dialect, self.model)
        # Shared by every connection of one server: ids stay unique across reconnects, so a
        # client de-duplicating by call_id never mistakes a new call for a repeat.
        self._counters: dict[str, int] = {} if counters is None else counters
        self._queue: list[_Out] = []
        self._seq = 0
        self._now = 0.0
        self.session_id = self._id("sess")
        self.conversation_id = self._id("conv")
        self.configured = False  # session.updated released
        self._audio_seen = False
        # the session's input from the last commit on, pcm16 at the input rate; sample indexes
        # count from the session's first sample (_pcm[0] is sample _pcm_offset)
        self._pcm = bytearray()
        self._pcm_offset = 0
        self._buffer_start = 0  # sample index where the uncommitted buffer starts
        self._vad: EnergyVad | None = None
        self._vad_item: str | None = None
        self._speech_start_ms = 0
        self._turn = 0
        self._last_user_pcm = b""
        self._last_user_text = ""
        self._items: dict[str, Json] = {}
        self._last_item: str | None = None
        self._audio_ms: dict[str, int] = {}  # assistant item -> ms of audio sent
        self._response: _Response | None = None
        self._calls: dict[str, str] = {}  # call_id -> tool name
        self._outputs: list[tuple[str, str]] = []  # (tool name, output) not yet answered
        self._scripted_turns: set[int] = set()
        self._next_ping: float | None = None
        self._expires_at: float | None = None
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
        self._seq += 1
        due = self._now if at is None else at
        self._queue.append(_Out(due, self._seq, event, response_id, on_release))

    def next_deadline(self) -> float | None:
        """The clock time of the next queued event, ping or session expiry (None: nothing
        until a message)."""
        times = [o.due for o in self._queue]
        if self._next_ping is not None:
            times.append(self._next_ping)
        if self._expires_at is not None and not self.expired:
            times.append(self._expires_at)
        return min(times) if times else None

    def _expire(self) -> None:
        self.expired = True
        self._queue.clear()
        self._next_ping = None
        limit = self.config.max_session_s
        span = f"{limit / 60:g} minutes" if limit % 60 == 0 else f"{limit:g} seconds"
        self._error(
            _ClientError("session_expired", f"Your session hit the maximum duration of {span}.")
        )

    def release(self, now: float) -> list[Json]:
        """The events due by ``now``, in order, each with its ``event_id``."""
        self._now = now
        out: list[Json] = []
        if self._expires_at is not None and now >= self._expires_at and not self.expired:
            self._expire()
        while True:
            if self._next_ping is not None and self._next_ping <= now:
                out.append({"type": "ping", "timestamp": round(self._next_ping * 1000)})
                self._next_ping += self.config.ping_interval_ms / 1000
                continue
            due = [o for o in self._queue if o.due <= now]
            if not due:
                return out
            first = min(due, key=lambda o: (o.due, o.seq))
            self._queue.remove(first)
            event = first.event
            out.append({"type": event["type"], "event_id": self._id("evt"), **event})
            if first.on_release is not None:
                first.on_release()

    # -- errors

    def _error(self, err: _ClientError, client_event_id: Any = None) -> None:
        if self.config.error_shape == "flat":
            self._emit(
                {
                    "type": "error",
                    "code": err.code,
                    "message": err.flat_message or err.message,
                    "params": err.message if err.flat_message else err.param,
                    "previous_item_id": None,
                }
            )
            return
        self._emit(
            {
                "type": "error",
                "error": {
                    "type": err.type,
                    "code": err.code,
                    "message": err.message,
                    "param": err.param,
                    "event_id": client_event_id if isinstance(client_event_id, str) else None,
                },
            }
        )

    # -- handshake

    def open(self, now: float) -> None:
        """The socket is open: queue ``session.created`` and ``conversation.created``."""
        self._now = now
        if self.config.send_session_created:
            self._emit(
                {
                    "type": "session.created",
                    "session": _session_wire(self.state, self.dialect, self.session_id),
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

    # -- client messages

    def receive(self, message: str | bytes, now: float) -> None:
        """Handle one client message; queue what it causes (see ``release``)."""
        self._now = now
        if isinstance(message, bytes):
            self._error(
                _ClientError(
                    "invalid_json",
                    f"Expected a JSON text message, got a {len(message)}-byte binary message.",
                )
            )
            return
        try:
            event = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._error(_ClientError("invalid_json", f"Invalid JSON: {exc}."))
            return
        if not isinstance(event, dict):
            self._error(_ClientError("invalid_json", "Expected a JSON object."))
            return
        self.received.append(event)
        eid = event.get("event_id")
        try:
            self._dispatch(event)
        except _ClientError as err:
            self._error(err, eid)
        except Exception as exc:  # an emulator bug: say so on the wire and in the log
            log.exception("emulator.bug", type=event.get("type"))
            self._error(
                _ClientError("server_error", f"emulator bug: {exc!r}", type="server_error"), eid
            )

    def _dispatch(self, event: Json) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise _ClientError(
                "missing_required_parameter", "Missing required parameter: 'type'.", "type"
            )
        if kind in CLIENT_EVENT_ALIASES:
            real = CLIENT_EVENT_ALIASES[kind]
            note = f"'{kind}' is not a current event name; handled as '{real}'"
            self.warnings.append(note)
            log.warning("emulator.alias", name=kind, handled_as=real)
            kind = real
        supported = sorted(CLIENT_EVENTS - {"output_audio_buffer.clear"})
        if self.dialect == "xai":
            supported.remove("conversation.item.retrieve")
        if kind not in supported:
            raise _bad_value("type", kind, ", ".join(f"'{s}'" for s in supported))
        handler = getattr(self, "_on_" + kind.replace(".", "_"))
        handler(event)

    def _on_session_update(self, event: Json) -> None:
        new = _apply_update(self.state, event.get("session"), self.dialect)
        if self._audio_seen and new.input != self.state.input:
            a, b = self.state.input, new.input
            raise _ClientError(
                "internal_error",
                f"Multiple frame rates in the concatenated frames: {{{a.rate}, {b.rate}}}"
                if a.rate != b.rate
                else f"Input format changed from {a} to {b} after audio was received.",
                "session.input_audio_format"
                if self.dialect == "openai-beta"
                else "session.audio.input.format",
                type="server_error",
                flat_message="ValueError",
            )
        self.state = new
        if new.vad is None:
            self._vad = None
        elif self._vad is None or self._vad.rate != new.input.rate or self._vad_changed(new.vad):
            floor = self._ms(self._buffer_start)
            self._vad = EnergyVad(
                new.input.rate,
                new.vad.threshold,
                new.vad.prefix_padding_ms,
                new.vad.silence_duration_ms,
                start_sample=self._samples_in,
            )
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
                "session": _session_wire(self.state, self.dialect, self.session_id),
            },
            at=self._now + self.config.session_updated_delay_ms / 1000,
            on_release=ready,
        )

    def _vad_changed(self, vad: _Vad) -> bool:
        assert self._vad is not None
        return (
            self._vad.level != vad_level_dbfs(vad.threshold)
            or self._vad.prefix_padding_ms != vad.prefix_padding_ms
            or self._vad.silence_duration_ms != vad.silence_duration_ms
        )

    @property
    def _samples_in(self) -> int:
        """Input samples received in this session."""
        return self._pcm_offset + len(self._pcm) // 2

    def _input(self, start: int, end: int) -> bytes:
        """Input samples [start, end) (session sample indexes) as pcm16 bytes."""
        lo, hi = start - self._pcm_offset, end - self._pcm_offset
        return bytes(self._pcm[2 * max(lo, 0) : 2 * max(hi, 0)])

    def _drop_input_before(self, sample: int) -> None:
        # committed audio is never read again: keep memory flat in long sessions
        cut = sample - self._pcm_offset
        if cut > 0:
            del self._pcm[: 2 * cut]
            self._pcm_offset = sample

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.state.input.rate

    def _on_input_audio_buffer_append(self, event: Json) -> None:
        audio = event.get("audio")
        fmt = self.state.input
        try:
            if not isinstance(audio, str):
                raise ValueError
            data = base64.b64decode(audio, validate=True)
            if fmt.encoding == "pcm16" and len(data) % 2:
                raise ValueError
        except (binascii.Error, ValueError):
            what = "mono PCM16" if fmt.encoding == "pcm16" else f"mono {fmt.encoding}"
            raise _ClientError(
                "invalid_value",
                f"Invalid 'audio'. Expected base64-encoded audio bytes ({what} at "
                f"{fmt.rate // 1000 if fmt.rate % 1000 == 0 else fmt.rate / 1000}kHz) but got an "
                "invalid value.",
                "audio",
            ) from None
        if not self.configured and self.config.audio_before_session_updated == "error":
            raise _ClientError(
                "audio_before_session_updated",
                "input_audio_buffer.append before session.updated: the emulator drops this "
                f"audio ({len(data)} bytes; xAI would read it as 24000 Hz PCM); wait for "
                "session.updated before sending audio.",
                "audio",
            )
        self._audio_seen = True
        pcm = g711.decode(data, fmt.encoding)
        self._pcm += pcm
        if self._vad is None or self.state.vad is None:
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
        vad = self.state.vad
        if self._response is not None and vad is not None and vad.interrupt_response:
            self._cancel("turn_detected")

    def _speech_stopped(self, ev: VadEvent) -> None:
        item_id = self._vad_item or self._id("item")
        self._vad_item = None
        self._emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.ms, "item_id": item_id}
        )
        rate = self.state.input.rate
        start = self._buffer_start
        end = min(self._samples_in, ev.ms * rate // 1000)
        speech_end = min(end, ev.speech_end_ms * rate // 1000)
        # the utterance starts where speech_started said (prefix padding included)
        started = max(start, self._speech_start_ms * rate // 1000)
        self._commit(item_id, self._input(started, speech_end), end)
        vad = self.state.vad
        if vad is not None and vad.create_response and self._response is None:
            self._start_response()

    def _commit(self, item_id: str, pcm: bytes, end_sample: int) -> None:
        self._buffer_start = end_sample
        self._drop_input_before(end_sample)
        if self._vad is not None:
            self._vad.reset(self._ms(end_sample))
        self._turn += 1
        previous = None if self.dialect == "xai" else self._last_item
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
        seconds = len(pcm) / 2 / self.state.input.rate
        n = self._turn
        if n <= len(self.config.transcripts):
            text = self.config.transcripts[n - 1]
        else:
            text = f"utterance {n} ({seconds:.2f} s)"
        self._last_user_pcm = bytes(pcm)
        self._last_user_text = text
        usage = {"type": "duration", "seconds": round(seconds, 3)}
        if self.dialect == "xai" or self.state.transcription is not None:
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": text,
                    **({} if self.dialect == "xai" else {"usage": usage}),
                }
            )

    def _add_item(self, item: Json) -> None:
        previous = None if self.dialect == "xai" else self._last_item
        self._items[item["id"]] = item
        self._last_item = item["id"]
        self._emit({"type": self.names["item.added"], "previous_item_id": previous, "item": item})
        if self.dialect == "openai":
            self._emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )

    def _on_input_audio_buffer_commit(self, event: Json) -> None:
        if self.state.vad is not None and self.dialect == "xai":
            raise _ClientError(
                "invalid_request",
                "input_audio_buffer.commit is only available when turn_detection type is null.",
                "type",
            )
        rate = self.state.input.rate
        start, end = self._buffer_start, self._samples_in
        ms = (end - start) * 1000 / rate
        if ms < 100:
            raise _ClientError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        self._commit(self._id("item"), self._input(start, end), end)

    def _on_input_audio_buffer_clear(self, event: Json) -> None:
        self._buffer_start = self._samples_in
        self._drop_input_before(self._buffer_start)
        self._vad_item = None
        if self._vad is not None:
            self._vad.reset(self._ms(self._buffer_start))
        self._emit({"type": "input_audio_buffer.cleared"})

    def _on_conversation_item_create(self, event: Json) -> None:
        item = event.get("item")
        if not isinstance(item, Mapping):
            raise _ClientError(
                "missing_required_parameter", "Missing required parameter: 'item'.", "item"
            )
        kind = item.get("type")
        types = ["message", "function_call", "function_call_output"]
        if self.dialect == "xai":
            types.append("force_message")
        if kind not in types:
            raise _bad_value("item.type", kind, ", ".join(f"'{t}'" for t in types))
        item_id = item.get("id") or self._id("item")
        if item_id in self._items:
            raise _ClientError(
                "item_id_already_exists", f"Item with id '{item_id}' already exists.", "item.id"
            )
        stored: Json = {"id": item_id, "object": "realtime.item", **dict(item)}
        stored["id"] = item_id
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self._calls:
                raise _ClientError(
                    "invalid_value",
                    f"Tool call ID '{call_id}' not found in conversation.",
                    "item.call_id",
                )
            output = item.get("output")
            if not isinstance(output, str):
                raise _bad_value("item.output", output)
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
            return
        role = item.get("role")
        if kind == "message" and role not in ("user", "assistant", "system"):
            raise _bad_value("item.role", role, "'user', 'assistant', 'system'")
        content = item.get("content")
        if kind == "message" and not isinstance(content, list):
            raise _bad_value("item.content", content)
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

    def _on_conversation_item_retrieve(self, event: Json) -> None:
        item_id = event.get("item_id")
        if item_id not in self._items:
            raise _ClientError(
                "invalid_value", f"Item with item_id not found: {item_id}", "item_id"
            )
        self._emit({"type": "conversation.item.retrieved", "item": self._items[item_id]})

    def _on_conversation_item_delete(self, event: Json) -> None:
        item_id = event.get("item_id")
        if item_id not in self._items:
            raise _ClientError(
                "invalid_value", f"Item with item_id not found: {item_id}", "item_id"
            )
        del self._items[item_id]
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_truncate(self, event: Json) -> None:
        item_id = event.get("item_id")
        if item_id not in self._audio_ms:
            raise _ClientError(
                "invalid_value",
                f"Item with item_id not found or has no assistant audio: {item_id}",
                "item_id",
            )
        end = event.get("audio_end_ms")
        if not isinstance(end, int) or isinstance(end, bool) or end < 0:
            raise _bad_value("audio_end_ms", end)
        have = self._audio_ms[item_id]
        if end > have:
            raise _ClientError(
                "invalid_value",
                f"Audio content of {have}ms is shorter than requested audio_end_ms {end}ms",
                "audio_end_ms",
            )
        index = event.get("content_index", 0)
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": index,
                "audio_end_ms": end,
            }
        )

    def _on_response_cancel(self, event: Json) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted is not None and wanted != self._response.id):
            raise _ClientError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        self._cancel("client_cancelled")

    def _on_response_create(self, event: Json) -> None:
        if self._response is not None:
            raise _ClientError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        params = event.get("response") or {}
        if not isinstance(params, Mapping):
            raise _bad_value("response", params)
        key = "output_modalities" if self.dialect == "openai" else "modalities"
        mods = params.get(key)
        self._start_response(modalities=list(mods) if isinstance(mods, list) else None)

    # -- responses

    def _start_response(
        self, *, modalities: list[str] | None = None, text_override: str | None = None
    ) -> None:
        resp = _Response(self._id("resp"))
        self._response = resp
        mods = modalities or self.state.modalities
        self._emit(
            {
                "type": "response.created",
                "response": self._response_obj(resp, "in_progress", None, []),
            }
        )
        rate_limits = self.config.rate_limits
        if rate_limits or (rate_limits is None and self.dialect != "xai"):
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
        if "audio" in mods:
            self._audio_message(resp, text, t)
        else:
            self._text_message(resp, text, t)

    def _response_obj(
        self, resp: _Response, status: str, details: Json | None, output: list[Json]
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
        if self.dialect == "openai":
            obj["conversation_id"] = self.conversation_id
            obj["output_modalities"] = self.state.modalities
        return obj

    def _released(self, resp: _Response, event_type: str, item: Json) -> Callable[[], None]:
        def hook() -> None:
            if event_type == "response.output_item.added":
                resp.items.append(item)
            elif event_type == "response.output_item.done":
                resp.done_items.add(item["id"])

        return hook

    def _finish(self, resp: _Response) -> Callable[[], None]:
        def hook() -> None:
            if self._response is resp:
                self._response = None

        return hook

    def _audio_reply(self) -> tuple[bytes, int]:
        """The reply as pcm16 bytes at some rate."""
        if self.config.reply == "echo" and self._last_user_pcm:
            return self._last_user_pcm, self.state.input.rate
        rate = self.state.output.rate
        return _tone(rate, self.config.tone_ms, self.config.tone_hz), rate

    def _message_item(self, item_id: str, status: str, part: Json) -> Json:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part] if part else [],
        }

    def _audio_message(
        self,
        resp: _Response,
        text: str,
        t: float,
        *,
        index: int = 0,
        before: list[Json] | None = None,
    ) -> None:
        """An audio message item at ``output_index`` ``index``, then ``response.done`` (whose
        output lists ``before``, the items already sent in this response, then this one)."""
        rid = resp.id
        item_id = self._id("item")
        self._audio_ms[item_id] = 0
        pcm, rate = self._audio_reply()
        audio = _to_output(pcm, rate, self.state.output)
        out = self.state.output
        width = 2 if out.encoding == "pcm16" else 1
        step = out.rate * self.config.chunk_ms // 1000 * width
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)] or [b""]
        pieces = _split_text(text, len(chunks))
        item_part = self.names["part.audio"]
        added = self._message_item(item_id, "in_progress", {})
        base = {"response_id": rid, "item_id": item_id, "output_index": index, "content_index": 0}
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": index,
                "item": added,
            },
            at=t,
            response_id=rid,
            on_release=self._released(resp, "response.output_item.added", added),
        )
        self._emit(
            {
                "type": "response.content_part.added",
                **base,
                "part": {"type": "audio", "transcript": ""},
            },
            at=t,
            response_id=rid,
        )
        period = self.config.chunk_ms / 1000 * self.config.pace
        for i, (chunk, piece) in enumerate(zip(chunks, pieces, strict=True)):
            at = t + i * period
            ms = len(chunk) // width * 1000 // out.rate

            def sent(ms: int = ms, piece: str = piece) -> None:
                self._audio_ms[item_id] += ms
                resp.transcript_sent[item_id] = resp.transcript_sent.get(item_id, "") + piece

            self._emit(
                {
                    "type": self.names["audio.delta"],
                    **base,
                    "delta": base64.b64encode(chunk).decode(),
                },
                at=at,
                response_id=rid,
                on_release=sent,
            )
            if piece:
                self._emit(
                    {"type": self.names["transcript.delta"], **base, "delta": piece},
                    at=at,
                    response_id=rid,
                )
        end = t + (len(chunks) - 1) * period
        part = {"type": "audio", "transcript": text}
        done = self._message_item(item_id, "completed", {**part, "type": item_part})
        self._emit({"type": self.names["audio.done"], **base}, at=end, response_id=rid)
        self._emit(
            {"type": self.names["transcript.done"], **base, "transcript": text},
            at=end,
            response_id=rid,
        )
        self._emit(
            {"type": "response.content_part.done", **base, "part": part}, at=end, response_id=rid
        )
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": rid,
                "output_index": index,
                "item": done,
            },
            at=end,
            response_id=rid,
            on_release=self._released(resp, "response.output_item.done", done),
        )
        self._items[item_id] = done
        self._emit(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "completed", None, [*(before or ()), done]),
            },
            at=end,
            response_id=rid,
            on_release=self._finish(resp),
        )

    def _text_message(self, resp: _Response, text: str, t: float) -> None:
        rid = resp.id
        item_id = self._id("item")
        item_part = self.names["part.text"]
        added = self._message_item(item_id, "in_progress", {})
        base = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": rid,
                "output_index": 0,
                "item": added,
            },
            at=t,
            response_id=rid,
            on_release=self._released(resp, "response.output_item.added", added),
        )
        self._emit(
            {
                "type": "response.content_part.added",
                **base,
                "part": {"type": "text", "text": ""},
            },
            at=t,
            response_id=rid,
        )
        for piece in re.findall(r"\s*\S+", text) or [text]:
            self._emit(
                {"type": self.names["text.delta"], **base, "delta": piece}, at=t, response_id=rid
            )
        part = {"type": "text", "text": text}
        done = self._message_item(item_id, "completed", {**part, "type": item_part})
        self._emit({"type": self.names["text.done"], **base, "text": text}, at=t, response_id=rid)
        self._emit(
            {"type": "response.content_part.done", **base, "part": part}, at=t, response_id=rid
        )
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": rid,
                "output_index": 0,
                "item": done,
            },
            at=t,
            response_id=rid,
            on_release=self._released(resp, "response.output_item.done", done),
        )
        self._items[item_id] = done
        self._emit(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "completed", None, [done]),
            },
            at=t,
            response_id=rid,
            on_release=self._finish(resp),
        )

    def _function_calls(self, resp: _Response, script: list[ToolCallScript], t: float) -> None:
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
            self._emit(
                {
                    "type": "response.output_item.added",
                    "response_id": rid,
                    "output_index": index,
                    "item": item,
                },
                at=t,
                response_id=rid,
                on_release=self._released(resp, "response.output_item.added", item),
            )
            for _ in range(self.config.function_call_item_added):
                self._emit(
                    {"type": self.names["item.added"], "previous_item_id": None, "item": item},
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
            self._items[item_id] = done
            done_items.append(done)
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": rid,
                    "output_index": index,
                    "item": done,
                },
                at=t,
                response_id=rid,
                on_release=self._released(resp, "response.output_item.done", done),
            )
        say = " ".join(c.say for c in script if c.say)
        if say and "audio" in self.state.modalities:
            self._audio_message(resp, say, t, index=len(script), before=done_items)
            return
        self._emit(
            {
                "type": "response.done",
                "response": self._response_obj(resp, "completed", None, done_items),
            },
            at=t,
            response_id=rid,
            on_release=self._finish(resp),
        )

    def _cancel(self, reason: str) -> None:
        resp = self._response
        assert resp is not None
        self._response = None
        self._queue = [o for o in self._queue if o.response_id != resp.id]
        output: list[Json] = []
        for index, item in enumerate(resp.items):
            if item["type"] == "message":
                said = resp.transcript_sent.get(item["id"], "")
                part = {"type": self.names["part.audio"], "transcript": said}
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


# ----------------------------------------------------------------------------- the server


@dataclass
class EmulatorConnection:
    """One client connection: what it asked for and every event each way (parsed)."""

    index: int
    dialect: Dialect
    model: str
    path: str
    headers: Headers = field(repr=False)  # holds the client's Authorization header
    subprotocol: str | None
    session: EmulatorSession
    sent: list[Json] = field(default_factory=list)
    closed: bool = False
    aborted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @property
    def received(self) -> list[Json]:
        """Every client event received on this connection, parsed, in order."""
        return self.session.received


class Emulator:
    """A running emulator (from :func:`run_emulator`): its ``url``, its connections and what
    they exchanged, and ``wait_for`` / ``wait_sent`` to await a condition without sleeping."""

    def __init__(self, config: EmulatorConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.url = ""
        self.port = 0
        self.connections: list[EmulatorConnection] = []
        self._ids: dict[str, int] = {}
        self._changed = asyncio.Event()

    @property
    def received(self) -> list[Json]:
        """Every client event received, parsed, in order (all connections; see
        ``connections[i].received`` for one)."""
        return [e for c in self.connections for e in c.received]

    @property
    def sent(self) -> list[Json]:
        """Every server event sent (all connections, connection by connection)."""
        return [e for c in self.connections for e in c.sent]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[Emulator], bool], timeout: float = 5.0) -> None:
        """Return once ``predicate(self)`` holds (checked after every message each way);
        TimeoutError after ``timeout`` real seconds (a safety net for tests, not a delay)."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                await self._changed.wait()

    async def wait_for(
        self, predicate: Callable[[list[Json]], bool], timeout: float = 5.0
    ) -> list[Json]:
        """Wait until ``predicate(received)`` holds for the client events received so far."""
        await self.wait(lambda emu: predicate(emu.received), timeout)
        return self.received

    async def wait_sent(
        self, predicate: Callable[[list[Json]], bool], timeout: float = 5.0
    ) -> list[Json]:
        """Wait until ``predicate(sent)`` holds for the server events sent so far."""
        await self.wait(lambda emu: predicate(emu.sent), timeout)
        return self.sent

    # -- HTTP upgrade

    def _dialect(self, request: Request, model: str | None) -> Dialect:
        if self.config.dialect != "auto":
            return self.config.dialect
        if request.headers.get("OpenAI-Beta", "").strip().lower() == "realtime=v1":
            return "openai-beta"
        if model and model.startswith("gpt-"):
            return "openai"
        return "xai"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        if url.path.rstrip("/") != "/v1/realtime":
            return _http_error(connection, http.HTTPStatus.NOT_FOUND, f"no route {url.path}")
        if self.config.reject_status is not None:
            status = http.HTTPStatus(self.config.reject_status)
            return _http_error(connection, status, "rejected by the emulator's reject_status")
        if not self.config.require_auth:
            return None
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return None
        for offered in request.headers.get_all("Sec-WebSocket-Protocol"):
            for proto in offered.split(","):
                if proto.strip().startswith("xai-client-secret.") and len(proto.strip()) > 18:
                    return None
        return _http_error(
            connection,
            http.HTTPStatus.UNAUTHORIZED,
            "Missing bearer authentication: send 'Authorization: Bearer <key>' or the "
            "'xai-client-secret.<token>' subprotocol",
        )

    @staticmethod
    def _select_subprotocol(
        connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        for proto in offered:
            if proto.startswith("xai-client-secret."):
                return proto
        return None

    # -- a connection

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        model = query["model"][0] if query.get("model") else None
        dialect = self._dialect(request, model)
        session = EmulatorSession(self.config, dialect=dialect, model=model, counters=self._ids)
        conn = EmulatorConnection(
            index=len(self.connections),
            dialect=dialect,
            model=session.model,
            path=request.path,
            headers=request.headers,
            subprotocol=ws.subprotocol,
            session=session,
        )
        self.connections.append(conn)
        log.info("emulator.connect", connection=conn.index, dialect=dialect, model=session.model)
        session.open(self.clock.now())
        wake = asyncio.Event()
        wake.set()
        writer = asyncio.create_task(self._writer(ws, conn, wake))
        try:
            async for message in ws:
                session.receive(message, self.clock.now())
                # what is due now goes out before the next message is read, so a client that
                # sends faster than real time still sees a pace-0 response complete
                if not await self._flush(ws, conn):
                    break
                wake.set()
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer
            conn.closed = True
            self._notify()
            log.info("emulator.disconnect", connection=conn.index, code=ws.close_code)

    async def _flush(self, ws: ServerConnection, conn: EmulatorConnection) -> bool:
        """Send the events due now, applying the fault injections; False once the socket was
        dropped on purpose."""
        cfg = self.config
        async with conn.lock:
            if conn.aborted:
                return False
            for event in conn.session.release(self.clock.now()):
                if (
                    cfg.malformed_after_events is not None
                    and len(conn.sent) == cfg.malformed_after_events
                ):
                    await ws.send('{"type": "response.output_audio.delta", "delta": ')
                    conn.sent.append({"type": "<malformed>"})
                if cfg.close_after_events is not None and len(conn.sent) >= cfg.close_after_events:
                    log.info("emulator.fault_close", connection=conn.index, after=len(conn.sent))
                    conn.aborted = True
                    if ws.transport is not None:
                        ws.transport.abort()
                    return False
                await ws.send(orjson.dumps(event).decode())
                conn.sent.append(event)
            if conn.session.expired:
                conn.aborted = True
                log.info("emulator.session_expired", connection=conn.index)
                await ws.close(1001, "session expired")
                return False
        self._notify()
        return True

    async def _writer(
        self, ws: ServerConnection, conn: EmulatorConnection, wake: asyncio.Event
    ) -> None:
        while True:
            wake.clear()
            if not await self._flush(ws, conn):
                return
            deadline = conn.session.next_deadline()
            waiter = asyncio.ensure_future(wake.wait())
            if deadline is None:
                await waiter
                continue
            sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
            try:
                await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, sleeper):
                    task.cancel()


def _http_error(connection: ServerConnection, status: http.HTTPStatus, message: str) -> Response:
    body = orjson.dumps(
        {
            "error": {
                "type": "invalid_request_error",
                "code": status.phrase.lower().replace(" ", "_"),
                "message": message,
            }
        }
    )
    response = connection.respond(status, "")
    response.body = body
    # Headers is a multi-dict: assignment would add a second value
    for name, value in (("Content-Type", "application/json"), ("Content-Length", str(len(body)))):
        del response.headers[name]
        response.headers[name] = value
    return response


@contextlib.asynccontextmanager
async def run_emulator(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Clock | None = None,
) -> AsyncIterator[Emulator]:
    """Serve the emulator on ``host:port`` (0: a free port) while the block runs.

    Yields an :class:`Emulator`: connect a client to ``emu.url``
    (``ws://127.0.0.1:PORT/v1/realtime``), then assert on ``emu.connections``/``emu.received``,
    awaiting conditions with ``emu.wait_for``. ``clock`` paces responses (``think_ms``, ``pace``)
    and pings; default: the machine's clock.
    """
    emu = Emulator(config or EmulatorConfig(), clock or RealClock())
    server: Server
    async with serve(
        emu._handle,
        host,
        port,
        process_request=emu._process_request,
        select_subprotocol=emu._select_subprotocol,
        max_size=None,
        compression=None,
        logger=_WS_LOGGER,
    ) as server:
        sock = next(iter(server.sockets))
        emu.port = int(sock.getsockname()[1])
        shown = f"[{host}]" if ":" in host else host
        emu.url = f"ws://{shown}:{emu.port}/v1/realtime"
        yield emu
        server.close()


# ----------------------------------------------------------------------------- command line


def add_parser(subparsers: Any) -> None:
    """Add ``pipeline emulator`` to the CLI's subparsers (``set_defaults(handler=...)``: the
    handler takes the parsed args and returns the exit code)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run the realtime protocol emulator as a server",
        description="Run the realtime protocol emulator (xAI / OpenAI GA / OpenAI beta) as a "
        "WebSocket server until Ctrl-C. Clients connect to ws://HOST:PORT/v1/realtime?model=...",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    p.add_argument("--config", type=Path, help="a YAML or JSON file of emulator settings")
    p.add_argument("--dialect", choices=["xai", "openai", "openai-beta", "auto"])
    p.add_argument("--think-ms", type=int, help="delay before each response's first output")
    p.add_argument("--pace", type=float, help="audio delivery speed: 0 = at once, 1 = real time")
    p.add_argument("--reply", choices=["echo", "tone"], help="reply audio (echo)")
    p.add_argument("--reply-text", help="reply transcript; {user} is the user's words")
    p.add_argument("--tone-ms", type=int, help="tone length in ms (1000)")
    p.add_argument("--chunk-ms", type=int, help="audio per delta in ms (100)")
    p.add_argument("--error-shape", choices=["nested", "flat"])
    p.add_argument("--ping-ms", type=int, dest="ping_interval_ms", help="keep-alive period")
    p.add_argument("--no-auth", action="store_true", help="accept clients without a key")
    p.add_argument(
        "--transcript", action="append", dest="transcripts", help="user transcript (repeatable)"
    )
    p.add_argument(
        "--tool-call",
        action="append",
        dest="tool_calls",
        metavar="TURN:NAME[:JSON]",
        help='script a function call, e.g. 1:get_time:\'{"city": "Tokyo"}\' (repeatable)',
    )
    p.set_defaults(handler=run_command)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`EmulatorConfig` for parsed ``pipeline emulator`` arguments."""
    values: Json = {}
    if getattr(args, "config", None):
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            loaded = YAML(typ="safe").load(Path(args.config).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"{args.config}: not UTF-8 text; save it as UTF-8") from None
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{args.config}:{mark.line + 1}:{mark.column + 1}" if mark else args.config
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise ValueError(f"{where}: {problem}; fix the YAML syntax") from None
        if not isinstance(loaded, dict | None):
            raise ValueError(f"{args.config}: expected a mapping of settings (key: value)")
        values = dict(loaded or {})
    for key in (
        "dialect", "think_ms", "pace", "reply", "reply_text", "tone_ms", "chunk_ms",
        "error_shape", "ping_interval_ms", "transcripts",
    ):  # fmt: skip
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    if getattr(args, "no_auth", False):
        values["require_auth"] = False
    calls = []
    for spec in getattr(args, "tool_calls", None) or []:
        turn, _, rest = spec.partition(":")
        name, _, raw = rest.partition(":")
        try:
            calls.append({"turn": int(turn), "name": name, "arguments": orjson.loads(raw or "{}")})
        except ValueError:
            raise ValueError(
                f"--tool-call {spec!r}: expected TURN:NAME[:JSON], e.g. 1:get_time:"
                '\'{"city": "Tokyo"}\''
            ) from None
    if calls:
        values["tool_calls"] = calls
    return EmulatorConfig.model_validate(values)


async def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    """Run the emulator until cancelled, printing its URL."""
    async with run_emulator(config, host, port) as emu:
        print(f"emulator ({config.dialect}) listening on {emu.url}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def run_command(args: argparse.Namespace) -> int:
    """``pipeline emulator``: serve until Ctrl-C (exit 130); 2 for bad settings."""
    if not 0 <= args.port <= 65535:
        print(
            f"pipeline emulator: --port {args.port} is not a port; give 0 to 65535 "
            "(0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"pipeline emulator: bad settings: {problems}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"pipeline emulator: bad settings: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_forever(config, args.host, args.port))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        fix = "pick another --port" if exc.errno == errno.EADDRINUSE else "check --host"
        print(
            f"pipeline emulator: cannot listen on {args.host}:{args.port}: {exc.strerror}; {fix}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.realtime.emulator [options]``: the same as ``pipeline emulator``."""
    parser = argparse.ArgumentParser(prog="python -m stages.realtime.emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["emulator", *(sys.argv[1:] if argv is None else argv)])
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
