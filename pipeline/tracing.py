"""What a call's turns took, and OpenTelemetry traces of calls, turns and tool calls.

Voice-to-voice latency of a turn: from the moment the caller stopped speaking to the moment the
first byte of the reply was sent to them. :class:`TurnTimer` measures it on the caller's own
stream clock, with no wall clock in the loop: the end of speech is the ``pts`` of the
``speech_stopped`` event (media time of the caller's audio, as the VAD saw it), and the reply's
first chunk is stamped with how much caller audio had arrived when it was sent (Twilio streams
the caller's audio continuously, silence included, so that position advances in real time). The
difference is what the caller waited, including the VAD's hangover and the model's time.

Tracing is optional (``pip install 'pipeline[otel]'``): :func:`otel_tracer` sets up the
OpenTelemetry SDK with an OTLP exporter (configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables), and :class:`CallTrace` makes one span per call, a child span per turn (from the end
of the caller's speech to the first reply byte) and per tool call (from the model's request to
the result). Without the extra, nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import PipelineError
from .frames import Event, SpeechStarted, SpeechStopped, ToolCall, ToolResult


class TurnTimer:
    """The voice-to-voice latency of every turn of one call.

    Feed it the run's events (:meth:`on_event`, a ``Runner.event_hooks`` entry) and each reply
    chunk as it is sent (:meth:`reply_sent`, with ``at_ms`` the caller audio received so far, in
    ms of the caller's stream). ``on_turn(seconds)`` is called once per turn; ``latencies_s``
    keeps them all."""

    def __init__(self, on_turn: Callable[[float], None] | None = None) -> None:
        self.on_turn = on_turn
        self.latencies_s: list[float] = []
        self._speech_end_s: float | None = None

    def on_event(self, frame: Event) -> None:
        match frame:
            case SpeechStarted():
                self._speech_end_s = None  # speaking again: the turn is not over
            case SpeechStopped(pts=pts) if pts is not None and self._speech_end_s is None:
                self._speech_end_s = pts  # the first of gate and model VAD, if both say so

    def reply_sent(self, at_ms: float) -> None:
        if self._speech_end_s is None:
            return
        latency = max(0.0, at_ms / 1000 - self._speech_end_s)
        self._speech_end_s = None
        self.latencies_s.append(latency)
        if self.on_turn is not None:
            self.on_turn(latency)


class TracingUnavailable(PipelineError):
    """The OpenTelemetry extra is not installed."""


def otel_tracer(service_name: str = "pipeline") -> Any:
    """A tracer that exports spans over OTLP/HTTP (``OTEL_EXPORTER_OTLP_ENDPOINT``, default
    ``http://localhost:4318``) in batches. Raises :class:`TracingUnavailable` with the fix when
    the extra is missing."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            f"OpenTelemetry is not installed ({exc.name}): pip install 'pipeline[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("pipeline")


class CallTrace:
    """The spans of one call under ``tracer`` (an OpenTelemetry ``Tracer``): ``call`` from
    :meth:`__init__` to :meth:`end`, ``turn`` and ``tool_call`` spans as its children. Feed it
    the run's events (:meth:`on_event`) and the turns (:meth:`turn`)."""

    def __init__(self, tracer: Any, attributes: dict[str, Any]) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.tracer = tracer
        self.span = tracer.start_span("call", attributes=attributes)
        self._context = trace.set_span_in_context(self.span)
        self._tools: dict[str, Any] = {}
        self.turns = 0

    def on_event(self, frame: Event) -> None:
        match frame:
            case ToolCall(call_id=call_id, name=name):
                self._tools[call_id] = self.tracer.start_span(
                    "tool_call",
                    context=self._context,
                    attributes={"tool.name": name, "tool.call_id": call_id},
                )
            case ToolResult(call_id=call_id, is_error=is_error):
                span = self._tools.pop(call_id, None)
                if span is not None:
                    span.set_attribute("tool.is_error", is_error)
                    if is_error:
                        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR))
                    span.end()

    def turn(self, latency_s: float) -> None:
        """A turn that ended now, ``latency_s`` after the caller stopped speaking."""
        self.turns += 1
        end = time.time_ns()
        span = self.tracer.start_span(
            "turn",
            context=self._context,
            start_time=end - int(latency_s * 1e9),
            attributes={"turn.index": self.turns, "turn.voice_to_voice_ms": latency_s * 1000},
        )
        span.end(end_time=end)

    def end(self, outcome: str, **attributes: Any) -> None:
        for span in self._tools.values():  # asked for, never answered
            span.set_attribute("tool.unanswered", True)
            span.end()
        self._tools.clear()
        self.span.set_attribute("call.outcome", outcome)
        for key, value in attributes.items():
            self.span.set_attribute(key, value)
        if outcome not in ("completed", "refused", "no_start"):
            self.span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        self.span.end()
