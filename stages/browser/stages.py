"""``browser_source`` and ``browser_sink``: a browser tab's microphone and speaker.

They run inside ``pipeline playground`` (one pipeline per tab, see :mod:`stages.browser.server`)
and find their tab with :func:`~stages.browser.connection.current_connection`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import FormatError
from pipeline.frames import EVENT_TYPES, Audio, AudioFormat, Frame, Interrupt, event_to_dict
from pipeline.spec import stage
from stages.resample import StreamResampler

from .connection import current_connection
from .protocol import MAX_RATE, MIN_RATE, PlayedReport, PlayMap, dumps

__all__ = ["browser_sink", "browser_source"]


def _source_format(params: Mapping[str, Any], _fmt: AudioFormat | None) -> AudioFormat:
    rate = int(params.get("rate", 16000))
    if not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(
            f"rate {rate} Hz is outside what a browser captures ({MIN_RATE}..{MAX_RATE} Hz)",
            "use 16000 or 24000 (or 48000)",
        )
    return AudioFormat("pcm16", rate, 1)


@stage("browser_source", emits=(Audio,), output_format=_source_format)
async def browser_source(*, rate: int = 16000, ctx: StageContext) -> AsyncIterator[Frame]:
    """The browser tab's microphone (pcm16 mono at ``rate``, echo cancellation on); ends when
    the user hangs up or closes the tab.

    The page is asked to capture at ``rate``; if its browser gives another rate, the audio is
    resampled here, so the pipeline always gets what ``pipeline validate`` checked.

    Parameters:
        rate: sample rate of the audio this stage emits (8000..96000 Hz)
    """
    conn = current_connection(ctx.id)
    resampler = StreamResampler(conn.rate, rate) if conn.rate and conn.rate != rate else None
    if resampler is not None:
        ctx.log.info("resampling the microphone", page_rate=conn.rate, rate=rate)
    samples = 0
    while True:
        with ctx.waiting():  # waiting for the microphone is not work
            data = await conn.next_audio()
        if data is None:
            break
        if resampler is not None:
            out = resampler.process(data)
            if not len(out):
                continue
            frame = Audio.from_samples(out, rate, samples / rate)
        else:
            frame = Audio(data, "pcm16", rate, 1, samples / rate)
        samples += frame.num_samples
        yield frame
    if resampler is not None:
        tail = resampler.flush()
        if len(tail):
            yield Audio.from_samples(tail, rate, samples / rate)


def _sink_format(_params: Mapping[str, Any], fmt: AudioFormat | None) -> None:
    if fmt is None:
        return
    if fmt.encoding != "pcm16":
        raise FormatError(
            f"gets {fmt} audio; the browser plays pcm16", "add {type: g711_decode} before it"
        )
    if fmt.channels != 1:
        raise FormatError(f"gets {fmt} audio; the browser plays mono", "mix it down to one channel")
    if not MIN_RATE <= fmt.rate <= MAX_RATE:
        raise FormatError(
            f"gets {fmt} audio; the browser plays {MIN_RATE}..{MAX_RATE} Hz",
            "add {type: resample, rate: 24000} before it",
        )


@stage("browser_sink", accepts=(Audio, *EVENT_TYPES), output_format=_sink_format)
async def browser_sink(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Audio and events to the browser tab: it plays the audio and shows the conversation.

    ``interrupt`` makes the page drop what it has queued at once; the page reports the position
    it has actually played, published as ``played`` so the session truncates its turn at what
    the user heard.
    """
    conn = current_connection(ctx.id)
    fmt = ctx.input_format
    play: PlayMap | None = PlayMap(fmt.rate) if fmt is not None else None
    clears = 0

    def on_played(report: PlayedReport) -> None:
        if play is None:
            return
        heard = play.pts_at(report.position)
        if heard is not None:
            ctx.bus.publish(PLAYED, Played(ctx.id, heard))

    conn.on_played = on_played
    try:
        async for frame in frames:
            if isinstance(frame, Audio):
                if play is None:
                    _sink_format({}, frame.format)
                    play = PlayMap(frame.rate)
                if frame.format != AudioFormat("pcm16", play.rate, 1):
                    raise FormatError(
                        f"stage '{ctx.id}' (browser_sink) got {frame.format} audio after "
                        f"pcm16 {play.rate} Hz; the page plays one format",
                        f"add {{type: resample, rate: {play.rate}}} before it",
                    )
                play.sent(frame.pts, frame.num_samples)
                await conn.send(frame.data)
                continue
            if isinstance(frame, Interrupt):
                clears += 1
                await conn.send(dumps({"type": "clear"}))
            await conn.send(dumps({"type": "event", "event": event_to_dict(frame)}))
    finally:
        conn.on_played = None
        ctx.report("clears_sent", clears)
        if play is not None:
            ctx.report("samples_sent", play.position)
    return
    yield  # an async generator that yields nothing
