"""Declaring stages: ``@stage``, the spec it records, and finding a stage type by name.

What a running stage is given (``ctx``) lives in :mod:`pipeline.context`.

Stages: typed async generators registered with their parameters and frame types.

A stage is one async generator function. Its first positional parameter (absent for a source)
is the input stream; its keyword-only parameters are its parameters, typed, with defaults, each
documented by one line in the docstring's ``Parameters:`` section::

    @stage("gain", accepts=(Audio,), emits=(Audio,), passthrough=True, encodings=("pcm16",))
    async def gain(frames: AsyncIterator[Frame], *, db: float = 0.0) -> AsyncIterator[Frame]:
        '''Scale pcm16 audio.

        Parameters:
            db: gain in decibels
        '''
        k = 10 ** (db / 20)
        async for f in frames:
            if isinstance(f, Audio):
                f = Audio.from_samples(f.samples() * k, f.rate, f.pts)
            yield f

The decorator returns the function unchanged (it stays callable as written) after recording a
:class:`StageSpec` in the registry. A stage that wants the runtime's services (its id, the clock,
a logger, the base folder of the YAML file) declares a keyword-only ``ctx: StageContext``.

``passthrough=True`` means the stage forwards every frame it does not transform, so a link to it
carries everything; ``accepts`` then lists what it transforms. A sync function
``def f(frame, *, ...) -> Frame | None`` decorated with ``@stage`` becomes a per-frame map stage.

``output_format(params, input_format)`` declares the audio format a stage emits given its input
and parameters, and raises :class:`~pipeline.errors.FormatError` for an input it cannot take; the
graph uses it to find mismatches before running.

What a stage exchanges outside its links is declared too, and shown by ``pipeline stages`` and
``pipeline graph``:

* ``publishes=(TOPIC,)`` / ``subscribes=(TOPIC,)``: facts on the run's bus (``ctx.bus``), a
  :class:`Topic` such as :data:`~pipeline.context.PLAYED` (a sink reports what the caller heard; the
  realtime session truncates its turn there);
* ``provides={INTERFACE: fn}``: something the stage offers the stages linked to it, worked out from
  its parameters by ``fn(values, base_dir)`` before it runs (the ``tool_router`` provides
  :data:`~pipeline.context.TOOLS`, the schemas of the tools it runs); ``uses=(INTERFACE,)``: what a
  stage takes from its linked peers (``ctx.provided(TOOLS)``,
  :meth:`~pipeline.context.StageContext.provided`) or from the host running it (the Twilio call of
  ``pipeline serve``). Any stage that provides :data:`~pipeline.context.TOOLS` serves a session, a
  user's own router as well as ours.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

import pydantic

from .errors import UnknownStageType, UsageError
from .frames import FRAME_TYPES, AudioFormat, Encoding
from .metrics import Metric
from .signature import model_values, read_signature, signature_model

ENTRY_POINT_GROUP = "pipeline.stages"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Topic(Generic[T]):
    """A kind of fact on a run's bus (``ctx.bus``), outside the links: stages declare it in
    ``publishes=`` / ``subscribes=`` of ``@stage``. ``T`` is the type of the values."""

    name: str
    doc: str = ""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Interface(Generic[T]):
    """Something a stage offers the stages linked to it (``provides={IFACE: fn}`` of
    ``@stage``, ``fn(values, base_dir) -> T``), or that the host running the pipeline offers;
    a stage that takes it declares ``uses=(IFACE,)`` and reads it with
    :meth:`StageContext.provided`."""

    name: str
    doc: str = ""

    def __str__(self) -> str:
        return self.name


#: ``fn(values, base_dir) -> value``: what a stage provides under an :class:`Interface`, worked
#: out from its checked parameter values (and the YAML file's folder) before it runs.
ProvideFn = Callable[[Mapping[str, Any], Path], Any]


class _PathRole:
    def __init__(self, role: str) -> None:
        self.role = role

    def __repr__(self) -> str:
        return f"PathRole({self.role})"


#: A parameter naming a file the stage reads: resolved against the YAML file's folder and
#: checked to exist before running (``-`` is kept as is: standard input).
InputPath = Annotated[Path, _PathRole("input")]
#: A parameter naming a file the stage writes (``-`` is kept as is: standard output).
OutputPath = Annotated[Path, _PathRole("output")]

FormatFn = Callable[[Mapping[str, Any], AudioFormat | None], AudioFormat | None]


@dataclass(frozen=True, slots=True)
class CheckWarning:
    """What a stage's ``check`` returns for something worth saying that does not stop the run
    (a voice name the provider does not document): ``pipeline validate`` shows it as a warning
    located at ``param`` and still exits 0."""

    param: str
    message: str


#: Checks that need the whole pipeline (one stage's meaning depends on another's, as a call tool
#: on the carrier the phone stages name): ``fn(nodes) -> [(stage id, param, warning)]``, where
#: ``nodes`` maps each stage id to ``(type name, raw parameters)``. A stage library registers one
#: with :func:`register_pipeline_warning`; ``pipeline validate`` shows what it finds as warnings.
PipelineNodes = Mapping[str, tuple[str, Mapping[str, Any]]]
PipelineWarningFn = Callable[[PipelineNodes], list[tuple[str, str, str]]]
PIPELINE_WARNINGS: list[PipelineWarningFn] = []


def register_pipeline_warning(fn: PipelineWarningFn) -> PipelineWarningFn:
    """Add a whole-pipeline check (see :data:`PipelineWarningFn`); returns ``fn``."""
    if fn not in PIPELINE_WARNINGS:
        PIPELINE_WARNINGS.append(fn)
    return fn


#: ``check(values, base_dir) -> [(param, problem) | CheckWarning]``: extra checks of a stage's
#: parameters before running; each problem says what is wrong and the fix, and the validator
#: locates it at ``param`` in the file ("" for the stage itself).
CheckFn = Callable[[Mapping[str, Any], Path], Sequence[tuple[str, str] | CheckWarning]]
#: ``preflight(values, base_dir) -> [(param, problem)]``: what a run will need from the machine
#: as it starts (an API key in the environment, a model file): checked by ``pipeline run`` and
#: ``pipeline serve`` before any stage starts (exit 2), not by ``pipeline validate``, so a file
#: can be checked on a machine without the keys.
PreflightFn = Callable[[Mapping[str, Any], Path], Sequence[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of a stage: type, default, and a one-line description."""

    name: str
    annotation: Any
    default: Any
    doc: str
    required: bool
    path_role: str = ""  # "input" | "output" | ""

    @property
    def type_text(self) -> str:
        return type_text(self.annotation)


