"""``pipeline call TO FILE [NAME]``: place an outbound call whose audio streams back to
``pipeline serve``.

The call is created through Twilio's REST API with TwiML ``<Connect><Stream url="wss://PUBLIC/
media">`` (parameters ``pipeline`` and ``direction``), so once it is answered the running
``pipeline serve --public-url PUBLIC`` server answers the stream as it does an inbound call.
Answering-machine detection (``--machine-detection Enable`` or ``DetectMessageEnd``) runs
asynchronously: the verdict is POSTed to ``PUBLIC/amd`` and reaches the call's
``twilio_source``, which emits it as a system text (``[call answered by: machine_end_beep]
...``) that the model reads and can act on: leave a message, or hang up with ``end_call``.
Status callbacks (initiated, ringing, answered, completed) go to ``PUBLIC/status``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError, PipelineError, Problem

from .rest import ACCOUNT_ENV, API_BASE, TOKEN_ENV, CallInfo, TwilioRest
from .twiml import connect_stream, stream_url

__all__ = ["place_call", "register"]

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")


async def place_call(
    rest: TwilioRest,
    to: str,
    from_: str,
    public_url: str,
    *,
    pipeline: str,
    machine_detection: str | None = "Enable",
    parameters: Mapping[str, str] | None = None,
) -> CallInfo:
    """Create the call; its TwiML connects the answered call to ``public_url``'s stream."""
    base = public_url.rstrip("/")
    params = {"pipeline": pipeline, "direction": "outbound-api", **(parameters or {})}
    return await rest.create_call(
        to,
        from_,
        twiml=connect_stream(stream_url(base), params),
        machine_detection=machine_detection,
        async_amd=machine_detection is not None,
        async_amd_status_callback=f"{base}/amd" if machine_detection else None,
        status_callback=f"{base}/status",
        status_callback_events=STATUS_EVENTS,
    )


def register(subparsers: Any) -> None:
    """Add ``pipeline call`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "call",
        help="place an outbound phone call answered by a running 'pipeline serve'",
        description="Create a Twilio call to TO whose audio streams to the 'pipeline serve "
        "--public-url URL' reached at --public-url, with answering-machine detection.",
    )
    p.add_argument("to", help="the number to call, E.164 (+15551234567)")
    p.add_argument("file", help="the pipelines YAML file the server runs")
    p.add_argument("name", nargs="?", help="pipeline name (default: the first)")
    p.add_argument("--from", dest="from_", required=True, help="your Twilio number, E.164")
    p.add_argument("--public-url", required=True, help="https://HOST of the running pipeline serve")
    p.add_argument(
        "--machine-detection",
        choices=["Enable", "DetectMessageEnd", "none"],
        default="Enable",
        help="answering-machine detection (Enable: as soon as known; DetectMessageEnd: after "
        "the greeting's beep, to leave a message; none: off)",
    )
    p.set_defaults(handler=cmd_call)


def cmd_call(args: argparse.Namespace) -> int:
    """``pipeline call``: 0 once Twilio has queued the call, 2 for bad input, 1 if refused."""
    return call_from_args(args, os.environ)


def call_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """:func:`cmd_call` with the environment given."""
    from pipeline.config import load

    for name, number in (("TO", args.to), ("--from", args.from_)):
        if not _E164.match(number):
            raise ConfigError(
                Problem(f"{name} {number!r} is not an E.164 number", "write it like +15551234567")
            )
    p = load(args.file, args.name)
    if not any(n.type_name == "twilio_source" for n in p.nodes.values()):
        raise ConfigError(
            Problem(
                f"pipeline '{p.name}' has no twilio_source: the call's audio would go nowhere",
                "pick a phone pipeline (see docs/telephony.md)",
                p.file,
            )
        )
    missing = [n for n in (ACCOUNT_ENV, TOKEN_ENV) if not env.get(n)]
    if missing:
        raise ConfigError(Problem(f"${missing[0]} is not set", "export the Twilio credentials"))
    detection = None if args.machine_detection == "none" else args.machine_detection

    async def go() -> CallInfo:
        base = env.get("TWILIO_API_BASE", API_BASE)
        async with TwilioRest(env[ACCOUNT_ENV], env[TOKEN_ENV], base_url=base) as rest:
            return await place_call(
                rest,
                args.to,
                args.from_,
                args.public_url,
                pipeline=p.name,
                machine_detection=detection,
            )

    try:
        info = asyncio.run(go())
    except ValueError as exc:  # a bad --public-url
        raise ConfigError(Problem(str(exc), "give https://HOST of the server")) from None
    except PipelineError:
        raise
    print(f"call {info.sid} {info.status}: {args.to} -> pipeline '{p.name}'", file=sys.stdout)
    return 0
