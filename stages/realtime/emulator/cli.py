"""``pipeline emulator``: the emulator as a server until Ctrl-C, registered through the
``pipeline.commands`` entry-point group (:func:`register`); ``python -m stages.realtime.emulator``
takes the same options."""

from __future__ import annotations

import argparse
import asyncio
import errno
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.errors import UsageError
from pipeline.heap import GcPauses, settle

from ..wire import DIALECTS
from .config import EmulatorConfig
from .server import run_emulator

Json = dict[str, Any]


def register(subparsers: Any) -> None:
    """Add ``pipeline emulator`` to the CLI's subparsers (``set_defaults(handler=...)``: the
    handler takes the parsed args and returns the exit code)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "emulator",
        help="run the realtime protocol emulator as a server",
        description="Run the realtime protocol emulator (xAI / OpenAI GA / OpenAI beta) as a "
        "WebSocket server until Ctrl-C. Clients connect to ws://HOST:PORT/v1/realtime?model=...",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (8765; 0 picks a free one)")
    p.add_argument("--config", type=Path, help="a YAML or JSON file of emulator settings")
    p.add_argument(
        "--dialect",
        choices=["auto", *DIALECTS],
        help="auto (default): per connection, from the OpenAI-Beta header and the model",
    )
    p.add_argument("--think-ms", type=int, help="delay before each response's first output")
    p.add_argument("--pace", type=float, help="audio delivery speed: 0 = at once, 1 = real time")
    p.add_argument("--reply", choices=["echo", "tone"], help="reply audio (echo)")
    p.add_argument("--reply-text", help="reply transcript; {user} is the user's words")
    p.add_argument("--tone-ms", type=int, help="tone length in ms (1000)")
    p.add_argument("--chunk-ms", type=int, help="audio per delta in ms (100)")
    p.add_argument("--error-shape", choices=["nested", "flat"])
    p.add_argument("--ping-ms", type=int, dest="ping_interval_ms", help="keep-alive period")
    p.add_argument("--no-auth", action="store_true", help="accept clients without a key")
    p.add_argument(
        "--transcript", action="append", dest="transcripts", help="user transcript (repeatable)"
    )
    p.add_argument(
        "--tool-call",
        action="append",
        dest="tool_calls",
        metavar="TURN:NAME[:JSON]",
        help='script a function call, e.g. 1:get_time:\'{"city": "Tokyo"}\' (repeatable)',
    )
    p.set_defaults(handler=run_command)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The :class:`EmulatorConfig` for parsed ``pipeline emulator`` arguments."""
    values: Json = {}
    if getattr(args, "config", None):
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            loaded = YAML(typ="safe").load(Path(args.config).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"{args.config}: not UTF-8 text; save it as UTF-8") from None
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{args.config}:{mark.line + 1}:{mark.column + 1}" if mark else args.config
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise UsageError(f"{where}: {problem}; fix the YAML syntax") from None
        if not isinstance(loaded, dict | None):
            raise UsageError(f"{args.config}: expected a mapping of settings (key: value)")
        values = dict(loaded or {})
    for key in (
        "dialect", "think_ms", "pace", "reply", "reply_text", "tone_ms", "chunk_ms",
        "error_shape", "ping_interval_ms", "transcripts",
    ):  # fmt: skip
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    if getattr(args, "no_auth", False):
        values["require_auth"] = False
    calls = []
    for spec in getattr(args, "tool_calls", None) or []:
        turn, _, rest = spec.partition(":")
        name, _, raw = rest.partition(":")
        try:
            calls.append({"turn": int(turn), "name": name, "arguments": orjson.loads(raw or "{}")})
        except ValueError:
            raise UsageError(
                f"--tool-call {spec!r}: expected TURN:NAME[:JSON], e.g. 1:get_time:"
                '\'{"city": "Tokyo"}\''
            ) from None
    if calls:
        values["tool_calls"] = calls
    return EmulatorConfig.model_validate(values)


async def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    """Run the emulator until cancelled, printing its URL."""
    async with run_emulator(config, host, port) as emu:
        # a long-running process: settle its heap (pipeline.heap) and count its pauses
        settle()
        emu.gc_pauses = GcPauses()
        emu.gc_pauses.attach()
        print(f"emulator ({config.dialect}) listening on {emu.url}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()


def run_command(args: argparse.Namespace) -> int:
    """``pipeline emulator``: serve until Ctrl-C (exit 130); 2 for bad settings."""
    if not 0 <= args.port <= 65535:
        print(
            f"pipeline emulator: --port {args.port} is not a port; give 0 to 65535 "
            "(0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        print(f"pipeline emulator: bad settings: {problems}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"pipeline emulator: bad settings: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_forever(config, args.host, args.port))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        fix = "pick another --port" if exc.errno == errno.EADDRINUSE else "check --host"
        print(
            f"pipeline emulator: cannot listen on {args.host}:{args.port}: {exc.strerror}; {fix}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.realtime.emulator [options]``: the same as ``pipeline emulator``."""
    parser = argparse.ArgumentParser(prog="python -m stages.realtime.emulator")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["emulator", *(sys.argv[1:] if argv is None else argv)])
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


#: the name older callers know
add_parser = register