@dataclass(frozen=True, slots=True)
class AudioNeeds:
    """The audio a stage takes, declared on ``@stage(encodings=..., rates=..., channels=...)``;
    ``None`` means any. ``pipeline validate`` checks each link into the stage against it, and
    at run time audio of another format stops the run with the same message."""

    encodings: tuple[str, ...] | None = None
    rates: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None

    def fits(self, encoding: str, rate: int, channels: int) -> bool:
        return (
            (self.encodings is None or encoding in self.encodings)
            and (self.rates is None or rate in self.rates)
            and (self.channels is None or channels in self.channels)
        )

    def text(self) -> str:
        """What it takes, e.g. ``pcm16 audio at 8000 or 16000 Hz, mono``."""
        enc = " or ".join(self.encodings) if self.encodings else "any"
        parts = [f"{enc} audio"]
        if self.rates:
            parts[0] += " at " + " or ".join(str(r) for r in self.rates) + " Hz"
        if self.channels:
            parts.append(" or ".join(_channels_text(c) for c in self.channels))
        return ", ".join(parts)

    def problem(self, fmt: AudioFormat) -> tuple[str, str] | None:
        """(what is wrong, the fix) for audio of ``fmt``; None when it fits."""
        if self.fits(fmt.encoding, fmt.rate, fmt.channels):
            return None
        fixes: list[str] = []
        encoding = fmt.encoding
        if self.encodings is not None and encoding not in self.encodings:
            if "pcm16" in self.encodings:
                fixes.append("{type: g711_decode}")
                encoding = "pcm16"
            elif encoding == "pcm16" and self.encodings[0] in ("pcmu", "pcma"):
                law = "ulaw" if self.encodings[0] == "pcmu" else "alaw"
                fixes.append(f"{{type: g711_encode, law: {law}}}")
        if self.rates is not None and fmt.rate not in self.rates:
            rate = min(self.rates, key=lambda r: (abs(r - fmt.rate), r))
            resample = f"{{type: resample, rate: {rate}}}"
            # G.711 is encoded at 8000 Hz: resample the PCM before encoding it
            fixes.insert(0 if fixes and "encode" in fixes[0] else len(fixes), resample)
        fix = f"add {' then '.join(fixes)} before it" if fixes else "convert the audio before it"
        if self.channels is not None and fmt.channels not in self.channels:
            want = " or ".join(_channels_text(c) for c in self.channels)
            fix += f"; it needs {want} audio" if fixes else f" ({want})"
        return (f"takes {self.text()}, gets {fmt}", fix)


