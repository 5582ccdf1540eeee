"""TwiML documents the server answers with, built as text (no I/O).

* :func:`connect_stream`: ``<Response><Connect><Stream url="wss://HOST/media">`` with one
  ``<Parameter>`` per item, the answer to the Voice webhook (``POST /twiml``): Twilio opens the
  media stream to ``url`` and hands the parameters back in ``start.customParameters``.
* :func:`dial`: ``<Response><Dial>NUMBER</Dial></Response>`` (or ``<Sip>`` for a SIP URI), what a
  call is updated with to transfer it.
* :func:`play_digits`: ``<Play digits="...">`` followed by a new ``<Connect><Stream>``: the only
  way to send DTMF on a call whose audio is a media stream.

Every attribute value and text node is XML-escaped; parameter names are checked against what
Twilio accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from pipeline.errors import UsageError

__all__ = [
    "DIGITS_RE",
    "TARGET_RE",
    "TwimlError",
    "connect_stream",
    "dial",
    "play_digits",
    "stream_url",
]

_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
#: What ``<Play digits>`` accepts: 0-9, *, #, and w (a half-second pause).
DIGITS_RE = re.compile(r"^[0-9*#wW]{1,64}$")
#: A transfer target: an E.164 number or a SIP URI.
TARGET_RE = re.compile(r"^(\+[1-9][0-9]{6,14}|sips?:[^\s<>\"']{3,200})$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TwimlError(UsageError):
    """A value that cannot go into TwiML (a bad number, digits, URL or parameter name)."""


def stream_url(public_url: str, path: str = "/media") -> str:
    """The ``wss://`` URL of the media stream for a server reached at ``public_url``
    (``https://agent.example.com`` -> ``wss://agent.example.com/media``)."""
    base = public_url.rstrip("/")
    for plain, secure in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(plain):
            base = secure + base[len(plain) :]
    if not base.startswith(("wss://", "ws://")):
        raise TwimlError(
            f"public URL {public_url!r} must start with https:// (or http:// for a local test)"
        )
    return base + path


def _params(parameters: Mapping[str, str]) -> str:
    out = []
    for name, value in parameters.items():
        if not _PARAM_NAME_RE.match(name):
            raise TwimlError(
                f"<Parameter> name {name!r} is not accepted: letters, digits, '_', '.', '-'"
            )
        out.append(f"<Parameter name={quoteattr(name)} value={quoteattr(str(value))}/>")
    return "".join(out)


def connect_stream(url: str, parameters: Mapping[str, str] | None = None) -> str:
    """``<Connect><Stream url=URL>`` with a ``<Parameter>`` per item: a bidirectional stream."""
    if not url.startswith(("wss://", "ws://")):
        raise TwimlError(f"<Stream url> must be a wss:// URL, got {url!r}")
    inner = _params(parameters or {})
    return (
        f"{_DECL}<Response><Connect><Stream url={quoteattr(url)}>{inner}</Stream></Connect>"
        "</Response>"
    )


def dial(target: str, *, caller_id: str | None = None) -> str:
    """``<Dial>`` to an E.164 number or a SIP URI (the call leaves the agent)."""
    if not TARGET_RE.match(target):
        raise TwimlError(
            f"transfer target {target!r} is neither an E.164 number (+15551234567) nor a SIP URI"
        )
    attr = f" callerId={quoteattr(caller_id)}" if caller_id else ""
    noun = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip") else escape(target)
    return f"{_DECL}<Response><Dial{attr}>{noun}</Dial></Response>"


def play_digits(digits: str, url: str, parameters: Mapping[str, str] | None = None) -> str:
    """``<Play digits=...>`` then a new ``<Connect><Stream>``: send DTMF, then stream again."""
    if not DIGITS_RE.match(digits):
        raise TwimlError(f"digits {digits!r}: use 0-9, *, # and w (a half-second pause)")
    stream = connect_stream(url, parameters)[len(_DECL) + len("<Response>") : -len("</Response>")]
    return f"{_DECL}<Response><Play digits={quoteattr(digits)}/>{stream}</Response>"
