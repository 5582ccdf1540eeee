"""The ``realtime_session`` stage's parameters: checked, resolved into :class:`Settings`, and
what the graph asks of the stage before running (its output format, every problem with its
parameters, the tools it offers the model). No I/O beyond reading tool modules.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pydantic

from pipeline.context import TOOLS, StageContext
from pipeline.errors import ConfigError, FormatError, UsageError
from pipeline.frames import AudioFormat, Encoding
from pipeline.spec import CheckWarning

from . import protocol as p
from .wire import CODECS

Provider = Literal["xai", "openai", "azure", "gemini", "emulator"]
FormatName = Literal[
    "pcm16", "pcmu", "pcma", "g711_ulaw", "g711_alaw", "audio/pcm", "audio/pcmu", "audio/pcma"
]


@dataclass(frozen=True)
class ForcedMessage:
    """Text the assistant says verbatim (xAI's ``force_message``)."""

    text: str
    voice: str | None = None
    interruptible: bool = True


def forced_message(value: Any, dialect: p.Dialect, param: str) -> ForcedMessage | None:
    """A ``greeting``: text, or ``{text, voice, interruptible}``. xAI only. Raises ConfigError."""
    if value is None or value == "":
        return None
    if dialect != "xai":
        raise ConfigError(
            f"parameter '{param}': speaking a given text verbatim is xAI's force_message; this "
            f"session speaks the {dialect} dialect: use provider xai, or put the text in "
            "instructions"
        )
    if isinstance(value, str):
        return ForcedMessage(value)
    if not isinstance(value, Mapping) or not isinstance(value.get("text"), str):
        raise ConfigError(f"parameter '{param}': text, or {{text, voice, interruptible}}")
    extra = sorted(set(value) - {"text", "voice", "interruptible"})
    if extra:
        raise ConfigError(
            f"parameter '{param}': unknown key(s) {', '.join(extra)}; it takes text, voice, "
            "interruptible"
        )
    return ForcedMessage(value["text"], value.get("voice"), bool(value.get("interruptible", True)))


@dataclass(frozen=True)
class Settings:
    """The stage's parameters, checked and resolved (no secrets: the key is read at connect)."""

    provider: Provider
    url: str
    api_key_env: str
    session: p.SessionConfig
    connect_timeout_s: float
    ready_timeout_s: float
    response_timeout_s: float
    max_session_s: float | None
    reconnect_attempts: int
    max_message_bytes: int = 8 * 1024 * 1024
    max_audio_ahead_s: float = 120.0
    append_ms: int = 20
    emulator: Mapping[str, Any] = field(default_factory=dict)
    #: said verbatim once the first session is ready (xAI)
    greeting: ForcedMessage | None = None

    @property
    def dialect(self) -> p.Dialect:
        return self.session.dialect

    @property
    def endpoint(self) -> str:
        """The URL without its query, for messages."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _encoding(name: str, param: str) -> Encoding:
    try:
        return p.normalize_encoding(name)
    except ValueError as exc:
        raise ConfigError(f"parameter '{param}': {exc}") from None


def _audio_format(name: str, rate: int | None, dialect: p.Dialect, which: str) -> AudioFormat:
    enc = _encoding(name, f"{which}_format")
    fixed = p.WIRE_FORMATS[enc].fixed_rate
    fmt = AudioFormat(enc, rate if rate is not None else (fixed or p.DEFAULT_PCM_RATE))
    try:
        p.check_format(dialect, fmt)
    except ValueError as exc:
        raise FormatError(
            f"has {which}_format/{which}_rate that the service cannot take: {exc}",
            f"set {which}_rate to a rate the service takes",
        ) from None
    return fmt


#: Azure OpenAI: the key's variable, and where a deployment's realtime endpoint lives
AZURE_API_KEY_ENV = "AZURE_OPENAI_API_KEY"
AZURE_PATH = "/openai/realtime"
AZURE_URL_EXAMPLE = (
    "wss://RESOURCE.openai.azure.com/openai/realtime?api-version=2025-08-28&deployment=gpt-realtime"
)


def azure_url(url: str) -> tuple[str, str, str]:
    """Azure OpenAI's realtime URL checked: ``(ws URL, deployment, api-version)``. ``https://``
    becomes ``wss://`` (Azure's portal shows the https form). Raises ConfigError with the shape
    it needs."""
    parts = urlsplit(url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    query = dict(parse_qsl(parts.query))
    missing = [k for k in ("api-version", "deployment") if not query.get(k)]
    if scheme not in ("ws", "wss") or parts.path.rstrip("/") != AZURE_PATH or missing:
        if parts.path.rstrip("/") != AZURE_PATH:
            what = f"its path is not {AZURE_PATH}"
        elif missing:
            what = f"it lacks {' and '.join(missing)}"
        else:
            what = "it is not a ws(s):// or http(s):// address"
        endpoint = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        raise ConfigError(
            f"parameter 'url': provider azure needs the deployment's realtime URL, "
            f"{AZURE_URL_EXAMPLE}; {what} ({endpoint})"
        )
    return urlunsplit(parts._replace(scheme=scheme)), query["deployment"], query["api-version"]


#: xAI's server-side tools: their ``type``, the keys each takes (required ones first) and what
#: to write. They run on xAI's servers; the client declares them and sends nothing back.
SERVER_TOOLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "web_search": ((), ()),
    "x_search": ((), ("allowed_x_handles", "excluded_x_handles")),
    # xAI's collections are searched as file_search over their vector store (collection) ids
    "file_search": (("vector_store_ids",), ("max_num_results",)),
    "mcp": (
        ("server_url", "server_label"),
        ("server_description", "allowed_tools", "headers", "authorization", "require_approval"),
    ),
}
#: function names that collide with an enabled built-in tool: xAI then fails the first
#: ``response.create`` with ``server_error``
SERVER_TOOL_NAMES: dict[str, tuple[str, ...]] = {
    "web_search": ("web_search", "browse_page"),
    "x_search": ("x_keyword_search", "x_semantic_search", "x_user_search", "x_thread_fetch"),
    "file_search": ("file_search", "collections_search"),
}


def server_tools(value: Any, dialect: p.Dialect) -> tuple[dict[str, Any], ...]:
    """The ``server_tools`` parameter checked: xAI's built-in tools (web_search, x_search,
    file_search for collections, mcp for remote MCP servers). Raises ConfigError."""
    if not value:
        return ()
    if dialect != "xai":
        raise ConfigError(
            "parameter 'server_tools': server-side tools are xAI's (web_search, x_search, "
            f"file_search, mcp); this session speaks the {dialect} dialect: use provider xai"
        )
    if not isinstance(value, list):
        raise ConfigError("parameter 'server_tools': a list of {type: ...} tools")
    out = []
    for i, tool in enumerate(value):
        where = f"parameter 'server_tools' item {i + 1}"
        if isinstance(tool, str):
            tool = {"type": tool}
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if kind not in SERVER_TOOLS:
            close = difflib.get_close_matches(str(kind), SERVER_TOOLS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{where}: type {kind!r} is not one of xAI's server-side tools{hint}; "
                f"use {', '.join(SERVER_TOOLS)}"
            )
        required, optional = SERVER_TOOLS[kind]
        missing = [k for k in required if not tool.get(k)]
        if missing:
            raise ConfigError(f"{where} ({kind}) needs {', '.join(missing)}")
        extra = sorted(set(tool) - {"type", *required, *optional})
        if extra:
            raise ConfigError(
                f"{where} ({kind}): unknown key(s) {', '.join(extra)}; it takes "
                f"{', '.join((*required, *optional)) or 'no other keys'}"
            )
        if kind == "file_search" and not (
            isinstance(tool["vector_store_ids"], list)
            and all(isinstance(x, str) for x in tool["vector_store_ids"])
        ):
            raise ConfigError(f"{where} (file_search): vector_store_ids is a list of ids")
        if kind == "mcp" and not str(tool["server_url"]).startswith(("https://", "http://")):
            raise ConfigError(f"{where} (mcp): server_url must be an http(s):// address")
        out.append(dict(tool))
    return tuple(out)


def tool_collisions(
    functions: tuple[Mapping[str, Any], ...], builtins: tuple[Mapping[str, Any], ...]
) -> list[str]:
    """Problems: a function tool named like an enabled built-in tool's function."""
    problems = []
    enabled = {t["type"] for t in builtins}
    for f in functions:
        for kind, names in SERVER_TOOL_NAMES.items():
            if kind in enabled and f.get("name") in names:
                problems.append(
                    f"tool '{f['name']}' collides with xAI's built-in {kind} tool (xAI then fails "
                    f"the first response with server_error); rename the function or drop {kind} "
                    "from server_tools"
                )
    return problems


