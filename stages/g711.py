"""G.711 μ-law and A-law: a pure codec (a compiled kernel, ``audioop`` or lookup tables) and
the two stages.

The codec is plain synchronous code: ``encode_ulaw(pcm16 bytes) -> bytes`` and
``decode_ulaw(bytes) -> pcm16 bytes`` (and the same for A-law), plus ``encode(pcm, encoding)``
and ``decode(data, encoding)`` dispatching on the frame's encoding, callable from tests,
benchmarks and other stages with no event loop. Three bit-identical implementations back it, the
first that is at hand serving:

- the compiled kernel ``stages._cg711`` (``stages/_cg711.c``, built with the package): one table
  lookup per sample; ``native_*`` names its functions (None when it was not built, or with
  ``PIPELINE_PURE_PYTHON=1``);
- ``audioop`` (CPython ≤ 3.12, or the ``audioop-lts`` package on 3.13+) when it imports, on a
  little-endian machine;
- otherwise the ``numpy_*`` functions, each one numpy ``take`` from a table:

- encoding indexes a 65,536-entry ``uint8`` table with the ``uint16`` view of the int16 samples;
- decoding indexes a 256-entry ``int16`` table with the code bytes.

The tables are computed once at import from the ITU-T G.711 segment algorithm exactly as CPython
3.11's ``audioop`` implements it (``lin2ulaw``/``ulaw2lin``/``lin2alaw``/``alaw2lin`` on 16-bit
samples: μ-law encodes the top 14 bits, A-law the top 13, both truncating toward minus infinity).
The tests check all 65,536 inputs and all 256 codes of every implementation against ``audioop``
where it exists, and against stored SHA-256 digests of the tables where it does not (Python 3.13
removed it).

Cost (measured, see ``docs/audio-io.md``): per 160-sample (20 ms at 8 kHz) frame, about 0.07 µs
(decode) and 0.09 µs (encode) through the kernel, 0.09 and 0.31 µs through audioop (0.9 µs to
encode distinct frames of speech), about 1 µs through the tables.

Stages:

- ``g711_decode``: pcmu/pcma audio → pcm16 at the same rate; every other frame passes unchanged.
- ``g711_encode``: pcm16 audio at 8000 Hz → pcmu (``law: ulaw``) or pcma (``law: alaw``).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline import native
from pipeline.context import StageContext
from pipeline.errors import FormatError, StageError, UsageError
from pipeline.frames import Audio, AudioFormat, Encoding, Frame, make_audio
from pipeline.spec import stage

__all__ = [
    "ALAW_DECODE",
    "ALAW_ENCODE",
    "AUDIOOP",
    "CG711",
    "DECODERS",
    "ENCODERS",
    "ULAW_DECODE",
    "ULAW_ENCODE",
    "decode",
    "decode_alaw",
    "decode_pure",
    "decode_ulaw",
    "encode",
    "encode_alaw",
    "encode_pure",
    "encode_ulaw",
    "g711_decode",
    "g711_encode",
    "native_decode_alaw",
    "native_decode_ulaw",
    "native_encode_alaw",
    "native_encode_ulaw",
    "numpy_decode_alaw",
    "numpy_decode_ulaw",
    "numpy_encode_alaw",
    "numpy_encode_ulaw",
]


def _load_audioop() -> ModuleType | None:
    if sys.byteorder != "little":  # audioop works in native order, our pcm16 is little-endian
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.11/3.12 announce its removal
        try:
            return importlib.import_module("audioop")
        except ImportError:
            return None


#: CPython's ``audioop`` (or ``audioop-lts``) when it imports, else None: the
#: fast path for G.711 here and for the VAD's pre-emphasis (``stages.vad.engines``)
AUDIOOP: ModuleType | None = _load_audioop()

# ---------------------------------------------------------------------------- tables

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (0, 1, ..., 32767, -32768, ..., -1),
    so that entry ``i`` of a table built from it belongs to the sample whose bits read ``i``."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    # audioop st_14linear2ulaw: 14-bit magnitude, bias 33, segment search, invert all bits.
    v = _all_int16() >> 2
    neg = v < 0
    mag = np.where(neg, -v, v)
    mask = np.where(neg, 0x7F, 0xFF)
    mag = np.minimum(mag, 32635) + (0x84 >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")
    uval = (seg << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    out = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return out.astype(np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    # audioop st_linear2alaw: 13-bit value, one's-complement magnitude, even-bit inversion.
    v = _all_int16() >> 3
    neg = v < 0
    mask = np.where(neg, 0x55, 0xD5)
    mag = np.where(neg, -v - 1, v)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    aval = (seg << 4) | ((mag >> shift) & 0xF)
    out = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask)
    return out.astype(np.uint8)


def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
    out = np.where(u & 0x80, 0x84 - t, t - 0x84)
    return out.astype("<i2")


def _alaw_decode_table() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0xF) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    out = np.where(a & 0x80, t, -t)
    return out.astype("<i2")


#: code for every int16 sample, indexed by the sample's uint16 bit pattern
ULAW_ENCODE: npt.NDArray[np.uint8] = _ulaw_encode_table()
ALAW_ENCODE: npt.NDArray[np.uint8] = _alaw_encode_table()
#: int16 (little-endian) sample for every code byte
ULAW_DECODE: npt.NDArray[np.int16] = _ulaw_decode_table()
ALAW_DECODE: npt.NDArray[np.int16] = _alaw_decode_table()
for _t in (ULAW_ENCODE, ALAW_ENCODE, ULAW_DECODE, ALAW_DECODE):
    _t.setflags(write=False)

# ---------------------------------------------------------------------------- codec


_U16 = np.dtype("<u2")  # parsed once: a dtype string costs ~0.4 µs per call


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) & 1:
        raise UsageError(f"pcm16 audio must be a whole number of 2-byte samples, got {len(pcm)}")


def numpy_encode_ulaw(pcm: bytes) -> bytes:
    """μ-law codes for little-endian int16 samples through the table (no audioop)."""
    _check_pcm(pcm)
    return ULAW_ENCODE.take(np.frombuffer(pcm, dtype=_U16)).tobytes()


def numpy_decode_ulaw(codes: bytes) -> bytes:
    """Little-endian int16 samples for μ-law codes through the table (no audioop)."""
    return ULAW_DECODE.take(np.frombuffer(codes, dtype=np.uint8)).tobytes()


def numpy_encode_alaw(pcm: bytes) -> bytes:
    """A-law codes for little-endian int16 samples through the table (no audioop)."""
    _check_pcm(pcm)
    return ALAW_ENCODE.take(np.frombuffer(pcm, dtype=_U16)).tobytes()


def numpy_decode_alaw(codes: bytes) -> bytes:
    """Little-endian int16 samples for A-law codes through the table (no audioop)."""
    return ALAW_DECODE.take(np.frombuffer(codes, dtype=np.uint8)).tobytes()


def _audioop_codecs(ao: ModuleType) -> tuple[Callable[[bytes], bytes], ...]:
    """audioop's four functions as one-argument codecs (encoders refuse odd byte counts with
    our message, not audioop's)."""
    lin2ulaw, lin2alaw, ulaw2lin, alaw2lin = ao.lin2ulaw, ao.lin2alaw, ao.ulaw2lin, ao.alaw2lin

    def encode_ulaw(pcm: bytes) -> bytes:
        """μ-law codes (a byte per sample) for little-endian int16 samples (audioop.lin2ulaw)."""
        if len(pcm) & 1:
            _check_pcm(pcm)
        return lin2ulaw(pcm, 2)  # type: ignore[no-any-return]

    def encode_alaw(pcm: bytes) -> bytes:
        """A-law codes (a byte per sample) for little-endian int16 samples (audioop.lin2alaw)."""
        if len(pcm) & 1:
            _check_pcm(pcm)
        return lin2alaw(pcm, 2)  # type: ignore[no-any-return]

    def decode_ulaw(codes: bytes) -> bytes:
        """Little-endian int16 samples for μ-law codes; as ``audioop.ulaw2lin(codes, 2)``."""
        return ulaw2lin(codes, 2)  # type: ignore[no-any-return]

    def decode_alaw(codes: bytes) -> bytes:
        """Little-endian int16 samples for A-law codes; as ``audioop.alaw2lin(codes, 2)``."""
        return alaw2lin(codes, 2)  # type: ignore[no-any-return]

    return encode_ulaw, encode_alaw, decode_ulaw, decode_alaw


