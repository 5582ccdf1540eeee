"""Google's Gemini Live API (``BidiGenerateContent`` over a WebSocket), the ``gemini`` dialect.

Gemini does not speak in Realtime events: one ``setup`` message configures the session (model,
system instruction, voice, function declarations, transcription, activity detection) and is
answered by ``setupComplete``; audio goes in as ``realtimeInput.audio`` (pcm16 16 kHz) and comes
back inside ``serverContent.modelTurn`` (pcm16 24 kHz), with ``inputTranscription`` /
``outputTranscription``, ``interrupted``, ``generationComplete`` and ``turnComplete`` beside it;
``toolCall`` asks for functions, answered by ``toolResponse``; ``goAway`` warns of the end of the
connection. Every other part of the stack speaks Realtime events, so this dialect is a
translation at the socket's edge, both ways, by two sans-I/O bridges with per-connection state:

- :class:`GeminiClientBridge` for our session: the Realtime client events our protocol sends
  (xAI's shape, the codec this dialect inherits) become Gemini messages, and Gemini's server
  messages become the Realtime server events our protocol reads;
- :class:`GeminiServerBridge` for the emulator: Gemini client messages become Realtime client
  events for the emulator's core, and its Realtime server events become Gemini messages.

What is translated is listed in ``docs/gemini.md``. A Realtime event with no Gemini counterpart
(``response.create``: Gemini answers by itself at the end of a turn; ``response.cancel``;
``conversation.item.truncate``) is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .server import CALLS_CANCELLED
from .xai import XaiCodec

Json = dict[str, Any]

#: the service's endpoint; the key goes in an ``x-goog-api-key`` header
GEMINI_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
GEMINI_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
GEMINI_INPUT_RATE = 16000
GEMINI_OUTPUT_RATE = 24000
#: the prebuilt voices Google documents for the Live API's native audio models
GEMINI_VOICES: tuple[str, ...] = (
    "Puck", "Charon", "Kore", "Fenrir", "Aoede", "Leda", "Orus", "Zephyr",
)  # fmt: skip
#: the core's notice that the connection ends soon (``EmulatorSession``'s session limit)
CLOSING_SOON = "session.closing_soon"
#: what a Gemini client may send, and what it may hold
CLIENT_MESSAGES = frozenset({"setup", "clientContent", "realtimeInput", "toolResponse"})
SETUP_KEYS = frozenset(
    {
        "model", "generationConfig", "systemInstruction", "tools", "realtimeInputConfig",
        "sessionResumption", "contextWindowCompression", "inputAudioTranscription",
        "outputAudioTranscription", "proactivity",
    }
)  # fmt: skip


class GeminiCodec(XaiCodec):
    """The facts of the ``gemini`` dialect. On our side of the bridges events have xAI's shape,
    so the codec inherits it; rates, voices, the URL and the key are Gemini's."""

    name = "gemini"  # type: ignore[assignment]
    aliases = ("gemini-live", "google")  # type: ignore[assignment]
    default_model = "gemini-2.5-flash-native-audio-preview-09-2025"
    default_voice = "Puck"
    voices = GEMINI_VOICES
    default_url = GEMINI_URL
    api_key_env = "GEMINI_API_KEY"
    pcm_rates = (GEMINI_INPUT_RATE, GEMINI_OUTPUT_RATE)  # type: ignore[assignment]


CODEC = GeminiCodec()


#: fields whose values are the user's data (JSON schemas, arguments, results): their keys keep
#: their spelling
_OPAQUE = frozenset(
    {"response", "args", "parameters", "parametersJsonSchema", "responseJsonSchema"}
)


def camel_keys(value: Any) -> Any:
    """Protobuf JSON takes a field by its proto name (``realtime_input``) or its JSON name
    (``realtimeInput``), as Google's servers do: the JSON names, everywhere but in user data."""
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, v in value.items():
        head, *rest = str(key).split("_")
        name = head + "".join(part[:1].upper() + part[1:] for part in rest)
        out[name] = v if name in _OPAQUE else camel_keys(v)
    return out