def check_gemini_formats(session: p.SessionConfig) -> None:
    """Gemini Live takes pcm16 at 16 kHz and speaks pcm16 at 24 kHz, nothing else."""
    for which, fmt, rate in (
        ("input", session.input_format, 16000),
        ("output", session.output_format, 24000),
    ):
        if fmt.encoding != "pcm16" or fmt.rate != rate:
            raise FormatError(
                f"has {which} {fmt}; Gemini Live's {which} is pcm16 {rate} Hz",
                f"set {which}_format: pcm16 and {which}_rate: {rate} (add resample/g711 stages "
                "around the session)",
            )


def _dialect(provider: str, dialect: str | None, emulator: Mapping[str, Any]) -> p.Dialect:
    name = dialect or (emulator.get("dialect") if provider == "emulator" else None) or provider
    if name == "emulator":
        name = "xai"
    if name == "azure":  # OpenAI's dialect at a deployment URL
        name = "openai"
    try:
        return p.normalize_dialect(str(name))
    except ValueError as exc:
        raise ConfigError(f"parameter 'dialect': {exc}") from None


def _turn_detection(value: str | Mapping[str, Any] | None) -> p.TurnDetection:
    if value is None or value in ("none", "manual", "null", ""):
        return p.TurnDetection(None)
    if isinstance(value, str):
        value = {"type": value}
    allowed = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms"}
    extra = set(value) - allowed
    if extra:
        raise ConfigError(
            f"parameter 'turn_detection': unknown key(s) {', '.join(sorted(extra))}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    kind = value.get("type", "server_vad")
    if kind in (None, "none", "manual"):
        return p.TurnDetection(None)
    if kind not in ("server_vad", "semantic_vad"):
        raise ConfigError(
            f"parameter 'turn_detection': unknown type {kind!r}; use server_vad or none"
        )
    threshold = value.get("threshold")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"parameter 'turn_detection': threshold {threshold} is not in 0..1")
    return p.TurnDetection(
        kind,
        None if threshold is None else float(threshold),
        _opt_int(value.get("prefix_padding_ms")),
        _opt_int(value.get("silence_duration_ms")),
    )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def with_model(url: str, model: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "model"]
    query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


