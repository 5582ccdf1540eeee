"""Pieces the phone tests share: a phone agent whose emulated model calls one of the call
tools, and a raw HTTP POST to ``pipeline serve`` (the request bytes exactly as written)."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline import Pipeline

#: how long the emulated model's tone reply lasts
TONE_MS = 400


def tool_agent(
    name: str,
    tool: str,
    tool_call: dict[str, Any],
    *,
    carrier: str | None = None,
    dtmf: str = "text",
    timeout_s: float | None = 30,
) -> Pipeline:
    """caller -> an emulated model that answers the first turn with a tone and ``tool_call``
    -> the phone; the tool router runs ``stages.telephony.call_tools:<tool>``. ``carrier``:
    None for the Twilio stages, else ``phone_source``/``phone_sink`` of that carrier."""
    p = Pipeline(name)
    if carrier is None:
        p.add("caller", "twilio_source", dtmf=dtmf)
    else:
        p.add("caller", "phone_source", carrier=carrier, dtmf=dtmf)
    p.add(
        "agent",
        "realtime_session",
        provider="emulator",
        input_format="pcmu",
        output_format="pcmu",
        turn_detection="none",
        emulator={
            "think_ms": 0,
            "reply": "tone",
            "tone_ms": TONE_MS,
            "tool_calls": [{"turn": 1, **tool_call}],
        },
    )
    ref: dict[str, Any] = {"ref": f"stages.telephony.call_tools:{tool}"}
    if timeout_s is not None:
        ref["timeout_s"] = timeout_s
    p.add("tools", "tool_router", tools=[ref])
    if carrier is None:
        p.add("phone", "twilio_sink")
    else:
        p.add("phone", "phone_sink", carrier=carrier)
    p.link("caller", "agent", "phone")
    p.link("agent", "tools", "agent")
    return p


async def http_post(
    port: int, target: str, body: bytes, headers: dict[str, str]
) -> tuple[int, bytes]:
    """POST ``body`` to ``target`` on 127.0.0.1:``port`` with ``headers`` (Host is
    agent.example.com); the status code and the response body."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: agent.example.com\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]
