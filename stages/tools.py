"""The tool router: the model's function calls run as Python functions, results go back.

A tool is a plain Python function, sync or async, named in the YAML as ``module:function``::

    tools: {type: tool_router, tools: ["examples.tools:get_time",
                                      {ref: "examples.tools:lookup_order", timeout_s: 3}]}

Its JSON schema (what the model sees) comes from its signature and docstring: parameter types,
defaults, ``Literal``/``Enum`` choices, and a description per parameter from the docstring's
``Args:``/``Parameters:`` section or from ``Annotated[T, Field(description=...)]``. A linked
``realtime_session`` advertises the router's tools on its own through :func:`tool_schemas`.

Theory of operation (the ``tool_router`` stage)
-----------------------------------------------
- A :class:`~pipeline.frames.ToolCall` names a tool and carries JSON arguments. Only declared
  tools run: an undeclared name is refused with an error result; nothing is ever imported or
  called on the model's say-so. The arguments are parsed and validated against the tool's
  pydantic model, then the tool runs (async tools on the loop, sync tools in a daemon thread so
  the loop never blocks) under a per-tool timeout and a concurrency limit.
- Every failure (bad JSON, bad arguments, unknown name, timeout, exception, a result that is not
  JSON-serializable) becomes a ``ToolResult(is_error=True)`` whose text tells the model what to do
  differently: the session goes on. Oversized results are cut, with a note saying so.
- A repeated ``call_id`` runs once (the repeat is ignored).
- Barge-in: an :class:`~pipeline.frames.Interrupt` or a ``ResponseDone(status="cancelled")``
  marks a response cancelled. A call of a cancelled response that has not started never runs
  (a hallucinated ``end_call`` from a discarded turn must not hang up a live caller). With
  ``on_interrupt: cancel`` the running calls of that response are cancelled too; with
  ``finish`` they complete and their results are delivered. A call has *started* once it holds
  a concurrency slot: a call that finds a free slot starts as it arrives, so a call read before
  the interrupt runs under ``finish``.
- Every call gets exactly one result, dropped ones included: a call that is cancelled or never
  runs because of a barge-in gets an ``is_error`` result saying so ("cancelled by barge-in").
  The session sends it as the call's ``function_call_output``, so the server's conversation
  never holds a ``function_call`` without an output (which can break the next response on the
  real services) and the session stops owing the call (no wait at the end of the input).
- Results are emitted as calls finish (not in call order). When the input ends, the router
  waits for the calls still running (their results are owed), then ends.

Timeouts use the stage's clock (``ctx.clock``); a sync tool that outlives its timeout keeps its
thread (Python cannot kill a thread) but its result is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import difflib
import importlib
import inspect
import json
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import pydantic
import pydantic_core
from pydantic.fields import FieldInfo

from pipeline.clock import Clock
from pipeline.errors import ConfigError, Problem
from pipeline.frames import Frame, Interrupt, ResponseDone, ResponseStarted, ToolCall, ToolResult
from pipeline.stage import StageContext, stage

__all__ = [
    "CallLedger",
    "CallOutcome",
    "Tool",
    "ToolArgumentError",
    "ToolConfigError",
    "ToolSpec",
    "cancelled_text",
    "check_tools",
    "load_tool",
    "load_tools",
    "not_run_text",
    "parse_docstring",
    "run_tool",
    "tool_router",
    "tool_schemas",
]

#: A tool as written in the YAML: ``"module:function"`` or ``{ref: "module:function",
#: timeout_s: 3, name: "other_name"}``.
ToolSpec = str | Mapping[str, Any]

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_RESULT_CHARS = 4000
#: Below this, a cut result would be mostly the note saying it was cut.
MIN_RESULT_CHARS = 200
#: Calls waiting for a free slot beyond this are refused (no unbounded backlog).
MAX_PENDING = 64
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SPEC_KEYS = ("ref", "timeout_s", "name")


# ---------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class Tool:
    """A loaded tool: the function, its name, description and the pydantic model of its
    arguments. Build one with :func:`load_tool`; :meth:`schema` is what the model sees."""

    name: str
    ref: str
    func: Callable[..., Any]
    description: str
    model: type[pydantic.BaseModel] = field(repr=False)
    is_async: bool
    #: None: the router's default timeout
    timeout_s: float | None = None
    #: (name, kind, annotation) of each parameter, in signature order
    params: tuple[tuple[str, Any, Any], ...] = field(default=(), repr=False)
    #: the JSON schema of the arguments (self-contained: no $ref, no titles)
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)

    def schema(self) -> dict[str, Any]:
        """The flat Realtime function shape:
        ``{"type": "function", "name", "description", "parameters": <JSON schema>}``."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": copy.deepcopy(self.parameters),
        }

    def bind_arguments(self, arguments: str) -> tuple[list[Any], dict[str, Any]]:
        """Parse and validate the model's JSON ``arguments``: the positional and keyword
        arguments to call the function with. Raises :class:`ToolArgumentError` with a message
        the model can act on."""
        text = arguments.strip()
        if not text:
            raw: Any = {}
        else:
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ToolArgumentError(
                    f"arguments for {self.name} are not valid JSON ({exc}); "
                    f"send a JSON object{self._expected_keys()}"
                ) from None
        if not isinstance(raw, dict):
            raise ToolArgumentError(
                f"arguments for {self.name} must be a JSON object, got "
                f"{_json_kind(raw)}; send a JSON object{self._expected_keys()}"
            )
        try:
            obj = self.model.model_validate(raw)
        except pydantic.ValidationError as exc:
            try:
                message = self._explain(exc)
            except Exception:  # never let the explanation hide the problem
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                message = f"bad arguments for {self.name}: '{where}': {first['msg']}"
            raise ToolArgumentError(message) from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for i, (name, kind, _) in enumerate(self.params):
            value = getattr(obj, f"p{i}")  # fields are p0, p1...: aliases carry the real names
            if kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[name] = value
        return args, kwargs

    def _expected_keys(self) -> str:
        if not self.params:
            return " ({}: it takes no arguments)"
        return " with " + ", ".join(f"'{n}' ({self._expected(n)})" for n, _, _ in self.params)

    def _expected(self, name: str) -> str:
        return _schema_text(self.parameters.get("properties", {}).get(name, {}))

    def _explain(self, exc: pydantic.ValidationError) -> str:
        names = [n for n, _, _ in self.params]
        parts: dict[str, str] = {}  # one message per argument path (unions give several errors)
        for err in exc.errors():
            where, schema, union = _locate(self.parameters, err["loc"])
            expected = f" (expected {_schema_text(schema)})" if schema is not None else ""
            if err["type"] == "missing":
                parts[where] = f"'{where}' is missing{expected}"
            elif err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
                parent = _locate(self.parameters, err["loc"][:-1])[0]
                key = str(err["loc"][-1]) if err["loc"] else ""
                if parent:
                    parts[f"{parent}.{key}"] = f"unexpected key '{parent}.{key}'"
                else:
                    takes = ", ".join(names) or "no arguments"
                    parts[key] = f"unexpected argument '{key}' ({self.name} takes: {takes})"
            else:
                got = json.dumps(err.get("input"), default=str)
                if len(got) > 80:
                    got = got[:77] + "..."
                if union and where in parts:
                    parts[where] = f"'{where}'{expected}: none of these fits, got {got}"
                else:
                    parts[where] = f"'{where}'{expected}: {err['msg']}, got {got}"
        text = "; ".join(parts.values())
        return f"bad arguments for {self.name}: {text}; fix them and call again"


