"""What the servers that answer callers share (``pipeline serve``, ``pipeline playground``):
the command-line options for where to listen and which token to ask for, the token check, and
plain HTTP answers given before a WebSocket upgrade.

Each server keeps its own policy (which paths need the token, what a refusal says); the check
itself, and the options a user types the same way for both commands, live here once.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
from collections.abc import Mapping
from urllib.parse import parse_qs

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = [
    "add_listen_arguments",
    "http_response",
    "is_loopback",
    "token_of",
    "token_refusal",
]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Content Too Large",
    503: "Service Unavailable",
}


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or a URL's host, never resolved) names this machine's
    loopback interface: 127.0.0.0/8, ::1 (bracketed or not), ``localhost``."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_listen_arguments(
    p: argparse.ArgumentParser, *, port: int, token_env: str, token_help: str
) -> None:
    """The options both servers take the same way: the pipelines file and name, ``--host``,
    ``--port``, ``--token-env`` and ``--set``."""
    p.add_argument("file", help="the pipelines YAML file")
    p.add_argument("name", nargs="?", help="pipeline name (default: the first)")
    p.add_argument("--pipeline", dest="pipeline_name", help="pipeline name (same as NAME)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=port, help=f"port ({port}; 0 picks a free one)")
    p.add_argument(
        "--token-env",
        default=token_env,
        help=f"environment variable holding the token (default {token_env}); {token_help}",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="ID.PARAM=VALUE")


def token_of(headers: Mapping[str, str], query: str, *, headers_too: bool = True) -> str | None:
    """The token a request carries: ``?token=``, else (``headers_too``) ``Authorization:
    Bearer ...`` or ``X-Pipeline-Token``; None when it carries none."""
    values = parse_qs(query).get("token")
    if values:
        return values[0]
    if not headers_too:
        return None
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    header = headers.get("X-Pipeline-Token")
    return header if header else None


def token_refusal(given: str | None, expected: str) -> str:
    """'' when ``given`` is the token (compared in constant time), else why not:
    ``unauthenticated`` (none given) or ``bad_token``."""
    if given is None:
        return "unauthenticated"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "bad_token"
    return ""


def http_response(
    status: int,
    body: bytes | str,
    content_type: str = "text/plain; charset=utf-8",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A plain HTTP answer to give instead of the upgrade (``process_request``'s return)."""
    data = body.encode() if isinstance(body, str) else body
    h = Headers({"Content-Type": content_type, "Content-Length": str(len(data))})
    for k, v in (headers or {}).items():
        h[k] = v
    return Response(status, _REASONS.get(status, "Error"), h, data)
