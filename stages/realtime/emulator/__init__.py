"""A strict, deterministic realtime voice server: xAI's Grok Voice Agent API (``xai``), OpenAI
Realtime GA (``openai``) and beta (``openai-beta``), on a loopback WebSocket. By default it
picks the dialect per connection (``dialect: auto``), so the official ``openai`` SDK's GA and
beta clients and our own client work against one server.

What it is for: offline runs, tests and benchmarks of realtime clients (our ``realtime_session``
stage, the ``openai`` SDK's realtime client) without a key or a network. Everything it sends is
a function of what it received and of :class:`EmulatorConfig`: ids count up per connection
(``evt_0001``, ``item_0001``, ``resp_0001``, ``call_0001``), reply audio is the caller's last
utterance played back (``reply="echo"``) or a sine (``reply="tone"``), transcripts come from the
config.

Layout
------
* :mod:`.config`: :class:`EmulatorConfig` and :class:`ToolCallScript`.
* :mod:`.core`: :class:`EmulatorSession`, one connection's server side, sans I/O
  (``receive(message, now)``, ``release(now)``, ``next_deadline()``), on the dialect codecs of
  :mod:`stages.realtime.wire`, the same ones the client protocol uses.
* :mod:`.audio`: the energy VAD (on :class:`~stages.vad.machine.VadMachine`) and reply audio.
* :mod:`.server`: :func:`run_emulator`, the ``websockets`` edge.
* :mod:`.pair`: :class:`ConnectionPair`, our client protocol and an :class:`EmulatorSession`
  joined in memory (no socket, no event loop) for tests.
* :mod:`.cli`: ``pipeline emulator``.

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

from .audio import EnergyVad, vad_level_dbfs
from .cli import add_parser, config_from_args, main, register, run_command
from .config import EmulatorConfig, ToolCallScript
from .core import EmulatorSession
from .pair import ConnectionPair
from .server import Emulator, EmulatorConnection, detect_dialect, run_emulator

__all__ = [
    "ConnectionPair",
    "Emulator",
    "EmulatorConfig",
    "EmulatorConnection",
    "EmulatorSession",
    "EnergyVad",
    "ToolCallScript",
    "add_parser",
    "config_from_args",
    "detect_dialect",
    "main",
    "register",
    "run_command",
    "run_emulator",
    "vad_level_dbfs",
]
