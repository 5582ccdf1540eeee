"""The typed session model: what one realtime session is (voice, formats, turn detection,
tools, ...), the same object on both sides of the wire.

A client builds a :class:`SessionConfig` and sends ``config.to_wire()`` as the ``session`` of
its ``session.update``; a strict server reads that with :meth:`SessionConfig.from_wire` (which
raises :class:`~stages.realtime.wire.errors.WireError` on anything the dialect refuses) and
answers with ``config.server_object(session_id)``, the full session in the dialect's shape.
Fields left ``None`` were not asked for: the dialect's default applies
(:meth:`~stages.realtime.wire.base.DialectCodec.resolve_turn_detection`, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pipeline.frames import AudioFormat

from .formats import PCM24K

if TYPE_CHECKING:
    from .registry import Dialect

VadType = Literal["server_vad", "semantic_vad"]


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """Server-side voice activity detection. ``type`` None means manual turns (the client
    commits and asks for responses). Other fields None: the dialect's default."""

    type: VadType | None = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None
    eagerness: str | None = None

    def to_wire(self, dialect: Dialect) -> dict[str, Any] | None:
        """The ``turn_detection`` a client sends in ``dialect`` (only the fields set)."""
        from .registry import codec

        return codec(dialect).turn_detection_to_wire(self)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What one realtime session is asked to be (client) or is (server). Build with the
    stage's parameters; :meth:`to_wire` is the dialect's ``session.update`` payload."""

    dialect: Dialect = "xai"
    model: str = "grok-voice-latest"
    voice: str = "ara"
    instructions: str | None = None
    input_format: AudioFormat = PCM24K
    output_format: AudioFormat = PCM24K
    turn_detection: TurnDetection = TurnDetection()
    tools: tuple[Mapping[str, Any], ...] = ()
    #: input transcription: None off; "" on with the server's default model; else the model
    transcription: str | None = None
    transcription_language: str | None = None
    transcription_prompt: str | None = None
    # what a server holds besides (None: the dialect's default)
    tool_choice: str | Mapping[str, Any] | None = None
    modalities: tuple[str, ...] | None = None
    temperature: float | None = None
    speed: float | None = None
    #: settings a dialect echoes back as given (xAI's ``reasoning``, ``resumption``, ...)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def server_vad(self) -> bool:
        return self.turn_detection.type is not None

    def replace(self, **changes: Any) -> SessionConfig:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        """The ``session`` object of a client's ``session.update`` in this dialect."""
        from .registry import codec

        return codec(self.dialect).session_to_wire(self)

    def server_object(self, session_id: str) -> dict[str, Any]:
        """The ``session`` of the server's ``session.created`` / ``session.updated``."""
        from .registry import codec

        return codec(self.dialect).session_object(self, session_id)

    @staticmethod
    def from_wire(session: Any, base: SessionConfig) -> SessionConfig:
        """``base`` updated by a client's ``session`` payload in ``base.dialect``, strictly:
        raises :class:`~stages.realtime.wire.errors.WireError` naming the first parameter the
        dialect refuses (and ``base`` is unchanged)."""
        from .registry import codec

        return codec(base.dialect).session_from_wire(session, base)