def resolve_settings(
    params: Mapping[str, Any], tools: tuple[Mapping[str, Any], ...] = ()
) -> Settings:
    """Check the stage's parameters and resolve their defaults. Raises ConfigError/FormatError."""
    provider: Provider = params.get("provider") or "xai"
    emulator = dict(params.get("emulator") or {})
    azure: tuple[str, str, str] | None = None
    if provider == "azure":
        if not params.get("url"):
            raise ConfigError(
                f"parameter 'url': provider azure needs the deployment's realtime URL, "
                f"{AZURE_URL_EXAMPLE}"
            )
        azure = azure_url(str(params["url"]))
    dialect = _dialect(
        provider,
        params.get("dialect")
        or ("openai-beta" if azure and azure[2].endswith("-preview") else None),
        emulator,
    )
    model = params.get("model") or (azure[1] if azure else p.DEFAULT_MODEL[dialect])
    builtin_tools = server_tools(params.get("server_tools"), dialect)
    collisions = tool_collisions(tuple(tools), builtin_tools)
    if collisions:
        raise ConfigError(f"parameter 'server_tools': {collisions[0]}")
    voice = params.get("voice") or p.DEFAULT_VOICE[dialect]
    transcription = params.get("transcription", True)
    if transcription is True:
        transcription = p.DEFAULT_TRANSCRIPTION_MODEL[dialect]  # "": the server's default
    elif not transcription:
        transcription = None
    session = p.SessionConfig(
        dialect=dialect,
        model=model,
        voice=voice,
        instructions=params.get("instructions"),
        input_format=_audio_format(
            params.get("input_format") or "pcm16", params.get("input_rate"), dialect, "input"
        ),
        output_format=_audio_format(
            params.get("output_format") or "pcm16", params.get("output_rate"), dialect, "output"
        ),
        turn_detection=_turn_detection(params.get("turn_detection", "server_vad")),
        tools=tuple(tools) + builtin_tools,
        transcription=transcription,
    )
    url = params.get("url") or ("" if provider == "emulator" else p.DEFAULT_URL[dialect])
    for key in ("connect_timeout_s", "session_timeout_s", "response_timeout_s"):
        value = params.get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"parameter '{key}' must be > 0, got {value}")
    max_s = params.get("max_session_s")
    if max_s is not None and max_s <= 0:
        raise ConfigError(f"parameter 'max_session_s' must be > 0, got {max_s}")
    for key in ("max_message_bytes", "max_audio_ahead_s"):
        value = params.get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"parameter '{key}' must be > 0, got {value}")
    append_ms = int(params.get("append_ms") or 20)
    if not 20 <= append_ms <= 100:
        raise ConfigError(
            f"parameter 'append_ms' must be 20 to 100 (ms of audio per append), got {append_ms}"
        )
    if azure:  # the deployment names the model; no ?model=
        url = azure[0]
    if dialect == "gemini":
        check_gemini_formats(session)
    return Settings(
        provider=provider,
        url=url if azure or dialect == "gemini" else (with_model(url, model) if url else ""),
        api_key_env=params.get("api_key_env")
        or (AZURE_API_KEY_ENV if azure else p.DEFAULT_API_KEY_ENV[dialect]),
        session=session,
        connect_timeout_s=float(params.get("connect_timeout_s") or 10.0),
        ready_timeout_s=float(params.get("session_timeout_s") or 5.0),
        response_timeout_s=float(params.get("response_timeout_s") or 30.0),
        max_session_s=max_s,
        reconnect_attempts=int(params.get("reconnect_attempts", 5)),
        max_message_bytes=int(params.get("max_message_bytes") or 8 * 1024 * 1024),
        max_audio_ahead_s=float(params.get("max_audio_ahead_s") or 120.0),
        append_ms=append_ms,
        emulator=emulator,
        greeting=forced_message(params.get("greeting"), dialect, "greeting"),
    )


