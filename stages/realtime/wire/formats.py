"""Audio formats by all their wire names: ours (``pcm16``), the current ``type`` of xAI and
OpenAI GA (``audio/pcm``) and OpenAI beta's string (``pcm16``, ``g711_ulaw``).

Which form a dialect writes, and which rates it accepts, is the dialect codec's business
(:meth:`~stages.realtime.wire.base.DialectCodec.format_to_wire`); this module holds the names
every dialect shares and a lenient reader for any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UsageError
from pipeline.frames import AudioFormat, Encoding


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One audio encoding by all its names: ours, the current (GA / xAI) ``type`` and the
    OpenAI-beta string. ``fixed_rate`` is set for the G.711 laws (8000 Hz, no rate on the wire)."""

    encoding: Encoding
    ga_type: str
    beta_name: str
    fixed_rate: int | None


#: Our encoding name -> its wire names.
WIRE_FORMATS: dict[Encoding, WireFormat] = {
    "pcm16": WireFormat("pcm16", "audio/pcm", "pcm16", None),
    "pcmu": WireFormat("pcmu", "audio/pcmu", "g711_ulaw", 8000),
    "pcma": WireFormat("pcma", "audio/pcma", "g711_alaw", 8000),
}
#: GA / xAI ``type`` -> the format; OpenAI beta string -> the format.
BY_GA_TYPE: dict[str, WireFormat] = {w.ga_type: w for w in WIRE_FORMATS.values()}
BY_BETA_NAME: dict[str, WireFormat] = {w.beta_name: w for w in WIRE_FORMATS.values()}

#: Every name a format goes by (ours, GA/xAI ``type``, OpenAI beta, short) -> our encoding.
FORMAT_ALIASES: dict[str, Encoding] = {
    "pcm16": "pcm16",
    "pcm": "pcm16",
    "audio/pcm": "pcm16",
    "pcmu": "pcmu",
    "ulaw": "pcmu",
    "g711_ulaw": "pcmu",
    "audio/pcmu": "pcmu",
    "pcma": "pcma",
    "alaw": "pcma",
    "g711_alaw": "pcma",
    "audio/pcma": "pcma",
}

#: The rate a PCM stream has when no rate is given (the servers' default).
DEFAULT_PCM_RATE = 24000
PCM24K = AudioFormat("pcm16", DEFAULT_PCM_RATE)


def normalize_encoding(name: str) -> Encoding:
    """Our encoding for any of a format's names (``pcm16``, ``g711_ulaw``, ``audio/pcma``, ...).

    Raises ValueError naming the accepted names."""
    try:
        return FORMAT_ALIASES[name.strip().lower()]
    except KeyError:
        names = ", ".join(sorted(FORMAT_ALIASES))
        raise UsageError(f"unknown audio format '{name}'; use one of {names}") from None


def format_from_wire(value: Any) -> AudioFormat:
    """Read an audio format in any dialect's form (dict with ``type``/``rate``, or a beta
    string), leniently: what a client does with a server's session. Raises ValueError for
    something else. A server reads strictly with the dialect's codec instead."""
    if isinstance(value, str):
        enc = normalize_encoding(value)
        rate = None
    elif isinstance(value, Mapping) and isinstance(value.get("type"), str):
        enc = normalize_encoding(value["type"])
        raw = value.get("rate")
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool)):
            raise UsageError(f"audio format rate must be an integer, got {raw!r}")
        rate = raw
    else:
        raise UsageError(f"not an audio format: {value!r}")
    fixed = WIRE_FORMATS[enc].fixed_rate
    return AudioFormat(enc, fixed or rate or DEFAULT_PCM_RATE)


def session_formats(session: Mapping[str, Any]) -> tuple[AudioFormat | None, AudioFormat | None]:
    """The (input, output) audio formats in a session object of any dialect (None if absent)."""
    inp: Any = None
    out: Any = None
    audio = session.get("audio")
    if isinstance(audio, Mapping):
        a_in, a_out = audio.get("input"), audio.get("output")
        inp = a_in.get("format") if isinstance(a_in, Mapping) else None
        out = a_out.get("format") if isinstance(a_out, Mapping) else None
    inp = inp if inp is not None else session.get("input_audio_format")
    out = out if out is not None else session.get("output_audio_format")

    def read(v: Any) -> AudioFormat | None:
        if v is None:
            return None
        try:
            return format_from_wire(v)
        except ValueError:
            return None

    return read(inp), read(out)
