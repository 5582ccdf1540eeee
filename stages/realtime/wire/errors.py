"""Error events both ways: reading the ``error`` events servers send (nested or flat), and the
refusal a strict server raises (:class:`WireError`) and turns into one.

Errors come nested (``{"type": "error", "error": {"type", "code", "message", "param",
"event_id"}}``, OpenAI and xAI's documented shape) or flat (``code``, ``message`` and ``params``
at the top level, as xAI's server also sends them); :func:`parse_error` reads both and
:func:`error_event` writes either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from pipeline.errors import SessionRemoteError

#: Error codes that are part of normal operation (a cancel racing the server's own cancel, a
#: response.create racing the server's VAD): logged at debug level, not reported as errors.
BENIGN_ERROR_CODES: frozenset[str] = frozenset(
    {"response_cancel_not_active", "conversation_already_has_active_response"}
)
#: Error codes and types after which the session cannot go on.
FATAL_ERROR_CODES: frozenset[str] = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "unauthorized",
        "forbidden",
        "permission_denied",
        "insufficient_quota",
        "model_not_found",
    }
)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A server error, whatever its shape."""

    code: str
    message: str
    type: str = ""
    param: str | None = None
    event_id: str | None = None


def parse_error(event: Mapping[str, Any]) -> ErrorInfo:
    """Read an ``error`` event, nested (``{"error": {...}}``) or flat (fields at the top)."""
    err = event.get("error")
    src: Mapping[str, Any] = err if isinstance(err, Mapping) else event
    code = src.get("code")
    etype = src.get("type") if src is not event else None
    message = src.get("message")
    param = src.get("param", src.get("params"))
    if not isinstance(message, str) or not message:
        message = err if isinstance(err, str) and err else "no message"
    return ErrorInfo(
        code=str(code) if code else str(etype or "error"),
        message=str(message),
        type=str(etype or ""),
        param=None if param is None else str(param),
        event_id=src.get("event_id") if isinstance(src.get("event_id"), str) else None,
    )


def is_fatal_error(info: ErrorInfo) -> bool:
    """True for errors after which the session cannot go on (bad key, no quota, ...)."""
    return info.code in FATAL_ERROR_CODES or info.type in FATAL_ERROR_CODES


class WireError(SessionRemoteError):
    """A client message a strict server refuses (from the server's side, the peer misbehaved).
    The server answers it with an ``error`` event (:func:`error_event`) and goes on.

    ``flat_message`` is what xAI's flat error shape says instead of ``message`` when it differs
    (its server reports some refusals only by the exception's class name)."""

    def __init__(
        self,
        code: str,
        message: str,
        param: str | None = None,
        *,
        type: str = "invalid_request_error",
        flat_message: str | None = None,
    ) -> None:
        super().__init__(message, code)
        self.message = message
        self.param = param
        self.type = type
        self.flat_message = flat_message


def unknown_parameter(param: str) -> WireError:
    """``Unknown parameter: 'session.foo'.`` (OpenAI's wording)."""
    return WireError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def missing_parameter(param: str) -> WireError:
    """``Missing required parameter: 'item'.``"""
    return WireError("missing_required_parameter", f"Missing required parameter: '{param}'.", param)


def bad_value(param: str, value: Any, supported: str = "") -> WireError:
    """``Invalid value: "x". Supported values are: ...`` (OpenAI's wording)."""
    msg = f"Invalid value: {orjson.dumps(value).decode()}."
    if supported:
        msg += f" Supported values are: {supported}."
    return WireError("invalid_value", msg, param)


def check_keys(obj: Mapping[str, Any], allowed: frozenset[str], prefix: str) -> None:
    """Refuse the first key of ``obj`` not in ``allowed`` as ``prefix.key``."""
    for key in obj:
        if key not in allowed:
            raise unknown_parameter(f"{prefix}.{key}")


def error_event(
    err: WireError, shape: Literal["nested", "flat"] = "nested", client_event_id: Any = None
) -> dict[str, Any]:
    """The ``error`` event (without ``event_id``) that answers ``err``."""
    if shape == "flat":
        return {
            "type": "error",
            "code": err.code,
            "message": err.flat_message or err.message,
            "params": err.message if err.flat_message else err.param,
            "previous_item_id": None,
        }
    return {
        "type": "error",
        "error": {
            "type": err.type,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "event_id": client_event_id if isinstance(client_event_id, str) else None,
        },
    }
