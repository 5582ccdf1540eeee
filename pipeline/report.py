"""Showing a run: the live view while it runs, the summary table after, logging set-up, and the
graph as Mermaid or DOT."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import structlog
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .frames import ErrorReport, ToolCall, ToolResult, Transcript, event_to_dict
from .spec import StageSpec, builtin_names, resolve

if TYPE_CHECKING:
    from .plan import Plan
    from .runtime import Runner, RunSummary


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """structlog to stderr: a console renderer on a terminal, JSON lines otherwise or on request."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def _us(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def summary_table(s: RunSummary) -> Table:
    """Per stage frames and time p50/p99; per link peak depth and drops; media × real time."""
    t = Table(
        title=f"pipeline '{s.pipeline}' {s.status}: {s.media_s:.2f} s of media in "
        f"{s.wall_s:.2f} s ({s.realtime_factor:,.1f}× real time)",
        title_justify="left",
    )
    if s.timed_every > 1:
        t.caption = (
            f"frames counted exactly; p50/p99 over timed frames: 1 frame in {s.timed_every} "
            "per stage; total ms estimated from them"
        )
        t.caption_justify = "left"
    for col in ("stage", "type", "in", "out", "p50 µs", "p99 µs", "total ms", "notes"):
        t.add_column(
            col,
            justify="right" if col not in ("stage", "type", "notes") else "left",
            overflow="fold",
            no_wrap=col not in ("type", "notes"),
        )
    for st in s.stages:
        notes = ", ".join(f"{k}={v}" for k, v in st.reports.items())
        t.add_row(
            st.id,
            st.type,
            str(st.frames_in),
            str(st.frames_out),
            _us(st.p50_us),
            _us(st.p99_us),
            f"{st.total_ms:,.1f}",
            notes,
        )
    lt = Table(title="links", title_justify="left")
    for col in ("link", "kind", "frames", "peak", "dropped", "purged"):
        lt.add_column(col, justify="left" if col in ("link", "kind") else "right")
    for lk in s.links:
        if lk.fused:
            kind = "fused"
        else:
            kind = f"queue {lk.capacity} {lk.overflow}" + (" feedback" if lk.feedback else "")
        lt.add_row(
            lk.name,
            kind,
            str(lk.sent),
            "-" if lk.fused else str(lk.peak),
            str(lk.dropped),
            str(lk.purged),
        )
    outer = Table.grid()
    outer.add_row(t)
    outer.add_row(lt)
    if s.event_counts:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.event_counts.items()))
        outer.add_row(f"events: {counts}")
    conv = conversation_table(s)
    if conv is not None:
        outer.add_row(conv)
    return outer


def conversation_table(s: RunSummary) -> Table | None:
    """Tool calls with their results, final transcripts and errors, in order."""
    if not s.notable:
        return None
    t = Table(title="conversation", title_justify="left")
    for col in ("stage", "event", "detail"):
        t.add_column(col)
    for ev in s.notable[:60]:
        match ev:
            case ToolCall():
                detail = f"{ev.name}({ev.arguments}) call_id={ev.call_id}"
            case ToolResult():
                flag = "error: " if ev.is_error else ""
                detail = f"{flag}{_clip(ev.output)} call_id={ev.call_id}"
            case Transcript():
                detail = f"{ev.role}: {_clip(ev.text)}"
            case ErrorReport():
                detail = f"{ev.code}: {_clip(ev.message)}"
            case _:
                detail = ""
        t.add_row(ev.stage, ev.type, detail)
    return t


def _clip(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def live_table(r: Runner) -> Table:
    """The live view: per stage frames in/out, per link depth and drops."""
    from .progress import of_runner

    progress = of_runner(r, time.perf_counter() - r.started_at) if r.started_at else None
    t = Table(
        title=f"running '{r.plan.name}'",
        title_justify="left",
        caption=progress.text() if progress is not None else None,
        caption_justify="left",
    )
    for col in ("stage", "in", "out", "", "link", "depth", "peak", "dropped"):
        t.add_column(col)
    stages = list(r.stats.values())
    links = list(r.channels.values())
    for i in range(max(len(stages), len(links))):
        row = ["", "", "", "", "", "", "", ""]
        if i < len(stages):
            st = stages[i]
            row[0:3] = [st.id, str(st.frames_in), str(st.frames_out)]
        if i < len(links):
            ch = links[i]
            row[4:8] = [ch.name, f"{ch.depth}/{ch.capacity}", str(ch.peak), str(ch.dropped)]
        t.add_row(*row)
    return t


def summary_dict(s: RunSummary, error: BaseException | None = None) -> dict[str, Any]:
    """The summary as JSON-ready data (``pipeline run --json FILE``): status, exit code, media
    and wall seconds, real-time factor, per stage and per link counters, events by type, the
    conversation (tool calls, results, final transcripts, errors) and the error, if any."""
    exit_code = 0 if s.status == "completed" else 130 if s.status == "interrupted" else 1
    err: dict[str, Any] | None = None
    if error is not None:
        exit_code = int(getattr(error, "exit_code", 1))
        err = {
            "type": type(error).__name__,
            "stage": getattr(error, "stage", None),
            "message": str(error),
        }
    return {
        "pipeline": s.pipeline,
        "status": s.status,
        "exit_code": exit_code,
        "media_s": round(s.media_s, 6),
        "wall_s": round(s.wall_s, 6),
        "realtime_factor": round(s.realtime_factor, 3),
        "timed_every": s.timed_every,
        "stages": [dataclasses.asdict(st) for st in s.stages],
        "links": [dataclasses.asdict(lk) for lk in s.links],
        "events": dict(sorted(s.event_counts.items())),
        "conversation": [event_to_dict(ev) for ev in s.notable],
        "error": err,
    }


def write_summary_json(path: str, s: RunSummary, error: BaseException | None = None) -> None:
    """Write :func:`summary_dict` to ``path`` (``-``: standard output). A file is written to a
    temporary name beside it, then renamed: it is whole or absent, never half written."""
    data = orjson.dumps(
        summary_dict(s, error), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY, default=str
    )
    if path == "-":
        sys.stdout.buffer.write(data + b"\n")
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data + b"\n")
    os.replace(tmp, target)


