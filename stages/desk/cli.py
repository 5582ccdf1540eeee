"""``pipeline devices``: the sound devices PortAudio sees."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .devices import DeviceError, device_table, query


def register(subparsers: Any) -> None:
    """Add ``pipeline devices`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "devices",
        help="list the sound devices (for mic_source and speaker_sink)",
        description="List the PortAudio sound devices: index, name, host API, input and output "
        "channels, default rate. '>' marks the default input, '<' the default output.",
    )
    p.set_defaults(handler=cmd_devices)


def cmd_devices(_args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(device_table(query()))
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
