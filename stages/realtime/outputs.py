"""What the ``realtime_session`` stage emits for each protocol event: :func:`to_frames`, a pure
function (no state, no I/O), so the mapping is read and tested in one place.

Assistant audio comes out as :class:`~stages.realtime.buffers.ReplyAudio` (the stage stamps its
pts as it leaves); audio of a response the user barged in on comes out as nothing. The server's
VAD times (milliseconds into the audio sent on this connection) become pts on the input's
timeline: ``input_origin`` is the pts of the first audio sent on the connection.
"""

from __future__ import annotations

from typing import assert_never

from pipeline.frames import (
    ErrorReport,
    Frame,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCancel,
    Transcript,
)

from . import protocol as p
from .buffers import ReplyAudio


def input_pts(ms: int, input_origin: float | None) -> float:
    """The input pts of a server VAD time (``audio_start_ms``/``audio_end_ms``)."""
    if input_origin is None:
        return ms / 1000
    return round(input_origin + ms / 1000, 6)


def to_frames(
    ev: p.ServerEvent, *, input_origin: float | None = None
) -> tuple[Frame | ReplyAudio, ...]:
    """The frames one protocol event means for the stage's output (often none). Every event
    type has its case (checked by mypy: ``assert_never``). Fatal and benign server errors give
    no frame: the stage ends the run on the first and logs the second."""
    match ev:
        case p.SpeechStartedEvent():
            return (SpeechStarted(pts=input_pts(ev.audio_start_ms, input_origin)),)
        case p.SpeechStoppedEvent():
            return (SpeechStopped(pts=input_pts(ev.audio_end_ms, input_origin)),)
        case p.ResponseCreatedEvent():
            return (ResponseStarted(ev.response_id),)
        case p.ResponseDoneEvent():
            return (ResponseDone(ev.response_id, ev.status),)
        case p.AudioDeltaEvent():
            if ev.discarded:
                return ()
            return (ReplyAudio(ev.data, ev.item_id, ev.response_id),)
        case p.TranscriptDeltaEvent():
            return (Transcript(ev.role, ev.text, False, item_id=ev.item_id),)
        case p.TranscriptDoneEvent():
            return (Transcript(ev.role, ev.text, True, item_id=ev.item_id),)
        case p.FunctionCallDoneEvent():
            return (ToolCall(ev.call_id, ev.name, ev.arguments, ev.response_id),)
        case p.CallsCancelledEvent():
            return tuple(ToolCancel(call_id, name) for call_id, name in ev.calls)
        case p.ErrorEvent():
            if ev.fatal or ev.benign:
                return ()
            return (ErrorReport(ev.code, ev.message),)
        case p.MalformedEvent():
            return (ErrorReport("malformed_message", f"unreadable server message: {ev.reason}"),)
        case (
            p.SessionReadyEvent()
            | p.SessionCreatedEvent()
            | p.RateLimitsEvent()
            | p.IgnoredEvent()
            | p.InputCommittedEvent()
            | p.AudioDoneEvent()
            | p.TruncatedEvent()
        ):
            return ()
        case _:
            # ServerEvent is a closed union: mypy fails here if a new event has no case
            assert_never(ev)
