"""``pipeline playground FILE [NAME]``: talk to a pipeline from a browser tab."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import webbrowser
from typing import Any

import structlog

from pipeline.graph import Pipeline
from pipeline.signals import stop_signals

from ..listen import add_listen_arguments, is_loopback
from .server import DEFAULT_TOKEN_ENV, PlaygroundServer, check_playground_pipeline

log = structlog.get_logger("pipeline.playground")


def register(subparsers: Any) -> None:
    """Add ``pipeline playground`` to the CLI."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "playground",
        help="talk to a pipeline from a browser: one page, one pipeline per tab",
        description="Serve a page at / that talks to a fresh run of the pipeline for each "
        "browser tab (its browser_source and browser_sink are the tab's microphone and "
        "speaker). Open /?autostart=1 to start without a click.",
    )
    add_listen_arguments(
        p,
        port=8000,
        token_env=DEFAULT_TOKEN_ENV,
        token_help="required on any host but loopback, where one is made up and printed in the "
        "page's URL if unset",
    )
    p.add_argument("--max-sessions", type=int, default=4, help="tabs connected at once (4)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(handler=cmd_playground)


def cmd_playground(args: argparse.Namespace) -> int:
    """Exit 0 after SIGTERM, 130 after Ctrl-C, 2 for a bad pipeline or options."""
    from pipeline.config import load

    p = load(args.file, args.name or args.pipeline_name, overrides=args.overrides)
    check_playground_pipeline(p)
    if args.max_sessions < 1:
        print(f"error: --max-sessions must be at least 1, got {args.max_sessions}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(p, args, token_for(args.host, os.environ.get(args.token_env))))


def token_for(host: str, given: str | None) -> str | None:
    """The token connections need: the one given; else none on loopback and a fresh random one
    on any other host (printed in the page's URL)."""
    if given:
        return given
    return None if is_loopback(host) else secrets.token_urlsafe(18)


async def _serve(p: Pipeline, args: argparse.Namespace, token: str | None) -> int:
    server = PlaygroundServer(p, token=token, max_sessions=args.max_sessions)
    try:
        await server.start(args.host, args.port)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    with stop_signals(stop.set) as stops:
        await _until_stopped(server, p, args, stop, token)
    return 130 if stops.interrupted else 0


async def _until_stopped(
    server: PlaygroundServer, p: Pipeline, args: argparse.Namespace, stop: asyncio.Event, token: Any
) -> None:
    """Announce the page, wait for a stop signal, close."""
    url = server.page_url()
    print(f"pipeline playground: open {url}", file=sys.stderr, flush=True)
    log.info("serving the playground", pipeline=p.name, auth="token" if token else "none")
    if args.open:
        webbrowser.open(url)
    try:
        await stop.wait()
    finally:
        await server.close()