def _fix_for(incoming: AudioFormat, wanted: AudioFormat) -> str:
    steps: list[str] = []
    rate_in = incoming.rate
    if incoming.encoding != "pcm16" and incoming.encoding != wanted.encoding:
        steps.append("{type: g711_decode}")
    if rate_in != wanted.rate:
        steps.append(f"{{type: resample, rate: {wanted.rate}}}")
    if wanted.encoding != "pcm16" and incoming.encoding != wanted.encoding:
        law = "ulaw" if wanted.encoding == "pcmu" else "alaw"
        steps.append(f"{{type: g711_encode, law: {law}}}")
    if incoming.channels != 1:
        return "feed it mono audio"
    alt = (
        f", or set input_rate: {incoming.rate}"
        if incoming.encoding == wanted.encoding == "pcm16"
        else ""
    )
    return f"add {' then '.join(steps)} before it{alt}"


#: Who documents each dialect's voices, for messages.
_VOICE_SOURCE: dict[p.Dialect, str] = {
    "xai": "xAI", "openai": "OpenAI", "openai-beta": "OpenAI", "gemini": "Google",
}  # fmt: skip


def voice_warnings(voice: str, dialect: p.Dialect) -> list[CheckWarning]:
    """A warning (never a refusal) for a voice the provider does not document: providers add
    voices and take custom voice IDs, so the name is sent as is. xAI's IDs are case-insensitive."""
    known = CODECS[dialect].voices
    name = voice.lower() if dialect == "xai" else voice
    if not known or name in known:
        return []
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? It is" if close else "it is"
    return [
        CheckWarning(
            "voice",
            f"voice '{voice}' is not one {_VOICE_SOURCE[dialect]} documents "
            f"({', '.join(known)}); {hint} sent as is, since providers add voices",
        )
    ]


def check_input_format(incoming: AudioFormat, wanted: AudioFormat, where: str = "") -> None:
    """Raise FormatError if ``incoming`` audio is not the session's input format. The message
    starts with ``where`` (e.g. ``stage 'agent'``); without it, with the verb, for the graph
    to put the link and stage in front."""
    if incoming != wanted:
        subject = f"{where} gets" if where else "gets"
        raise FormatError(
            f"{subject} {incoming} audio; its input is {wanted} (input_format/input_rate)",
            _fix_for(incoming, wanted),
        )


def output_format(params: Mapping[str, Any], input_format: AudioFormat | None) -> AudioFormat:
    try:
        s = resolve_settings(params)
    except ConfigError as exc:
        # before running, the graph names the stage and the file position itself
        raise UsageError("; ".join(p.message for p in exc.problems)) from None
    if input_format is not None:
        check_input_format(input_format, s.session.input_format)
    return s.session.output_format


def linked_tools(ctx: StageContext) -> tuple[Mapping[str, Any], ...]:
    """The function definitions every linked stage provides under :data:`TOOLS` (the
    ``tool_router``, or a user's own router), in link order."""
    return tuple(schema for provided in ctx.provided(TOOLS) for schema in provided)


