"""pipeline: realtime voice agents as a streaming graph of composable audio stages.

The public API: frames (:mod:`pipeline.frames`), the ``@stage`` decorator, :class:`Pipeline`
(build and run a graph in Python), :func:`load` (the same from ``pipelines.yaml``), and the
errors. ``pipeline.testing`` helps test stages.
"""

from __future__ import annotations

from .clock import Clock, RealClock, VirtualClock
from .context import StageContext
from .errors import (
    ConfigError,
    FormatError,
    InputError,
    PipelineError,
    Problem,
    SessionError,
    StageError,
    UsageError,
)
from .frames import (
    Audio,
    AudioFormat,
    ErrorReport,
    Frame,
    Interrupt,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Text,
    ToolCall,
    ToolCancel,
    ToolResult,
    Transcript,
)
from .graph import Pipeline
from .spec import InputPath, OutputPath, stage

__all__ = [
    "Audio",
    "AudioFormat",
    "Clock",
    "ConfigError",
    "ErrorReport",
    "FormatError",
    "Frame",
    "InputError",
    "InputPath",
    "Interrupt",
    "OutputPath",
    "Pipeline",
    "PipelineError",
    "Problem",
    "RealClock",
    "ResponseDone",
    "ResponseStarted",
    "SessionError",
    "SpeechStarted",
    "SpeechStopped",
    "StageContext",
    "StageError",
    "Text",
    "ToolCall",
    "ToolCancel",
    "ToolResult",
    "Transcript",
    "UsageError",
    "VirtualClock",
    "load",
    "stage",
]


def load(path: str, name: str | None = None, **kwargs: object) -> Pipeline:
    """Load pipeline ``name`` (default: the first) from a YAML file; see pipeline.config."""
    from .config import load as _load

    return _load(path, name, **kwargs)  # type: ignore[arg-type]
