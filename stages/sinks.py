"""Sinks: ``wav_sink`` (audio to a WAV file), ``jsonl_sink`` (the event log), ``null_sink``.

Sinks emit nothing and pass nothing through. They create missing parent folders of their
output files, and create a file with the first frame it holds (or, with none, when the input
ends): a run that fails before anything arrived, such as a session refused for a missing key,
leaves no empty output behind.

``wav_sink`` writes each frame as it arrives through :class:`~stages.wavfile.WavWriter`, whose
header is rewritten after every write: whatever ends the run (end of stream, an error upstream,
a cancel, Ctrl-C), the file is a valid WAV holding exactly the frames received. After each write
it publishes :class:`~pipeline.context.Played` on the bus (topic :data:`~pipeline.context.PLAYED`)
with the media time written up to, so a realtime session can truncate what the caller "heard".
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import orjson

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import StageError
from pipeline.frames import (
    EVENT_TYPES,
    FRAME_TYPES,
    Audio,
    AudioFormat,
    Frame,
    event_to_dict,
)
from pipeline.spec import OutputPath, stage

from .wavfile import WavStreamWriter, WavWriter

__all__ = ["jsonl_sink", "null_sink", "wav_sink"]

#: the format of the empty WAV written when no audio arrived and the input format is unknown
EMPTY_FORMAT = AudioFormat("pcm16", 8000)


def _cannot_write(stage_id: str, path: object, exc: OSError) -> StageError:
    """One line naming the file, for a write that failed while running (a full disk...)."""
    return StageError(
        stage_id,
        f"cannot write {path}: {exc.strerror or exc}; check the path, its permissions and the "
        "free space",
    )


#: ``path: "-"``: standard output
STDOUT = "-"


@stage("wav_sink", accepts=(Audio,), emits=(), publishes=(PLAYED,))
async def wav_sink(
    frames: AsyncIterator[Frame], *, path: OutputPath, ctx: StageContext
) -> AsyncIterator[Frame]:
    """Write audio frames to a WAV file (PCM16, μ-law or A-law, as received), valid at all times.

    The first frame fixes the file's format; a frame of another format stops the run with an
    error. Nothing is inserted for gaps between frames. When the input ends with no audio at
    all the file is an empty WAV in the input link's format (pcm16 8000 Hz if unknown); a run
    that fails before any audio arrived leaves no file. ``path: -`` writes a WAV stream to
    standard output (the header says "length unknown", as sox writes it), e.g. for ``| play -``.

    Parameters:
        path: the WAV file to write (parent folders are created), or - for standard output
    """
    if str(path) == STDOUT:
        async for _ in _wav_stdout(frames, ctx):
            yield _
        return
    writer: WavWriter | None = None
    # the file's format as three values, compared per frame field by field (building the
    # frame's AudioFormat to compare costs 1.3 µs)
    encoding, rate, channels = "", 0, 0
    ended = False  # True once the input ended normally (no error on the way out)
    try:
        async for frame in frames:
            if not isinstance(frame, Audio):
                continue
            try:
                if writer is None:
                    writer = WavWriter(path, frame.format)
                    encoding, rate, channels = frame.encoding, frame.rate, frame.channels
                    ctx.log.debug("wav_sink_open", path=str(path), format=str(frame.format))
                elif frame.encoding != encoding or frame.rate != rate or frame.channels != channels:
                    raise _other_format(ctx, frame, writer.format)
                writer.write(frame.data)
            except OSError as exc:
                raise _cannot_write(ctx.id, path, exc) from exc
            ctx.bus.publish(PLAYED, Played(ctx.id, frame.end_pts))
        ended = True
    finally:
        try:
            if writer is None and ended:
                writer = WavWriter(path, ctx.input_format or EMPTY_FORMAT)
            if writer is not None:
                writer.close()
                ctx.report("seconds", round(writer.num_frames / writer.format.rate, 3))
        except OSError as exc:
            if ended:  # else the error already on its way out is the one to report
                raise _cannot_write(ctx.id, path, exc) from exc
    return
    yield  # an async generator that yields nothing


def _other_format(ctx: StageContext, frame: Audio, first: AudioFormat) -> StageError:
    return StageError(
        ctx.id,
        f"got {frame.format} audio at {frame.pts:.3f} s after {first} audio; a WAV file holds "
        "one format: add a resample or g711 stage before it",
    )


async def _wav_stdout(frames: AsyncIterator[Frame], ctx: StageContext) -> AsyncIterator[Frame]:
    """``wav_sink`` on standard output: writes run in a thread, so a slow reader of the pipe
    (``play``) holds the sink back without blocking the event loop."""
    out = sys.stdout.buffer
    writer: WavStreamWriter | None = None
    try:
        async for frame in frames:
            if not isinstance(frame, Audio):
                continue
            try:
                if writer is None:
                    writer = await asyncio.to_thread(WavStreamWriter, out, frame.format)
                elif frame.format != writer.format:
                    raise _other_format(ctx, frame, writer.format)
                with ctx.waiting():
                    await asyncio.to_thread(writer.write, frame.data)
            except OSError as exc:  # the reader went away (BrokenPipeError) or the like
                raise _cannot_write(ctx.id, "standard output", exc) from exc
            ctx.bus.publish(PLAYED, Played(ctx.id, frame.end_pts))
        if writer is None:  # no audio: an empty WAV stream, as for a file
            writer = WavStreamWriter(out, ctx.input_format or EMPTY_FORMAT)
    finally:
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
            ctx.report("seconds", round(writer.num_frames / writer.format.rate, 3))
    return
    yield  # an async generator that yields nothing


@stage("jsonl_sink", accepts=EVENT_TYPES, emits=())
async def jsonl_sink(
    frames: AsyncIterator[Frame], *, path: OutputPath, ctx: StageContext
) -> AsyncIterator[Frame]:
    """Write events as JSON lines (the event log), one flushed line per event.

    Each line is ``{"type", "pts", "stage", ...fields}``; audio frames are not written. The file
    is created with the first event (with none, when the input ends: an empty log).

    Parameters:
        path: the file to write, or - for standard output
    """
    out: BinaryIO | None = None
    owned = str(path) != STDOUT

    def open_out() -> BinaryIO:
        if not owned:
            return sys.stdout.buffer
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return open(path, "wb")
        except OSError as exc:
            raise _cannot_write(ctx.id, path, exc) from exc

    count = 0
    ended = False
    try:
        async for frame in frames:
            if isinstance(frame, Audio):
                continue
            if out is None:  # opened with the first event: a run that fails first leaves none
                out = open_out()
            try:
                out.write(orjson.dumps(event_to_dict(frame)) + b"\n")
                out.flush()
            except OSError as exc:
                raise _cannot_write(ctx.id, path, exc) from exc
            count += 1
        ended = True
        if out is None:  # the input ended with no events: an empty log
            out = open_out()
    finally:
        if out is not None:
            if owned:
                out.close()
            else:
                with contextlib.suppress(OSError):
                    out.flush()
        if ended or out is not None:
            ctx.report("events", count)
    return
    yield  # an async generator that yields nothing


@stage("null_sink", accepts=FRAME_TYPES, emits=())
async def null_sink(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Consume and drop every frame (for benchmarks); reports how many frames it took and the
    media time its last audio frame ends at (``seconds``)."""
    count = 0
    last: Audio | None = None
    try:
        async for frame in frames:
            count += 1
            if frame.__class__ is Audio:
                last = frame
    finally:
        ctx.report("frames", count)
        ctx.report("seconds", 0.0 if last is None else round(last.end_pts, 3))
    return
    yield  # an async generator that yields nothing
