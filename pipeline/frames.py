"""The closed set of frames that flow between stages.

Every frame is a frozen, slotted dataclass: a flat value object, never subclassed. Dispatch on
them with ``match``. Each has a class-level ``type`` name (snake_case) used in the YAML, the event
log and ``pipeline stages``.

Audio carries its format explicitly (``encoding``, ``rate``, ``channels``) and its media time
(``pts``, seconds at the first sample); nothing is inferred from byte length alone.

Event frames (everything but :class:`Audio`) carry ``stage``: the id of the stage that emitted
them. Stages leave it empty and the runtime fills it in on the way out, so the event log can say
where an event came from even after it travelled through a chain of transforms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from . import native
from .errors import UsageError

Encoding: TypeAlias = Literal["pcm16", "pcmu", "pcma"]
ENCODINGS: tuple[Encoding, ...] = ("pcm16", "pcmu", "pcma")
BYTES_PER_SAMPLE: dict[str, int] = {"pcm16": 2, "pcmu": 1, "pcma": 1}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What a stream of audio frames looks like: encoding, sample rate and channel count."""

    encoding: Encoding
    rate: int
    channels: int = 1

    def __str__(self) -> str:
        ch = "" if self.channels == 1 else f" x{self.channels}"
        return f"{self.encoding} {self.rate} Hz{ch}"

    @property
    def bytes_per_second(self) -> int:
        return BYTES_PER_SAMPLE[self.encoding] * self.rate * self.channels


@dataclass(frozen=True, slots=True)
class Audio:
    """A chunk of audio. ``data`` is raw bytes: little-endian int16 for pcm16, one byte per
    sample for pcmu/pcma. ``pts`` is the media time of the first sample, in seconds."""

    type: ClassVar[str] = "audio"
    data: bytes
    encoding: Encoding
    rate: int
    channels: int = 1
    pts: float = 0.0

    @property
    def format(self) -> AudioFormat:
        return AudioFormat(self.encoding, self.rate, self.channels)

    @property
    def num_samples(self) -> int:
        """Samples per channel."""
        return len(self.data) // (BYTES_PER_SAMPLE[self.encoding] * self.channels)

    @property
    def duration(self) -> float:
        """Seconds of media in this frame."""
        return len(self.data) // (BYTES_PER_SAMPLE[self.encoding] * self.channels) / self.rate

    @property
    def end_pts(self) -> float:
        return self.pts + self.duration

    def samples(self) -> npt.NDArray[np.int16]:
        """A read-only int16 view of pcm16 data (no copy)."""
        if self.encoding != "pcm16":
            raise UsageError(f"samples() needs pcm16 audio, this frame is {self.encoding}")
        return np.frombuffer(self.data, dtype="<i2")

    @classmethod
    def from_samples(
        cls, samples: npt.NDArray[Any], rate: int, pts: float = 0.0, channels: int = 1
    ) -> Audio:
        """A pcm16 frame from an int16 array (other dtypes are converted with clipping)."""
        if samples.dtype != np.int16:
            samples = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
        return cls(samples.astype("<i2", copy=False).tobytes(), "pcm16", rate, channels, pts)


def _audio_init() -> Any:
    """``Audio.__init__`` setting the slots through their descriptors: what the generated
    frozen ``__init__`` does (``object.__setattr__`` per field) at about half the cost, which
    counts for a frame built per stage per 20 ms. Same signature, same object."""
    slots = Audio.__dict__
    set_data = slots["data"].__set__
    set_encoding = slots["encoding"].__set__
    set_rate = slots["rate"].__set__
    set_channels = slots["channels"].__set__
    set_pts = slots["pts"].__set__

    def __init__(
        self: Audio,
        data: bytes,
        encoding: Encoding,
        rate: int,
        channels: int = 1,
        pts: float = 0.0,
    ) -> None:
        set_data(self, data)
        set_encoding(self, encoding)
        set_rate(self, rate)
        set_channels(self, channels)
        set_pts(self, pts)

    __init__.__qualname__ = "Audio.__init__"
    __init__.__doc__ = Audio.__init__.__doc__
    return __init__


setattr(Audio, "__init__", _audio_init())  # noqa: B010 (mypy: a method cannot be assigned)


def _make_audio_pure(
    data: bytes, encoding: Encoding, rate: int, channels: int, pts: float
) -> Audio:
    """``Audio(data, encoding, rate, channels, pts)``, every argument given."""
    return Audio(data, encoding, rate, channels, pts)