def _tool_schemas(refs: list[Any], ctx: StageContext) -> list[dict[str, Any]]:
    from stages.tools import tool_schemas  # lazily: the tool router is optional

    return tool_schemas(refs, base_dir=ctx.base_dir)


def explicit_tools(tools: list[Any], ctx: StageContext) -> tuple[Mapping[str, Any], ...]:
    out: list[Mapping[str, Any]] = []
    refs = [t for t in tools if isinstance(t, str)]
    schemas = iter(_tool_schemas(refs, ctx)) if refs else iter(())
    for t in tools:
        if isinstance(t, str):
            out.append(next(schemas))
        elif isinstance(t, Mapping):
            out.append(dict(t))
        else:
            raise ConfigError(
                f"parameter 'tools': {t!r} is neither a 'module:function' nor a tool definition"
            )
    return tuple(out)


def preflight(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str]]:
    """What a run needs from the machine as it starts: the API key in its environment variable
    (the emulator takes any). Checked by ``pipeline run`` and ``pipeline serve`` before any
    stage starts; ``pipeline validate`` leaves it out so a file checks without the keys."""
    try:
        s = resolve_settings(values)
    except (ConfigError, FormatError):
        return []  # a bad parameter: pipeline validate has said it already
    if s.provider == "emulator" or os.environ.get(s.api_key_env, "").strip():
        return []
    param = "api_key_env" if values.get("api_key_env") else "provider"
    return [
        (
            param,
            f"environment variable {s.api_key_env} is not set (or blank), and every session "
            f"with provider {s.provider} needs the API key there; export {s.api_key_env}=... "
            "(or name another variable with api_key_env)",
        )
    ]


def check_params(values: Mapping[str, Any], base_dir: Path) -> list[tuple[str, str] | CheckWarning]:
    """Every problem with the parameters, before running (``pipeline validate``): the settings as
    the stage resolves them, the URL, the retry count, the emulator settings and tool refs; and a
    warning for a voice the provider does not document."""
    problems: list[tuple[str, str] | CheckWarning] = []

    def strip(exc: Exception) -> str:
        text = exc.message if isinstance(exc, FormatError) else str(exc)
        if isinstance(exc, FormatError) and exc.fix:
            text += f"; {exc.fix}"
        return text.removeprefix("<pipeline>: ")

    try:
        s = resolve_settings(values)
    except (ConfigError, FormatError) as exc:
        text = strip(exc)
        name = next((n for n in values if f"'{n}'" in text or text.startswith(n)), "")
        problems.append((name, text))
    else:
        if values.get("voice"):
            problems += voice_warnings(s.session.voice, s.dialect)
        if values.get("server_tools") and values.get("tools"):
            # the declared functions against the built-ins (their names, before importing)
            named = tuple(
                {"name": t.rsplit(":", 1)[-1]} if isinstance(t, str) else t
                for t in values["tools"]
                if isinstance(t, (str, Mapping))
            )
            builtins = server_tools(values["server_tools"], s.dialect)
            problems += [("tools", msg) for msg in tool_collisions(named, builtins)]
        if s.url and s.provider != "emulator" and s.url.startswith("ws://"):
            from .connection import plain_text_key_problem

            refused = plain_text_key_problem(s.url, s.api_key_env)
            if refused is not None:
                problems.append(("url", refused))
    url = values.get("url")
    if url and values.get("provider") == "azure":
        pass  # checked (https:// allowed) by resolve_settings above
    elif url and not str(url).startswith(("ws://", "wss://")):
        problems.append(("url", f"'url' must be a ws:// or wss:// address, got {url!r}"))
    attempts = values.get("reconnect_attempts", 5)
    if isinstance(attempts, int) and attempts < 0:
        problems.append(
            ("reconnect_attempts", f"'reconnect_attempts' must be 0 or more, got {attempts}")
        )
    emu = values.get("emulator")
    if emu:
        from .emulator import EmulatorConfig

        try:
            EmulatorConfig(**dict(emu))
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(x) for x in err["loc"])
                if err["type"] == "extra_forbidden":
                    text = f"'emulator' has no setting '{where}'; see docs/realtime-emulator.md"
                else:
                    text = f"'emulator.{where}': {err['msg']}, got {err.get('input')!r}"
                problems.append(("emulator", text))
    refs = [t for t in values.get("tools") or [] if isinstance(t, str)]
    if refs:
        from stages.tools import check_tools

        problems += [("tools", msg) for msg in check_tools({"tools": refs}, base_dir=base_dir)]
    return problems