class ToolArgumentError(ValueError):
    """The model's arguments for a tool are not valid JSON or do not fit its parameters."""


def load_tool(spec: ToolSpec, *, base_dir: Path | None = None) -> Tool:
    """Import and describe one tool from ``"module:function"`` or ``{ref, timeout_s, name}``.

    ``base_dir`` (the YAML file's folder) is put on ``sys.path`` if the module is not found
    otherwise, so ``examples.tools:get_time`` works next to the pipeline file. Raises
    :class:`~pipeline.errors.ConfigError` with a message naming the ref and the fix.
    """
    ref, timeout_s, name = _parse_spec(spec)
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise _config_error(
            f"tool '{ref}' is not of the form 'module:function'",
            "write it like 'examples.tools:get_time'",
        )
    module = _import(module_name, ref, base_dir)
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if n[:1] != "_" and callable(getattr(obj, n, None))]
            close = difflib.get_close_matches(part, names, n=1)
            raise _config_error(
                f"tool '{ref}': module '{module_name}' has no '{attr_path}'",
                f"did you mean '{close[0]}'?" if close else "check the name after the ':'",
            ) from None
    if not callable(obj):
        raise _config_error(
            f"tool '{ref}' is a {type(obj).__name__}, not a function",
            "point it at a function",
        )
    name = name or str(getattr(obj, "__name__", attr_path.rsplit(".", 1)[-1]))
    if not _NAME_RE.match(name):
        raise _config_error(
            f"tool '{ref}': the name '{name}' is not a valid function name for the model "
            "(letters, digits, '_' and '-', at most 64)",
            "give it one with {ref: ..., name: ...}",
        )
    return _describe(obj, ref=ref, name=name, timeout_s=timeout_s)