def _channels_text(n: int) -> str:
    return {1: "mono", 2: "stereo"}.get(n, f"{n} channels")


def _needs(
    encodings: Iterable[str] | None, rates: Iterable[int] | None, channels: Iterable[int] | None
) -> AudioNeeds | None:
    if encodings is None and rates is None and channels is None:
        return None
    return AudioNeeds(
        None if encodings is None else tuple(encodings),
        None if rates is None else tuple(rates),
        None if channels is None else tuple(channels),
    )


@dataclass(frozen=True)
class StageSpec:
    """What the runtime knows about a stage type."""

    name: str
    func: Callable[..., Any]
    doc: str
    params: dict[str, ParamSpec]
    accepts: tuple[type[Any], ...]
    emits: tuple[type[Any], ...]
    passthrough: bool
    is_source: bool
    is_sink: bool
    takes_ctx: bool
    output_format: FormatFn | None
    cycle_aware: bool = False
    check: CheckFn | None = None
    preflight: PreflightFn | None = None
    kind: Literal["generator", "map"] = "generator"
    model: type[pydantic.BaseModel] = field(default=pydantic.BaseModel, repr=False)
    #: bus topics it publishes / subscribes to
    publishes: tuple[Topic[Any], ...] = ()
    subscribes: tuple[Topic[Any], ...] = ()
    #: what it offers the stages linked to it, and what it takes from its peers or the host
    provides: Mapping[Interface[Any], ProvideFn] = field(default_factory=dict)
    uses: tuple[Interface[Any], ...] = ()
    #: the figures it reports through ``ctx.metrics``
    metrics: tuple[Metric, ...] = ()
    #: the audio formats it takes (None: any)
    audio_in: AudioNeeds | None = None

    def link_accepts(self) -> tuple[type[Any], ...]:
        """The frame types a link into this stage delivers."""
        return FRAME_TYPES if self.passthrough else self.accepts

    def validate(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Check and convert raw parameter values. Returns (values, [(param, problem)])."""
        problems: list[tuple[str, str]] = []
        try:
            obj = self.model.model_validate(dict(raw))
        except pydantic.ValidationError as exc:
            for err in _merge_union_errors(exc.errors()):
                loc = str(err["loc"][0]) if err["loc"] else ""
                problems.append((loc, self._explain(loc, err)))
            return dict(raw), problems
        return model_values(obj, self.params), problems

    def _explain(self, name: str, err: Any) -> str:
        kind = err["type"]
        if kind == "extra_forbidden":
            close = difflib.get_close_matches(name, list(self.params), n=1)
            hint = f"did you mean '{close[0]}'?" if close else self._param_list()
            return f"stage type '{self.name}' has no parameter '{name}'; {hint}"
        p = self.params.get(name)
        if kind == "missing" and p is not None:
            what = f" ({p.doc})" if p.doc else ""
            return f"missing required parameter '{name}' ({p.type_text}){what}; add it"
        typ = f" ({p.type_text})" if p is not None else ""
        if kind == "path_type":  # pydantic's text names a Python class
            return f"parameter '{name}'{typ}: a file path is text, got {err.get('input')!r}"
        return f"parameter '{name}'{typ}: {err['msg']}, got {err.get('input')!r}"

    def _param_list(self) -> str:
        if not self.params:
            return f"'{self.name}' takes no parameters"
        return "its parameters are " + ", ".join(self.params)


def _merge_union_errors(errors: list[Any]) -> list[Any]:
    """One error per wrong value: pydantic reports a value that fits no member of a union
    (``str | dict``) once per member, the member's name last in ``loc``."""
    out: list[Any] = []
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if len(loc) > 1 and isinstance(loc[-1], str):
            groups.setdefault(loc[:-1], []).append(err)
        else:
            out.append(err)
    for at, group in groups.items():
        if len(group) == 1 or len({repr(e.get("input")) for e in group}) > 1:
            out.extend(group)
            continue
        inner = "".join(f"item {i + 1}: " if isinstance(i, int) else f"'{i}': " for i in at[1:])
        kinds = " or ".join(str(e["loc"][-1]) for e in group)
        msg = f"{inner}Input should be {kinds}"
        out.append({**group[0], "loc": at, "msg": msg, "type": "union"})
    return out


REGISTRY: dict[str, StageSpec] = {}
_SPEC_ATTR = "__pipeline_stage__"


def spec_of(func: Any) -> StageSpec | None:
    """The StageSpec recorded on a decorated function, if any."""
    spec = getattr(func, _SPEC_ATTR, None)
    return spec if isinstance(spec, StageSpec) else None


def stage(
    name: str | None = None,
    *,
    accepts: Iterable[type[Any]] = FRAME_TYPES,
    emits: Iterable[type[Any]] = (),
    passthrough: bool = False,
    output_format: FormatFn | None = None,
    cycle_aware: bool = False,
    check: CheckFn | None = None,
    preflight: PreflightFn | None = None,
    publishes: Iterable[Topic[Any]] = (),
    subscribes: Iterable[Topic[Any]] = (),
    provides: Mapping[Interface[Any], ProvideFn] | None = None,
    uses: Iterable[Interface[Any]] = (),
    metrics: Iterable[Metric] = (),
    register: bool = True,
    encodings: Iterable[Encoding] | None = None,
    rates: Iterable[int] | None = None,
    channels: Iterable[int] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Declare a stage. See the module docstring. Returns the function unchanged.

    ``encodings``, ``rates`` and ``channels`` declare the audio the stage takes (default: any);
    ``pipeline validate`` then reports a link bringing other audio, with the stage to add.
    """

    def decorate(func: Callable[..., Any]) -> Any:
        spec = make_spec(
            func,
            name=name,
            accepts=tuple(accepts),
            emits=tuple(emits),
            passthrough=passthrough,
            output_format=output_format,
            cycle_aware=cycle_aware,
            check=check,
            preflight=preflight,
            publishes=tuple(publishes),
            subscribes=tuple(subscribes),
            provides=provides,
            uses=tuple(uses),
            metrics=tuple(metrics),
            audio_in=_needs(encodings, rates, channels),
        )
        setattr(func, _SPEC_ATTR, spec)
        if register:
            REGISTRY[spec.name] = spec
        return func

    return decorate


def make_spec(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    accepts: tuple[type[Any], ...] = FRAME_TYPES,
    emits: tuple[type[Any], ...] = (),
    passthrough: bool = False,
    output_format: FormatFn | None = None,
    cycle_aware: bool = False,
    check: CheckFn | None = None,
    preflight: PreflightFn | None = None,
    publishes: tuple[Topic[Any], ...] = (),
    subscribes: tuple[Topic[Any], ...] = (),
    provides: Mapping[Interface[Any], ProvideFn] | None = None,
    uses: tuple[Interface[Any], ...] = (),
    metrics: tuple[Metric, ...] = (),
    audio_in: AudioNeeds | None = None,
) -> StageSpec:
    """Build a StageSpec from a function's signature and docstring."""
    name = name or func.__name__
    is_gen = inspect.isasyncgenfunction(func)
    doc, sig_params = read_signature(func)
    positional = [
        p
        for p in sig_params
        if p.kind in (p.kind.POSITIONAL_ONLY, p.kind.POSITIONAL_OR_KEYWORD) and p.required
    ]
    if len(positional) > 1:
        raise UsageError(f"stage '{name}': takes at most one positional parameter (the input)")
    is_source = is_gen and not positional
    if not is_gen and not positional:
        raise UsageError(f"stage '{name}': a map stage takes the frame as its first parameter")
    keyword = [p for p in sig_params if p.kind is p.kind.KEYWORD_ONLY]
    takes_ctx = any(p.name == "ctx" for p in keyword)
    keyword = [p for p in keyword if p.name != "ctx"]
    params = {
        p.name: ParamSpec(
            p.name,
            p.annotation,
            None if p.required else p.default,
            p.doc,
            p.required,
            _path_role(p.annotation),
        )
        for p in keyword
    }
    model = signature_model(f"{name}_params", keyword, convert=_pydantic_type, arbitrary_types=True)
    emits_t = emits
    if not is_gen and not emits_t:
        emits_t = accepts
    return StageSpec(
        name=name,
        func=func,
        doc=doc.summary,
        params=params,
        accepts=accepts,
        emits=emits_t,
        passthrough=passthrough or not is_gen,
        is_source=is_source,
        is_sink=not is_source and not emits_t and not passthrough and is_gen,
        takes_ctx=takes_ctx,
        output_format=output_format,
        cycle_aware=cycle_aware,
        check=check,
        preflight=preflight,
        kind="generator" if is_gen else "map",
        model=model,
        publishes=publishes,
        subscribes=subscribes,
        provides=dict(provides or {}),
        uses=uses,
        metrics=metrics,
        audio_in=audio_in,
    )


def _path_role(ann: Any) -> str:
    """ "input"/"output" for InputPath/OutputPath (also inside ``X | None``), else ""."""
    if get_origin(ann) is Annotated:
        for meta in get_args(ann)[1:]:
            if isinstance(meta, _PathRole):
                return meta.role
        return ""
    if get_origin(ann) in (Union, types.UnionType):
        for arg in get_args(ann):
            role = _path_role(arg)
            if role:
                return role
    return ""


def _pydantic_type(ann: Any) -> Any:
    if get_origin(ann) is Annotated:
        args = get_args(ann)
        if any(isinstance(m, _PathRole) for m in args[1:]):
            return Path
        return _pydantic_type(args[0])
    if get_origin(ann) in (Union, types.UnionType) and _path_role(ann):
        return Path | None
    return ann


def type_text(ann: Any) -> str:
    """A short readable form of a parameter's type, for messages and ``pipeline stages``."""
    origin = get_origin(ann)
    if origin is Annotated:
        args = get_args(ann)
        if any(isinstance(m, _PathRole) for m in args[1:]):
            return "path"
        return type_text(args[0])
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(ann))
    if origin is not None:
        args = get_args(ann)
        name = getattr(origin, "__name__", str(origin))
        if name in ("Union", "UnionType"):
            return " | ".join(type_text(a) for a in args)
        return f"{name}[{', '.join(type_text(a) for a in args)}]"
    if ann is type(None):
        return "null"
    if ann is Any:
        return "any"
    return getattr(ann, "__name__", str(ann))


# ---------------------------------------------------------------------------- lookup

_libraries_loaded = False
_entry_points_loaded = False
_BROKEN_ENTRY_POINTS: dict[str, str] = {}  # name -> why it could not be loaded
_BROKEN_LIBRARIES: list[str] = []  # why a stage library could not be loaded


def _load_libraries() -> None:
    """Import every stage library of the entry-point group (an entry point naming a module,
    like the built-in ``builtin = "stages"``): importing it registers its stages."""
    global _libraries_loaded
    if _libraries_loaded:
        return
    _libraries_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.attr:
            continue
        try:
            importlib.import_module(ep.module)
        except Exception as exc:
            _BROKEN_LIBRARIES.append(
                f"stage library '{ep.name}' (entry point '{ep.value}' of group "
                f"{ENTRY_POINT_GROUP}) cannot be loaded: {type(exc).__name__}: {exc}; "
                "reinstall or fix the package that provides it"
            )


def _load_entry_points() -> None:
    """Register every stage function of the entry-point group (``name = "module:function"``);
    a name already registered (a built-in) wins."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if not ep.attr or ep.name in REGISTRY:
            continue
        try:  # one broken package must not break every other lookup
            obj = ep.load()
            spec = spec_of(obj) or make_spec(obj, name=ep.name)
        except Exception as exc:
            _BROKEN_ENTRY_POINTS[ep.name] = (
                f"stage type '{ep.name}' (entry point '{ep.value}' of group "
                f"{ENTRY_POINT_GROUP}) cannot be loaded: {type(exc).__name__}: {exc}; "
                "reinstall or fix the package that provides it"
            )
            continue
        if spec.name != ep.name:
            spec = _renamed(spec, ep.name)
        REGISTRY[ep.name] = spec


def _renamed(spec: StageSpec, name: str) -> StageSpec:
    from dataclasses import replace

    return replace(spec, name=name)


def builtin_names() -> list[str]:
    _load_libraries()
    _load_entry_points()
    return sorted(REGISTRY)


def resolve(type_name: str) -> StageSpec:
    """Find a stage type: a built-in or entry-point name, or ``package.module:function``.

    Raises UnknownStageType (a ConfigError, also a LookupError) with a readable message (and
    a "did you mean") when it cannot.
    """
    if ":" in type_name:
        module_name, _, attr = type_name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownStageType(
                f"cannot import module '{module_name}' for stage type '{type_name}': {exc}; "
                "check the module path and that its package is installed or on PYTHONPATH"
            ) from None
        except Exception as exc:  # the user's module itself fails: a SyntaxError, a raise, ...
            raise UnknownStageType(
                f"importing module '{module_name}' for stage type '{type_name}' failed: "
                f"{type(exc).__name__}: {exc}{_where_raised(exc)}; fix the error in that module"
            ) from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise UnknownStageType(
                f"module '{module_name}' has no '{attr}'; check the name after the ':'"
            ) from None
        spec = spec_of(obj)
        if spec is None:
            if not callable(obj):
                raise UnknownStageType(f"'{type_name}' is not a function")
            try:
                # Undeclared: it may emit anything (a source or a transform), or nothing at all
                # if it never yields; the graph treats it as emitting every frame type.
                emits = FRAME_TYPES if inspect.isasyncgenfunction(obj) else ()
                spec = make_spec(obj, name=type_name, emits=emits)
            except UsageError as exc:
                raise UnknownStageType(str(exc)) from None
        return spec
    _load_libraries()
    if type_name not in REGISTRY:
        _load_entry_points()
    if type_name in REGISTRY:
        return REGISTRY[type_name]
    if type_name in _BROKEN_ENTRY_POINTS:
        raise UnknownStageType(_BROKEN_ENTRY_POINTS[type_name])
    if _BROKEN_LIBRARIES:
        raise UnknownStageType(f"unknown stage type '{type_name}'; " + "; ".join(_BROKEN_LIBRARIES))
    close = difflib.get_close_matches(type_name, list(REGISTRY), n=1)
    hint = (
        f"did you mean '{close[0]}'?"
        if close
        else "see 'pipeline stages' for the list, or use 'package.module:function'"
    )
    raise UnknownStageType(f"unknown stage type '{type_name}'; {hint}")


def _where_raised(exc: BaseException) -> str:
    """`` (file.py, line N)`` of the innermost frame, for import failures (a SyntaxError's
    text already says where)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) or tb is None:
        return ""
    return f" ({Path(tb.tb_frame.f_code.co_filename).name}, line {tb.tb_lineno})"


def spec_for(obj: str | StageSpec | Callable[..., Any]) -> StageSpec:
    """A StageSpec from a type name, a spec, or a (decorated or plain) function."""
    if isinstance(obj, StageSpec):
        return obj
    if isinstance(obj, str):
        return resolve(obj)
    return spec_of(obj) or make_spec(obj)
