"""What every dialect codec has: :class:`DialectCodec`, the facts and the wire forms of one
realtime dialect, with the shape xAI and OpenAI GA share as its defaults.

A dialect module subclasses it, sets its facts (names, defaults, rates, the server event names
it spells differently, which keys it accepts) and overrides the forms that differ; one instance
goes in :data:`stages.realtime.wire.registry.CODECS`. Reading is strict on the server's side
(``*_from_wire`` raise :class:`~.errors.WireError` with the wording the real services use) and
lenient on the client's (:func:`~.formats.format_from_wire`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pipeline.errors import UsageError
from pipeline.frames import AudioFormat

from . import client, fast
from .client import ClientEvent
from .errors import WireError, bad_value, check_keys, missing_parameter, unknown_parameter
from .events import CLIENT_EVENTS
from .formats import BY_GA_TYPE, DEFAULT_PCM_RATE, WIRE_FORMATS
from .session import SessionConfig, TurnDetection

if TYPE_CHECKING:
    from .registry import Dialect

Json = dict[str, Any]

_TD_NUMBERS = ("threshold", "prefix_padding_ms", "silence_duration_ms")
_TD_EXTRAS = ("create_response", "interrupt_response", "idle_timeout_ms", "eagerness")
#: semantic VAD has no silence setting; its eagerness maps onto one (for an energy VAD)
EAGERNESS_SILENCE_MS: dict[str, int] = {"low": 1500, "medium": 800, "high": 300}


class DialectCodec:
    """One realtime dialect's names, defaults and wire forms. See the module docstring."""

    name: ClassVar[Dialect]
    #: other names the dialect goes by (``grok``, ``openai-ga``, ...)
    aliases: ClassVar[tuple[str, ...]] = ()
    default_model: ClassVar[str]
    default_voice: ClassVar[str]
    #: the voices the provider documents (others pass: custom voices exist)
    voices: ClassVar[tuple[str, ...]]
    default_url: ClassVar[str]
    api_key_env: ClassVar[str]
    #: input transcription model when on ("" : the server's default)
    transcription_model: ClassVar[str] = ""
    #: PCM rates accepted (G.711 is always 8000 Hz)
    pcm_rates: ClassVar[tuple[int, ...]] = (DEFAULT_PCM_RATE,)
    #: canonical (GA) server event name -> this dialect's, where they differ
    server_names: ClassVar[Mapping[str, str]] = {}
    #: content part types inside assistant items
    audio_part: ClassVar[str] = "audio"
    text_part: ClassVar[str] = "text"
    #: client events a strict server takes
    client_events: ClassVar[frozenset[str]] = CLIENT_EVENTS - {"output_audio_buffer.clear"}
    item_types: ClassVar[tuple[str, ...]] = ("message", "function_call", "function_call_output")
    #: top-level keys of ``session.update``'s session
    session_keys: ClassVar[frozenset[str]]
    audio_input_keys: ClassVar[frozenset[str]] = frozenset({"format", "transcription"})
    audio_output_keys: ClassVar[frozenset[str]] = frozenset({"format"})
    vad_types: ClassVar[tuple[str, ...]] = ("server_vad", "semantic_vad")
    vad_keys: ClassVar[frozenset[str]] = frozenset({"type", *_TD_NUMBERS, *_TD_EXTRAS})
    threshold_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: the values a ``server_vad`` takes for what the client leaves out
    vad_defaults: ClassVar[TurnDetection] = TurnDetection(
        "server_vad", 0.5, 300, 500, True, True, None, "auto"
    )
    #: the turn detection of a new session
    default_turn_detection: ClassVar[TurnDetection] = vad_defaults
    default_modalities: ClassVar[tuple[str, ...]] = ("audio",)
    #: the key of ``response.create``'s modalities
    response_modalities_key: ClassVar[str] = "modalities"
    # -- how the server behaves, where dialects differ
    #: events carry ``previous_item_id`` (xAI: null)
    previous_item_ids: ClassVar[bool] = True
    #: ``conversation.item.done`` follows ``conversation.item.added``
    item_done_events: ClassVar[bool] = False
    #: input transcripts are sent even when transcription was not asked for
    transcribes_always: ClassVar[bool] = False
    #: ``input_audio_transcription.completed`` carries ``usage``
    transcription_usage: ClassVar[bool] = True
    #: ``rate_limits.updated`` follows ``response.created``
    rate_limits: ClassVar[bool] = True
    #: ``input_audio_buffer.commit`` is refused while server VAD is on
    commit_needs_manual_turns: ClassVar[bool] = False
    #: responses carry ``conversation_id`` and ``output_modalities``
    response_conversation: ClassVar[bool] = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # -- event names

    def server_event(self, canonical: str) -> str:
        """This dialect's name for the canonical server event ``canonical``."""
        return self.server_names.get(canonical, canonical)

    def canonical_event(self, name: str) -> str:
        """The canonical name of this dialect's server event ``name``."""
        return _inverse(self).get(name, name)

    # -- messages both ways (a dialect of another family overrides these four)

    def encode_client(self, event: ClientEvent, event_id: str) -> str:
        """The message text of a typed client event (here: the event's own JSON)."""
        return client.encode(event, event_id)

    def encode_append(self, audio: bytes, event_id: str) -> str:
        """``encode_client(InputAudioBufferAppend(audio), event_id)``, the message of every 20-100
        ms of a call, built directly (:func:`~.fast.encode_append`). A dialect that overrides
        :meth:`encode_client` gets its own form here too."""
        if type(self).encode_client is DialectCodec.encode_client:
            return fast.encode_append(audio, event_id)
        return self.encode_client(client.InputAudioBufferAppend(audio), event_id)

    def append_encoder(self) -> Callable[[bytes, str], str]:
        """The function :meth:`encode_append` comes down to for this dialect, to call per
        message without the method's dispatch."""
        if type(self).encode_client is DialectCodec.encode_client:
            return fast.encode_append
        return self.encode_append

    def decode_client(self, message: Mapping[str, Any], session: SessionConfig) -> ClientEvent:
        """A client message as a strict server reads it: the typed event, or
        :class:`~.errors.WireError` for a type this dialect does not take or a bad field."""
        kind = message.get("type")
        if not isinstance(kind, str):
            raise missing_parameter("type")
        if kind not in self.client_events:
            supported = sorted(self.client_events)
            raise bad_value("type", kind, ", ".join(f"'{s}'" for s in supported))
        return client.decode(message, session)

    def decode_server(self, message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """A server message as the events a client dispatches on (canonical meaning; here the
        message itself: the client reads every OpenAI-family spelling of a name)."""
        return [message]

    def encode_server(self, event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """A server event with its canonical (GA) name as this dialect's message(s)."""
        name = self.server_event(event["type"])
        return [event if name == event["type"] else {**event, "type": name}]

    # -- audio formats

    def format_to_wire(self, fmt: AudioFormat) -> Json | str:
        """``{"type": "audio/pcm", "rate": 16000}``; G.711 without a rate."""
        wire = WIRE_FORMATS[fmt.encoding]
        if wire.fixed_rate is None:
            return {"type": wire.ga_type, "rate": fmt.rate}
        return {"type": wire.ga_type}

    def format_from_wire(self, value: Any, param: str) -> AudioFormat:
        """A format as a strict server reads it (``param`` names it in the refusal)."""
        if not isinstance(value, Mapping):
            raise bad_value(param, value)
        check_keys(value, frozenset({"type", "rate"}), param)
        if value.get("type") not in BY_GA_TYPE:
            raise bad_value(
                f"{param}.type", value.get("type"), "'audio/pcm', 'audio/pcmu', 'audio/pcma'"
            )
        wire = BY_GA_TYPE[value["type"]]
        rate = value.get("rate")
        if wire.fixed_rate is not None:
            if rate is not None and rate != wire.fixed_rate:
                raise bad_value(f"{param}.rate", rate, str(wire.fixed_rate))
            return AudioFormat(wire.encoding, wire.fixed_rate)
        if rate is None:
            rate = DEFAULT_PCM_RATE
        if not isinstance(rate, int) or isinstance(rate, bool) or rate not in self.pcm_rates:
            raise bad_value(f"{param}.rate", rate, ", ".join(str(r) for r in self.pcm_rates))
        return AudioFormat("pcm16", rate)

    def check_format(self, fmt: AudioFormat) -> None:
        """Raise ValueError (with the accepted values) if this dialect cannot carry ``fmt``."""
        wire = WIRE_FORMATS[fmt.encoding]
        if fmt.channels != 1:
            raise UsageError(f"realtime audio is mono, got {fmt.channels} channels")
        if wire.fixed_rate is not None:
            if fmt.rate != wire.fixed_rate:
                raise UsageError(f"{fmt.encoding} is {wire.fixed_rate} Hz only, got {fmt.rate} Hz")
            return
        if fmt.rate not in self.pcm_rates:
            listed = ", ".join(str(r) for r in self.pcm_rates)
            raise UsageError(f"{self.name} takes pcm16 at {listed} Hz, got {fmt.rate} Hz")

    # -- turn detection

    def manual_turns_wire(self) -> Json | None:
        """``turn_detection`` for manual turns (OpenAI: null; xAI: ``{"type": null}``)."""
        return None

    def turn_detection_to_wire(self, td: TurnDetection) -> Json | None:
        """The ``turn_detection`` a client sends: the type and the fields it set."""
        if td.type is None:
            return self.manual_turns_wire()
        out: Json = {"type": td.type}
        for key in (*_TD_NUMBERS, *_TD_EXTRAS):
            value = getattr(td, key)
            if value is not None and key in self.vad_keys:
                out[key] = value
        return out

    def resolve_turn_detection(self, td: TurnDetection) -> TurnDetection:
        """``td`` with every field the client left out at this dialect's default."""
        if td.type is None:
            return td
        base = self.vad_defaults
        values = {
            key: getattr(base, key) if getattr(td, key) is None else getattr(td, key)
            for key in (*_TD_NUMBERS, *_TD_EXTRAS)
        }
        if td.type == "semantic_vad":
            eager = str(values["eagerness"])
            values["silence_duration_ms"] = EAGERNESS_SILENCE_MS.get(eager, 500)
        return TurnDetection(td.type, **values)

    def turn_detection_from_wire(self, value: Any, param: str) -> TurnDetection:
        """A client's ``turn_detection`` as a strict server reads it, resolved."""
        if value is None:
            return TurnDetection(None)
        if not isinstance(value, Mapping):
            raise bad_value(param, value)
        kind = value.get("type", "server_vad")
        if kind is None:
            if self.manual_turns_wire() is None:
                raise bad_value(f"{param}.type", None, "'server_vad' and 'semantic_vad'")
            return TurnDetection(None)
        if kind not in self.vad_types:
            raise bad_value(f"{param}.type", kind, ", ".join(f"'{k}'" for k in self.vad_types))
        check_keys(value, self.vad_keys, param)
        lo, hi = self.threshold_range
        threshold = value.get("threshold", self.vad_defaults.threshold)
        if not isinstance(threshold, int | float) or not lo <= threshold <= hi:
            raise WireError(
                "decimal_out_of_range" if isinstance(threshold, int | float) else "invalid_type",
                f"Invalid '{param}.threshold': expected a number between {lo} and {hi}, "
                f"got {threshold!r}.",
                f"{param}.threshold",
            )
        ints: dict[str, int] = {}
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            v = value.get(key, getattr(self.vad_defaults, key))
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 10000:
                raise WireError(
                    "integer_out_of_range",
                    f"Invalid '{param}.{key}': expected an integer between 0 and 10000, got {v!r}.",
                    f"{param}.{key}",
                )
            ints[key] = v
        td = TurnDetection(
            type="semantic_vad" if kind == "semantic_vad" else "server_vad",
            threshold=float(threshold),
            prefix_padding_ms=ints["prefix_padding_ms"],
            silence_duration_ms=ints["silence_duration_ms"],
            create_response=bool(value.get("create_response", True)),
            interrupt_response=bool(value.get("interrupt_response", True)),
            idle_timeout_ms=value.get("idle_timeout_ms"),
            eagerness=str(value.get("eagerness", "auto")),
        )
        return self.resolve_turn_detection(td)

    def turn_detection_object(self, td: TurnDetection) -> Json | None:
        """The ``turn_detection`` a server reports (every field the dialect shows)."""
        if td.type is None:
            return self.manual_turns_wire()
        td = self.resolve_turn_detection(td)
        out: Json = {"type": td.type}
        if td.type == "semantic_vad":
            out["eagerness"] = td.eagerness
        else:
            out |= {key: getattr(td, key) for key in _TD_NUMBERS}
        out["create_response"] = td.create_response
        out["interrupt_response"] = td.interrupt_response
        return out

    # -- transcription and tools

    @staticmethod
    def transcription_to_wire(config: SessionConfig) -> Json | None:
        if config.transcription is None:
            return None
        out: Json = {"model": config.transcription} if config.transcription else {}
        if config.transcription_language is not None:
            out["language"] = config.transcription_language
        if config.transcription_prompt is not None:
            out["prompt"] = config.transcription_prompt
        return out

    @staticmethod
    def transcription_from_wire(value: Any, param: str) -> dict[str, Any]:
        """The SessionConfig fields of a client's transcription settings."""
        if value is None:
            return {"transcription": None}
        if not isinstance(value, Mapping):
            raise bad_value(param, value)
        check_keys(value, frozenset({"model", "language", "prompt"}), param)
        fields: dict[str, Any] = {}
        for key, attr in (
            ("model", "transcription"),
            ("language", "transcription_language"),
            ("prompt", "transcription_prompt"),
        ):
            v = value.get(key)
            if v is not None and not isinstance(v, str):
                raise bad_value(f"{param}.{key}", v)
            fields[attr] = v
        fields["transcription"] = fields["transcription"] or ""
        return fields

    @staticmethod
    def tools_from_wire(value: Any, param: str) -> tuple[Mapping[str, Any], ...]:
        """Tool declarations: flat ``{"type": "function", "name", ...}`` (the Chat Completions
        nesting under ``function`` is refused, as the real services do)."""
        if not isinstance(value, list):
            raise bad_value(param, value)
        for i, tool in enumerate(value):
            if not isinstance(tool, Mapping) or not isinstance(tool.get("type"), str):
                raise missing_parameter(f"{param}[{i}].type")
            if tool["type"] == "function":
                if "function" in tool:
                    raise unknown_parameter(f"{param}[{i}].function")
                if not isinstance(tool.get("name"), str) or not tool["name"]:
                    raise missing_parameter(f"{param}[{i}].name")
        return tuple(dict(t) for t in value)

    # -- the session

    def default_session(self, model: str | None = None) -> SessionConfig:
        """The session a server starts with, before any ``session.update``."""
        return SessionConfig(
            dialect=self.name,
            model=model or self.default_model,
            voice=self.default_voice,
            turn_detection=self.default_turn_detection,
            modalities=self.default_modalities,
        )

    def session_to_wire(self, config: SessionConfig) -> Json:
        """The ``session`` of a client's ``session.update``."""
        raise NotImplementedError

    def session_object(self, config: SessionConfig, session_id: str) -> Json:
        """The ``session`` of ``session.created`` / ``session.updated``."""
        raise NotImplementedError

    def session_from_wire(self, session: Any, base: SessionConfig) -> SessionConfig:
        """``base`` updated by a client's ``session`` (see :meth:`SessionConfig.from_wire`)."""
        if not isinstance(session, Mapping):
            raise missing_parameter("session")
        check_keys(session, self.session_keys, "session")
        changes: dict[str, Any] = {}
        if isinstance(session.get("instructions"), str):
            changes["instructions"] = session["instructions"]
        elif "instructions" in session:
            raise bad_value("session.instructions", session["instructions"])
        if "tools" in session:
            changes["tools"] = self.tools_from_wire(session["tools"], "session.tools")
        if "tool_choice" in session:
            changes["tool_choice"] = session["tool_choice"]
        self.read_session(session, changes, base)
        return base.replace(**changes)

    def read_session(
        self, session: Mapping[str, Any], changes: dict[str, Any], base: SessionConfig
    ) -> None:
        """The dialect's own keys of a client's ``session`` into ``changes``."""
        raise NotImplementedError

    def read_audio(self, session: Mapping[str, Any], changes: dict[str, Any]) -> None:
        """The ``audio: {input, output}`` block (xAI and OpenAI GA)."""
        audio = session.get("audio")
        if audio is None:
            return
        if not isinstance(audio, Mapping):
            raise bad_value("session.audio", audio)
        check_keys(audio, frozenset({"input", "output"}), "session.audio")
        a_in, a_out = audio.get("input") or {}, audio.get("output") or {}
        check_keys(a_in, self.audio_input_keys, "session.audio.input")
        check_keys(a_out, self.audio_output_keys, "session.audio.output")
        if "format" in a_in:
            changes["input_format"] = self.format_from_wire(
                a_in["format"], "session.audio.input.format"
            )
        if "format" in a_out:
            changes["output_format"] = self.format_from_wire(
                a_out["format"], "session.audio.output.format"
            )
        if "transcription" in a_in:
            changes |= self.transcription_from_wire(
                a_in["transcription"], "session.audio.input.transcription"
            )
        if "turn_detection" in a_in:
            changes["turn_detection"] = self.turn_detection_from_wire(
                a_in["turn_detection"], "session.audio.input.turn_detection"
            )
        if "voice" in a_out:
            changes["voice"] = str(a_out["voice"])
        if "speed" in a_out:
            changes["speed"] = float(a_out["speed"])

    def sync_session(self) -> Json:
        """The smallest ``session.update`` session, one that changes nothing (a barrier)."""
        return {}

    def input_format_param(self) -> str:
        """Where the input format sits in ``session.update`` (for error messages)."""
        return "session.audio.input.format"


_INVERSES: dict[type[DialectCodec], dict[str, str]] = {}


def _inverse(codec: DialectCodec) -> dict[str, str]:
    table = _INVERSES.get(type(codec))
    if table is None:
        table = _INVERSES[type(codec)] = {v: k for k, v in codec.server_names.items()}
    return table
