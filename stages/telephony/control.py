"""Per-call state that call control needs: what the caller has heard, and how to reach the
carrier's REST API for this call.

* :class:`Playback`: the sink reports each finished response and each change of its unplayed
  audio; :meth:`Playback.wait_heard` returns once a response has ended *and* everything sent
  for it has been played to the caller (its last mark echoed). ``end_call`` waits on it, so a
  goodbye is never cut off by the hang-up.
* :class:`CallControl`: the REST client, the stream URL and the parameters to reconnect with;
  the server binds one to each call's pipeline (:func:`bind_control`), as it binds the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.errors import PipelineError


class CallRest(Protocol):
    """A carrier's REST client as the call tools use it (:class:`~.rest.TwilioRest`, and the
    clients of :mod:`~.carriers.rest`, which are :class:`CarrierRest`)."""

    async def hang_up(self, call_id: str) -> bool: ...

    async def aclose(self) -> None: ...


class CarrierRest(CallRest, Protocol):
    """Telnyx, Plivo, Vonage (and Exotel's stream): transfer and digits by the call's id."""

    carrier: str

    async def transfer(self, call_id: str, target: str) -> bool: ...

    async def send_digits(self, call_id: str, digits: str) -> bool: ...


__all__ = [
    "CallControl",
    "CallRest",
    "CarrierRest",
    "Playback",
    "bind_control",
    "current_control",
]


class Playback:
    """What the caller has heard of the agent's responses (fed by the call's sink)."""

    def __init__(self, remember: int = 64) -> None:
        self._done: deque[str] = deque(maxlen=remember)
        self._idle: Callable[[], bool] = lambda: True
        self._changed = asyncio.Event()
        #: responses the sink has seen end
        self.finished = 0
        #: tools waiting for a response to be heard
        self.waiters = 0

    def attach(self, idle: Callable[[], bool]) -> None:
        """The sink's own test of "nothing unplayed" (no pending mark, nothing buffered)."""
        self._idle = idle

    def idle(self) -> bool:
        return self._idle()

    def response_done(self, response_id: str) -> None:
        """A response ended and everything it said has been sent."""
        if response_id:
            self._done.append(response_id)
        self.finished += 1
        self.changed()

    def changed(self) -> None:
        """Something was played, sent or cleared: wake the waiters."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def heard(self, response_id: str) -> bool:
        """Response ``response_id`` ("" = whatever was sent so far) has been heard in full."""
        return (not response_id or response_id in self._done) and self._idle()

    async def next_change(self) -> None:
        """Wait for the next report from the sink."""
        await self._changed.wait()

    async def wait_heard(self, response_id: str) -> None:
        """Wait until :meth:`heard`; bound it with ``asyncio.timeout``."""
        self.waiters += 1
        self.changed()
        try:
            while not self.heard(response_id):
                await self._changed.wait()
        finally:
            self.waiters -= 1


@dataclass
class CallControl:
    """How the call tools act on the call: the REST client (None: call control is off), the
    media stream URL and the ``<Parameter>``s to reconnect with after ``send_dtmf``."""

    rest: CallRest | None
    stream_url: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)
    #: what the agent did to the call: "hung_up", "transferred", "redirected"
    outcome: str = ""


_CONTROL: contextvars.ContextVar[CallControl | None] = contextvars.ContextVar(
    "call_control", default=None
)


@contextlib.contextmanager
def bind_control(control: CallControl) -> Iterator[CallControl]:
    """Run a call's pipeline with ``control``: its call tools see it."""
    token = _CONTROL.set(control)
    try:
        yield control
    finally:
        _CONTROL.reset(token)


def current_control(tool: str) -> CallControl:
    """The call control of the call this tool runs for; PipelineError (which the tool router
    turns into an error result) when there is none."""
    control = _CONTROL.get()
    if control is None or control.rest is None:
        raise PipelineError(
            f"{tool} is not available: call control needs 'pipeline serve' with the "
            "carrier's credentials (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, TELNYX_API_KEY, "
            "PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN, or VONAGE_APPLICATION_ID and "
            "VONAGE_PRIVATE_KEY); tell the caller you cannot do that"
        )
    return control
