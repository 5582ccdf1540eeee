"""Sinks: ``wav_sink`` (audio to a WAV file), ``jsonl_sink`` (the event log), ``null_sink``.

Sinks emit nothing and pass nothing through. They create missing parent folders of their
output files.

``wav_sink`` writes each frame as it arrives through :class:`~stages.wavfile.WavWriter`, whose
header is rewritten after every write: whatever ends the run (end of stream, an error upstream,
a cancel, Ctrl-C), the file is a valid WAV holding exactly the frames received. After each write
it publishes :class:`~pipeline.context.Played` on the bus (topic :data:`~pipeline.context.PLAYED`)
with the media time written up to, so a realtime session can truncate what the caller "heard".
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from pipeline.context import PLAYED, Played, StageContext
from pipeline.errors import StageError
from pipeline.frames import EVENT_TYPES, FRAME_TYPES, Audio, AudioFormat, Frame, event_to_dict
from pipeline.spec import OutputPath, stage

from .wavfile import WavWriter

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


def _check_wav_sink(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """``path: -`` is refused by ``pipeline validate``, not once the run has started."""
    if str(values.get("path")) == "-":
        return [("path", "wav_sink cannot write to standard output ('-'); give a file path")]
    return []


@stage("wav_sink", accepts=(Audio,), emits=(), check=_check_wav_sink, publishes=(PLAYED,))
async def wav_sink(
    frames: AsyncIterator[Frame], *, path: OutputPath, ctx: StageContext
) -> AsyncIterator[Frame]:
    """Write audio frames to a WAV file (PCM16, μ-law or A-law, as received), valid at all times.

    The first frame fixes the file's format; a frame of another format stops the run with an
    error. Nothing is inserted for gaps between frames. With no audio at all the file is an
    empty WAV in the input link's format (pcm16 8000 Hz if unknown).

    Parameters:
        path: the WAV file to write (parent folders are created)
    """
    if str(path) == "-":
        raise StageError(ctx.id, "wav_sink cannot write to standard output ('-'); give a file path")
    writer: WavWriter | None = None
    ended = False  # True once the input ended normally (no error on the way out)
    try:
        async for frame in frames:
            if not isinstance(frame, Audio):
                continue
            try:
                if writer is None:
                    writer = WavWriter(path, frame.format)
                    ctx.log.debug("wav_sink_open", path=str(path), format=str(frame.format))
                elif frame.format != writer.format:
                    raise StageError(
                        ctx.id,
                        f"got {frame.format} audio at {frame.pts:.3f} s after {writer.format} "
                        "audio; a WAV file holds one format: add a resample or g711 stage "
                        "before it",
                    )
                writer.write(frame.data)
            except OSError as exc:
                raise _cannot_write(ctx.id, path, exc) from exc
            ctx.bus.publish(PLAYED, Played(ctx.id, frame.end_pts))
        ended = True
    finally:
        try:
            if writer is None:
                writer = WavWriter(path, ctx.input_format or EMPTY_FORMAT)
            writer.close()
            ctx.report("seconds", round(writer.num_frames / writer.format.rate, 3))
        except OSError as exc:
            if ended:  # else the error already on its way out is the one to report
                raise _cannot_write(ctx.id, path, exc) from exc
    return
    yield  # an async generator that yields nothing


@stage("jsonl_sink", accepts=EVENT_TYPES, emits=())
async def jsonl_sink(
    frames: AsyncIterator[Frame], *, path: OutputPath, ctx: StageContext
) -> AsyncIterator[Frame]:
    """Write events as JSON lines (the event log), one flushed line per event.

    Each line is ``{"type", "pts", "stage", ...fields}``; audio frames are not written.

    Parameters:
        path: the file to write, or - for standard output
    """
    out: BinaryIO
    if str(path) == "-":
        out, owned = sys.stdout.buffer, False
    else:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            out, owned = open(path, "wb"), True  # noqa: SIM115 - closed in finally
        except OSError as exc:
            raise _cannot_write(ctx.id, path, exc) from exc
    count = 0
    try:
        async for frame in frames:
            if isinstance(frame, Audio):
                continue
            try:
                out.write(orjson.dumps(event_to_dict(frame)) + b"\n")
                out.flush()
            except OSError as exc:
                raise _cannot_write(ctx.id, path, exc) from exc
            count += 1
    finally:
        if owned:
            out.close()
        else:
            out.flush()
        ctx.report("events", count)
    return
    yield  # an async generator that yields nothing


@stage("null_sink", accepts=FRAME_TYPES, emits=())
async def null_sink(frames: AsyncIterator[Frame], *, ctx: StageContext) -> AsyncIterator[Frame]:
    """Consume and drop every frame (for benchmarks); reports how many frames it took."""
    count = 0
    seconds = 0.0
    try:
        async for frame in frames:
            count += 1
            if isinstance(frame, Audio):
                seconds += frame.duration
    finally:
        ctx.report("frames", count)
        ctx.report("seconds", round(seconds, 3))
    return
    yield  # an async generator that yields nothing
