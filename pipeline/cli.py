"""The ``pipeline`` command: run, validate, stages, graph, and the plug-in subcommands.

Exit codes: 0 success; 1 failure while running; 2 bad usage, bad config or bad input file;
130 after Ctrl-C (having drained and closed every sink).

Subcommands beyond the four above come from the entry-point group ``pipeline.commands``
(``serve``, ``emulator`` and ``bench`` are registered that way in ``pyproject.toml``, as a
third-party package registers its own)::

    [project.entry-points."pipeline.commands"]
    mycommand = "mypackage.cli:register"

``register(subparsers) -> None`` adds its parser to the ``argparse`` subparsers and sets
``set_defaults(handler=fn)``; ``fn(args) -> int`` returns the exit code. A plug-in that cannot
be imported still appears in ``pipeline --help``; running it prints one line saying why it
cannot be loaded and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console
from rich.live import Live

from .errors import ConfigError, PipelineError, Problem, UnknownStageType
from .plan import Plan
from .progress import ProgressLog
from .report import (
    dot,
    live_table,
    mermaid,
    print_summary,
    setup_logging,
    stage_catalogue,
    summary_table,
    write_summary_json,
)
from .signals import stop_signals

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: The entry-point group of plug-in subcommands: ``name = "module:register"``.
COMMANDS_GROUP = "pipeline.commands"


def _err(console: Console, text: str) -> None:
    console.print(f"error: {text}", highlight=False, markup=False, soft_wrap=True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipeline")
    except PackageNotFoundError:
        return "unknown"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _every(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 (every frame) or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline", description="Realtime voice agents as a graph of audio stages."
    )
    _log_args(parser, "auto", "info", False)
    # The same options after the command (`pipeline run FILE --log-format json`, as the
    # contract writes them); SUPPRESS keeps a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    _log_args(common, argparse.SUPPRESS, argparse.SUPPRESS, argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"pipeline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline", parents=[common])
    _file_args(run)
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="ID.PARAM=VALUE",
        help="override a parameter (value read as YAML)",
    )
    run.add_argument("--no-live", action="store_true", help="no live view even on a terminal")
    run.add_argument(
        "--json",
        dest="json_path",
        metavar="FILE",
        help="also write the summary as JSON to FILE (- for standard output)",
    )
    run.add_argument(
        "--time-every",
        type=_every,
        default=None,
        metavar="N",
        help="time one frame in N per stage, count every frame (default 16; 1: every frame)",
    )
    run.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=5.0,
        help="seconds to drain after Ctrl-C before stopping hard (default 5)",
    )
    run.set_defaults(handler=cmd_run)

    val = sub.add_parser("validate", help="check a pipelines file (exit 0 or 2)", parents=[common])
    val.add_argument("file")
    val.add_argument("name", nargs="?", help="only this pipeline (default: all)")
    val.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ID.PARAM=VALUE"
    )
    val.set_defaults(handler=cmd_validate)

    st = sub.add_parser("stages", help="list the stage catalogue", parents=[common])
    st.add_argument("type", nargs="?", help="one stage type")
    st.set_defaults(handler=cmd_stages)

    gr = sub.add_parser("graph", help="print the graph as Mermaid or DOT", parents=[common])
    _file_args(gr)
    gr.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    gr.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="ID.PARAM=VALUE"
    )
    gr.set_defaults(handler=cmd_graph)

    add_plugin_commands(sub, {"run", "validate", "stages", "graph"})
    for command in sub.choices.values():
        # every command takes the logging options after its name too, plug-ins included
        # (`pipeline serve FILE --log-format json`)
        if not any("--log-format" in a.option_strings for a in command._actions):
            _log_args(command, argparse.SUPPRESS, argparse.SUPPRESS, argparse.SUPPRESS)
    return parser


def add_plugin_commands(sub: Any, taken: set[str]) -> None:
    """Add every subcommand of the ``pipeline.commands`` entry-point group to ``sub``.

    A plug-in that fails to load (import error, missing ``register``, ``register`` raising)
    is added as a command that says why in one line and exits 1, so a broken package is
    named, never silently missing, and the other commands still work."""
    seen: set[str] = set()
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in taken or ep.name in seen:
            continue  # a built-in command, or a second distribution with the same name
        seen.add(ep.name)
        try:
            register = ep.load()
            register(sub)
        except Exception as exc:
            _broken_command(sub, ep.name, ep.value, exc)


def _broken_command(sub: Any, name: str, value: str, exc: Exception) -> None:
    why = (
        f"command '{name}' (entry point '{value}' of group {COMMANDS_GROUP}) cannot be "
        f"loaded: {type(exc).__name__}: {exc}; reinstall or fix the package that provides it"
    )
    p = sub.choices.get(name)  # register() may have added its parser before failing
    if p is None:
        p = sub.add_parser(name, help=f"(cannot be loaded: {type(exc).__name__})", add_help=False)
    p.set_defaults(broken_command=True)  # main() then takes any arguments without complaint

    def handler(_args: argparse.Namespace) -> int:
        _err(Console(stderr=True), why)
        return EXIT_FAIL

    p.set_defaults(handler=handler)


def _log_args(p: argparse.ArgumentParser, fmt: Any, level: Any, debug: Any) -> None:
    p.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default=fmt,
        help="log format on stderr (default: console on a terminal, else json)",
    )
    p.add_argument(
        "--log-level",
        default=level,
        type=str.lower,
        choices=("debug", "info", "warning", "error"),
        help="debug, info, warning, error (default info)",
    )
    p.add_argument(
        "--debug", action="store_true", default=debug, help="show tracebacks for failures"
    )


def _file_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the pipelines YAML file")
    p.add_argument("name", nargs="?", help="pipeline name (default: the first)")
    p.add_argument("--pipeline", dest="pipeline_name", help="pipeline name (same as NAME)")


def _load(args: argparse.Namespace) -> Any:
    from .config import load

    flag = getattr(args, "pipeline_name", None)
    if args.name and flag and args.name != flag:
        raise ConfigError(
            Problem(
                f"two pipeline names: '{args.name}' and --pipeline '{flag}'",
                "give one of them",
                "<command line>",
            )
        )
    return load(args.file, args.name or flag, overrides=args.overrides)


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    from .config import load, pipeline_names

    names: list[str | None]
    try:
        text = Path(args.file).read_text(encoding="utf-8")
        names = [args.name] if args.name else list(pipeline_names(text))
    except Exception:
        names = [args.name] if args.name else [None]  # load() will report the syntax error
    problems = []
    warnings: list[Problem] = []
    # With every pipeline checked, `--set agent.x=...` may name a stage of only some of them:
    # its "no stage" problem counts only when no pipeline has that stage.
    no_stage: dict[str, list[Any]] = {}
    for name in names or [None]:
        try:
            loaded = load(args.file, name, overrides=args.overrides)
            warnings += [w for w in loaded.check().warnings if w not in warnings]
        except ConfigError as exc:
            for p in exc.problems:
                if p.message.startswith("--set ") and ": no stage '" in p.message:
                    no_stage.setdefault(p.message.partition(":")[0], []).append(p)
                elif p not in problems:
                    problems.append(p)
    problems += [ps[0] for ps in no_stage.values() if len(ps) == len(names or [None])]
    for w in warnings:
        console.print(str(w), highlight=False, markup=False, soft_wrap=True)
    if problems:
        for p in problems:
            console.print(str(p), highlight=False, markup=False, soft_wrap=True)
        console.print(
            f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", highlight=False
        )
        return EXIT_BAD_INPUT
    console.print(
        f"{args.file}: ok ({len(names)} pipeline{'s' if len(names) != 1 else ''})", highlight=False
    )
    return EXIT_OK


def cmd_stages(args: argparse.Namespace, console: Console) -> int:
    if not console.is_terminal:
        console = Console(width=140)
    # `pipeline stages mystages:gain` from the project folder finds mystages.py, as
    # `pipeline run` finds it next to the YAML file.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        console.print(stage_catalogue(args.type))
    except UnknownStageType as exc:
        _err(Console(stderr=True), str(exc))
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_graph(args: argparse.Namespace, console: Console) -> int:
    plan = _load(args).validate()
    sys.stdout.write(mermaid(plan) if args.format == "mermaid" else dot(plan))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    pipeline = _load(args)
    plan = pipeline.validate()
    pipeline.preflight(plan)  # a missing key: exit 2 now, before any stage or file is opened
    return asyncio.run(_run(plan, args, console))


async def _run(p: Plan, args: argparse.Namespace, console: Console) -> int:
    from .runtime import Runner

    log = structlog.get_logger("pipeline")
    every = getattr(args, "time_every", None)
    runner = Runner(p) if every is None else Runner(p, timing_every=every)
    loop = asyncio.get_running_loop()

    def drain() -> None:
        log.warning("stopping: draining the pipeline (press Ctrl-C again to stop now)")
        runner.request_stop()
        loop.call_later(args.drain_timeout, runner.cancel)

    json_path = getattr(args, "json_path", None)
    if _writes_stdout(p) or json_path == "-":
        # a stage writes to standard output (`jsonl_sink` with path: -), or the JSON summary
        # goes there: keep that stream clean for `| jq` and put the live view and the summary
        # on stderr
        console = Console(stderr=True, width=None if _sized(sys.stderr) else 120)
    live: Live | None = None
    if console.is_terminal and not args.no_live:
        live = Live(live_table(runner), console=console, refresh_per_second=4, transient=True)
        live.start()
        runner.on_tick = lambda r: live.update(live_table(r)) if live else None
    else:  # no terminal (a CI log, a file): a progress line every few seconds instead
        runner.on_tick = ProgressLog(log, runner.clock)
    try:
        # the handlers are in place before "pipeline starting" is logged: a Ctrl-C right
        # after that line drains like any other
        with stop_signals(drain, runner.cancel):
            log.info("pipeline starting", pipeline=p.name, stages=len(p.stages))
            for warning in p.warnings:  # found before running; the run goes on
                log.warning(str(warning))
            try:
                summary = await runner.run()
            finally:
                if live is not None:
                    live.stop()
    except PipelineError as exc:
        failed = runner.summary()
        console.print(summary_table(failed))  # a failed run has a summary too
        if json_path:
            write_summary_json(json_path, failed, exc)
        raise
    console.print(summary_table(summary))
    if json_path:
        write_summary_json(json_path, summary)
    if summary.status == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK


def _sized(stream: Any) -> bool:
    """Whether the width of ``stream`` is known (a terminal, or COLUMNS set)."""
    return bool(os.environ.get("COLUMNS")) or (hasattr(stream, "isatty") and stream.isatty())


def _writes_stdout(p: Plan) -> bool:
    """Whether a stage of plan ``p`` writes to standard output (an output path ``-``)."""
    for st in p.stages.values():
        for name, param in st.spec.params.items():
            if param.path_role == "output" and str(st.values.get(name)) == "-":
                return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeline`` command; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # the words after `pipeline`, for a command that runs itself again (serve --workers)
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    if extra and not getattr(args, "broken_command", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.log_format, args.log_level)
    # Piped into a file or a CI log, rich would fold the summary at 80 columns ("g711_decod|e")
    console = Console(stderr=False, width=None if _sized(sys.stdout) else 120)
    if not console.is_terminal:  # piped or captured: wide enough that tables do not wrap names
        console = Console(stderr=False, width=140)
    errors = Console(stderr=True)
    handler: Callable[..., int] = args.handler
    # Subcommands added by plugin modules may take (args) or (args, console).
    takes_console = len(inspect.signature(handler).parameters) > 1
    try:
        return handler(args, console) if takes_console else handler(args)
    except ConfigError as exc:
        for p in exc.problems:
            errors.print(str(p), highlight=False, markup=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    except PipelineError as exc:
        if args.debug:
            errors.print_exception()
        _err(errors, str(exc))
        return int(getattr(exc, "exit_code", EXIT_FAIL))
    except KeyboardInterrupt:
        _err(errors, "interrupted")
        return EXIT_INTERRUPTED


def run_main() -> None:
    sys.exit(main())


__all__ = ["main", "print_summary"]
