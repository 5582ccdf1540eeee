"""How the emulator behaves: :class:`EmulatorConfig` (every field has a default that models the
real service) and the scripted tool calls it makes (:class:`ToolCallScript`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..wire import Dialect, normalize_dialect


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

    #: protocol dialect; ``auto`` (the default) decides per connection: ``openai-beta`` with an
    #: ``OpenAI-Beta: realtime=v1`` header, ``openai`` for a ``gpt-*`` model, else ``xai``
    dialect: Dialect | Literal["auto"] = "auto"
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
    #: Gemini: ``goAway`` (with ``timeLeft``) this many seconds before ``max_session_s`` ends the
    #: connection (0: at the end, with no notice)
    go_away_s: float = Field(default=10, ge=0)
    #: Gemini: how long a session resumption handle can be used (Google: 2 hours)
    resumption_ttl_s: float = Field(default=7200, gt=0)
    #: send ``rate_limits.updated`` after ``response.created`` (None: as the dialect does,
    #: i.e. OpenAI yes, xAI no)
    rate_limits: bool | None = None
    #: fault: after this many server events, drop the TCP connection (no close frame: 1006)
    close_after_events: int | None = Field(default=None, ge=0)
    #: fault: after this many server events, send one message that is not JSON
    malformed_after_events: int | None = Field(default=None, ge=0)

    @field_validator("dialect", mode="before")
    @classmethod
    def _dialect_name(cls, value: Any) -> Any:
        # any name a dialect goes by (``openai-ga``, ``grok``); the codec registry lists them
        if isinstance(value, str) and value.strip().lower() != "auto":
            try:
                return normalize_dialect(value)
            except ValueError:
                return value  # refused by the type, with the accepted values
        return value
