"""``pipeline bench [--quick] [--json FILE] [--png FILE] [--only GROUP]``: every benchmark, a table
on the terminal, JSON to a file, and a PNG chart when matplotlib is installed."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .goals import verdicts
from .harness import Row

#: (group, module): each module has run(quick: bool) -> list[Row]
SUITES = (
    ("hotpath", "benchmarks.hotpath"),
    ("framework", "benchmarks.framework"),
    ("latency", "benchmarks.latency"),
    ("e2e", "benchmarks.e2e"),
    ("calls", "benchmarks.load"),
)


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="run the benchmarks (medians, p99, baselines)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (under two minutes)")
    p.add_argument("--json", dest="json_path", help="write the rows as JSON to this file")
    p.add_argument("--png", dest="png_path", help="write a chart (needs matplotlib)")
    p.add_argument("--markdown", dest="md_path", help="write the table as Markdown to this file")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only this suite (hotpath, framework, latency, e2e, calls); repeatable",
    )
    p.set_defaults(handler=cmd_bench)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (CPU model, cores, load while running)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from pipeline import native

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "processor": model,
        "system": f"{platform.system()} {platform.release()}",
        "load_avg_1_5_15": load_avg(),
        "kernels_compiled_in_use": native.status(),
        "libraries": library_versions(),
    }


def load_avg() -> list[float]:
    """The load average over 1, 5 and 15 minutes (zeros where the system has none)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [round(x, 2) for x in load]


#: the distributions whose calls the hot path's baselines make (and Pipecat's, if installed)
LIBRARIES = (
    "numpy",
    "soxr",
    "webrtcvad-wheels",
    "orjson",
    "pybase64",
    "audioop-lts",
    "onnxruntime",
    "pipecat-ai",
)


def library_versions() -> dict[str, str]:
    """The installed version of each of :data:`LIBRARIES` that is installed."""
    from importlib import metadata

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_line(info: dict[str, Any]) -> str:
    """The machine in one line: CPU, cores, Python, kernels in use, library versions, load."""
    kernels = info.get("kernels_compiled_in_use", {})
    used = [k for k, on in kernels.items() if on]
    off = [k for k, on in kernels.items() if not on]
    libs = ", ".join(f"{k} {v}" for k, v in info.get("libraries", {}).items())
    load = info.get("load_avg_1_5_15")
    start = info.get("load_avg_at_start")
    loads = f"load {load}" + (f" (at start {start})" if start else "")
    return (
        f"machine: {info['processor']}, {info['cpus']} cores, {info['system']}, Python "
        f"{info['python']}; compiled kernels in use: {', '.join(used) or 'none'}"
        + (f" (not in use: {', '.join(off)})" if off else "")
        + f"; {libs}; {loads}"
    )


def table(rows: list[Row], width: int = 200) -> Table:
    """The terminal table. Narrower than 150 columns, the baseline goes under the row's name
    and the notes are left out (they are in the JSON and the Markdown)."""
    wide = width >= 150
    t = Table(title="benchmarks: median and p99 over repetitions", title_justify="left")
    cols = ["group", "what", "median", "p99", "unit", "× baseline"]
    if wide:
        cols += ["baseline", "note"]
    for col in cols:
        right = col in ("median", "p99", "× baseline")
        t.add_column(col, justify="right" if right else "left", no_wrap=right)
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        name = escape(r.name)
        if r.baseline and not wide:
            name += f"\n[dim]vs {escape(r.baseline)}[/dim]"
        cells = [r.group, name, f"{r.median:,.2f}", f"{r.p99:,.2f}", r.unit, ratio]
        if wide:
            cells += [escape(r.baseline), escape(r.note)]
        t.add_row(*cells)
    return t


def markdown(rows: list[Row]) -> str:
    """The table as Markdown, for the README."""
    lines = [
        "| group | what | median | p99 | unit | × baseline (baseline) | note |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        base = "" if r.ratio is None else f"{r.ratio:.2f} ({r.baseline})"
        lines.append(
            f"| {r.group} | {r.name.strip()} | {r.median:,.2f} | {r.p99:,.2f} | {r.unit} | {base} "
            f"| {r.note} |"
        )
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    groups = sorted({r.group for r in rows})
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, 2.2 + 0.35 * len(rows)))
    if len(groups) == 1:
        axes = [axes]
    for ax, g in zip(axes, groups, strict=True):
        rs = [
            r
            for r in rows
            if r.group == g and r.samples and all(math.isfinite(x) for x in r.samples)
        ]
        ax.boxplot([r.samples for r in rs], orientation="horizontal", showfliers=False)
        ax.set_yticks(range(1, len(rs) + 1), [r.name for r in rs], fontsize=7)
        ax.set_title(f"{g} ({rs[0].unit if rs else ''})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def run_all(
    quick: bool, only: list[str], console: Console | None = None, tiny: bool = False
) -> list[Row]:
    """Run the suites (all, or those in ``only``) and return their rows in order."""
    from .harness import quiet_pipecat

    quiet_pipecat()
    rows: list[Row] = []
    for group, mod_name in SUITES:
        if only and group not in only:
            continue
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            if console is not None:
                console.print(f"skipping {group}: {exc}", highlight=False, markup=False)
            continue
        t0 = time.perf_counter()
        got = mod.run(quick=quick, tiny=tiny) if tiny else mod.run(quick=quick)
        if console is not None:
            console.print(
                f"{group}: {len(got)} rows in {time.perf_counter() - t0:.1f} s", highlight=False
            )
        rows += got
    return rows


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    """``pipeline bench``: run, print the table, write JSON / Markdown / PNG if asked."""
    if getattr(args, "log_level", "info") == "info":
        # the calls would log every connect and barge-in: warnings only, unless asked
        from pipeline.report import setup_logging

        setup_logging(getattr(args, "log_format", "auto"), "warning")
    t0 = time.perf_counter()
    load_at_start = load_avg()
    rows = run_all(args.quick, args.only, console)
    console.print(table(rows, console.width))
    info = {**machine(), "load_avg_at_start": load_at_start}
    console.print(machine_line(info), highlight=False, markup=False)
    console.print(f"took {time.perf_counter() - t0:.0f} s", highlight=False)
    found = verdicts(rows)
    console.print("the hot path's goals, this run:", highlight=False, markup=False)
    for v in found:
        console.print(v.line(), highlight=False, markup=False, soft_wrap=True)
    if args.md_path:
        with open(args.md_path, "w", encoding="utf-8") as f:
            f.write(markdown(rows))
            f.write("\n" + "\n".join(f"* {v.line().strip()}" for v in found) + "\n")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "machine": info,
                    "quick": args.quick,
                    "rows": [r.as_dict() for r in rows],
                    "goals": [v.as_dict() for v in found],
                },
                f,
                indent=1,
                ensure_ascii=False,
            )
    if args.png_path and not chart(rows, args.png_path):
        console.print(
            "no chart: matplotlib is not installed; pip install 'pipeline[bench]'", markup=False
        )
    return 0
