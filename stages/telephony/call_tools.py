"""Call control the model can use: built-in tools for a ``tool_router``.

::

    tools:
      type: tool_router
      tools:
        - {ref: "stages.telephony.call_tools:end_call", timeout_s: 30}
        - {ref: "stages.telephony.call_tools:transfer_call", timeout_s: 30,
           with: {targets: {sales: "+15551230003", desk: "sip:desk@pbx.example.com"}}}
        - "stages.telephony.call_tools:send_dtmf"

Each acts on the call its pipeline runs for, through Twilio's REST API (Media Streams carry
audio only), and first waits until the caller has heard the reply in progress: the response
that asked for the tool must be over and its last mark echoed, so "goodbye" is heard whole.
A barge-in cancels the response and the tool with it (the router drops calls of a cancelled
response), so an interrupted agent does not hang up on a caller who is still talking. A call
that had already ended (Twilio's 21220) is reported as such, not as an error. The wait is
bounded by :data:`MAX_WAIT_S` (then the tool acts anyway); give the tool a ``timeout_s`` above
it, as above.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from stages.tools import current_tool_call

from .control import CallControl, current_control
from .rest import TwilioRest, TwilioRestError
from .twilio import TwilioCall, current_call
from .twiml import DIGITS_RE, TwimlError, dial, play_digits

__all__ = ["MAX_WAIT_S", "end_call", "send_dtmf", "transfer_call"]

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
    if not ended:
        return "the call had already ended; say nothing more"
    return "the call has ended; say nothing more"


async def transfer_call(destination: str, *, targets: dict[str, str]) -> str:
    """Transfer the caller to a person or another line, after they have heard what you are
    saying now. Tell the caller before you call it.

    Args:
        destination: the name of the line to transfer to, one of those you were told about
        targets: (set in the pipeline file) line name -> E.164 number or SIP URI
    """
    call, control = _call_and_control("transfer_call")
    if not isinstance(control.rest, TwilioRest):
        return "transfer_call is only available on Twilio calls; tell the caller you cannot"
    number = targets.get(destination)
    if number is None:
        names = ", ".join(sorted(targets)) or "none are configured"
        return f"unknown destination '{destination}'; choose one of: {names}"
    try:
        twiml = dial(number)
    except TwimlError as exc:
        return f"transfer_call is misconfigured ({exc}); tell the caller you cannot transfer"
    await _after_reply(call, "transfer_call")
    assert control.rest is not None
    try:
        await control.rest.redirect(call.call_sid, twiml)
    except TwilioRestError as exc:
        if exc.code == 21220:
            call.end()
            return "the call had already ended; say nothing more"
        log.error("transfer_call: refused", call_sid=call.call_sid, code=exc.code)
        return f"the transfer failed (Twilio error {exc.code}: {exc.message}); tell the caller"
    control.outcome = "transferred"
    log.info("call transferred", call_sid=call.call_sid, destination=destination)
    call.end()
    return f"the call has been transferred to {destination}; say nothing more"


async def send_dtmf(digits: str) -> str:
    """Press keys on the phone line (DTMF), for example to answer an automated menu. The
    media stream restarts after the tones: the call goes on with a fresh conversation.

    Args:
        digits: the keys to press: 0-9, * and #; w waits half a second
    """
    call, control = _call_and_control("send_dtmf")
    if not isinstance(control.rest, TwilioRest):
        return "send_dtmf is only available on Twilio calls; tell the caller you cannot"
    if not DIGITS_RE.match(digits):
        return f"digits {digits!r} are not valid: use 0-9, *, # and w (a half-second pause)"
    await _after_reply(call, "send_dtmf")
    params = dict(call.start.custom_parameters) if call.start else {}
    params.update(control.parameters)
    params["dtmf_sent"] = digits
    twiml = play_digits(digits, control.stream_url, params)
    assert control.rest is not None
    try:
        await control.rest.redirect(call.call_sid, twiml)
    except TwilioRestError as exc:
        log.error("send_dtmf: refused", call_sid=call.call_sid, code=exc.code)
        return f"the keys could not be sent (Twilio error {exc.code}: {exc.message})"
    control.outcome = "redirected"
    log.info("dtmf sent", call_sid=call.call_sid, digits=len(digits))
    call.end()
    return f"pressed {digits}; the line reconnects"
