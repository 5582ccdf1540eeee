"""xAI's Grok Voice Agent API (``wss://api.x.ai/v1/realtime``), the default dialect.

Close to OpenAI GA's shape, with its own differences: ``voice`` and ``turn_detection`` at the top
of the session (no ``type``, no ``model``), ``{"type": null}`` for manual turns, PCM at any of
seven rates, ``response.text.*`` for text, ``force_message`` items, no ``previous_item_id``, no
``rate_limits.updated``, and ``input_audio_buffer.commit`` only with manual turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .base import DialectCodec, Json
from .errors import bad_value, missing_parameter
from .session import SessionConfig, TurnDetection

#: xAI's server-side tools (they run on xAI's side; the client only declares them) and the keys
#: each needs: web search, X search, collections (file_search over vector store ids), remote MCP
SERVER_TOOL_TYPES: dict[str, tuple[str, ...]] = {
    "web_search": (),
    "x_search": (),
    "file_search": ("vector_store_ids",),
    "mcp": ("server_url", "server_label"),
}

#: The voices of xAI's Grok voice agent. IDs are case-insensitive on the wire; the server may echo
#: them prefixed (``xai_ara``, ``human_Ara``), and custom voice IDs also work, so a voice outside
#: this list is passed through, not refused.
XAI_VOICES: tuple[str, ...] = ("ara", "rex", "sal", "eve", "leo")


class XaiCodec(DialectCodec):
    name = "xai"
    aliases = ("grok",)
    default_model = "grok-voice-latest"
    default_voice = "ara"
    voices = XAI_VOICES
    default_url = "wss://api.x.ai/v1/realtime"
    api_key_env = "XAI_API_KEY"
    transcription_model = ""  # documented as optional ("grok-transcribe" is a third-party claim)
    pcm_rates = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
    server_names: ClassVar[Mapping[str, str]] = {
        "response.output_text.delta": "response.text.delta",
        "response.output_text.done": "response.text.done",
    }
    client_events = DialectCodec.client_events - {"conversation.item.retrieve"}
    item_types = (*DialectCodec.item_types, "force_message")
    session_keys = frozenset(
        {
            "instructions", "voice", "turn_detection", "audio", "tools", "tool_choice",
            "temperature", "modalities", "reasoning", "resumption", "replace", "model",
        }
    )  # fmt: skip
    audio_input_keys = frozenset({"format", "transcription", "transport"})
    audio_output_keys = frozenset({"format", "speed", "transport"})
    vad_types = ("server_vad",)
    vad_keys = frozenset(
        {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"}
    )
    threshold_range = (0.1, 0.9)
    vad_defaults = TurnDetection("server_vad", 0.85, 333, 500, True, True, None, "auto")
    default_turn_detection = TurnDetection(None)
    previous_item_ids = False
    transcribes_always = True
    transcription_usage = False
    rate_limits = False
    commit_needs_manual_turns = True

    @staticmethod
    def tools_from_wire(value: Any, param: str) -> tuple[Mapping[str, Any], ...]:
        """Function tools, and the server-side tools xAI documents, each with its required
        keys; any other type is refused."""
        tools = DialectCodec.tools_from_wire(value, param)
        for i, tool in enumerate(tools):
            kind = tool["type"]
            if kind != "function" and kind not in SERVER_TOOL_TYPES:
                raise bad_value(
                    f"{param}[{i}].type",
                    kind,
                    "'function', " + ", ".join(f"'{k}'" for k in SERVER_TOOL_TYPES),
                )
            for key in SERVER_TOOL_TYPES.get(kind, ()):
                if not tool.get(key):
                    raise missing_parameter(f"{param}[{i}].{key}")
        return tools

    def manual_turns_wire(self) -> Json | None:
        return {"type": None}

    def turn_detection_object(self, td: TurnDetection) -> Json | None:
        if td.type is None:
            return self.manual_turns_wire()
        td = self.resolve_turn_detection(td)
        out: Json = {
            "type": td.type,
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
        }
        if td.idle_timeout_ms is not None:
            out["idle_timeout_ms"] = td.idle_timeout_ms
        return out

    def session_to_wire(self, config: SessionConfig) -> Json:
        # voice and turn_detection at the top level; no type, model or temperature
        session: Json = {}
        if config.instructions is not None:
            session["instructions"] = config.instructions
        session["voice"] = config.voice
        session["turn_detection"] = self.turn_detection_to_wire(config.turn_detection)
        audio_in: Json = {"format": self.format_to_wire(config.input_format)}
        transcription = self.transcription_to_wire(config)
        if transcription is not None:
            audio_in["transcription"] = transcription
        session["audio"] = {
            "input": audio_in,
            "output": {"format": self.format_to_wire(config.output_format)},
        }
        session["tools"] = [dict(t) for t in config.tools]
        return session

    def read_session(
        self, session: Mapping[str, Any], changes: dict[str, Any], base: SessionConfig
    ) -> None:
        if "voice" in session:
            if not isinstance(session["voice"], str) or not session["voice"]:
                raise bad_value("session.voice", session["voice"])
            changes["voice"] = session["voice"]
        if "turn_detection" in session:
            changes["turn_detection"] = self.turn_detection_from_wire(
                session["turn_detection"], "session.turn_detection"
            )
        extra = {k: session[k] for k in ("reasoning", "resumption", "replace") if k in session}
        if extra:
            changes["extra"] = {**base.extra, **extra}
        self.read_audio(session, changes)

    def session_object(self, config: SessionConfig, session_id: str) -> Json:
        audio_in: Json = {"format": self.format_to_wire(config.input_format)}
        transcription = self.transcription_to_wire(config)
        if transcription is not None:
            audio_in["transcription"] = transcription
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": config.model,
            "instructions": config.instructions or "",
            "voice": config.voice,
            "modalities": list(config.modalities or self.default_modalities),
            "turn_detection": self.turn_detection_object(config.turn_detection),
            "audio": {
                "input": audio_in,
                "output": {"format": self.format_to_wire(config.output_format)},
            },
            "tools": [dict(t) for t in config.tools],
            **config.extra,
        }


CODEC = XaiCodec()
