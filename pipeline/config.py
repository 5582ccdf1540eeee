"""Loading ``pipelines.yaml`` into :class:`~pipeline.graph.Pipeline` objects.

The YAML is composed into nodes (ruamel.yaml) so every key and value keeps its line and column,
and duplicate keys are seen rather than silently overwritten. Strings may use ``${VAR}`` and
``${VAR:-default}``; ``--set id.param=value`` overrides a parameter (the value read as YAML).
Every problem is collected and reported together as ``FILE:LINE:COL: problem; fix``.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError, Problem
from .graph import Node as StageNode
from .graph import Pipeline, Where

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_LINK_KEYS = ("chain", "capacity", "overflow")
_PIPELINE_KEYS = ("description", "stages", "links")
#: Problems of a pipeline's wiring; left out when a structural problem (a ``links:`` at the
#: wrong indentation) already explains them.
_WIRING = (" is not connected", " gets no input", " sends its output nowhere")
_UNSET = "environment variable "


@dataclass
class _Val:
    """A YAML value with where it was written."""

    value: Any
    where: Where


def _where(node: Node) -> Where:
    m = node.start_mark
    return (m.line + 1, m.column + 1)


class _Reader:
    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.problems: list[Problem] = []
        #: problems of the file's shape (a section at the wrong indentation), by the pipeline
        #: they belong to ("" for the file): reported first, and the wiring problems that
        #: follow from them are left out
        self.misplaced: list[tuple[str, Problem]] = []
        self.structural: list[Problem] = []
        self._yaml = YAML(typ="safe", pure=True)

    def problem(self, message: str, fix: str, where: Where) -> None:
        self.problems.append(Problem(message, fix, self.file, where[0], where[1]))

    def scalar(self, node: ScalarNode) -> Any:
        value = self._yaml.constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            return self.substitute(value, _where(node))
        return value

    def substitute(self, text: str, where: Where) -> Any:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env and self.env[name] != "":
                return self.env[name]
            if default is not None:
                return default
            self.problem(
                f"{_UNSET}{name} is not set",
                f"export {name}=... or write ${{{name}:-default}}",
                where,
            )
            return ""

        if "${" not in text:
            return text
        return _ENV.sub(repl, text)

    def plain(self, node: Node) -> Any:
        """A node as plain Python values (positions dropped)."""
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        if isinstance(node, SequenceNode):
            return [self.plain(n) for n in node.value]
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            for k, v in node.value:
                key = self.plain(k)
                if key in out:
                    self.problem(f"duplicate key '{key}'", "remove one of them", _where(k))
                out[key] = self.plain(v)
            return out
        return None

    def mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping; a problem if it isn't one."""
        if not isinstance(node, MappingNode):
            self.problem(f"{what} must be a mapping", "write 'key: value' lines", _where(node))
            return []
        seen: dict[str, Where] = {}
        out = []
        for k, v in node.value:
            key = self.plain(k)
            if not isinstance(key, str):
                key = str(key)
            if key in seen:
                self.problem(
                    f"duplicate {what} key '{key}' (first at line {seen[key][0]})",
                    "give each a unique name",
                    _where(k),
                )
                continue
            seen[key] = _where(k)
            out.append((key, k, v))
        return out


