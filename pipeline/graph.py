"""A pipeline: stages and the links between them, checked before it runs.

Build one in Python::

    p = Pipeline("demo")
    p.add("tone", "signal_source", kind="sine", freq=440, seconds=2)
    p.add("up", "resample", rate=16000)
    p.add("out", my_sink_function)          # a decorated function works as well as a name
    p.link("tone", "up", "out")             # a chain: tone -> up -> out
    summary = p.run()

or load it from YAML with :func:`pipeline.config.load` (which builds the same object). A
``Pipeline`` is only the description. ``check()`` reads it and returns an immutable
:class:`~pipeline.plan.Plan`: every problem it finds (section 4 of the contract: unknown types
and parameters, links to nowhere, duplicate ids, links that can carry nothing, unconnected
stages, missing input files, audio format mismatches, each located in the YAML file when there
is one), and, when there is none, what a runner needs (checked values, formats, segments).
Checking writes nothing into the pipeline; building it again after a check is fine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .channels import OVERFLOW_POLICIES, Overflow
from .context import Peer
from .errors import ConfigError, FormatError, Problem, UnknownStageType
from .frames import Audio, AudioFormat
from .plan import Plan, PlannedLink, PlannedStage, freeze_values, segments_of
from .spec import PIPELINE_WARNINGS, CheckWarning, StageSpec, spec_for

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
    from_set: frozenset[str] = frozenset()  # parameters given on the command line (--set)


@dataclass(eq=False)
class Link:
    """A link from one stage to another, with its options."""

    src: str
    dst: str
    capacity: int | None = None
    overflow: Overflow | None = None
    where: Where = (0, 0)

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
        except UnknownStageType as exc:
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

    def check(self) -> Plan:
        """Check everything and return the plan: ``plan.problems`` lists every problem found,
        in file order (empty: it can run). Changes nothing in the pipeline."""
        return _Checker(self).plan()

    def validate(self) -> Plan:
        """The plan, or ConfigError with every problem."""
        return self.check().runnable()

    def preflight(self, plan: Plan) -> None:
        """Raise ConfigError with what a run of ``plan`` will need and the machine lacks (each
        stage's ``preflight``: an API key in the environment, ...), before anything starts."""
        problems: list[Problem] = []
        for sid, st in plan.stages.items():
            if st.spec.preflight is None:
                continue
            for name, message in st.spec.preflight(st.values, plan.base_dir):
                problems.append(self._param_p(self.nodes[sid], name, message, ""))
        if problems:
            raise ConfigError(problems)

    def live_links(self) -> list[Link]:
        """Links whose two ends exist."""
        return [lk for lk in self.links if lk.src in self.nodes and lk.dst in self.nodes]

    def topo_order(self) -> list[str]:
        """Stage ids in order along forward links (feedback links ignored)."""
        return _Checker(self).topo_order()

    def _param_p(self, node: Node, name: str, message: str, fix: str) -> Problem:
        """A problem with parameter ``name`` of ``node``, located at its value in the file; a
        ``--set`` value is located at the stage and says it came from the command line."""
        what = f"stage '{node.id}' ({node.spec.name if node.spec else node.type_name})"
        if name in node.from_set:
            message += f" (from --set {node.id}.{name})"
            return self._p(f"{what}: {message}", fix, node.where)
        return self._p(f"{what}: {message}", fix, node.param_where.get(name, node.where))

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

        runner = Runner(self.validate(), clock=clock, fuse=fuse)
        if on_start is not None:
            on_start(runner)
        return await runner.run()

    def run(self, *, clock: Clock | None = None, fuse: bool = True) -> RunSummary:
        """Synchronous :meth:`run_async`."""
        return asyncio.run(self.run_async(clock=clock, fuse=fuse))


class _Checker:
    """One check of a pipeline: its findings live here, never in the pipeline's nodes."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.live = p.live_links()
        self.values: dict[str, dict[str, Any]] = {}
        self.ok: dict[str, bool] = {}  # False when its parameters or files have problems
        self.in_types: dict[str, frozenset[type[Any]]] = {}
        self.out_types: dict[str, frozenset[type[Any]]] = {}
        self.in_fmt: dict[str, AudioFormat | None] = {}
        self.out_fmt: dict[str, AudioFormat | None] = {}
        self.feedback: dict[Link, bool] = {}
        self.types: dict[Link, frozenset[type[Any]]] = {}
        self.format: dict[Link, AudioFormat | None] = {}
        self.warnings: list[Problem] = []  # worth saying; the pipeline runs

    def plan(self) -> Plan:
        p = self.p
        problems = list(p._problems)
        problems += self._check_params()
        problems += self._check_links()
        self._mark_feedback()
        problems += self._check_cycles()
        problems += self._propagate_types()
        problems += self._propagate_formats()
        problems += self._check_connected()
        self._pipeline_warnings()
        problems.sort(key=lambda q: (q.line or 10**9, q.column))
        # a stage without a type that the checker had nothing to say about (the YAML reader
        # reports it itself): the plan cannot run
        typeless = tuple(n.id for n in p.nodes.values() if n.spec is None)
        links = tuple(
            PlannedLink(
                lk.src,
                lk.dst,
                self.types.get(lk, frozenset()),
                self.format.get(lk),
                self.feedback.get(lk, False),
                lk.capacity,
                lk.overflow,
                lk.where,
            )
            for lk in self.live
        )
        stages: dict[str, PlannedStage] = {}
        if not problems and not typeless:  # else it cannot run: it carries only the problems
            values = {n: freeze_values(v) for n, v in self.values.items()}

            def peer(node_id: str, feedback: bool) -> Peer:
                node = p.nodes[node_id]
                assert node.spec is not None
                return Peer(node_id, node.type_name, values[node_id], feedback, node.spec.provides)

            for nid, node in p.nodes.items():
                assert node.spec is not None
                stages[nid] = PlannedStage(
                    nid,
                    node.type_name,
                    node.spec,
                    values[nid],
                    self.in_fmt.get(nid),
                    self.out_fmt.get(nid),
                    self.in_types.get(nid, frozenset()),
                    self.out_types.get(nid, frozenset()),
                    tuple(peer(lk.dst, lk.feedback) for lk in links if lk.src == nid),
                    tuple(peer(lk.src, lk.feedback) for lk in links if lk.dst == nid),
                )
        return Plan(
            p.name,
            p.description,
            p.file,
            p.base_dir,
            stages,
            links,
            tuple(problems),
            segments_of(stages, links, fuse=True) if stages else (),
            segments_of(stages, links, fuse=False) if stages else (),
            typeless,
            tuple(self.warnings),
        )

    def topo_order(self) -> list[str]:
        """Stage ids in order along forward links (feedback links ignored)."""
        if not self.feedback:
            self._mark_feedback()
        indeg = {n: 0 for n in self.p.nodes}
        for link in self.live:
            if not self.feedback[link]:
                indeg[link.dst] += 1
        ready = [n for n in self.p.nodes if indeg[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for link in self.live:
                if link.src == n and not self.feedback[link]:
                    indeg[link.dst] -= 1
                    if indeg[link.dst] == 0:
                        ready.append(link.dst)
        return order

    def _pipeline_warnings(self) -> None:
        nodes = {nid: (n.type_name, n.raw_params) for nid, n in self.p.nodes.items()}
        for check in PIPELINE_WARNINGS:
            for nid, param, message in check(nodes):
                warning = self.p._param_p(self.p.nodes[nid], param, message, "")
                self.warnings.append(dataclasses.replace(warning, warning=True))

    def _check_params(self) -> list[Problem]:
        out: list[Problem] = []
        writers: dict[Path, str] = {}  # output file -> the stage that writes it
        stdin_reader = ""  # the stage reading standard input, if any
        stdout_writer = ""  # the stage writing standard output, if any
        for node in self.p.nodes.values():
            spec = node.spec
            if spec is None:
                continue
            raw = dict(node.raw_params)
            for name, p in spec.params.items():
                if p.path_role and name in raw and isinstance(raw[name], str | Path):
                    value = str(raw[name])
                    if value != "-":  # standard input or output
                        raw[name] = self.p.base_dir / Path(value).expanduser()
            values, param_problems = spec.validate(raw)
            for name, message in param_problems:
                out.append(self.p._param_p(node, name, message, ""))
            self.values[node.id] = values
            self.ok[node.id] = not param_problems
            if param_problems:
                continue
            if spec.check is not None:
                for found in spec.check(values, self.p.base_dir):
                    if isinstance(found, CheckWarning):
                        warning = self.p._param_p(node, found.param, found.message, "")
                        self.warnings.append(dataclasses.replace(warning, warning=True))
                        continue
                    self.ok[node.id] = False
                    out.append(self.p._param_p(node, *found, ""))
            for name, p in spec.params.items():
                v = values.get(name)
                if p.path_role == "input" and str(v) == "-":
                    if stdin_reader:
                        self.ok[node.id] = False
                        out.append(
                            self.p._param_p(
                                node,
                                name,
                                f"stage '{stdin_reader}' reads standard input ('-') too",
                                "give one of them a file",
                            )
                        )
                    stdin_reader = node.id
                elif p.path_role == "input" and isinstance(v, Path) and not v.exists():
                    self.ok[node.id] = False
                    out.append(
                        self.p._param_p(
                            node,
                            name,
                            f"input file '{node.raw_params.get(name)}' does not exist "
                            f"(looked for {v})",
                            "check the path (relative paths start at the YAML file's folder)",
                        )
                    )
                if p.path_role == "output" and str(v) == "-":
                    if stdout_writer:
                        self.ok[node.id] = False
                        out.append(
                            self.p._param_p(
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
                        self.ok[node.id] = False
                        out.append(self.p._param_p(node, name, *problem))
        return out

    def _check_links(self) -> list[Problem]:
        out: list[Problem] = []
        seen: set[tuple[str, str]] = set()
        for link in self.p.links:
            for end in (link.src, link.dst):
                if end not in self.p.nodes:
                    close = difflib.get_close_matches(end, list(self.p.nodes), n=1)
                    fix = f"did you mean '{close[0]}'?" if close else "define it under stages"
                    out.append(
                        self.p._p(
                            f"link '{link.name}' names unknown stage '{end}'", fix, link.where
                        )
                    )
            if (link.src, link.dst) in seen:
                out.append(
                    self.p._p(f"link '{link.name}' is declared twice", "remove one", link.where)
                )
            seen.add((link.src, link.dst))
            if link.capacity is not None and (
                not isinstance(link.capacity, int) or link.capacity < 1
            ):
                out.append(
                    self.p._p(
                        f"link '{link.name}': capacity must be a whole number ≥ 1, "
                        f"got {link.capacity!r}",
                        "e.g. capacity: 8",
                        link.where,
                    )
                )
            if link.overflow is not None and link.overflow not in OVERFLOW_POLICIES:
                out.append(
                    self.p._p(
                        f"link '{link.name}': unknown overflow {link.overflow!r}",
                        "use one of " + ", ".join(OVERFLOW_POLICIES),
                        link.where,
                    )
                )
            src = self.p.nodes.get(link.src)
            dst = self.p.nodes.get(link.dst)
            if src and src.spec and src.spec.is_sink:
                out.append(
                    self.p._p(
                        f"link '{link.name}': '{link.src}' ({src.spec.name}) is a sink "
                        "and emits nothing",
                        "link from a stage that emits frames",
                        link.where,
                    )
                )
            if dst and dst.spec and dst.spec.is_source:
                out.append(
                    self.p._p(
                        f"link '{link.name}': '{link.dst}' ({dst.spec.name}) is a "
                        "source and takes no input",
                        "link into a stage that accepts frames",
                        link.where,
                    )
                )
        return out

    def _mark_feedback(self) -> None:
        """A link that closes a cycle (a back edge in a depth-first walk from the sources, in
        declaration order) is a feedback link."""
        out: dict[str, list[Link]] = {n: [] for n in self.p.nodes}
        for link in self.live:
            self.feedback[link] = False
            out[link.src].append(link)
        state: dict[str, int] = {}  # 1 = on the stack, 2 = done
        roots = [n for n, node in self.p.nodes.items() if node.spec and node.spec.is_source]
        roots += [n for n in self.p.nodes if n not in roots]

        def visit(n: str) -> None:
            state[n] = 1
            for link in out[n]:
                s = state.get(link.dst)
                if s == 1:
                    self.feedback[link] = True
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
        for link in self.live:
            spec = self.p.nodes[link.src].spec
            if link.src == link.dst and spec is not None and not spec.cycle_aware:
                out.append(
                    self.p._p(
                        f"link '{link.name}' links stage '{link.src}' to itself: it would take "
                        "back everything it emits and the run would never end",
                        "remove the link",
                        link.where,
                    )
                )
        return out

    def _propagate_types(self) -> list[Problem]:
        self.types = {link: frozenset() for link in self.live}
        for node in self.p.nodes.values():
            self.in_types[node.id] = frozenset()
            self.out_types[node.id] = frozenset(node.spec.emits) if node.spec else frozenset()
        changed = True
        while changed:
            changed = False
            for link in self.live:
                src, dst = self.p.nodes[link.src], self.p.nodes[link.dst]
                accepts = dst.spec.link_accepts() if dst.spec else ()
                types = frozenset(t for t in self.out_types[src.id] if t in accepts)
                if types != self.types[link]:
                    self.types[link] = types
                    changed = True
                if not types <= self.in_types[dst.id]:
                    self.in_types[dst.id] = self.in_types[dst.id] | types
                    if dst.spec and dst.spec.passthrough:
                        self.out_types[dst.id] = self.out_types[dst.id] | self.in_types[dst.id]
                    changed = True
        out: list[Problem] = []
        for link in self.live:
            if self.types[link]:
                continue
            src, dst = self.p.nodes[link.src], self.p.nodes[link.dst]
            if not (src.spec and dst.spec) or src.spec.is_sink or dst.spec.is_source:
                continue  # unknown type, or already reported as a link from a sink/into a source
            emitted = ", ".join(sorted(t.type for t in self.out_types[src.id])) or "nothing"
            taken = ", ".join(sorted(t.type for t in dst.spec.link_accepts())) or "nothing"
            out.append(
                self.p._p(
                    f"link '{link.name}' can carry nothing: '{link.src}' ({src.spec.name}) emits "
                    f"{emitted}; '{link.dst}' ({dst.spec.name}) accepts {taken}",
                    "remove the link or put a converting stage between them",
                    link.where,
                )
            )
        return out

    def _propagate_formats(self) -> list[Problem]:
        out: list[Problem] = []
        incoming: dict[str, list[Link]] = {n: [] for n in self.p.nodes}
        for link in self.live:
            incoming[link.dst].append(link)
        for nid in self.topo_order():
            node = self.p.nodes[nid]
            spec = node.spec
            if spec is None or not self.ok.get(nid, False):
                self.out_fmt[nid] = None
                continue
            fmts: dict[AudioFormat, Link] = {}
            for link in incoming[nid]:
                src_fmt = self.out_fmt.get(link.src)
                if Audio in self.types[link] and src_fmt is not None:
                    self.format[link] = src_fmt
                    fmts.setdefault(src_fmt, link)
            if len(fmts) > 1:
                desc = ", ".join(f"{f} from '{lk.src}'" for f, lk in fmts.items())
                out.append(
                    self.p._p(
                        f"stage '{nid}' ({spec.name}) gets audio in {len(fmts)} formats: {desc}",
                        "resample/encode the inputs to one format",
                        node.where,
                    )
                )
                continue
            fmt_link = next(iter(fmts.values()), None)
            in_fmt = self.in_fmt[nid] = next(iter(fmts), None)
            try:
                if spec.audio_in is not None and in_fmt is not None:
                    problem = spec.audio_in.problem(in_fmt)
                    if problem is not None:
                        raise FormatError(*problem)
                if spec.output_format is not None:
                    self.out_fmt[nid] = spec.output_format(self.values[nid], in_fmt)
                elif spec.passthrough:
                    self.out_fmt[nid] = in_fmt
                else:
                    self.out_fmt[nid] = None
            except FormatError as exc:
                self.out_fmt[nid] = None
                if fmt_link is not None:
                    where = fmt_link.where if fmt_link.where[0] else node.where
                    msg = f"link '{fmt_link.name}': stage '{nid}' ({spec.name}) {exc.message}"
                else:
                    where = node.where
                    msg = f"stage '{nid}' ({spec.name}): {exc.message}"
                out.append(self.p._p(msg, exc.fix, where))
            except Exception as exc:  # a bad input file read at validation time
                self.out_fmt[nid] = None
                name = next(iter(spec.params), "")
                where = node.param_where.get(name, node.where)
                out.append(self.p._p(f"stage '{nid}' ({spec.name}): {exc}", "", where))
        # feedback links carry whatever their source emits, formats included
        for link in self.live:
            if self.feedback[link] and Audio in self.types[link]:
                self.format[link] = self.out_fmt.get(link.src)
        return out

    def _check_connected(self) -> list[Problem]:
        out: list[Problem] = []
        has_in = {link.dst for link in self.p.links}
        has_out = {link.src for link in self.p.links}
        for node in self.p.nodes.values():
            spec = node.spec
            if spec is None:
                continue
            if node.id not in has_in and node.id not in has_out:
                out.append(
                    self.p._p(
                        f"stage '{node.id}' ({spec.name}) is not connected",
                        f"link it, e.g. '... -> {node.id}', or remove it"
                        if spec.is_sink
                        else f"link it, e.g. '{node.id} -> ...', or remove it",
                        node.where,
                    )
                )
            elif not spec.is_source and node.id not in has_in:
                out.append(
                    self.p._p(
                        f"stage '{node.id}' ({spec.name}) gets no input",
                        f"link a stage into it: '... -> {node.id}'",
                        node.where,
                    )
                )
            elif not spec.is_sink and node.id not in has_out and spec.emits:
                out.append(
                    self.p._p(
                        f"stage '{node.id}' ({spec.name}) sends its output nowhere",
                        f"link it to a sink: '{node.id} -> ...'",
                        node.where,
                    )
                )
        return out


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
