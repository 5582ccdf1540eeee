"""The two messages of every 20 ms of a call, read and written in one pass: the client's
``input_audio_buffer.append`` and the server's audio delta.

Each has a compiled version (``stages/realtime/wire/_cwire.c``, when built) and a pure-Python
one with the same results; the public names point at the compiled one when it is there.

- :func:`encode_append` ``(audio, event_id)``: the append message, character for character what
  ``orjson.dumps`` writes for its dict (:func:`.client.encode_append` is the pure one). The
  compiled version writes the message straight into one string; an id JSON would escape goes to
  the pure one.
- :func:`native_reader` ``(names)``: a function of a server message that returns the
  :class:`~.server.AudioDeltaEvent` of an audio delta in the shape the OpenAI-family servers
  send it (a flat object, canonical base64), or None: then the checked path (``orjson.loads``
  and the handler's checks) reads the message, errors included. It answers only where its
  answer is the checked path's (:func:`read_delta_pure` is that answer, in Python; a property
  test holds the compiled reader to it on arbitrary mutations of real messages), so a
  malformed message is never taken by it. No reader when the kernel is not built: the checked
  path reads every message.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

import orjson

from pipeline import native

from . import b64
from .client import encode_append as _encode_append_pure
from .server import AudioDeltaEvent

__all__ = [
    "DELTA_FIELDS",
    "encode_append",
    "native_reader",
    "read_delta_pure",
]

_cwire = native.load("stages.realtime.wire._cwire")

#: AudioDeltaEvent's fields, in the order the compiled reader fills them
DELTA_FIELDS = ("data", "response_id", "item_id", "discarded")

Reader = Callable[[str | bytes], AudioDeltaEvent | None]


def read_delta_pure(message: str | bytes, names: frozenset[str]) -> AudioDeltaEvent | None:
    """What the checked path makes of ``message`` when it is an audio delta (its ``type`` one
    of ``names``) that it accepts: the event, not yet marked discarded; None for anything
    else (another event, or a message the checked path reports as malformed)."""
    try:
        event = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if type(event) is not dict or type(event.get("type")) is not str or event["type"] not in names:
        return None
    try:
        data = b64.decode_strict(event["delta"])
        return AudioDeltaEvent(
            data, str(event.get("response_id") or ""), str(event.get("item_id") or "")
        )
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None


def native_reader(names: frozenset[str]) -> Reader | None:
    """The compiled reader of audio deltas named ``names`` (None when it is not built): the
    :func:`read_delta_pure` event, or None where the checked path must read the message
    (see ``_cwire.c`` for what it answers)."""
    if _cwire is None:
        return None
    reader = _cwire.DeltaReader(AudioDeltaEvent, DELTA_FIELDS, tuple(sorted(names)))
    read: Reader = reader.read
    return read


def _encode_append_native(audio: bytes, event_id: str) -> str:
    """:func:`.client.encode_append`, the message written in one pass (compiled)."""
    text: str | None = _cwire.append(audio, event_id)  # type: ignore[union-attr]
    return _encode_append_pure(audio, event_id) if text is None else text


#: ``encode_append(audio, event_id)``: the append message (compiled when built)
encode_append: Callable[[bytes, str], str] = (
    _encode_append_pure if _cwire is None else _encode_append_native
)
