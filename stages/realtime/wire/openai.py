"""OpenAI Realtime GA (``wss://api.openai.com/v1/realtime``, model ``gpt-realtime``).

The canonical dialect: its event names are the ones every other dialect is mapped to. The
session has ``type: "realtime"`` (required), ``output_modalities``, and everything about audio
under ``audio.input`` / ``audio.output`` (format, transcription, turn detection, voice); PCM is
24 kHz only. Items are followed by ``conversation.item.done``; responses carry
``conversation_id`` and ``output_modalities``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import DialectCodec, Json
from .errors import bad_value, missing_parameter
from .session import SessionConfig, TurnDetection

#: OpenAI's realtime voices, for the ``openai`` dialects.
OPENAI_VOICES: tuple[str, ...] = (
    "alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse",
)  # fmt: skip


class OpenAICodec(DialectCodec):
    name = "openai"
    aliases = ("openai-ga", "ga")
    default_model = "gpt-realtime"
    default_voice = "alloy"
    voices = OPENAI_VOICES
    default_url = "wss://api.openai.com/v1/realtime"
    api_key_env = "OPENAI_API_KEY"
    transcription_model = "gpt-4o-mini-transcribe"
    audio_part = "output_audio"
    text_part = "output_text"
    session_keys = frozenset(
        {
            "type", "model", "output_modalities", "instructions", "audio", "tools",
            "tool_choice", "max_output_tokens", "tracing", "truncation", "prompt", "include",
        }
    )  # fmt: skip
    audio_input_keys = frozenset({"format", "transcription", "turn_detection", "noise_reduction"})
    audio_output_keys = frozenset({"format", "voice", "speed"})
    vad_defaults = TurnDetection("server_vad", 0.5, 300, 200, True, True, None, "auto")
    default_turn_detection = vad_defaults
    response_modalities_key = "output_modalities"
    item_done_events = True
    response_conversation = True

    def turn_detection_object(self, td: TurnDetection) -> Json | None:
        out = super().turn_detection_object(td)
        if out is not None and td.type == "server_vad":
            out["idle_timeout_ms"] = td.idle_timeout_ms
        return out

    def session_to_wire(self, config: SessionConfig) -> Json:
        session: Json = {"type": "realtime", "model": config.model, "output_modalities": ["audio"]}
        if config.instructions is not None:
            session["instructions"] = config.instructions
        session["audio"] = {
            "input": {
                "format": self.format_to_wire(config.input_format),
                "transcription": self.transcription_to_wire(config),
                "turn_detection": self.turn_detection_to_wire(config.turn_detection),
            },
            "output": {"format": self.format_to_wire(config.output_format), "voice": config.voice},
        }
        session["tools"] = [dict(t) for t in config.tools]
        return session

    def read_session(
        self, session: Mapping[str, Any], changes: dict[str, Any], base: SessionConfig
    ) -> None:
        if "type" not in session:
            raise missing_parameter("session.type")
        if session["type"] != "realtime":
            raise bad_value("session.type", session["type"], "'realtime'")
        if isinstance(session.get("model"), str):
            changes["model"] = session["model"]
        if "output_modalities" in session:
            mods = session["output_modalities"]
            if not isinstance(mods, list) or not mods or not set(mods) <= {"audio", "text"}:
                raise bad_value("session.output_modalities", mods, "['audio'], ['text']")
            changes["modalities"] = tuple(mods)
        self.read_audio(session, changes)

    def session_object(self, config: SessionConfig, session_id: str) -> Json:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": session_id,
            "model": config.model,
            "output_modalities": list(config.modalities or self.default_modalities),
            "instructions": config.instructions or "",
            "audio": {
                "input": {
                    "format": self.format_to_wire(config.input_format),
                    "noise_reduction": None,
                    "transcription": self.transcription_to_wire(config),
                    "turn_detection": self.turn_detection_object(config.turn_detection),
                },
                "output": {
                    "format": self.format_to_wire(config.output_format),
                    "voice": config.voice,
                    "speed": 1.0 if config.speed is None else config.speed,
                },
            },
            "tools": [dict(t) for t in config.tools],
            "tool_choice": "auto" if config.tool_choice is None else config.tool_choice,
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "include": None,
        }

    def sync_session(self) -> Json:
        """The smallest ``session.update`` session (a barrier): GA needs its ``type``."""
        return {"type": "realtime"}


CODEC = OpenAICodec()