def load_tools(specs: Iterable[ToolSpec], *, base_dir: Path | None = None) -> dict[str, Tool]:
    """Load every tool (name -> Tool); raises ConfigError listing every problem found."""
    tools: dict[str, Tool] = {}
    problems: list[Problem] = []
    for spec in specs:
        try:
            tool = load_tool(spec, base_dir=base_dir)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if tool.name in tools:
            problems.append(
                Problem(
                    f"two tools are named '{tool.name}' ({tools[tool.name].ref} and {tool.ref})",
                    "rename one with {ref: ..., name: ...}",
                )
            )
            continue
        tools[tool.name] = tool
    if problems:
        raise ToolConfigError(problems)
    return tools


def tool_schemas(refs: Iterable[ToolSpec], *, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The function definitions a session advertises for these tools, in order: each
    ``{"type": "function", "name", "description", "parameters": <JSON schema>}``.
    ``refs`` is a ``tool_router``'s ``tools`` parameter. Raises ConfigError for a bad ref."""
    return [tool.schema() for tool in load_tools(refs, base_dir=base_dir).values()]


def check_tools(params: Mapping[str, Any], *, base_dir: Path | None = None) -> list[str]:
    """Problems with a ``tool_router``'s parameters, found before running (empty: all good).

    Checks that every tool ref imports and is a function whose parameters can be described
    to the model, that names are unique, and that the numeric limits make sense. Each string
    says what is wrong and the fix; the config validator adds the file location.
    """
    problems: list[str] = []
    tools = params.get("tools")
    if not isinstance(tools, list | tuple):
        problems.append("'tools' must be a list of 'module:function' refs; add one")
    elif not tools:
        problems.append("'tools' is empty; list at least one 'module:function'")
    else:
        try:
            load_tools(tools, base_dir=base_dir)
        except ConfigError as exc:
            problems.extend(_problem_text(p) for p in exc.problems)
    for key, low, default in (
        ("timeout_s", 0.0, DEFAULT_TIMEOUT_S),
        ("max_concurrency", 1, 4),
        ("max_result_chars", MIN_RESULT_CHARS, DEFAULT_MAX_RESULT_CHARS),
    ):
        value = params.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"'{key}' must be a number, got {value!r}")
        elif (value <= low) if key == "timeout_s" else (value < low):
            bound = f"more than {low:g}" if key == "timeout_s" else f"at least {low}"
            problems.append(f"'{key}' is {value}; it must be {bound}")
    mode = params.get("on_interrupt", "cancel")
    if mode not in ("cancel", "finish"):
        problems.append(f"'on_interrupt' is {mode!r}; use 'cancel' or 'finish'")
    return problems


def _problem_text(p: Problem) -> str:
    return f"{p.message}; {p.fix}" if p.fix else p.message