def _make_audio() -> Callable[[bytes, Encoding, int, int, float], Audio]:
    cframes = native.load("pipeline._cframes")
    if cframes is None:
        return _make_audio_pure
    cframes.bind(Audio, ("data", "encoding", "rate", "channels", "pts"))
    make: Callable[[bytes, Encoding, int, int, float], Audio] = cframes.make_audio
    return make


#: ``make_audio(data, encoding, rate, channels, pts)``: the same frame as ``Audio(...)`` with
#: every argument given, positionally, for the hot path: the compiled kernel stores the five
#: fields straight into the slots (about 0.05 µs, where the constructor takes 0.4 µs).
make_audio = _make_audio()


@dataclass(frozen=True, slots=True)
class Text:
    """Text into a session (a user's typed turn, or instructions for the model to speak)."""

    type: ClassVar[str] = "text"
    text: str
    role: Literal["user", "assistant", "system"] = "user"
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Speech began at ``pts`` (media time of the analysed stream)."""

    type: ClassVar[str] = "speech_started"
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Speech ended at ``pts`` (media time of the analysed stream)."""

    type: ClassVar[str] = "speech_stopped"
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class Transcript:
    """Words heard from the user or spoken by the assistant; ``final`` marks a complete turn."""

    type: ClassVar[str] = "transcript"
    role: Literal["user", "assistant"]
    text: str
    final: bool = False
    pts: float | None = None
    item_id: str = ""
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for ``name`` to run with ``arguments`` (JSON text)."""

    type: ClassVar[str] = "tool_call"
    call_id: str
    name: str
    arguments: str
    response_id: str = ""
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The output of a tool call, as text the model reads; ``is_error`` when it failed."""

    type: ClassVar[str] = "tool_result"
    call_id: str
    output: str
    is_error: bool = False
    name: str = ""
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ToolCancel:
    """The model withdrew tool call ``call_id`` (Gemini's ``toolCallCancellation``, when the
    caller interrupts): a tool router stops it if it runs, and no result is owed for it."""

    type: ClassVar[str] = "tool_cancel"
    call_id: str
    name: str = ""
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Barge-in: everything downstream drops audio it has queued but not yet played."""

    type: ClassVar[str] = "interrupt"
    pts: float | None = None
    response_id: str = ""
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """The model started a response."""

    type: ClassVar[str] = "response_started"
    response_id: str
    status: str = "in_progress"
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The model finished a response (``completed``, ``cancelled``, ``failed``, ...)."""

    type: ClassVar[str] = "response_done"
    response_id: str
    status: str = "completed"
    pts: float | None = None
    stage: str = ""


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """A recoverable error reported as data (the run goes on)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    pts: float | None = None
    stage: str = ""


Event: TypeAlias = (
    Text
    | SpeechStarted
    | SpeechStopped
    | Transcript
    | ToolCall
    | ToolResult
    | ToolCancel
    | Interrupt
    | ResponseStarted
    | ResponseDone
    | ErrorReport
)
Frame: TypeAlias = Audio | Event

FRAME_TYPES: tuple[type[Any], ...] = (
    Audio,
    Text,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    ToolCall,
    ToolResult,
    ToolCancel,
    Interrupt,
    ResponseStarted,
    ResponseDone,
    ErrorReport,
)
FRAME_BY_NAME: dict[str, type[Any]] = {t.type: t for t in FRAME_TYPES}
EVENT_TYPES: tuple[type[Any], ...] = FRAME_TYPES[1:]

#: Control frames are never dropped by a channel and never wait behind audio.
CONTROL_TYPES: tuple[type[Any], ...] = (Interrupt,)


def event_to_dict(frame: Event) -> dict[str, Any]:
    """The event-log form of an event frame: ``{"type", "pts", "stage", ...fields}``."""
    pts = None if frame.pts is None else round(frame.pts, 6)
    out: dict[str, Any] = {"type": frame.type, "pts": pts, "stage": frame.stage}
    for f in dataclasses.fields(frame):
        if f.name not in out:
            out[f.name] = getattr(frame, f.name)
    return out


def with_stage(frame: Event, stage: str) -> Event:
    """The same event attributed to ``stage``."""
    return dataclasses.replace(frame, stage=stage)