def print_summary(s: RunSummary, console: Console | None = None) -> None:
    (console or Console()).print(summary_table(s))


# ---------------------------------------------------------------------------- catalogue


def stage_catalogue(type_name: str | None = None) -> Table:
    """`pipeline stages`: every stage with its parameters (types, defaults) and frame types."""
    names = [type_name] if type_name else builtin_names()
    t = Table(show_lines=True)
    t.add_column("stage")
    t.add_column("accepts → emits")
    t.add_column("parameters")
    for name in names:
        spec = resolve(name)
        # escape: a type such as dict[str, any] is not rich markup
        t.add_row(
            f"[bold]{escape(spec.name)}[/bold]\n{escape(spec.doc)}",
            escape(flow_text(spec)),
            escape(params_text(spec)),
        )
    return t


def flow_text(spec: StageSpec) -> str:
    acc = "–" if spec.is_source else ", ".join(t.type for t in spec.accepts)
    emi = "–" if not spec.emits else ", ".join(t.type for t in spec.emits)
    text = f"{acc} → {emi}"
    if spec.audio_in is not None:
        text += f"\n(takes {spec.audio_in.text()})"
    if spec.passthrough:
        text += "\n(passes other frames through)"
    for line in side_text(spec):
        text += f"\n{line}"
    return text


def side_text(spec: StageSpec) -> list[str]:
    """What a stage exchanges outside its links, one line per kind (none: no lines)."""
    lines = []
    for what, items in (
        ("publishes", spec.publishes),
        ("subscribes to", spec.subscribes),
        ("provides", tuple(spec.provides)),
        ("uses", spec.uses),
        ("reports", spec.metrics),
    ):
        if items:
            lines.append(f"{what}: " + ", ".join(str(i) for i in items))
    return lines


def side_edges(p: Plan) -> list[tuple[str, str, str]]:
    """(from, to, label) for what flows outside the links: bus topics from every publisher to
    every subscriber of the run, and what a stage provides to the linked stages that use it."""
    nodes = list(p.stages.values())
    edges: list[tuple[str, str, str]] = []
    for a in nodes:
        for topic in a.spec.publishes:
            for b in nodes:
                if b is not a and topic in b.spec.subscribes:
                    edges.append((a.id, b.id, f"bus: {topic}"))
    linked = {(lk.src, lk.dst) for lk in p.links}
    linked |= {(b, a) for a, b in linked}
    for a in nodes:
        for iface in a.spec.provides:
            for b in nodes:
                if (a.id, b.id) in linked and iface in b.spec.uses:
                    edges.append((a.id, b.id, f"provides: {iface}"))
    return edges


def params_text(spec: StageSpec) -> str:
    if not spec.params:
        return "none"
    lines = []
    for p in spec.params.values():
        default = "required" if p.required else f"= {p.default!r}"
        doc = f": {p.doc}" if p.doc else ""
        lines.append(f"{p.name} ({p.type_text}) {default}{doc}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- graph


def mermaid(p: Plan) -> str:
    """A Mermaid flowchart of a checked plan: every label quoted, so brackets, pipes and the
    like stay text."""
    lines = ["flowchart LR"]
    ids = _idents(list(p.stages))
    for n in p.stages.values():
        label = f"{_mm(n.id)}<br/><small>{_mm(n.type_name)}</small>"
        lines.append(f'    {ids[n.id]}["{label}"]')
    for lk in p.links:
        arrow = "-.->" if lk.feedback else "-->"
        lines.append(f'    {ids[lk.src]} {arrow}|"{_mm(lk.describe())}"| {ids[lk.dst]}')
    for src, dst, label in side_edges(p):  # outside the links: a dotted line
        lines.append(f'    {ids[src]} -.-|"{_mm(label)}"| {ids[dst]}')
    return "\n".join(lines) + "\n"


def _mm(text: str) -> str:
    """Text for a quoted Mermaid label: the characters Mermaid reads inside quotes as entities."""
    return (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )


def _idents(names: list[str]) -> dict[str, str]:
    """Mermaid node ids for stage ids, distinct even when two differ only in punctuation
    ('my-src' and 'my_src' would both be my_src)."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = _ident(name)
        if base == "end":  # a Mermaid keyword: `end` as a node id breaks the chart
            base = "end_"
        ident = base
        k = 2
        while ident in used:
            ident, k = f"{base}_{k}", k + 1
        used.add(ident)
        out[name] = ident
    return out


def dot(p: Plan) -> str:
    """A Graphviz digraph of a checked plan: every id and label quoted."""
    lines = [f"digraph {_dq(p.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for n in p.stages.values():
        lines.append(f"    {_dq(n.id)} [label={_dq(n.id + chr(10) + n.type_name)}];")
    for lk in p.links:
        style = ", style=dashed" if lk.feedback else ""
        label = _dq(lk.describe())
        lines.append(f"    {_dq(lk.src)} -> {_dq(lk.dst)} [label={label}{style}];")
    for src, dst, text in side_edges(p):  # outside the links: a dotted grey line
        lines.append(
            f"    {_dq(src)} -> {_dq(dst)} [label={_dq(text)}, style=dotted, color=gray40];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dq(text: str) -> str:
    """A DOT quoted string (a newline becomes DOT's centred line break)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{body}"'


def _ident(s: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in s)
