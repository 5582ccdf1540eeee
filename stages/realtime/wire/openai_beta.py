"""OpenAI Realtime beta (the ``OpenAI-Beta: realtime=v1`` header; ``gpt-4o-realtime-preview``).

A flat session (``voice``, ``input_audio_format``, ``turn_detection``, ``modalities`` at the
top), formats as strings (``pcm16``, ``g711_ulaw``, ``g711_alaw``; PCM 24 kHz only), and the old
event names (``response.audio.delta``, ``conversation.item.created``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pipeline.frames import AudioFormat

from .base import DialectCodec, Json
from .errors import bad_value
from .formats import BY_BETA_NAME, DEFAULT_PCM_RATE, WIRE_FORMATS
from .openai import OPENAI_VOICES
from .session import SessionConfig


class OpenAIBetaCodec(DialectCodec):
    name = "openai-beta"
    aliases = ("beta",)
    default_model = "gpt-4o-realtime-preview"
    default_voice = "alloy"
    voices = OPENAI_VOICES
    default_url = "wss://api.openai.com/v1/realtime"
    api_key_env = "OPENAI_API_KEY"
    transcription_model = "whisper-1"
    server_names: ClassVar[Mapping[str, str]] = {
        "response.output_audio.delta": "response.audio.delta",
        "response.output_audio.done": "response.audio.done",
        "response.output_audio_transcript.delta": "response.audio_transcript.delta",
        "response.output_audio_transcript.done": "response.audio_transcript.done",
        "response.output_text.delta": "response.text.delta",
        "response.output_text.done": "response.text.done",
        "conversation.item.added": "conversation.item.created",
    }
    session_keys = frozenset(
        {
            "model", "modalities", "instructions", "voice", "input_audio_format",
            "output_audio_format", "input_audio_transcription", "input_audio_noise_reduction",
            "turn_detection", "tools", "tool_choice", "temperature",
            "max_response_output_tokens", "speed", "tracing", "client_secret",
        }
    )  # fmt: skip
    default_modalities = ("text", "audio")

    def format_to_wire(self, fmt: AudioFormat) -> Json | str:
        return WIRE_FORMATS[fmt.encoding].beta_name

    def format_from_wire(self, value: Any, param: str) -> AudioFormat:
        if not isinstance(value, str) or value not in BY_BETA_NAME:
            raise bad_value(param, value, "'pcm16', 'g711_ulaw', and 'g711_alaw'")
        wire = BY_BETA_NAME[value]
        return AudioFormat(wire.encoding, wire.fixed_rate or DEFAULT_PCM_RATE)

    def input_format_param(self) -> str:
        return "session.input_audio_format"

    def session_to_wire(self, config: SessionConfig) -> Json:
        session: Json = {"modalities": ["text", "audio"]}
        if config.instructions is not None:
            session["instructions"] = config.instructions
        session["voice"] = config.voice
        session["input_audio_format"] = self.format_to_wire(config.input_format)
        session["output_audio_format"] = self.format_to_wire(config.output_format)
        session["input_audio_transcription"] = self.transcription_to_wire(config)
        session["turn_detection"] = self.turn_detection_to_wire(config.turn_detection)
        session["tools"] = [dict(t) for t in config.tools]
        return session

    def read_session(
        self, session: Mapping[str, Any], changes: dict[str, Any], base: SessionConfig
    ) -> None:
        if "voice" in session:
            changes["voice"] = str(session["voice"])
        for key, attr in (
            ("input_audio_format", "input_format"),
            ("output_audio_format", "output_format"),
        ):
            if key in session:
                changes[attr] = self.format_from_wire(session[key], f"session.{key}")
        if "turn_detection" in session:
            changes["turn_detection"] = self.turn_detection_from_wire(
                session["turn_detection"], "session.turn_detection"
            )
        if "input_audio_transcription" in session:
            changes |= self.transcription_from_wire(
                session["input_audio_transcription"], "session.input_audio_transcription"
            )
        if "modalities" in session:
            changes["modalities"] = tuple(session["modalities"])
        if "temperature" in session:
            changes["temperature"] = float(session["temperature"])

    def session_object(self, config: SessionConfig, session_id: str) -> Json:
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": config.model,
            "expires_at": 0,
            "modalities": list(config.modalities or self.default_modalities),
            "instructions": config.instructions or "",
            "voice": config.voice,
            "input_audio_format": self.format_to_wire(config.input_format),
            "output_audio_format": self.format_to_wire(config.output_format),
            "input_audio_transcription": self.transcription_to_wire(config),
            "input_audio_noise_reduction": None,
            "turn_detection": self.turn_detection_object(config.turn_detection),
            "tools": [dict(t) for t in config.tools],
            "tool_choice": "auto" if config.tool_choice is None else config.tool_choice,
            "temperature": 0.8 if config.temperature is None else config.temperature,
            "max_response_output_tokens": "inf",
            "speed": 1.0 if config.speed is None else config.speed,
            "tracing": None,
        }


CODEC = OpenAIBetaCodec()
