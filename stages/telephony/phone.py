"""``phone_source`` and ``phone_sink``: a call leg over any carrier's media stream.

The same stages as ``twilio_source``/``twilio_sink`` with the carrier and its audio format as
parameters, so ``pipeline validate`` knows each carrier's wire facts: Telnyx streams PCMU, PCMA
or L16 (8 or 16 kHz), Plivo μ-law 8 kHz or L16 8/16 kHz, Vonage L16 at 16 (or 8) kHz in binary
20 ms frames, Exotel 16-bit PCM at 8, 16 or 24 kHz in chunks of at least 100 ms, Twilio μ-law
8 kHz. ``pipeline serve`` reads the carrier from the pipeline and speaks its dialect on every
connection (see :mod:`stages.telephony.carriers`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pipeline.context import PLAYED, StageContext
from pipeline.errors import FormatError
from pipeline.frames import Audio, AudioFormat, Frame, Interrupt, ResponseDone, Text
from pipeline.spec import stage

from . import offer  # noqa: F401  (validate: call tools the carrier cannot do)
from .carriers import CARRIERS
from .twilio import CALL, call_audio, play_to_call

__all__ = ["CarrierName", "phone_sink", "phone_source", "stream_format"]

CarrierName = Literal["twilio", "telnyx", "plivo", "vonage", "exotel"]


def stream_format(params: Mapping[str, Any]) -> AudioFormat:
    """The audio format a phone stage's parameters name (the carrier's default where left
    out)."""
    cls = CARRIERS[str(params.get("carrier") or "twilio")]
    default = cls.formats[0]
    encoding = params.get("encoding") or default.encoding
    rate = params.get("rate")
    if rate is None:
        same = [f.rate for f in cls.formats if f.encoding == encoding]
        rate = same[0] if same else default.rate
    return AudioFormat(encoding, int(rate))


def _check(values: Mapping[str, Any], _base_dir: Path) -> list[tuple[str, str]]:
    cls = CARRIERS.get(str(values.get("carrier") or "twilio"))
    if cls is None:
        return [("carrier", f"unknown carrier; one of {', '.join(CARRIERS)}")]
    fmt = stream_format(values)
    problem = cls.check_format(fmt.encoding, fmt.rate)
    if problem:
        return [("encoding", problem)]
    chunk_ms = values.get("chunk_ms")
    if chunk_ms is not None:
        if cls.frame_ms is not None and chunk_ms != cls.frame_ms:
            return [("chunk_ms", f"{cls.name} takes media in {cls.frame_ms} ms frames only")]
        if not cls.min_chunk_ms <= chunk_ms <= 200:
            return [("chunk_ms", f"{cls.name} plays chunks of {cls.min_chunk_ms} to 200 ms")]
    return []


def _source_format(params: Mapping[str, Any], _fmt: AudioFormat | None) -> AudioFormat:
    return stream_format(params)


def _sink_format(params: Mapping[str, Any], fmt: AudioFormat | None) -> None:
    want = stream_format(params)
    if fmt is None or fmt == want:
        return
    steps = []
    if fmt.rate != want.rate:
        steps.append(f"{{type: resample, rate: {want.rate}}}")
    if want.encoding in ("pcmu", "pcma") and fmt.encoding != want.encoding:
        law = "ulaw" if want.encoding == "pcmu" else "alaw"
        steps.append(f"{{type: g711_encode, law: {law}}}")
    elif want.encoding == "pcm16" and fmt.encoding != "pcm16":
        steps.insert(0, "{type: g711_decode}")
    fix = "add " + " and ".join(steps) + " before it" if steps else "mix it down to one channel"
    carrier = params.get("carrier") or "twilio"
    raise FormatError(f"gets {fmt} audio; this {carrier} stream plays {want}", fix)


@stage(
    "phone_source",
    emits=(Audio, Text),
    output_format=_source_format,
    check=_check,
    uses=(CALL,),
)
async def phone_source(
    *,
    carrier: CarrierName = "twilio",
    encoding: Literal["pcmu", "pcma", "pcm16"] | None = None,
    rate: int | None = None,
    dtmf: Literal["ignore", "text"] = "ignore",
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """The caller's audio from a carrier's media stream (run by 'pipeline serve'); ends with
    the call.

    Parameters:
        carrier: twilio, telnyx, plivo, vonage or exotel
        encoding: the stream's audio encoding (default: the carrier's first)
        rate: the stream's sample rate in Hz (default: the carrier's for that encoding)
        dtmf: ignore key presses (logged only), or pass each as text "DTMF <digit>" (role user)
    """
    fmt = stream_format({"carrier": carrier, "encoding": encoding, "rate": rate})
    async for frame in call_audio(ctx, dtmf, fmt, "phone_source"):
        yield frame


@stage(
    "phone_sink",
    accepts=(Audio, Interrupt, ResponseDone),
    output_format=_sink_format,
    check=_check,
    publishes=(PLAYED,),
    uses=(CALL,),
)
async def phone_sink(
    frames: AsyncIterator[Frame],
    *,
    carrier: CarrierName = "twilio",
    encoding: Literal["pcmu", "pcma", "pcm16"] | None = None,
    rate: int | None = None,
    chunk_ms: int | None = None,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Audio back to the caller over a carrier's media stream, each chunk followed by the
    carrier's mark; ``interrupt`` clears what is buffered. Publishes what the caller heard.

    Parameters:
        carrier: twilio, telnyx, plivo, vonage or exotel
        encoding: the stream's audio encoding (default: the carrier's first)
        rate: the stream's sample rate in Hz (default: the carrier's for that encoding)
        chunk_ms: milliseconds per media message (default: 20, or the carrier's minimum)
    """
    fmt = stream_format({"carrier": carrier, "encoding": encoding, "rate": rate})
    cls = CARRIERS[carrier]
    ms = chunk_ms if chunk_ms is not None else cls.frame_ms or max(20, cls.min_chunk_ms)
    await play_to_call(frames, ctx, ms, fmt, "phone_sink")
    return
    yield