class ToolConfigError(ConfigError):
    """Tools that cannot be used: a bad ref, a failed import, parameters that cannot be
    described to the model. ``problems`` lists each; the text has no file location (the
    config validator adds it)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.args = ("\n".join(_problem_text(p) for p in problems),)


def _config_error(message: str, fix: str) -> ToolConfigError:
    return ToolConfigError([Problem(message, fix)])


def _parse_spec(spec: ToolSpec) -> tuple[str, float | None, str | None]:
    if isinstance(spec, str):
        return spec.strip(), None, None
    if not isinstance(spec, Mapping):
        raise _config_error(
            f"a tool must be 'module:function' or {{ref: ..., timeout_s: ...}}, got {spec!r}",
            "write it like 'examples.tools:get_time'",
        )
    unknown = [k for k in spec if k not in _SPEC_KEYS]
    if unknown:
        raise _config_error(
            f"tool {dict(spec)!r}: unknown key '{unknown[0]}'",
            "a tool takes " + ", ".join(_SPEC_KEYS),
        )
    ref = spec.get("ref")
    if not isinstance(ref, str):
        raise _config_error(f"tool {dict(spec)!r} has no 'ref'", "add ref: 'module:function'")
    timeout = spec.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise _config_error(
            f"tool '{ref}': timeout_s is {timeout!r}", "give a number of seconds above 0"
        )
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise _config_error(f"tool '{ref}': name is {name!r}", "give a string")
    return ref.strip(), None if timeout is None else float(timeout), name


def _import(module_name: str, ref: str, base_dir: Path | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if base_dir is not None and module_name.split(".")[0] == missing.split(".")[0]:
            folder = str(Path(base_dir).resolve())
            if folder not in sys.path:
                sys.path.append(folder)
                with contextlib.suppress(ModuleNotFoundError):
                    return importlib.import_module(module_name)
        where = f" (looked on sys.path and in {base_dir})" if base_dir is not None else ""
        raise _config_error(
            f"tool '{ref}': cannot import module '{module_name}': {exc}{where}",
            "check the module path and that its package is installed or on PYTHONPATH",
        ) from None
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': importing module '{module_name}' failed: {type(exc).__name__}: {exc}",
            "fix the error in that module",
        ) from None


def _describe(func: Callable[..., Any], *, ref: str, name: str, timeout_s: float | None) -> Tool:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise _config_error(
            f"tool '{ref}': cannot read its signature ({exc})", "wrap it in a plain function"
        ) from None
    target = func if inspect.isroutine(func) else getattr(func, "__call__", func)  # noqa: B004
    try:
        hints = get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': cannot resolve its type hints ({type(exc).__name__}: {exc})",
            "import the types its annotations name",
        ) from None
    doc = inspect.getdoc(func) or ""
    summary, param_docs = parse_docstring(doc)
    fields: dict[str, Any] = {}
    params: list[tuple[str, Any, Any]] = []
    for i, p in enumerate(sig.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise _config_error(
                f"tool '{ref}' takes {star}{p.name}; the model can only fill named parameters",
                "give it explicit parameters",
            )
        ann = hints.get(p.name, Any if p.annotation is p.empty else p.annotation)
        extra: dict[str, Any] = {"alias": p.name}
        desc = param_docs.get(p.name)
        if desc and not _annotated_description(ann):
            extra["description"] = desc
        default = ... if p.default is p.empty else p.default
        fields[f"p{i}"] = (ann, pydantic.Field(default, **extra))
        params.append((p.name, p.kind, ann))
    try:
        model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )
        parameters = _clean_schema(model.model_json_schema(by_alias=True))
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': its parameters cannot be described as JSON schema "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})",
            "use JSON-friendly types (str, int, float, bool, Literal, Enum, list, dict, "
            "pydantic models)",
        ) from None
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target)
    return Tool(
        name=name,
        ref=ref,
        func=func,
        description=summary or name.replace("_", " "),
        model=model,
        is_async=is_async,
        timeout_s=timeout_s,
        params=tuple(params),
        parameters=parameters,
    )


def _annotated_description(ann: Any) -> bool:
    if get_origin(ann) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(ann)[1:])


_SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns|Return|"
    r"Yields|Raises|Examples?|Notes?|See Also|Warnings?|Attributes|References)\s*:?\s*$"
)
_PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"}
_GOOGLE_PARAM = re.compile(r"^(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into the description (the text before the first section such as
    ``Args:``) and a per-parameter description from ``Args:``/``Parameters:`` (Google style,
    with continuation lines) or a numpy-style ``Parameters`` section."""
    lines = inspect.cleandoc(doc).splitlines() if doc else []
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    base_indent: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        underline = i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip() or "x")
        m = _SECTION_RE.match(stripped) if indent == 0 else None
        if m and (stripped.endswith(":") or underline):
            section = m.group(1)
            current, base_indent = None, None
            i += 2 if underline else 1
            continue
        if section is None:
            summary.append(line)
        elif section in _PARAM_SECTIONS and stripped:
            if base_indent is None:
                base_indent = indent
            if indent <= base_indent:
                gm = _GOOGLE_PARAM.match(stripped)
                if _is_numpy(stripped) or re.fullmatch(r"\*{0,2}\w+", stripped):
                    current = stripped.split(":")[0].strip().lstrip("*")
                    params[current] = ""
                elif gm:
                    current = gm.group(1).lstrip("*")
                    params[current] = gm.group(3).strip()
                else:
                    current = None
            elif current is not None:
                params[current] = (params[current] + " " + stripped).strip()
        i += 1
    return _paragraphs(summary), {k: v for k, v in params.items() if v}


