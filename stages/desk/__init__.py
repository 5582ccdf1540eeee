"""At a desk: the machine's microphone and speaker through PortAudio (``mic_source``,
``speaker_sink``) and ``pipeline devices``. See ``docs/playground.md``."""

from __future__ import annotations

from .stages import Player, mic_source, speaker_sink

__all__ = ["Player", "mic_source", "speaker_sink"]