#: the compiled kernel (``stages/_cg711.c``), or None when it was not built or
#: ``PIPELINE_PURE_PYTHON`` is set: the same bytes as the tables, about 4× cheaper than
#: audioop to encode a 20 ms frame
CG711: ModuleType | None = native.load("stages._cg711")

_Codec = Callable[[bytes], bytes]
#: the compiled codecs (None without the kernel), reachable by name to compare with the tables
native_encode_ulaw: _Codec | None = None if CG711 is None else CG711.encode_ulaw
native_encode_alaw: _Codec | None = None if CG711 is None else CG711.encode_alaw
native_decode_ulaw: _Codec | None = None if CG711 is None else CG711.decode_ulaw
native_decode_alaw: _Codec | None = None if CG711 is None else CG711.decode_alaw

encode_ulaw: _Codec
encode_alaw: _Codec
decode_ulaw: _Codec
decode_alaw: _Codec
if CG711 is not None:
    encode_ulaw, encode_alaw = CG711.encode_ulaw, CG711.encode_alaw
    decode_ulaw, decode_alaw = CG711.decode_ulaw, CG711.decode_alaw
elif AUDIOOP is not None:
    encode_ulaw, encode_alaw, decode_ulaw, decode_alaw = _audioop_codecs(AUDIOOP)