def _is_numpy(stripped: str) -> bool:
    # "name : type" (numpy) rather than "name: description" (Google)
    return bool(re.match(r"^\*{0,2}\w+\s+:\s*\S", stripped))


def _paragraphs(lines: list[str]) -> str:
    paras: list[str] = []
    buf: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            buf.append(line.strip())
        elif buf:
            paras.append(" ".join(buf))
            buf = []
    return "\n\n".join(paras)


_DATA_KEYS = frozenset({"default", "enum", "const", "examples", "example"})


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Inline ``$ref``s and drop pydantic's generated ``title``s: a self-contained schema."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def clean(node: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [clean(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            key = str(node["$ref"]).rsplit("/", 1)[-1]
            if key in stack or key not in defs:
                raise ValueError(f"recursive or unknown type {key!r}")
            target = clean(defs[key], (*stack, key))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**target, **clean(rest, stack)}
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k in ("title", "$defs"):
                continue
            if k == "properties" and isinstance(v, dict):
                out[k] = {name: clean(s, stack) for name, s in v.items()}
            elif k in _DATA_KEYS:
                out[k] = v
            else:
                out[k] = clean(v, stack)
        return out

    result: dict[str, Any] = clean(schema, ())
    result.setdefault("properties", {})
    return result


def _locate(
    parameters: Mapping[str, Any], loc: tuple[int | str, ...]
) -> tuple[str, Mapping[str, Any] | None, bool]:
    """Where a validation error is, as the model would write it (``pts[0].x``), the schema
    expected there (None if unknown), and whether the path went through a union member."""
    where = ""
    schema: Mapping[str, Any] | None = parameters
    union = False
    for part in loc:
        options = [schema] if schema is not None else []
        if schema is not None and "anyOf" in schema:
            options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if isinstance(part, int):
            where += f"[{part}]"
            nxt = [o["items"] for o in options if isinstance(o.get("items"), Mapping)]
            schema = nxt[0] if nxt else None
            continue
        props = [o["properties"][part] for o in options if part in o.get("properties", {})]
        extra = [o.get("additionalProperties") for o in options]
        extra = [e for e in extra if isinstance(e, Mapping)]
        if props or extra:
            where += f".{part}" if where else part
            schema = props[0] if props else extra[0]
        elif where:
            union = True  # a union member's tag, such as 'int' in ('b', 'int'): not a key
        else:
            where, schema = part, None
    return where, schema, union


def _schema_text(schema: Mapping[str, Any]) -> str:
    """A short reading of a JSON schema for messages: 'string', 'one of "a", "b"', ..."""
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_schema_text(s) for s in schema[key])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items")
        return f"array of {_schema_text(items)}" if items else "array"
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    return str(kind) if kind else "any value"


