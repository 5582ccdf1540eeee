"""Base64 for audio on the realtime wire, at the speed of ``pybase64`` (SIMD) and with the exact
results of the standard library.

Every 20–100 ms of a call is an ``input_audio_buffer.append`` (audio encoded) and every reply
delta a ``response.output_audio.delta`` (audio decoded): base64 is the largest part of both.
``binascii`` takes about 1.5 µs for a 960-byte delta; ``pybase64`` a fifth of that.

- :func:`encode`: the padded standard alphabet, as ``base64.b64encode(data).decode()``.
- :func:`decode_strict`: what ``binascii.a2b_base64(text, strict_mode=True)`` returns or raises.
  ``pybase64``'s ``validate=True`` accepts a subset of what strict ``binascii`` accepts (a few
  oddly padded strings strict ``binascii`` takes, it refuses), with the same bytes (a property
  test checks both); what it refuses goes to ``binascii`` for the standard answer, error
  message included.

Without ``pybase64`` (a platform with no wheel) both fall back to ``binascii``.
"""

from __future__ import annotations

import binascii

__all__ = ["FAST", "decode_strict", "encode"]


def _std_decode(text: str | bytes) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


try:
    from pybase64 import b64decode as _b64decode
    from pybase64 import b64encode_as_string as encode

    #: whether the SIMD codec is in use
    FAST = True

    def decode_strict(text: str | bytes) -> bytes:
        """The bytes of standard base64 ``text``; raises ``binascii.Error`` (or ``ValueError``
        for non-ASCII text) exactly where ``binascii.a2b_base64(text, strict_mode=True)``
        does."""
        try:
            return _b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return _std_decode(text)  # the standard answer, or the standard error

except ImportError:  # pragma: no cover - pybase64 has wheels for the platforms we run on
    FAST = False

    def encode(data: bytes) -> str:  # type: ignore[misc]
        """``data`` as padded standard base64 text."""
        return binascii.b2a_base64(data, newline=False).decode("ascii")

    decode_strict = _std_decode
