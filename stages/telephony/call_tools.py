"""Call control the model can use: built-in tools for a ``tool_router``.

::

    tools:
      type: tool_router
      tools:
        - {ref: "stages.telephony.call_tools:end_call", timeout_s: 30}
        - {ref: "stages.telephony.call_tools:transfer_call", timeout_s: 30,
           with: {targets: {sales: "+15551230003", desk: "sip:desk@pbx.example.com"}}}
        - "stages.telephony.call_tools:send_dtmf"

Each acts on the call its pipeline runs for, through the carrier's API (media streams carry
audio only; see :mod:`.rest` for Twilio and :mod:`.carriers.rest` for Telnyx, Plivo, Vonage and
Exotel), and first waits until the caller has heard the reply in progress: the response that
asked for the tool must be over and its last mark echoed, so "goodbye" is heard whole. A
barge-in cancels the response and the tool with it (the router drops calls of a cancelled
response), so an interrupted agent does not hang up on a caller who is still talking. A call
that had already ended is reported as such, not as an error. The wait is bounded by
:data:`MAX_WAIT_S` (then the tool acts anyway); give the tool a ``timeout_s`` above it, as above.

``send_dtmf`` plays the tones in-band (:mod:`.dtmf`: into the outgoing media stream, which
stays up, on every carrier, with no credentials); ``send_dtmf_via_api`` asks the carrier's API
instead (on Twilio a redirect that restarts the stream). A tool the carrier cannot
do is not offered to the model (:mod:`.offer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

import structlog

from stages.tools import current_tool_call

from .carriers.rest import unavailable
from .control import CallControl, CarrierRest, current_control
from .dtmf import DIGITS_RE, tones
from .rest import TwilioRest, TwilioRestError
from .twilio import TwilioCall, current_call
from .twiml import TwimlError, dial, play_digits

__all__ = ["MAX_WAIT_S", "end_call", "send_dtmf", "send_dtmf_via_api", "transfer_call"]

#: Longest wait for the reply in progress to be heard before the tool acts anyway (a caller
#: whose marks stop coming back must still be hung up on).
MAX_WAIT_S = 20.0

log = structlog.get_logger("pipeline.telephony")


async def _after_reply(call: TwilioCall, tool: str) -> None:
    """Wait until the response that asked for ``tool`` has been heard (or the call ended)."""
    tool_call = current_tool_call()
    response_id = tool_call.response_id if tool_call is not None else ""
    heard = asyncio.ensure_future(call.playback.wait_heard(response_id))
    ended = asyncio.ensure_future(call.ended.wait())
    try:
        done, _ = await asyncio.wait(
            {heard, ended}, timeout=MAX_WAIT_S, return_when="FIRST_COMPLETED"
        )
        if not done:
            log.warning(
                f"{tool}: the reply was not heard in full in time; acting anyway",
                call_sid=call.call_sid,
                waited_s=MAX_WAIT_S,
            )
    finally:
        for task in (heard, ended):
            task.cancel()
        for task in (heard, ended):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _call_and_control(tool: str) -> tuple[TwilioCall, CallControl]:
    return current_call(tool), current_control(tool)


async def end_call(reason: str = "") -> str:
    """End the phone call (hang up). Call it once the conversation is over and you have said
    goodbye; the caller hears the rest of what you are saying first.

    Args:
        reason: why the call ends, in a few words (for the call log)
    """
    call, control = _call_and_control("end_call")
    await _after_reply(call, "end_call")
    assert control.rest is not None
    try:
        ended = await control.rest.hang_up(call.call_sid)
    except TwilioRestError as exc:
        log.error("end_call: hang-up refused", call_sid=call.call_sid, code=exc.code)
        return f"the call could not be ended (error {exc.code}: {exc.message})"
    control.outcome = "hung_up"
    log.info("call hung up by the agent", call_sid=call.call_sid, reason=reason, already=not ended)
    call.end()
    if getattr(control.rest, "carrier", "") == "exotel":
        return (
            "the stream is closed (Exotel has no hang-up for a streaming call: its flow goes "
            "on to the applet after the Voicebot applet, which should hang up); say nothing more"
        )
    if not ended:
        return "the call had already ended; say nothing more"
    return "the call has ended; say nothing more"


def _carrier_name(call: TwilioCall) -> str:
    return call.carrier.name if call.carrier is not None else "twilio"


async def transfer_call(destination: str, *, targets: dict[str, str]) -> str:
    """Transfer the caller to a person or another line, after they have heard what you are
    saying now. Tell the caller before you call it.

    Args:
        destination: the name of the line to transfer to, one of those you were told about
        targets: (set in the pipeline file) line name -> E.164 number or SIP URI
    """
    call, control = _call_and_control("transfer_call")
    why_not = unavailable(_carrier_name(call), "transfer_call")
    if why_not:
        return f"{why_not}; tell the caller you cannot transfer"
    number = targets.get(destination)
    if number is None:
        names = ", ".join(sorted(targets)) or "none are configured"
        return f"unknown destination '{destination}'; choose one of: {names}"
    try:
        twiml = dial(number)
    except TwimlError as exc:
        return f"transfer_call is misconfigured ({exc}); tell the caller you cannot transfer"
    await _after_reply(call, "transfer_call")
    rest = control.rest
    assert rest is not None
    try:
        if isinstance(rest, TwilioRest):
            await rest.redirect(call.call_sid, twiml)
            done = True
        else:
            done = await cast(CarrierRest, rest).transfer(call.call_sid, number)
    except TwilioRestError as exc:
        if exc.code == 21220:
            done = False
        else:
            log.error("transfer_call: refused", call_sid=call.call_sid, code=exc.code)
            return f"the transfer failed (error {exc.code}: {exc.message}); tell the caller"
    call.end()
    if not done:
        return "the call had already ended; say nothing more"
    control.outcome = "transferred"
    log.info("call transferred", call_sid=call.call_sid, destination=destination)
    return f"the call has been transferred to {destination}; say nothing more"


async def send_dtmf(digits: str) -> str:
    """Press keys on the phone line (DTMF), for example to answer an automated menu, after
    what you are saying now has been heard. The call goes on.

    Args:
        digits: the keys to press: 0-9, *, # (and A-D); w waits half a second
    """
    call = current_call("send_dtmf")
    if not DIGITS_RE.match(digits):
        return f"digits {digits!r} are not valid: use 0-9, *, # and w (a half-second pause)"
    return await _inband(call, digits)


async def send_dtmf_via_api(digits: str) -> str:
    """Press keys on the phone line (DTMF), for example to answer an automated menu, after
    what you are saying now has been heard.

    Args:
        digits: the keys to press: 0-9, *, #; w waits half a second
    """
    call = current_call("send_dtmf_via_api")
    if not DIGITS_RE.match(digits):
        return f"digits {digits!r} are not valid: use 0-9, *, # and w (a half-second pause)"
    control = current_control("send_dtmf_via_api")
    await _after_reply(call, "send_dtmf_via_api")
    rest = control.rest
    assert rest is not None
    if not isinstance(rest, TwilioRest):
        try:
            done = await cast(CarrierRest, rest).send_digits(call.call_sid, digits)
        except TwilioRestError as exc:
            log.error("send_dtmf: refused", call_sid=call.call_sid, code=exc.code)
            return f"the keys could not be sent (error {exc.code}: {exc.message})"
        if not done:
            call.end()
            return "the call had already ended; say nothing more"
        log.info("dtmf sent", call_sid=call.call_sid, digits=len(digits), route="api")
        return f"pressed {digits}"
    if "A" in digits or "B" in digits or "C" in digits or "D" in digits:
        return "Twilio plays 0-9, * and # only; use the in-band route for A-D"
    params = dict(call.start.custom_parameters) if call.start else {}
    params.update(control.parameters)
    params["dtmf_sent"] = digits
    twiml = play_digits(digits, control.stream_url, params)
    try:
        await rest.redirect(call.call_sid, twiml)
    except TwilioRestError as exc:
        log.error("send_dtmf: refused", call_sid=call.call_sid, code=exc.code)
        return f"the keys could not be sent (Twilio error {exc.code}: {exc.message})"
    control.outcome = "redirected"
    log.info("dtmf sent", call_sid=call.call_sid, digits=len(digits), route="api")
    call.end()
    return f"pressed {digits}; the line reconnects"


async def _inband(call: TwilioCall, digits: str) -> str:
    """Play the tones after the reply in progress, then wait until they have been heard."""
    await _after_reply(call, "send_dtmf")
    if call.play_audio is None or call.ended.is_set():
        return (
            "the keys could not be sent: the call has ended, or no phone sink plays to it "
            "(in-band tones go out as the call's audio)"
        )
    await call.play_audio(tones(digits, call.format))
    await _after_reply(call, "send_dtmf")  # the tones' marks: everything sent is heard
    log.info("dtmf sent", call_sid=call.call_sid, digits=len(digits), route="inband")
    return f"pressed {digits}"