def _json_kind(value: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------- running a call

Outcome = Literal["ok", "error", "bad_arguments", "unknown_tool", "timeout", "exception"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What running one call produced: the result text, whether it is an error, and a short
    outcome word for the log."""

    output: str
    is_error: bool
    outcome: Outcome


async def run_tool(
    tools: Mapping[str, Tool],
    call: ToolCall,
    *,
    clock: Clock,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> CallOutcome:
    """Run one call against the declared ``tools``; never raises for the tool's failures
    (bad JSON or arguments, unknown name, timeout, exception, unserializable result): each
    becomes an error outcome whose text tells the model what to do. Cancellation propagates."""
    tool = tools.get(call.name)
    if tool is None:
        available = ", ".join(sorted(tools)) or "none"
        return CallOutcome(
            f"no tool named '{call.name}'; available: {available}", True, "unknown_tool"
        )
    try:
        args, kwargs = tool.bind_arguments(call.arguments)
    except ToolArgumentError as exc:
        return CallOutcome(str(exc), True, "bad_arguments")
    limit = tool.timeout_s if tool.timeout_s is not None else timeout_s
    try:
        result = await _with_timeout(_invoke(tool, args, kwargs), clock, limit)
    except TimeoutError:
        return CallOutcome(
            f"{tool.name} took longer than {limit:g} s and was stopped; "
            "tell the user it is not available right now, or try once more",
            True,
            "timeout",
        )
    except Exception as exc:
        return CallOutcome(f"{tool.name} raised {type(exc).__name__}: {exc}", True, "exception")
    try:
        text = result if isinstance(result, str) else _to_json(result)
    except Exception as exc:
        return CallOutcome(
            f"{tool.name} returned a {type(result).__name__} that cannot be turned into "
            f"JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "this is a bug in the tool, do not retry",
            True,
            "error",
        )
    return CallOutcome(_cut(text, max_result_chars), False, "ok")


def _to_json(value: Any) -> str:
    return pydantic_core.to_json(value).decode()


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"\n[result cut: {len(text)} characters, showing the first {{n}}]"
    keep = max(0, limit - len(note.format(n=limit)))
    return text[:keep] + note.format(n=keep)


async def _invoke(tool: Tool, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if tool.is_async:
        return await tool.func(*args, **kwargs)
    return await _in_thread(tool.name, tool.func, args, kwargs)


async def _in_thread(
    name: str, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run a sync function in a daemon thread: the loop never blocks, and a tool that hangs
    past its timeout cannot keep the process from exiting (``asyncio.to_thread`` would)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def work() -> None:
        value: Any = None
        error: BaseException | None = None
        try:
            value = context.run(func, *args, **kwargs)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name=f"tool-{name}", daemon=True).start()
    return await fut


async def _with_timeout(coro: Any, clock: Clock, seconds: float) -> Any:
    """Await ``coro`` for at most ``seconds`` of ``clock`` time; TimeoutError after that."""
    work = asyncio.ensure_future(coro)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({work, timer}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        raise TimeoutError
    finally:
        for task in (work, timer):
            task.cancel()
        await asyncio.gather(work, timer, return_exceptions=True)


# ---------------------------------------------------------------------------- the stage


class _Recent:
    """A bounded set remembering the most recent keys."""

    def __init__(self, size: int) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


class CallLedger:
    """Which calls may run: the router's bookkeeping, without I/O or an event loop.

    It remembers the call ids seen (a repeat runs once), the responses cancelled (by an
    interrupt or a ``response_done`` with status ``cancelled``: their calls that have not
    started never run) and the response in flight (what an interrupt without a response id
    means). The stage feeds it frames and acts on its answers.
    """

    def __init__(self, remember_calls: int = 4096, remember_responses: int = 256) -> None:
        self._seen = _Recent(remember_calls)
        self._cancelled = _Recent(remember_responses)
        #: the response in flight ("" when none is known)
        self.current = ""

    def admit(self, call: ToolCall) -> Literal["run", "repeat", "cancelled"]:
        """What to do with a new call: run it, ignore it (a repeated ``call_id``), or skip it
        (its response was cancelled)."""
        if call.call_id in self._seen:
            return "repeat"
        self._seen.add(call.call_id)
        if call.response_id:
            self.current = call.response_id
        return "cancelled" if self.is_cancelled(call.response_id) else "run"

    def is_cancelled(self, response_id: str) -> bool:
        """The response was cancelled: its calls that have not started must not run."""
        return bool(response_id) and response_id in self._cancelled

    def response_started(self, response_id: str) -> None:
        self.current = response_id

    def response_done(self, response_id: str, status: str) -> str | None:
        """A response ended; returns its id if its calls must be cancelled."""
        if response_id == self.current:
            self.current = ""
        return self.cancel(response_id) if status == "cancelled" else None

    def interrupt(self, response_id: str) -> str:
        """Barge-in on ``response_id`` ("" = the response in flight); returns the id whose
        calls must be cancelled ("" = the calls that carry no response id)."""
        return self.cancel(response_id or self.current)

    def cancel(self, response_id: str) -> str:
        # "" (a session that does not number its responses) is not remembered: it would
        # refuse every later call; it only stops what is running or waiting now.
        if response_id:
            self._cancelled.add(response_id)
        return response_id


@dataclass(eq=False)
class _Running:
    call: ToolCall
    slots: asyncio.Semaphore
    task: asyncio.Task[None] | None = None
    #: holds a concurrency slot (from then on, ``finish`` lets it complete)
    started: bool = False
    released: bool = False

    def release(self) -> None:
        if self.started and not self.released:
            self.released = True
            self.slots.release()


class _End:
    pass


@dataclass(frozen=True, slots=True)
class _Failed:
    exc: BaseException


def _check(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """Bad tool refs are found by ``pipeline validate``, located at the ``tools`` parameter."""
    return [("tools", p) for p in check_tools(values, base_dir=base_dir)]


@stage(
    "tool_router",
    accepts=(ToolCall, Interrupt, ResponseStarted, ResponseDone),
    emits=(ToolResult,),
    check=_check,
)
async def tool_router(
    frames: AsyncIterator[Frame],
    *,
    tools: list[str | dict[str, Any]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_concurrency: int = 4,
    on_interrupt: Literal["cancel", "finish"] = "cancel",
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ctx: StageContext,
) -> AsyncIterator[Frame]:
    """Run the model's tool calls as Python functions and send their results back.

    Parameters:
        tools: the tools, each 'module:function' or {ref: 'module:function', timeout_s: 3}
        timeout_s: seconds a call may run before it is stopped (per tool: timeout_s in its entry)
        max_concurrency: calls running at the same time; more wait for a free slot
        on_interrupt: cancel (drop the running calls of an interrupted response) or finish
        max_result_chars: results longer than this are cut, with a note saying so
    """
    params = {
        "tools": tools,
        "timeout_s": timeout_s,
        "max_concurrency": max_concurrency,
        "on_interrupt": on_interrupt,
        "max_result_chars": max_result_chars,
    }
    problems = check_tools(params, base_dir=ctx.base_dir)
    if problems:
        raise ToolConfigError([Problem(f"stage '{ctx.id}' (tool_router): {p}") for p in problems])
    table = load_tools(tools, base_dir=ctx.base_dir)
    log = ctx.log
    clock = ctx.clock
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max_concurrency)
    out: asyncio.Queue[ToolResult | _End | _Failed] = asyncio.Queue(maxsize=max_concurrency)
    running: dict[str, _Running] = {}
    ledger = CallLedger()

    def skip(call: ToolCall, why: str) -> ToolResult:
        """Log a call that will not run; its result, which says so."""
        log.info(
            "tool call",
            name=call.name,
            call_id=call.call_id,
            duration_ms=0,
            outcome="skipped",
            reason=why,
        )
        return ToolResult(call.call_id, not_run_text(call.name), is_error=True, name=call.name)

    async def run(entry: _Running) -> None:
        call = entry.call
        if not entry.started:  # no free slot when it arrived: wait for one
            await slots.acquire()
            entry.started = True
            if ledger.is_cancelled(call.response_id):
                entry.release()
                await out.put(skip(call, "its response was cancelled before it started"))
                return
        start = clock.now()
        try:
            result = await run_tool(
                table,
                call,
                clock=clock,
                timeout_s=timeout_s,
                max_result_chars=max_result_chars,
            )
        except asyncio.CancelledError:
            _log_done(log, call, start, clock, "cancelled")
            raise
        finally:
            entry.release()
        _log_done(log, call, start, clock, result.outcome)
        log.debug("tool result", name=call.name, call_id=call.call_id, output=result.output)
        await out.put(
            ToolResult(call.call_id, result.output, is_error=result.is_error, name=call.name)
        )

    async def cancel_calls(response_id: str, why: str) -> None:
        # Each dropped call still gets its (error) result, so the session's bookkeeping closes.
        for entry in list(running.values()):
            task = entry.task
            if entry.call.response_id != response_id or task is None or task.done():
                continue
            if task.cancelling():  # already dropped (an interrupt, then response_done)
                continue
            if not entry.started:
                task.cancel()
                await out.put(skip(entry.call, f"{why} before it started"))
            elif on_interrupt == "cancel":
                task.cancel()  # logged by the call itself, outcome "cancelled"
                c = entry.call
                await out.put(ToolResult(c.call_id, cancelled_text(c.name), True, c.name))

    async def start(call: ToolCall) -> None:
        verdict = ledger.admit(call)
        if verdict == "repeat":
            log.warning("tool call repeated; ignored", name=call.name, call_id=call.call_id)
            return
        log.debug("tool call", name=call.name, call_id=call.call_id, arguments=call.arguments)
        if verdict == "cancelled":
            await out.put(skip(call, "its response was cancelled"))
            return
        if len(running) >= max_concurrency + MAX_PENDING:
            log.info(
                "tool call",
                name=call.name,
                call_id=call.call_id,
                duration_ms=0,
                outcome="busy",
            )
            text = (
                f"too many tool calls at once ({len(running)} running or waiting); "
                "wait for their results before calling more"
            )
            await out.put(ToolResult(call.call_id, text, is_error=True, name=call.name))
            return
        entry = _Running(call, slots)
        if not slots.locked():  # a free slot: the call starts now (acquire does not wait)
            await slots.acquire()
            entry.started = True
        entry.task = loop.create_task(run(entry), name=f"tool {call.name} {call.call_id}")
        running[call.call_id] = entry

        def done(_t: object) -> None:
            entry.release()  # a call cancelled before its first step still gives its slot back
            running.pop(call.call_id, None)

        entry.task.add_done_callback(done)

    async def read() -> None:
        try:
            async for frame in frames:
                match frame:
                    case ToolCall():
                        await start(frame)
                    case ResponseStarted():
                        ledger.response_started(frame.response_id)
                    case ResponseDone():
                        target = ledger.response_done(frame.response_id, frame.status)
                        if target is not None:
                            await cancel_calls(target, "its response was cancelled")
                    case Interrupt():
                        await cancel_calls(ledger.interrupt(frame.response_id), "interrupted")
            while running:  # the calls still running are owed their results
                await asyncio.wait([e.task for e in running.values() if e.task is not None])
            await out.put(_End())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await out.put(_Failed(exc))

    reader = loop.create_task(read(), name=f"{ctx.id} reader")
    try:
        while True:
            with ctx.waiting():  # waiting for calls to finish is not work
                item = await out.get()
            if isinstance(item, _End):
                break
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        tasks = [reader, *(e.task for e in running.values() if e.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        aclose = getattr(frames, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def cancelled_text(name: str) -> str:
    """The result of a call cancelled while running (``on_interrupt: cancel``)."""
    return (
        f"{name} was cancelled by barge-in: the caller interrupted before it finished, so it "
        "may not have taken effect; ask the caller before calling it again"
    )


def not_run_text(name: str) -> str:
    """The result of a call that never ran: its response was interrupted or cancelled first."""
    return (
        f"{name} did not run: cancelled by barge-in (the caller interrupted the response that "
        "asked for it); ask the caller before calling it again"
    )


def _log_done(log: Any, call: ToolCall, start: float, clock: Clock, outcome: str) -> None:
    log.info(
        "tool call",
        name=call.name,
        call_id=call.call_id,
        duration_ms=round((clock.now() - start) * 1000, 1),
        outcome=outcome,
    )