def load_text(
    text: str,
    name: str | None = None,
    *,
    file: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    check: bool = True,
) -> Pipeline:
    """Build the pipeline ``name`` (default: the first) from YAML text.

    With ``check`` (default), raises ConfigError listing every problem; otherwise the problems
    are left for ``Pipeline.check()``.
    """
    r = _Reader(file, os.environ if env is None else env)
    yaml = YAML(typ="safe", pure=True)
    try:
        root = yaml.compose(StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or exc.context or "cannot read"
        raise ConfigError(
            Problem(f"YAML syntax error: {what}", "fix the YAML syntax", file, line, col)
        ) from None
    except YAMLError as exc:
        raise ConfigError(
            Problem(f"YAML syntax error: {exc}", "fix the YAML syntax", file)
        ) from None
    if root is None:
        raise ConfigError(Problem("the file is empty", "add 'version: 1' and 'pipelines:'", file))
    top = {k: (kn, vn) for k, kn, vn in r.mapping(root, "top-level")}
    if "version" in top:
        v = r.plain(top["version"][1])
        if v != 1:
            r.problem(f"unsupported version {v!r}", "write 'version: 1'", _where(top["version"][1]))
    for key in top:
        if key not in ("version", "pipelines"):
            r.problem(
                f"unknown top-level key '{key}'",
                "only 'version' and 'pipelines' are read",
                _where(top[key][0]),
            )
    if "pipelines" not in top:
        r.problems.append(Problem("no 'pipelines:' section", "add one", file, 1, 1))
        raise ConfigError(r.problems)
    pipes = _misplaced_sections(r, r.mapping(top["pipelines"][1], "pipelines"))
    if not pipes:
        r.problem("no pipeline defined", "add one under 'pipelines:'", _where(top["pipelines"][1]))
        raise ConfigError(r.problems)
    names = [p[0] for p in pipes]
    if name is None:
        chosen = pipes[0]
    else:
        match = [p for p in pipes if p[0] == name]
        if not match:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"the file has: {', '.join(names)}"
            raise ConfigError(Problem(f"no pipeline named '{name}'", hint, file))
        chosen = match[0]
    r.structural = [q for owner, q in r.misplaced if owner in ("", chosen[0])]
    pipeline = _build(r, chosen[0], chosen[2], file, base_dir or Path.cwd(), overrides)
    if r.structural:
        # a pipeline missing its links because they sit at the wrong indentation: say that,
        # not that each of its stages is unconnected
        pipeline._problems[:0] = r.structural
    if check:
        # A value whose variable is unset was read as "": say only that the variable is unset,
        # not also that "" is not a number, not a file, ...
        unset = {(q.line, q.column) for q in r.problems if q.message.startswith(_UNSET)}
        checked = [q for q in pipeline.check().problems if (q.line, q.column) not in unset]
        if r.structural:
            checked = [
                q for q in checked if q not in r.structural and not q.message.endswith(_WIRING)
            ]
        problems = r.problems + checked
        problems.sort(key=lambda p: (p.line or 10**9, p.column))
        problems[:0] = r.structural
        if problems:
            raise ConfigError(problems)
    else:
        pipeline._problems[:0] = r.problems
    return pipeline


def pipeline_names(text: str) -> list[str]:
    """The names of the pipelines in a YAML text (no checks; a ``links:`` or ``stages:``
    indented as if it were a pipeline is not one)."""
    yaml = YAML(typ="safe", pure=True)
    data = yaml.load(text) or {}
    pipes = data.get("pipelines") or {}
    return [
        name
        for name, body in pipes.items()
        if name not in _PIPELINE_KEYS or (isinstance(body, dict) and "stages" in body)
    ]


def _misplaced_sections(
    r: _Reader, pipes: list[tuple[str, Node, Node]]
) -> list[tuple[str, Node, Node]]:
    """Drop a ``links:``/``stages:``/``description:`` written at the indentation of a pipeline
    name (so YAML reads it as a pipeline of its own), recording it as a structural problem of
    the pipeline above it."""
    out: list[tuple[str, Node, Node]] = []
    for key, kn, vn in pipes:
        is_pipeline = isinstance(vn, MappingNode) and any(
            isinstance(k, ScalarNode) and k.value == "stages" for k, _ in vn.value
        )
        if key not in _PIPELINE_KEYS or is_pipeline:
            out.append((key, kn, vn))
            continue
        line, col = _where(kn)
        if not out:
            message = f"'{key}:' is indented as a pipeline name, and no pipeline comes before it"
            problem = Problem(
                message, "put it inside a pipeline, lined up with its 'stages:'", r.file, line, col
            )
            r.misplaced.append(("", problem))
            continue
        owner, _, owner_body = out[-1]
        column = _column_of(owner_body, "stages") or col + 2
        message = (
            f"'{key}:' is indented as a pipeline name, so it is not part of pipeline "
            f"'{owner}' above it (which then has no {key})"
        )
        fix = f"indent '{key}:' to column {column}, lined up with 'stages:'"
        r.misplaced.append((owner, Problem(message, fix, r.file, line, col)))
    return out


def _column_of(body: Node, key: str) -> int:
    """The 1-based column of ``key`` in a mapping node (0 when absent)."""
    if isinstance(body, MappingNode):
        for k, _ in body.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return _where(k)[1]
    return 0


def _build(
    r: _Reader, name: str, node: Node, file: str, base_dir: Path, overrides: Sequence[str]
) -> Pipeline:
    fields = {k: (kn, vn) for k, kn, vn in r.mapping(node, f"pipeline '{name}'")}
    p = Pipeline(name, base_dir=base_dir, file=file)
    if "description" in fields:
        p.description = str(r.plain(fields["description"][1]))
    for key in fields:
        if key not in ("description", "stages", "links"):
            r.problem(
                f"pipeline '{name}': unknown key '{key}'",
                "a pipeline has description, stages and links",
                _where(fields[key][0]),
            )
    if "stages" not in fields:
        r.problem(f"pipeline '{name}' has no 'stages:'", "add its stages", _where(node))
        return p
    sets = _parse_overrides(r, overrides)
    stage_ids = []
    for sid, kn, vn in r.mapping(fields["stages"][1], "stage id"):
        if (
            sid in ("links", "description")
            and sid not in fields
            and not isinstance(vn, MappingNode)
        ):
            # `links:` indented one level too deep: read as a stage named "links"
            column = _where(fields["stages"][0])[1]
            problem = Problem(
                f"'{sid}:' is indented inside 'stages:' of pipeline '{name}', so it is read as "
                f"a stage (and the pipeline has no {sid})",
                f"indent '{sid}:' to column {column}, lined up with 'stages:'",
                file,
                *_where(kn),
            )
            r.structural.append(problem)
            continue
        stage_ids.append(sid)
        params: dict[str, Any] = {}
        pwhere: dict[str, Where] = {}
        type_name: Any = None
        type_where = _where(kn)
        for pk, _pkn, pvn in r.mapping(vn, f"stage '{sid}'"):
            if pk == "type":
                type_name = r.plain(pvn)
                type_where = _where(pvn)
            else:
                params[pk] = r.plain(pvn)
                pwhere[pk] = _where(pvn)
        from_set = []
        for (oid, oparam), value in sets.items():
            if oid == sid:
                params[oparam] = value
                from_set.append(oparam)
        if not isinstance(type_name, str):
            if type_name is not None:
                r.problem(
                    f"stage '{sid}': type must be a stage type name, got {type_name!r}",
                    "see 'pipeline stages'",
                    type_where,
                )
            elif isinstance(vn, MappingNode):  # else: "must be a mapping" already said it
                r.problem(
                    f"stage '{sid}' has no type",
                    "add 'type: <stage type>' (see 'pipeline stages')",
                    _where(kn),
                )
            # the stage exists, so links to it are not "unknown stage" problems too
            p.nodes[sid] = StageNode(sid, "?", None, params, _where(kn))
            continue
        p.add(
            sid,
            type_name,
            _where=_where(kn),
            _type_where=type_where,
            _param_where=pwhere,
            _from_set=from_set,
            **params,
        )
    for oid, oparam in sets:
        if oid not in stage_ids:
            close = difflib.get_close_matches(oid, stage_ids, n=1)
            r.problem(
                f"--set {oid}.{oparam}: no stage '{oid}' in pipeline '{name}'",
                f"did you mean '{close[0]}.{oparam}'?" if close else "check the stage id",
                (0, 0),
            )
    if "links" in fields:
        links = fields["links"][1]
        if not isinstance(links, SequenceNode):
            r.problem("links must be a list", "write '- a -> b' items", _where(links))
        else:
            for item in links.value:
                _link(r, p, item)
    return p


def _link(r: _Reader, p: Pipeline, item: Node) -> None:
    where = _where(item)
    if isinstance(item, ScalarNode):
        text = r.plain(item)
        if isinstance(text, str) and re.search(r"--+>", text):
            r.problem(
                f"cannot read link {text!r}: an arrow is '->', one dash",
                f"write {re.sub(r'-+>', '->', text)!r}",
                where,
            )
            return
        if not isinstance(text, str) or "->" not in text:
            r.problem(
                f"cannot read link {text!r}",
                "write 'a -> b' or {chain: 'a -> b', capacity: 8}",
                where,
            )
            return
        p.chain(text, _where=where)
        return
    if isinstance(item, MappingNode):
        opts = {k: r.plain(v) for k, _, v in r.mapping(item, "link")}
        for k in opts:
            if k not in _LINK_KEYS:
                r.problem(f"unknown link option '{k}'", "use chain, capacity, overflow", where)
        chain = opts.get("chain")
        if not isinstance(chain, str) or "->" not in chain:
            r.problem("a link mapping needs chain: 'a -> b'", "add it", where)
            return
        p.chain(chain, capacity=opts.get("capacity"), overflow=opts.get("overflow"), _where=where)
        return
    r.problem("cannot read link", "write 'a -> b'", where)


def _parse_overrides(r: _Reader, overrides: Sequence[str]) -> dict[tuple[str, str], Any]:
    out: dict[tuple[str, str], Any] = {}
    yaml = YAML(typ="safe", pure=True)
    for item in overrides:
        key, eq, raw = item.partition("=")
        sid, dot, param = key.partition(".")
        if not eq or not dot or not sid or not param:
            r.problems.append(
                Problem(
                    f"--set {item!r}: expected ID.PARAM=VALUE",
                    "e.g. --set agent.voice=rex",
                    "<command line>",
                )
            )
            continue
        try:
            value = yaml.load(raw) if raw.strip() else ""
        except YAMLError:
            value = raw
        out[(sid, param)] = value
    return out


def load(
    path: str | Path,
    name: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    check: bool = True,
) -> Pipeline:
    """Load pipeline ``name`` (default: the first) from a YAML file. Relative paths inside it
    are relative to the file's folder."""
    path = Path(path)
    # User stages and tools are named `package.module:function` relative to the project, as
    # when running Python from the YAML file's folder.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem("no such file", "check the path", str(path))) from None
    except IsADirectoryError:
        raise ConfigError(
            Problem("is a folder, not a file", "name the pipelines YAML file", str(path))
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            Problem(
                f"not UTF-8 text (bad byte at offset {exc.start})",
                "save it as UTF-8 YAML",
                str(path),
            )
        ) from None
    except OSError as exc:
        raise ConfigError(
            Problem(f"cannot read: {exc.strerror or exc}", "check its permissions", str(path))
        ) from None
    return load_text(
        text,
        name,
        file=str(path),
        base_dir=path.resolve().parent,
        env=env,
        overrides=overrides,
        check=check,
    )
