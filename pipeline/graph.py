"""A pipeline: stages and the links between them, checked before it runs.

Build one in Python::

    p = Pipeline("demo")
    p.add("tone", "signal_source", kind="sine", freq=440, seconds=2)
    p.add("up", "resample", rate=16000)
    p.add("out", my_sink_function)          # a decorated function works as well as a name
    p.link("tone", "up", "out")             # a chain: tone -> up -> out
    summary = p.run()

or load it from YAML with :func:`pipeline.config.load` (which builds the same object). ``check()``
returns every problem it finds (section 4 of the contract): unknown types and parameters, links
to nowhere, duplicate ids, links that can carry nothing, unconnected stages, missing input files,
and audio format mismatches, each located in the YAML file when there is one.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .channels import DEFAULT_CAPACITY, OVERFLOW_POLICIES, Overflow
from .errors import ConfigError, FormatError, Problem
from .frames import Audio, AudioFormat
from .stage import StageSpec, spec_for

if TYPE_CHECKING:
    from .clock import Clock
    from .runtime import RunSummary

Where = tuple[int, int]  # (line, column), 1-based; (0, 0) = unknown


@dataclass
class Node:
    """One stage in a pipeline."""

    id: str
    type_name: str
    spec: StageSpec | None
    raw_params: dict[str, Any]
    where: Where = (0, 0)
    param_where: dict[str, Where] = field(default_factory=dict)
    type_where: Where = (0, 0)
    values: dict[str, Any] = field(default_factory=dict)
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None
    in_types: frozenset[type[Any]] = frozenset()
    ok: bool = True  # False when its parameters or files have problems
    from_set: frozenset[str] = frozenset()  # parameters given on the command line (--set)
    out_types: frozenset[type[Any]] = frozenset()


@dataclass
class Link:
    """A link from one stage to another, with its options."""

    src: str
    dst: str
    capacity: int | None = None
    overflow: Overflow | None = None
    where: Where = (0, 0)
    feedback: bool = False
    types: frozenset[type[Any]] = frozenset()
    format: AudioFormat | None = None

    @property
    def name(self) -> str:
        return f"{self.src} -> {self.dst}"

    @property
    def has_options(self) -> bool:
        return self.capacity is not None or self.overflow is not None


class Pipeline:
    """A graph of stages, buildable from Python or YAML, checked before running."""

    def __init__(
        self,
        name: str = "pipeline",
        description: str = "",
        *,
        base_dir: Path | str | None = None,
        file: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.file = file
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self._problems: list[Problem] = []  # found while building (duplicates, bad types)
        self._checked = False

    # ------------------------------------------------------------------ building

    def add(
        self,
        id: str,
        stage: str | StageSpec | Callable[..., Any],
        /,
        *,
        _where: Where = (0, 0),
        _type_where: Where = (0, 0),
        _param_where: Mapping[str, Where] | None = None,
        _from_set: Iterable[str] = (),
        **params: Any,
    ) -> str:
        """Add a stage under ``id``: a type name, ``module:function``, or a stage function.
        Returns the id, so ``p.link(p.add(...), ...)`` reads naturally."""
        self._checked = False
        if id in self.nodes:
            self._problem(
                f"duplicate stage id '{id}' (first defined at line {self.nodes[id].where[0]})",
                "give each stage a unique id",
                _where,
            )
            return id
        spec: StageSpec | None
        type_name = stage if isinstance(stage, str) else getattr(stage, "name", "") or ""
        try:
            spec = spec_for(stage)
            type_name = type_name or spec.name
        except LookupError as exc:
            spec = None
            self._problem(f"stage '{id}': {exc}", "", _type_where if _type_where[0] else _where)
        self.nodes[id] = Node(
            id=id,
            type_name=type_name,
            spec=spec,
            raw_params=dict(params),
            where=_where,
            param_where=dict(_param_where or {}),
            type_where=_type_where,
            from_set=frozenset(_from_set),
        )
        return id

    def link(
        self,
        *ids: str,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        _where: Where = (0, 0),
    ) -> Pipeline:
        """Link stages in a chain: ``link("a", "b", "c")`` is a -> b -> c. Options apply to
        every link of the chain."""
        self._checked = False
        if len(ids) < 2:
            self._problem("a link needs at least two stages", "write 'a -> b'", _where)
        for a, b in itertools.pairwise(ids):
            self.links.append(Link(a, b, capacity, overflow, _where))
        return self

    def chain(
        self,
        text: str,
        *,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        _where: Where = (0, 0),
    ) -> Pipeline:
        """Link stages from text: ``"a -> b -> c"``."""
        ids = [s.strip() for s in text.split("->")]
        if any(not s for s in ids):
            self._problem(f"cannot read link '{text}'", "write 'a -> b -> c'", _where)
            return self
        return self.link(*ids, capacity=capacity, overflow=overflow, _where=_where)

    def _problem(self, message: str, fix: str = "", where: Where = (0, 0)) -> None:
        self._problems.append(self._p(message, fix, where))

    def _p(self, message: str, fix: str, where: Where) -> Problem:
        # A pipeline built in Python has no file: its problems say "<pipeline>".
        return Problem(message, fix, self.file or "<pipeline>", where[0], where[1])

    # ------------------------------------------------------------------ checking

    def check(self) -> list[Problem]:
        """Every problem found, in file order. Empty means the pipeline can run."""
        problems = list(self._problems)
        problems += self._check_params()
        problems += self._check_links()
        self._mark_feedback()
        problems += self._check_cycles()
        problems += self._propagate_types()
        problems += self._propagate_formats()
        problems += self._check_connected()
        problems.sort(key=lambda p: (p.line or 10**9, p.column))
        self._checked = not problems
        return problems

    def validate(self) -> None:
        """Raise ConfigError with every problem, or return quietly."""
        problems = self.check()
        if problems:
            raise ConfigError(problems)

    def _check_params(self) -> list[Problem]:
        out: list[Problem] = []
        writers: dict[Path, str] = {}  # output file -> the stage that writes it
        stdin_reader = ""  # the stage reading standard input, if any
        stdout_writer = ""  # the stage writing standard output, if any
        for node in self.nodes.values():
            spec = node.spec
            if spec is None:
                continue
            raw = dict(node.raw_params)
            for name, p in spec.params.items():
                if p.path_role and name in raw and isinstance(raw[name], str | Path):
                    value = str(raw[name])
                    if value != "-":  # standard input or output
                        raw[name] = self.base_dir / Path(value).expanduser()
            values, param_problems = spec.validate(raw)
            for name, message in param_problems:
                out.append(self._param_p(node, name, message, ""))
            node.values = values
            node.ok = not param_problems
            if param_problems:
                continue
            if spec.check is not None:
                for name, message in spec.check(values, self.base_dir):
                    node.ok = False
                    out.append(self._param_p(node, name, message, ""))
            for name, p in spec.params.items():
                v = values.get(name)
                if p.path_role == "input" and str(v) == "-":
                    if stdin_reader:
                        node.ok = False
                        out.append(
                            self._param_p(
                                node,
                                name,
                                f"stage '{stdin_reader}' reads standard input ('-') too",
                                "give one of them a file",
                            )
                        )
                    stdin_reader = node.id
                elif p.path_role == "input" and isinstance(v, Path) and not v.exists():
                    node.ok = False
                    out.append(
                        self._param_p(
                            node,
                            name,
                            f"input file '{node.raw_params.get(name)}' does not exist "
                            f"(looked for {v})",
                            "check the path (relative paths start at the YAML file's folder)",
                        )
                    )
                if p.path_role == "output" and str(v) == "-":
                    if stdout_writer:
                        node.ok = False
                        out.append(
                            self._param_p(
                                node,
                                name,
                                f"stage '{stdout_writer}' writes standard output ('-') too",
                                "give one of them a file",
                            )
                        )
                    stdout_writer = node.id
                elif p.path_role == "output" and isinstance(v, Path):
                    problem = _output_problem(v, node.raw_params.get(name), writers, node.id)
                    if problem:
                        node.ok = False
                        out.append(self._param_p(node, name, *problem))
        return out

    def _param_p(self, node: Node, name: str, message: str, fix: str) -> Problem:
        """A problem with parameter ``name`` of ``node``, located at its value in the file; a
        ``--set`` value is located at the stage and says it came from the command line."""
        what = f"stage '{node.id}' ({node.spec.name if node.spec else node.type_name})"
        if name in node.from_set:
            message += f" (from --set {node.id}.{name})"
            return self._p(f"{what}: {message}", fix, node.where)
        return self._p(f"{what}: {message}", fix, node.param_where.get(name, node.where))

    def _check_links(self) -> list[Problem]:
        out: list[Problem] = []
        seen: set[tuple[str, str]] = set()
        for link in self.links:
            for end in (link.src, link.dst):
                if end not in self.nodes:
                    close = difflib.get_close_matches(end, list(self.nodes), n=1)
                    fix = f"did you mean '{close[0]}'?" if close else "define it under stages"
                    out.append(
                        self._p(f"link '{link.name}' names unknown stage '{end}'", fix, link.where)
                    )
            if (link.src, link.dst) in seen:
                out.append(
                    self._p(f"link '{link.name}' is declared twice", "remove one", link.where)
                )
            seen.add((link.src, link.dst))
            if link.capacity is not None and (
                not isinstance(link.capacity, int) or link.capacity < 1
            ):
                out.append(
                    self._p(
                        f"link '{link.name}': capacity must be a whole number ≥ 1, "
                        f"got {link.capacity!r}",
                        "e.g. capacity: 8",
                        link.where,
                    )
                )
            if link.overflow is not None and link.overflow not in OVERFLOW_POLICIES:
                out.append(
                    self._p(
                        f"link '{link.name}': unknown overflow {link.overflow!r}",
                        "use one of " + ", ".join(OVERFLOW_POLICIES),
                        link.where,
                    )
                )
            src = self.nodes.get(link.src)
            dst = self.nodes.get(link.dst)
            if src and src.spec and src.spec.is_sink:
                out.append(
                    self._p(
                        f"link '{link.name}': '{link.src}' ({src.spec.name}) is a sink "
                        "and emits nothing",
                        "link from a stage that emits frames",
                        link.where,
                    )
                )
            if dst and dst.spec and dst.spec.is_source:
                out.append(
                    self._p(
                        f"link '{link.name}': '{link.dst}' ({dst.spec.name}) is a "
                        "source and takes no input",
                        "link into a stage that accepts frames",
                        link.where,
                    )
                )
        return out

    def live_links(self) -> list[Link]:
        """Links whose two ends exist."""
        return [lk for lk in self.links if lk.src in self.nodes and lk.dst in self.nodes]

    def _mark_feedback(self) -> None:
        """A link that closes a cycle (a back edge in a depth-first walk from the sources, in
        declaration order) is a feedback link."""
        out: dict[str, list[Link]] = {n: [] for n in self.nodes}
        for link in self.live_links():
            link.feedback = False
            out[link.src].append(link)
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        roots = [n for n, node in self.nodes.items() if node.spec and node.spec.is_source]
        roots += [n for n in self.nodes if n not in roots]

        def visit(n: str) -> None:
            state[n] = 1
            for link in out[n]:
                s = state.get(link.dst)
                if s == 1:
                    link.feedback = True
                elif s is None:
                    visit(link.dst)
            state[n] = 2

        for r in roots:
            if r not in state:
                visit(r)

    def _check_cycles(self) -> list[Problem]:
        """A plain stage linked to itself takes back everything it emits, so the link fills
        and the stage waits on itself for ever."""
        out: list[Problem] = []
        for link in self.live_links():
            spec = self.nodes[link.src].spec
            if link.src == link.dst and spec is not None and not spec.cycle_aware:
                out.append(
                    self._p(
                        f"link '{link.name}' links stage '{link.src}' to itself: it would take "
                        "back everything it emits and the run would never end",
                        "remove the link",
                        link.where,
                    )
                )
        return out

    def topo_order(self) -> list[str]:
        """Stage ids in order along forward links (feedback links ignored)."""
        indeg = {n: 0 for n in self.nodes}
        for link in self.live_links():
            if not link.feedback:
                indeg[link.dst] += 1
        ready = [n for n in self.nodes if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for link in self.live_links():
                if link.src == n and not link.feedback:
                    indeg[link.dst] -= 1
                    if indeg[link.dst] == 0:
                        ready.append(link.dst)
        return order

    def _propagate_types(self) -> list[Problem]:
        for node in self.nodes.values():
            node.in_types = frozenset()
            node.out_types = frozenset(node.spec.emits) if node.spec else frozenset()
        changed = True
        while changed:
            changed = False
            for link in self.live_links():
                src, dst = self.nodes[link.src], self.nodes[link.dst]
                accepts = dst.spec.link_accepts() if dst.spec else ()
                types = frozenset(t for t in src.out_types if t in accepts)
                if types != link.types:
                    link.types = types
                    changed = True
                if not types <= dst.in_types:
                    dst.in_types = dst.in_types | types
                    if dst.spec and dst.spec.passthrough:
                        dst.out_types = dst.out_types | dst.in_types
                    changed = True
        out: list[Problem] = []
        for link in self.live_links():
            if link.types:
                continue
            src, dst = self.nodes[link.src], self.nodes[link.dst]
            if not (src.spec and dst.spec) or src.spec.is_sink or dst.spec.is_source:
                continue  # unknown type, or already reported as a link from a sink/into a source
            emitted = ", ".join(sorted(t.type for t in src.out_types)) or "nothing"
            taken = ", ".join(sorted(t.type for t in dst.spec.link_accepts())) or "nothing"
            out.append(
                self._p(
                    f"link '{link.name}' can carry nothing: '{link.src}' ({src.spec.name}) emits "
                    f"{emitted}; '{link.dst}' ({dst.spec.name}) accepts {taken}",
                    "remove the link or put a converting stage between them",
                    link.where,
                )
            )
        return out

    def _propagate_formats(self) -> list[Problem]:
        out: list[Problem] = []
        incoming: dict[str, list[Link]] = {n: [] for n in self.nodes}
        for link in self.live_links():
            incoming[link.dst].append(link)
        for nid in self.topo_order():
            node = self.nodes[nid]
            spec = node.spec
            if spec is None or not node.ok:
                node.output_format = None
                continue
            fmts: dict[AudioFormat, Link] = {}
            for link in incoming[nid]:
                src_fmt = self.nodes[link.src].output_format
                if Audio in link.types and src_fmt is not None:
                    link.format = src_fmt
                    fmts.setdefault(src_fmt, link)
            if len(fmts) > 1:
                desc = ", ".join(f"{f} from '{lk.src}'" for f, lk in fmts.items())
                out.append(
                    self._p(
                        f"stage '{nid}' ({spec.name}) gets audio in {len(fmts)} formats: {desc}",
                        "resample/encode the inputs to one format",
                        node.where,
                    )
                )
                continue
            fmt_link = next(iter(fmts.values()), None)
            node.input_format = next(iter(fmts), None)
            try:
                if spec.audio_in is not None and node.input_format is not None:
                    problem = spec.audio_in.problem(node.input_format)
                    if problem is not None:
                        raise FormatError(*problem)
                if spec.output_format is not None:
                    node.output_format = spec.output_format(node.values, node.input_format)
                elif spec.passthrough:
                    node.output_format = node.input_format
                else:
                    node.output_format = None
            except FormatError as exc:
                node.output_format = None
                if fmt_link is not None:
                    where = fmt_link.where if fmt_link.where[0] else node.where
                    msg = f"link '{fmt_link.name}': stage '{nid}' ({spec.name}) {exc.message}"
                else:
                    where = node.where
                    msg = f"stage '{nid}' ({spec.name}): {exc.message}"
                out.append(self._p(msg, exc.fix, where))
            except Exception as exc:  # a bad input file read at validation time
                node.output_format = None
                name = next(iter(spec.params), "")
                where = node.param_where.get(name, node.where)
                out.append(self._p(f"stage '{nid}' ({spec.name}): {exc}", "", where))
        # feedback links carry whatever their source emits, formats included
        for link in self.live_links():
            if link.feedback and Audio in link.types:
                link.format = self.nodes[link.src].output_format
        return out

    def _check_connected(self) -> list[Problem]:
        out: list[Problem] = []
        has_in = {link.dst for link in self.links}
        has_out = {link.src for link in self.links}
        for node in self.nodes.values():
            spec = node.spec
            if spec is None:
                continue
            if node.id not in has_in and node.id not in has_out:
                out.append(
                    self._p(
                        f"stage '{node.id}' ({spec.name}) is not connected",
                        f"link it, e.g. '... -> {node.id}', or remove it"
                        if spec.is_sink
                        else f"link it, e.g. '{node.id} -> ...', or remove it",
                        node.where,
                    )
                )
            elif not spec.is_source and node.id not in has_in:
                out.append(
                    self._p(
                        f"stage '{node.id}' ({spec.name}) gets no input",
                        f"link a stage into it: '... -> {node.id}'",
                        node.where,
                    )
                )
            elif not spec.is_sink and node.id not in has_out and spec.emits:
                out.append(
                    self._p(
                        f"stage '{node.id}' ({spec.name}) sends its output nowhere",
                        f"link it to a sink: '{node.id} -> ...'",
                        node.where,
                    )
                )
        return out

    # ------------------------------------------------------------------ running

    async def run_async(
        self,
        *,
        clock: Clock | None = None,
        fuse: bool = True,
        on_start: Callable[[Any], None] | None = None,
    ) -> RunSummary:
        """Check, then run until every source has ended and everything has drained."""
        from .runtime import Runner

        self.validate()
        runner = Runner(self, clock=clock, fuse=fuse)
        if on_start is not None:
            on_start(runner)
        return await runner.run()

    def run(self, *, clock: Clock | None = None, fuse: bool = True) -> RunSummary:
        """Synchronous :meth:`run_async`."""
        return asyncio.run(self.run_async(clock=clock, fuse=fuse))

    # ------------------------------------------------------------------ describing

    def describe_link(self, link: Link) -> str:
        types = ", ".join(sorted(t.type for t in link.types))
        fmt = f" [{link.format}]" if link.format else ""
        return f"{types}{fmt}"

    def default_capacity(self, link: Link) -> int:
        return link.capacity if link.capacity is not None else DEFAULT_CAPACITY


def _output_problem(
    path: Path, raw: Any, writers: dict[Path, str], stage_id: str
) -> tuple[str, str] | None:
    """(problem, fix) for an output file that cannot be written, or that another stage writes
    too; None when it looks writable (the run still reports a full disk or the like)."""
    shown = f"'{raw}'" if raw not in (None, "") else "''"
    if path.is_dir():
        return (f"output path {shown} is a folder ({path})", "name a file in it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return (
                    f"output path {shown}: {parent} is a file, not a folder",
                    "choose another path",
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                return (
                    f"output path {shown}: no permission to write in {parent}",
                    "choose a folder you can write in",
                )
            break
    if path.exists() and not path.is_file():
        return None  # /dev/null and the like: any number of stages may write there
    key = path.resolve()
    if key in writers:
        return (
            f"output path {shown} is written by stage '{writers[key]}' too",
            "give each stage its own file",
        )
    writers[key] = stage_id
    return None