else:
    encode_ulaw, encode_alaw = numpy_encode_ulaw, numpy_encode_alaw
    decode_ulaw, decode_alaw = numpy_decode_ulaw, numpy_decode_alaw

#: pcm16 bytes -> code bytes, and back, by encoding (the fastest codec at hand)
ENCODERS: dict[str, _Codec] = {"pcmu": encode_ulaw, "pcma": encode_alaw}
DECODERS: dict[str, _Codec] = {"pcmu": decode_ulaw, "pcma": decode_alaw}


def encode_pure(pcm: bytes, encoding: Encoding) -> bytes:
    """pcm16 bytes in ``encoding`` (``pcm16``, or anything else, returns them unchanged)."""
    if encoding == "pcmu":
        return encode_ulaw(pcm)
    if encoding == "pcma":
        return encode_alaw(pcm)
    return pcm


def decode_pure(data: bytes, encoding: Encoding) -> bytes:
    """pcm16 bytes for audio in ``encoding`` (``pcm16``, or anything else, returns it
    unchanged)."""
    if encoding == "pcmu":
        return decode_ulaw(data)
    if encoding == "pcma":
        return decode_alaw(data)
    return data


#: ``encode(pcm, encoding)``: pcm16 bytes in ``encoding`` (``pcm16`` returns them unchanged);
#: the kernel's when built (one call, no dispatch in Python), else :func:`encode_pure`
encode: Callable[[bytes, Encoding], bytes] = encode_pure if CG711 is None else CG711.encode
#: ``decode(data, encoding)``: pcm16 bytes for audio in ``encoding`` (``pcm16`` returns it
#: unchanged); the kernel's when built, else :func:`decode_pure`
decode: Callable[[bytes, Encoding], bytes] = decode_pure if CG711 is None else CG711.decode


# ---------------------------------------------------------------------------- stages

_LAW_ENCODING: dict[str, Encoding] = {"ulaw": "pcmu", "alaw": "pcma"}
_ENCODING_NAME = {"pcmu": "μ-law", "pcma": "A-law", "pcm16": "PCM"}