def standard_b64(data: Any) -> str:
    """Protobuf JSON writes bytes as base64 in either alphabet (Google's Python client sends the
    URL-safe one); Realtime events carry the standard one, padded."""
    text = str(data or "").replace("-", "+").replace("_", "/")
    return text + "=" * (-len(text) % 4)


#: ``json.dumps(message, separators=(",", ":"))`` without making an encoder per message
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(message: Json) -> str:
    return _ENCODER.encode(message)


def _loads_ours(text: str | bytes) -> Any:
    """``json.loads(text)`` of a message of ours (written by orjson), five times faster: orjson
    reads it to the same objects, as it writes no integer beyond 64 bits (the one place the two
    readers differ: orjson reads such a literal as a float). Whatever orjson cannot read goes
    to ``json`` for its answer or its error."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _text_of(content: Any) -> str:
    return "".join(
        str(c.get("text", "")) for c in content or [] if isinstance(c, Mapping) and "text" in c
    )


#: audio sent since the latest resumable handle that a resumed connection is given again; past
#: this, the oldest is forgotten (and the log says so when resuming)
REPLAY_LIMIT_S = 60.0


def parse_duration(text: Any) -> float | None:
    """A protobuf JSON ``Duration`` (``"10s"``, ``"1.5s"``) in seconds; None if unreadable."""
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)s\s*", str(text or ""))
    return float(m.group(1)) if m else None


@dataclass
class Resumption:
    """Gemini session resumption across the connections of one call (sans I/O).

    Every connection's setup asks for resumption; the server hands out a handle at each point
    where the session can be resumed (``sessionResumptionUpdate {newHandle, resumable: true}``;
    while the model generates or runs tools it says ``resumable: false`` and the last handle
    stands). A new connection's setup names the latest handle, and the server goes on from the
    state it stands for. What the client sent after that point is not in it, so the client
    messages sent since the handle are kept (:data:`REPLAY_LIMIT_S` of audio at most) and sent
    again on the resumed connection once its setup is complete: no caller audio is lost.
    ``goAway`` (``timeLeft``) sets :attr:`time_left_s`: the session switches to a new connection
    before the server closes this one."""

    handle: str = ""
    #: client messages (JSON text) sent since ``handle`` was given, and their audio in bytes
    replay: list[str] = field(default_factory=list)
    replay_bytes: int = 0
    #: audio older than REPLAY_LIMIT_S was forgotten since the handle
    overflow: bool = False
    #: goAway on the current connection: the seconds it said were left
    time_left_s: float | None = None
    #: handles received over the call
    updates: int = 0

    def sent(self, message: Json, text: str) -> None:
        """``message`` went out as ``text``: kept until the next handle."""
        self.replay.append(text)
        self.replay_bytes += _audio_bytes(message)
        limit = int(REPLAY_LIMIT_S * GEMINI_INPUT_RATE * 2)
        while self.replay_bytes > limit and self.replay:
            dropped = json.loads(self.replay.pop(0))
            self.replay_bytes -= _audio_bytes(dropped)
            self.overflow = True

    def new_handle(self, handle: str) -> None:
        self.handle = handle
        self.replay.clear()
        self.replay_bytes = 0
        self.overflow = False
        self.updates += 1

    def forget(self) -> None:
        """The handle was refused: the next connection starts a new session."""
        self.handle = ""
        self.replay.clear()
        self.replay_bytes = 0
        self.overflow = False

    @property
    def replay_s(self) -> float:
        return self.replay_bytes / (GEMINI_INPUT_RATE * 2)


def _audio_bytes(message: Mapping[str, Any]) -> int:
    """The bytes of audio a ``realtimeInput`` message carries, from its base64 length."""
    audio = (message.get("realtimeInput") or {}).get("audio")
    if not isinstance(audio, Mapping):
        return 0
    data = str(audio.get("data") or "")
    return len(data) * 3 // 4 - len(data) + len(data.rstrip("="))


class GeminiClientBridge:
    """Our session's side: ``outgoing(realtime event)`` returns Gemini messages to send and
    Realtime events to deliver back at once (``session.updated`` for a later update, which
    Gemini cannot take); ``incoming(gemini message)`` returns Realtime server events."""

    def __init__(self, model: str, resumption: Resumption | None = None) -> None:
        self.model = model if model.startswith("models/") else f"models/{model}"
        self.resumption = resumption if resumption is not None else Resumption()
        self.resumption.time_left_s = None  # a new connection: no goAway yet
        #: this connection's setup named a handle; ``resumed`` once the server took it
        self.resuming = False
        self.resumed = False
        #: messages to send now, on the bridge's own initiative (the replay after a resume)
        self.to_send: list[str] = []
        #: the replay a resumed connection was given: its audio in seconds, and whether older
        #: audio had been forgotten
        self.replayed_s = 0.0
        self.replayed_messages = 0
        self.replay_overflow = False
        self.session: Json = {}
        self.set_up = False
        self.manual = False
        self.speaking = False  # an activityStart was sent and no activityEnd yet
        self.calls: dict[str, str] = {}  # call id -> function name
        self.typed = False  # clientContent sent since the last request for a response
        #: the server said it will close soon (``goAway``): the session reconnects when it does
        self.going_away = False
        self._n = 0
        self._response: str | None = None
        self._item = ""
        self._said = ""  # output transcript of the response in flight
        self._heard = ""  # input transcript of the user's turn
        #: ``interrupted`` was read as the caller starting to speak; Gemini says no more about
        #: that turn, so its end is the start of the model's answer to it
        self._barged = False

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_gemini_{self._n}"

    # -- ours -> Gemini

    def setup(self, session: Mapping[str, Any]) -> Json:
        """The ``setup`` message for a Realtime ``session.update`` (xAI's shape)."""
        setup: Json = {
            "model": self.model,
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {
                    "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": session.get("voice")}}
                },
            },
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
        }
        if session.get("instructions"):
            setup["systemInstruction"] = {"parts": [{"text": session["instructions"]}]}
        functions = [
            {k: t[k] for k in ("name", "description", "parameters") if k in t}
            for t in session.get("tools") or []
            if isinstance(t, Mapping) and t.get("type") == "function"
        ]
        if functions:
            setup["tools"] = [{"functionDeclarations": functions}]
        td = session.get("turn_detection")
        self.manual = not isinstance(td, Mapping) or td.get("type") is None
        if self.manual:
            setup["realtimeInputConfig"] = {"automaticActivityDetection": {"disabled": True}}
        handle = self.resumption.handle
        setup["sessionResumption"] = {"handle": handle} if handle else {}
        self.resuming = bool(handle)
        return setup

    def outgoing(self, message: str) -> tuple[list[str], list[str]]:
        ev = _loads_ours(message)
        kind = ev.get("type")
        send: list[Json] = []
        back: list[Json] = []
        if kind == "session.update":
            self.session = {**self.session, **(ev.get("session") or {})}
            if not self.set_up:
                self.set_up = True
                send.append({"setup": self.setup(self.session)})
            else:  # Gemini fixes the session at setup: keep going as configured
                back.append({"type": "session.updated", "session": self.session})
        elif kind == "input_audio_buffer.append":
            if self.manual and not self.speaking:
                self.speaking = True
                send.append({"realtimeInput": {"activityStart": {}}})
            mime = f"audio/pcm;rate={GEMINI_INPUT_RATE}"
            send.append({"realtimeInput": {"audio": {"data": ev["audio"], "mimeType": mime}}})
        elif kind == "input_audio_buffer.commit":
            if self.manual and self.speaking:
                self.speaking = False
                send.append({"realtimeInput": {"activityEnd": {}}})
            back.append({"type": "input_audio_buffer.committed", "item_id": self._id("item")})
        elif kind == "conversation.item.create":
            item = ev.get("item") or {}
            if item.get("type") == "function_call_output":
                call = str(item.get("call_id"))
                try:
                    result = json.loads(item.get("output") or "null")
                except ValueError:
                    result = item.get("output")
                response = result if isinstance(result, dict) else {"output": result}
                reply = {"id": call, "name": self.calls.get(call, ""), "response": response}
                send.append({"toolResponse": {"functionResponses": [reply]}})
            elif item.get("type") == "message":
                # context, not yet a request: a response.create completes the turn (a typed
                # turn), and a replayed conversation never asks for one
                role = "model" if item.get("role") == "assistant" else "user"
                turn = {"role": role, "parts": [{"text": _text_of(item.get("content"))}]}
                send.append({"clientContent": {"turns": [turn], "turnComplete": False}})
                self.typed = True
        elif kind == "response.create" and self.typed:
            self.typed = False
            send.append({"clientContent": {"turnComplete": True}})
        # response.create after audio or a tool response, response.cancel, truncate,
        # input_audio_buffer.clear: no Gemini counterpart (it answers by itself at the end of a
        # turn or a tool response; barge-in is the server's)
        texts = [_dumps(m) for m in send]
        for m, text in zip(send, texts, strict=True):
            if "setup" not in m:  # kept until the next handle: a resumed session gets them again
                self.resumption.sent(m, text)
        return texts, [_dumps(m) for m in back]

    # -- Gemini -> ours

    def _start(self, out: list[Json]) -> str:
        if self._response is None:
            if self._barged:
                self._barged = False
                out.append({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0})
            self._response = self._id("resp")
            self._item = self._id("item")
            self._said = ""
            if self._heard:
                out.append(
                    {
                        "type": "conversation.item.input_audio_transcription.completed",
                        "item_id": self._id("item"),
                        "transcript": self._heard,
                    }
                )
                self._heard = ""
            out.append({"type": "response.created", "response": {"id": self._response}})
        return self._response

    def _finish(self, out: list[Json], status: str) -> None:
        if self._response is None:
            return
        rid, self._response = self._response, None
        if self._said:
            out.append(
                {
                    "type": "response.output_audio_transcript.done",
                    "response_id": rid,
                    "item_id": self._item,
                    "transcript": self._said,
                }
            )
        out.append({"type": "response.done", "response": {"id": rid, "status": status}})

    def incoming(self, message: str | bytes) -> list[str]:
        msg = camel_keys(json.loads(message))
        out: list[Json] = []
        if "setupComplete" in msg:
            if self.resuming:  # the server took the handle: what it lacks goes again, first
                self.resumed = True
                self.to_send = list(self.resumption.replay)
                self.replayed_s = self.resumption.replay_s
                self.replayed_messages = len(self.to_send)
                self.replay_overflow = self.resumption.overflow
            out.append({"type": "session.updated", "session": self.session})
        update = msg.get("sessionResumptionUpdate")
        if isinstance(update, Mapping) and update.get("resumable") and update.get("newHandle"):
            self.resumption.new_handle(str(update["newHandle"]))
        content = msg.get("serverContent")
        if isinstance(content, Mapping):
            if content.get("interrupted"):
                # the caller spoke over the model: ours interrupts at once
                out.append({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
                self._barged = True
                self._finish(out, "cancelled")
            heard = content.get("inputTranscription")
            if isinstance(heard, Mapping) and heard.get("text"):
                self._heard += str(heard["text"])
            turn = content.get("modelTurn")
            for part in turn.get("parts") or [] if isinstance(turn, Mapping) else []:
                data = part.get("inlineData") if isinstance(part, Mapping) else None
                if isinstance(data, Mapping) and str(data.get("mimeType", "")).startswith(
                    "audio/pcm"
                ):
                    rid = self._start(out)
                    out.append(
                        {
                            "type": "response.output_audio.delta",
                            "response_id": rid,
                            "item_id": self._item,
                            "delta": standard_b64(data.get("data")),
                        }
                    )
            said = content.get("outputTranscription")
            if isinstance(said, Mapping) and said.get("text"):
                rid = self._start(out)
                self._said += str(said["text"])
                out.append(
                    {
                        "type": "response.output_audio_transcript.delta",
                        "response_id": rid,
                        "item_id": self._item,
                        "delta": str(said["text"]),
                    }
                )
            if content.get("turnComplete"):
                self._finish(out, "completed")
        if "goAway" in msg:
            self.going_away = True
            left = parse_duration((msg.get("goAway") or {}).get("timeLeft"))
            self.resumption.time_left_s = 0.0 if left is None else left
            # for the session to look at :attr:`Resumption.time_left_s` now (the protocol
            # ignores the event itself)
            out.append({"type": "gemini.go_away", "time_left_s": self.resumption.time_left_s})
        withdrawn = msg.get("toolCallCancellation")
        if isinstance(withdrawn, Mapping):
            ids = [str(i) for i in withdrawn.get("ids") or []]
            out.append({"type": CALLS_CANCELLED, "call_ids": ids})
        call = msg.get("toolCall")
        if isinstance(call, Mapping):
            rid = self._start(out)
            for fn in call.get("functionCalls") or []:
                cid = str(fn.get("id") or self._id("call"))
                self.calls[cid] = str(fn.get("name") or "")
                out.append(
                    {
                        "type": "response.function_call_arguments.done",
                        "response_id": rid,
                        "item_id": self._id("item"),
                        "call_id": cid,
                        "name": self.calls[cid],
                        "arguments": json.dumps(fn.get("args") or {}),
                    }
                )
            self._finish(out, "completed")
        return [_dumps(m) for m in out]


class GeminiServerBridge:
    """The emulator's side: ``incoming(gemini client message)`` returns Realtime client events
    for the emulator's core (xAI dialect), or raises ValueError with Gemini's wording for a
    message it would refuse; ``outgoing(realtime server event)`` returns Gemini messages."""

    def __init__(self) -> None:
        self.set_up = False
        self.setup_answered = False
        self.manual = False
        self.responding = False
        self.calls: dict[str, str] = {}
        #: calls asked for and not answered yet; the caller speaking cancels them
        self.pending: list[str] = []
        #: calls cancelled by ``toolCallCancellation``: a response to one is not expected
        self.withdrawn: set[str] = set()
        #: what was accepted but not expected (a toolResponse for a cancelled call)
        self.warnings: list[str] = []
        #: setup asked for session resumption: handles are handed out at resumable points
        self.resumption = False
        #: the handle a setup asked to resume from (the server edge restores it, then clears it)
        self.resume_handle: str | None = None
        #: makes a handle for the conversation as it stands (set by the server edge)
        self.checkpoint: Callable[[], str] | None = None
        self.went_away = False
        #: messages for the client that no core event causes (an interruption by
        #: ``activityStart`` with manual turns); the server edge sends them at once
        self.to_client: list[Json] = []

    def incoming(self, message: str | bytes) -> list[str]:
        msg = camel_keys(json.loads(message))
        if not isinstance(msg, Mapping) or len(msg) != 1 or next(iter(msg)) not in CLIENT_MESSAGES:
            names = ", ".join(sorted(msg)) if isinstance(msg, Mapping) else type(msg).__name__
            raise ValueError(
                f"Invalid JSON payload received. Unknown name {names!r}: a message holds one of "
                f"{', '.join(sorted(CLIENT_MESSAGES))}"
            )
        ((kind, body),) = msg.items()
        out: list[Json] = []
        if kind == "setup":
            unknown = sorted(set(body) - SETUP_KEYS)
            if unknown or not body.get("model"):
                raise ValueError(
                    f"Invalid JSON payload received. Unknown name {unknown[0]!r} at 'setup'"
                    if unknown
                    else "setup.model is required"
                )
            resumption = body.get("sessionResumption")
            if resumption is not None:
                if not isinstance(resumption, Mapping):
                    raise ValueError("Invalid value at 'setup.session_resumption'")
                extra = sorted(set(resumption) - {"handle"})
                if extra:  # transparent is Vertex AI's; the Gemini API has no such field
                    raise ValueError(
                        f"Invalid JSON payload received. Unknown name {extra[0]!r} at "
                        "'setup.session_resumption'"
                    )
                self.resumption = True
                if resumption.get("handle"):
                    self.resume_handle = str(resumption["handle"])
            self.set_up = True
            out.append({"type": "session.update", "session": self.session_of(body)})
        elif not self.set_up:
            raise ValueError("the first message must be setup")
        elif kind == "realtimeInput":
            if "activityStart" in body and self.manual:
                # Gemini's default activityHandling (START_OF_ACTIVITY_INTERRUPTS): the start of
                # the caller's activity interrupts the model's turn, and its outstanding calls
                if self.responding:
                    out.append({"type": "response.cancel"})
                    self.to_client.append({"serverContent": {"interrupted": True}})
                self.to_client += self._withdraw()
            audio = body.get("audio") or next(iter(body.get("mediaChunks") or []), None)
            if isinstance(audio, Mapping):
                mime = str(audio.get("mimeType", ""))
                if not mime.startswith("audio/pcm"):
                    raise ValueError(f"realtimeInput.audio.mimeType {mime!r} is not audio/pcm")
                out.append(
                    {"type": "input_audio_buffer.append", "audio": standard_b64(audio.get("data"))}
                )
            if "activityEnd" in body and self.manual:
                out += [{"type": "input_audio_buffer.commit"}, {"type": "response.create"}]
            if body.get("text"):
                out += self._user_text(str(body["text"]))
        elif kind == "clientContent":
            for turn in body.get("turns") or []:  # context; turnComplete asks for a response
                text = "".join(str(p.get("text", "")) for p in turn.get("parts") or [])
                role = "assistant" if turn.get("role") == "model" else "user"
                kind_ = "output_text" if role == "assistant" else "input_text"
                item = {"type": "message", "role": role, "content": [{"type": kind_, "text": text}]}
                out.append({"type": "conversation.item.create", "item": item})
            if body.get("turnComplete"):
                out.append({"type": "response.create"})
        elif kind == "toolResponse":
            replies = []
            for reply in body.get("functionResponses") or []:
                cid = str(reply.get("id"))
                if cid in self.withdrawn:
                    self.warnings.append(f"toolResponse for call {cid}, which was cancelled")
                    continue
                if cid in self.pending:
                    self.pending.remove(cid)
                replies.append(reply)
            if not replies:
                return []
            for reply in replies:
                item = {
                    "type": "function_call_output",
                    "call_id": str(reply.get("id")),
                    "output": json.dumps(reply.get("response") or {}),
                }
                out.append({"type": "conversation.item.create", "item": item})
            out.append({"type": "response.create"})
        return [_dumps(m) for m in out]

    def _user_text(self, text: str) -> list[Json]:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        return [{"type": "conversation.item.create", "item": item}, {"type": "response.create"}]

    def session_of(self, setup: Mapping[str, Any]) -> Json:
        """The Realtime session (xAI's shape) a ``setup`` asks for."""
        gen = setup.get("generationConfig") or {}
        voice = (
            ((gen.get("speechConfig") or {}).get("voiceConfig") or {}).get("prebuiltVoiceConfig")
            or {}
        ).get("voiceName") or "Puck"
        detection = (setup.get("realtimeInputConfig") or {}).get("automaticActivityDetection")
        self.manual = bool(isinstance(detection, Mapping) and detection.get("disabled"))
        session: Json = {
            "voice": voice,
            "turn_detection": {"type": None} if self.manual else {"type": "server_vad"},
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": GEMINI_INPUT_RATE}},
                "output": {"format": {"type": "audio/pcm", "rate": GEMINI_OUTPUT_RATE}},
            },
        }
        instruction = setup.get("systemInstruction")
        if isinstance(instruction, Mapping):
            session["instructions"] = "".join(
                str(p.get("text", "")) for p in instruction.get("parts") or []
            )
        tools = [
            {"type": "function", **fn}
            for tool in setup.get("tools") or []
            for fn in tool.get("functionDeclarations") or []
        ]
        if tools:
            session["tools"] = tools
        return session

    def outgoing(self, message: str) -> list[str]:
        ev = json.loads(message)
        kind = ev.get("type")
        out: list[Json] = []
        if kind == "session.updated":
            if self.set_up and not self.setup_answered:
                self.setup_answered = True
                out.append({"setupComplete": {}})
                out += self._resumable()
        elif kind == "response.created":
            self.responding = True
            if self.resumption:  # generating: not resumable (proto JSON leaves out the defaults)
                out.append({"sessionResumptionUpdate": {}})
        elif kind == CLOSING_SOON:
            self.went_away = True
            out.append({"goAway": {"timeLeft": f"{round(float(ev['time_left_s']), 3):g}s"}})
        elif kind in ("response.output_audio.delta", "response.audio.delta"):
            mime = f"audio/pcm;rate={GEMINI_OUTPUT_RATE}"
            part = {"inlineData": {"mimeType": mime, "data": ev.get("delta", "")}}
            out.append({"serverContent": {"modelTurn": {"parts": [part]}}})
        elif kind in ("response.output_audio_transcript.delta", "response.audio_transcript.delta"):
            out.append({"serverContent": {"outputTranscription": {"text": ev.get("delta", "")}}})
        elif kind == "conversation.item.input_audio_transcription.completed":
            text = str(ev.get("transcript", ""))
            out.append({"serverContent": {"inputTranscription": {"text": text}}})
        elif kind == "response.function_call_arguments.done":
            cid = str(ev.get("call_id"))
            self.calls[cid] = str(ev.get("name"))
            args = json.loads(ev.get("arguments") or "{}")
            call = {"id": cid, "name": self.calls[cid], "args": args}
            self.pending.append(cid)
            out.append({"toolCall": {"functionCalls": [call]}})
        elif kind == "error" and (ev.get("error") or {}).get("code") == "session_expired":
            if not self.went_away:  # no notice was given: say it now, the connection closes next
                out.append({"goAway": {"timeLeft": "0s"}})
        elif kind == "input_audio_buffer.speech_started":
            if self.responding:
                out.append({"serverContent": {"interrupted": True}})
            out += self._withdraw()
        elif kind == "response.done":
            self.responding = False
            status = (ev.get("response") or {}).get("status")
            calls = [
                o
                for o in (ev.get("response") or {}).get("output") or []
                if o.get("type") == "function_call"
            ]
            if status == "completed" and not calls:
                out.append({"serverContent": {"generationComplete": True}})
                out.append({"serverContent": {"turnComplete": True}})
            if not self.pending:  # the turn is over and no tool call is outstanding
                out += self._resumable()
        return [_dumps(m) for m in out]

    def _withdraw(self) -> list[Json]:
        """The caller interrupts the model's turn while its tool calls are outstanding: they
        are cancelled, and no toolResponse is expected for them."""
        if not self.pending:
            return []
        ids, self.pending = self.pending, []
        self.withdrawn.update(ids)
        return [{"toolCallCancellation": {"ids": ids}}]

    def _resumable(self) -> list[Json]:
        """A ``sessionResumptionUpdate`` with a new handle, if the setup asked for them."""
        if not self.resumption or self.checkpoint is None:
            return []
        return [{"sessionResumptionUpdate": {"newHandle": self.checkpoint(), "resumable": True}}]
