"""Tools: plain Python functions the model may call, loaded and described as JSON schema.

A tool is a plain Python function, sync or async, named in the YAML as ``module:function``::

    tools: {type: tool_router, tools: ["examples.tools:get_time",
                                      {ref: "examples.tools:lookup_order", timeout_s: 3}]}

Its JSON schema (what the model sees) comes from its signature and docstring, read by
:mod:`pipeline.signature`: parameter types, defaults, ``Literal``/``Enum`` choices, and a
description per parameter from the docstring (Google ``Args:``, reST ``:param x:`` or NumPy
``Parameters``) or from ``Annotated[T, Field(description=...)]``. A linked ``realtime_session``
advertises the router's tools on its own through :func:`tool_schemas`. Running the calls is
:mod:`stages.tools.router`'s work.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import pydantic

from pipeline.errors import ConfigError, PipelineError, Problem, UsageError
from pipeline.signature import read_signature, signature_model

__all__ = [
    "DEFAULT_MAX_RESULT_CHARS",
    "DEFAULT_TIMEOUT_S",
    "MIN_RESULT_CHARS",
    "Tool",
    "ToolArgumentError",
    "ToolConfigError",
    "ToolSpec",
    "check_tools",
    "load_tool",
    "load_tools",
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
_SPEC_KEYS = ("ref", "timeout_s", "name", "with")


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


class ToolArgumentError(PipelineError, ValueError):
    """The model's arguments for a tool are not valid JSON or do not fit its parameters."""


def load_tool(spec: ToolSpec, *, base_dir: Path | None = None) -> Tool:
    """Import and describe one tool from ``"module:function"`` or ``{ref, timeout_s, name,
    with}`` (``with``: keyword arguments fixed in the YAML, hidden from the model).

    ``base_dir`` (the YAML file's folder) is put on ``sys.path`` if the module is not found
    otherwise, so ``examples.tools:get_time`` works next to the pipeline file. Raises
    :class:`~pipeline.errors.ConfigError` with a message naming the ref and the fix.
    """
    ref, timeout_s, name = _parse_spec(spec)
    bound = spec.get("with") if isinstance(spec, Mapping) else None
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
    if bound is not None:
        obj = _bind(obj, bound, ref)
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


def _bind(func: Callable[..., Any], bound: Any, ref: str) -> Callable[..., Any]:
    """``func`` with the keyword arguments of ``with:`` fixed by the YAML and hidden from the
    model (a transfer tool's allowed numbers, say). Values are checked against the hints."""
    if not isinstance(bound, Mapping):
        raise _config_error(
            f"tool '{ref}': 'with' must be a mapping of parameter: value, got {bound!r}",
            "write it like with: {targets: ['+15551234567']}",
        )
    try:
        sig = inspect.signature(func)
        hints = get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': cannot read its signature ({exc})", "wrap it in a plain function"
        ) from None
    for key, value in bound.items():
        p = sig.parameters.get(key)
        if p is None or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD):
            names = ", ".join(sig.parameters)
            raise _config_error(
                f"tool '{ref}': 'with' sets '{key}', which is not a keyword parameter of it",
                f"its parameters are: {names}",
            )
        try:
            pydantic.TypeAdapter(hints.get(key, Any)).validate_python(value)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            raise _config_error(
                f"tool '{ref}': 'with.{key}' is {value!r}: {first['msg']}",
                "give a value of the parameter's type",
            ) from None
    fixed = dict(bound)

    async def run_async(*args: Any, **kwargs: Any) -> Any:
        return await func(*args, **fixed, **kwargs)

    def run_sync(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **fixed, **kwargs)

    wrapper: Callable[..., Any] = run_async if inspect.iscoroutinefunction(func) else run_sync

    params = [p for n, p in sig.parameters.items() if n not in fixed]
    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {k: v for k, v in hints.items() if k not in fixed}
    wrapper.__doc__ = func.__doc__
    wrapper.__name__ = getattr(func, "__name__", "tool")
    return wrapper


def _describe(func: Callable[..., Any], *, ref: str, name: str, timeout_s: float | None) -> Tool:
    try:
        doc, params = read_signature(func, strict_hints=True)
    except (TypeError, ValueError) as exc:
        raise _config_error(
            f"tool '{ref}': cannot read its signature ({exc})", "wrap it in a plain function"
        ) from None
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': cannot resolve its type hints ({type(exc).__name__}: {exc})",
            "import the types its annotations name",
        ) from None
    for p in params:
        if p.kind in (p.kind.VAR_POSITIONAL, p.kind.VAR_KEYWORD):
            star = "*" if p.kind is p.kind.VAR_POSITIONAL else "**"
            raise _config_error(
                f"tool '{ref}' takes {star}{p.name}; the model can only fill named parameters",
                "give it explicit parameters",
            )
    try:
        model = signature_model(f"{name}_arguments", params)
        parameters = _clean_schema(model.model_json_schema(by_alias=True))
    except Exception as exc:
        raise _config_error(
            f"tool '{ref}': its parameters cannot be described as JSON schema "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})",
            "use JSON-friendly types (str, int, float, bool, Literal, Enum, list, dict, "
            "pydantic models)",
        ) from None
    target = func if inspect.isroutine(func) else getattr(func, "__call__", func)  # noqa: B004
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(target)
    return Tool(
        name=name,
        ref=ref,
        func=func,
        description=doc.description or name.replace("_", " "),
        model=model,
        is_async=is_async,
        timeout_s=timeout_s,
        params=tuple((p.name, p.kind, p.annotation) for p in params),
        parameters=parameters,
    )


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
                raise UsageError(f"recursive or unknown type {key!r}")
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
