"""A function's signature and docstring, read once, for stage parameters and tool schemas alike.

Two things in the framework are described by a Python function: a stage (its keyword-only
parameters are the YAML parameters) and a tool (its parameters are what the model fills in).
Both need the same three things, built here and nowhere else:

- :func:`parse_docstring`: the description and one text per parameter, from a docstring in any
  of the common styles (Google ``Args:``/``Parameters:``, reST ``:param x:``, NumPy
  ``Parameters`` with an underline), through the ``docstring-parser`` package;
- :func:`read_signature`: the parameters (name, kind, type hint with ``Annotated`` extras,
  default, description) of a function;
- :func:`signature_model`: a strict pydantic model of those parameters (unknown keys refused),
  whose JSON schema carries the descriptions. Fields are named ``p0``, ``p1``... with the
  parameter's name as alias, so a parameter may be called ``schema`` or ``model_config``;
  :func:`model_values` reads the validated values back by parameter name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import docstring_parser
import pydantic
from pydantic.fields import FieldInfo

__all__ = [
    "Docstring",
    "SignatureParam",
    "model_values",
    "parse_docstring",
    "read_signature",
    "signature_model",
]

#: The default of a required parameter.
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True, slots=True)
class Docstring:
    """What a docstring says: ``summary`` (its first paragraph on one line), ``description``
    (every paragraph before the sections, paragraphs separated by a blank line) and ``params``
    (parameter name -> its description on one line; parameters without text are left out)."""

    summary: str
    description: str
    params: Mapping[str, str]


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _paragraphs(text: str) -> list[str]:
    return [_one_line(p) for p in text.split("\n\n") if p.strip()]


def parse_docstring(doc: str | None) -> Docstring:
    """Parse a docstring in Google, reST or NumPy style (detected per docstring).

    The parameter sections (``Args:``, ``Parameters:``, ``:param x:``, NumPy ``Parameters``)
    give the per-parameter texts; every other section (returns, raises, examples) is left out of
    both the description and the parameters, so no docstring markup reaches a model or a table.
    """
    text = inspect.cleandoc(doc or "")
    if not text:
        return Docstring("", "", {})
    try:
        parsed = docstring_parser.parse(text)
    except docstring_parser.ParseError:  # malformed sections: keep the prose, no parameters
        first = text.split("\n\n", 1)[0]
        return Docstring(_one_line(first), "\n\n".join(_paragraphs(text)), {})
    paras = _paragraphs(parsed.short_description or "")
    if paras and parsed.blank_after_short_description is False and parsed.long_description:
        # a first sentence that wraps: docstring-parser splits it after its first line
        paras = _paragraphs(f"{parsed.short_description} {parsed.long_description}")
    else:
        paras += _paragraphs(parsed.long_description or "")
    params: dict[str, str] = {}
    for p in parsed.params:
        name = p.arg_name.lstrip("*")
        desc = _one_line(p.description)
        if desc and name not in params:
            params[name] = desc
    return Docstring(paras[0] if paras else "", "\n\n".join(paras), params)


@dataclass(frozen=True, slots=True)
class SignatureParam:
    """One parameter of a function: its name, kind, type hint (``Any`` if none), default
    (:data:`REQUIRED` if none) and description from the docstring (``""`` if none)."""

    name: str
    kind: inspect._ParameterKind
    annotation: Any
    default: Any
    doc: str

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def read_signature(
    func: Callable[..., Any], *, strict_hints: bool = False
) -> tuple[Docstring, list[SignatureParam]]:
    """The docstring and the parameters of ``func`` (a function or a callable object).

    Type hints are resolved with their ``Annotated`` extras. A hint that cannot be resolved
    raises ``NameError`` (or the like) with ``strict_hints``; without it the raw annotation is
    used. Raises ``TypeError``/``ValueError`` when Python cannot read the signature.
    """
    sig = inspect.signature(func)
    target = func if inspect.isroutine(func) else getattr(func, "__call__", func)  # noqa: B004
    try:
        hints = get_type_hints(target, include_extras=True)
    except Exception:
        if strict_hints:
            raise
        hints = {}
    doc = parse_docstring(inspect.getdoc(func))
    params = []
    for p in sig.parameters.values():
        ann = hints.get(p.name, p.annotation)
        if ann is inspect.Parameter.empty:
            ann = Any
        params.append(SignatureParam(p.name, p.kind, ann, p.default, doc.params.get(p.name, "")))
    return doc, params


def _has_description(ann: Any) -> bool:
    """Whether ``Annotated[T, Field(description=...)]`` already describes the parameter."""
    if get_origin(ann) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in get_args(ann)[1:])


def signature_model(
    name: str,
    params: Iterable[SignatureParam],
    *,
    convert: Callable[[Any], Any] | None = None,
    arbitrary_types: bool = False,
) -> type[pydantic.BaseModel]:
    """A pydantic model validating a mapping of these parameters by name.

    Unknown keys are refused (``extra_forbidden``); a required parameter is ``missing`` when
    absent; each field carries the parameter's docstring text as its description (unless its
    ``Annotated`` hint gives one). ``convert`` maps a type hint to the type validated (e.g. a
    path role to ``Path``); ``arbitrary_types`` admits classes pydantic does not know (stage
    parameters; a tool's must be describable as JSON schema). Errors locate a value by the
    parameter's name. Raises whatever pydantic raises for a type it cannot use.
    """
    fields: dict[str, Any] = {}
    for i, p in enumerate(params):
        extra: dict[str, Any] = {"alias": p.name}
        if p.doc and not _has_description(p.annotation):
            extra["description"] = p.doc
        ann = convert(p.annotation) if convert is not None else p.annotation
        default = ... if p.required else p.default
        fields[f"p{i}"] = (ann, pydantic.Field(default, **extra))
    return pydantic.create_model(
        name,
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=arbitrary_types),
        **fields,
    )


def model_values(obj: pydantic.BaseModel, names: Iterable[str]) -> dict[str, Any]:
    """The validated values of a :func:`signature_model` instance, by parameter name (``names``
    in the order the model was built with)."""
    return {n: getattr(obj, f"p{i}") for i, n in enumerate(names)}