def _decode_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    if fmt is None:
        return None
    if fmt.encoding == "pcm16":
        raise FormatError(
            f"gets pcm16 audio ({fmt}); it is already PCM, there is nothing to decode",
            "remove the g711_decode stage",
        )
    return AudioFormat("pcm16", fmt.rate, fmt.channels)


def _encode_problem(law: str, fmt: AudioFormat) -> tuple[str, str] | None:
    target = _LAW_ENCODING[law]
    if fmt.encoding == target:
        return (
            f"gets {fmt.encoding} audio ({fmt}); it is already {_ENCODING_NAME[target]}",
            "remove the g711_encode stage",
        )
    if fmt.encoding != "pcm16":
        return (
            f"gets {fmt.encoding} audio ({fmt}); G.711 encoding needs pcm16",
            "add {type: g711_decode} before it",
        )
    if fmt.rate != 8000:
        return (
            f"gets {fmt.rate} Hz audio; G.711 needs 8000 Hz",
            "add {type: resample, rate: 8000} before it",
        )
    return None


def _encode_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> AudioFormat | None:
    law = str(params.get("law", "ulaw"))
    if fmt is None:
        return AudioFormat(_LAW_ENCODING[law], 8000)
    problem = _encode_problem(law, fmt)
    if problem is not None:
        raise FormatError(*problem)
    return AudioFormat(_LAW_ENCODING[law], fmt.rate, fmt.channels)


@stage(
    "g711_decode",
    accepts=(Audio,),
    emits=(Audio,),
    passthrough=True,
    output_format=_decode_format,
)
async def g711_decode(frames: AsyncIterator[Frame]) -> AsyncIterator[Frame]:
    """Decode G.711 μ-law/A-law audio to pcm16 at the same rate (bit-exact with audioop).

    Every other frame, pcm16 audio included, passes through unchanged.
    """
    # the decoder for the last encoding seen: one dict lookup per change of encoding, not per
    # frame; make_audio builds the frame without the dataclass __init__
    make = make_audio
    encoding, decoder = "pcmu", DECODERS["pcmu"]
    async for frame in frames:
        # the steady state first: audio in the encoding of the frame before (frames are never
        # subclassed, so the class test is exact)
        if frame.__class__ is Audio and frame.encoding == encoding:
            yield make(decoder(frame.data), "pcm16", frame.rate, frame.channels, frame.pts)
        elif frame.__class__ is Audio and frame.encoding != "pcm16":
            encoding = frame.encoding
            decoder = DECODERS[encoding]
            yield make(decoder(frame.data), "pcm16", frame.rate, frame.channels, frame.pts)
        else:
            yield frame


@stage(
    "g711_encode",
    accepts=(Audio,),
    emits=(Audio,),
    passthrough=True,
    output_format=_encode_format,
)
async def g711_encode(
    frames: AsyncIterator[Frame],
    *,
    law: Literal["ulaw", "alaw"] = "ulaw",
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Encode pcm16 audio at 8000 Hz to G.711 μ-law or A-law (bit-exact with audioop).

    Audio of another rate or encoding stops the run with an error naming the stage to insert;
    every other frame passes through unchanged.

    Parameters:
        law: ulaw (pcmu, North America/Japan) or alaw (pcma, elsewhere)
    """
    target = _LAW_ENCODING[law]
    encoder = ENCODERS[target]
    make = make_audio
    async for frame in frames:
        # the steady state: pcm16 at 8000 Hz (the one format _encode_problem accepts, checked
        # without building an AudioFormat); an odd byte count is refused by the encoder
        if frame.__class__ is Audio and frame.encoding == "pcm16" and frame.rate == 8000:
            yield make(encoder(frame.data), target, 8000, frame.channels, frame.pts)
        elif frame.__class__ is Audio:
            problem = _encode_problem(law, frame.format)
            if problem is not None:
                raise StageError(ctx.id, "; ".join(problem))
            yield make(encoder(frame.data), target, 8000, frame.channels, frame.pts)
        else:
            yield frame
