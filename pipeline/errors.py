"""The exception tree. Every exception the package defines derives from PipelineError.

The classes defined elsewhere are named by module (``tests/test_api.py`` checks that no exception
class of ``pipeline`` or ``stages`` stands outside the tree)::

    PipelineError
    ├── ConfigError          bad YAML, parameters or links: a list of Problems, each FILE:LINE:COL
    │   ├── UnknownStageType     a stage type that cannot be found (also a LookupError)
    │   └── ToolConfigError      (stages.tools.schema) a tool ref that cannot be loaded
    ├── InputError           a bad input file (a WAV that is truncated or of an unsupported kind)
    ├── FormatError          two stages disagree on the audio format of a link
    ├── StageError           a stage failed while running (``stage`` names it; the cause is chained)
    ├── UsageError           the Python API was called with something it cannot take (also a
    │   │                    ValueError): a bug in the calling code, the message says the fix
    │   └── TwimlError           (stages.telephony.twiml) a value that cannot go into TwiML
    ├── SessionError         the realtime service failed (``code``)
    │   ├── SessionLocalError    we misused the protocol (a bug, or a bad parameter)
    │   └── SessionRemoteError   the peer misbehaved or refused us (401, bad message, gone)
    │       ├── WireError            (stages.realtime.wire.errors) an error event from the server
    │       └── Retry                (stages.realtime.connection) a connection attempt to retry
    ├── EndOfStream          (pipeline.channels) every link into an inbox has ended
    ├── ClosedResourceError  (pipeline.channels) the reader of a channel is gone
    ├── ToolArgumentError    (stages.tools.schema) the model's arguments do not fit a tool (also a
    │                        ValueError); it becomes an error result, the session goes on
    ├── TwilioMessageError   (stages.telephony.twilio) a Media Streams message that breaks the rules
    │   └── UnsupportedFormat    (stages.telephony.twilio_wire) a ``start`` in a format the pipeline
    │                            cannot take: the stream is refused
    ├── TwilioRestError      (stages.telephony.rest) the Twilio REST API refused a request
    ├── BrowserMessageError  (stages.browser.protocol) a playground message that breaks the rules
    ├── DeviceError          (stages.desk.devices) an audio device that cannot be opened
    ├── PatchError           (pipeline.kube) the Kubernetes API refused a patch
    ├── SupervisorError      (pipeline.workers) the worker pool could not start
    └── TracingUnavailable   (pipeline.tracing) the OpenTelemetry extra is not installed

Exit codes: ConfigError / InputError / FormatError → 2 (bad input); StageError / SessionError → 1.
Messages state what happened, with the numbers, and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass


class PipelineError(Exception):
    """Root of every error the framework raises on purpose."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found before running, located in the user's file."""

    message: str
    fix: str = ""
    file: str = ""
    line: int = 0  # 1-based; 0 when unknown
    column: int = 0  # 1-based; 0 when unknown
    #: a warning: worth saying, but the pipeline runs (``validate`` exits 0)
    warning: bool = False

    def __str__(self) -> str:
        text = self.message
        if self.fix:
            text += f"; {self.fix}"
        if self.warning:
            text = f"warning: {text}"
        if not self.file and not self.line:
            return text  # raised from code, not about a place in a file
        where = self.file or "<pipeline>"
        if self.line:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {text}"


class ConfigError(PipelineError):
    """The pipeline description is wrong; ``problems`` lists every problem found."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class InputError(PipelineError):
    """An input file cannot be used (names the file and what is wrong)."""

    exit_code = 2


class FormatError(PipelineError):
    """Audio of one format reached a stage that needs another."""

    exit_code = 2

    def __init__(self, message: str, fix: str = "") -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message}; {fix}" if fix else message)


class StageError(PipelineError):
    """A stage failed while running. ``stage`` is its id; the cause is chained."""

    def __init__(self, stage: str, message: str) -> None:
        self.stage = stage
        self.message = message
        super().__init__(f"stage '{stage}' failed: {message}")


class UnknownStageType(ConfigError, LookupError):
    """A stage type name (or ``module:function``) that cannot be found or loaded."""


class UsageError(PipelineError, ValueError):
    """The Python API was called with a value it cannot take: a bug in the calling code."""


class SessionError(PipelineError):
    """The realtime session failed."""

    def __init__(self, message: str, code: str = "") -> None:
        self.code = code
        super().__init__(message)


class SessionLocalError(SessionError):
    """We sent something the protocol does not allow."""


class SessionRemoteError(SessionError):
    """The service refused us, went away, or sent something we cannot read."""
