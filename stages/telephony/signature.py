"""``X-Twilio-Signature``: how Twilio signs every request it makes, and the check.

Twilio signs each webhook, status callback and Media Streams WebSocket upgrade with the account's
auth token: HMAC-SHA1 over the full URL it requested (scheme, host, port if any, path, query
string), followed, for a form-encoded POST, by every parameter name and value sorted by name
(and a name's values sorted), base64-encoded. Twilio is not consistent about the port: a URL may
have been signed with or without it, so :func:`valid` accepts either (as Twilio's own
``RequestValidator`` does).

Pure functions, no I/O; the server calls :func:`valid` before it starts anything for a request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["HEADER", "Params", "sign", "url_variants", "valid"]

#: The header that carries the signature.
HEADER = "X-Twilio-Signature"

#: Form parameters as parsed (a name may repeat): a mapping of name -> value or values, or the
#: ordered list of (name, value) pairs.
Params = Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]

_DEFAULT_PORT = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def _pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, Mapping):
        out: list[tuple[str, str]] = []
        for name, value in params.items():
            if isinstance(value, str):
                out.append((name, value))
            else:
                out.extend((name, v) for v in value)
        return out
    return list(params)


def sign(auth_token: str, url: str, params: Params | None = None) -> str:
    """The signature Twilio sends for a request to ``url`` with these POST ``params`` (none for
    a GET, such as the WebSocket upgrade)."""
    grouped: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        grouped.setdefault(name, set()).add(value)
    text = url + "".join(n + v for n in sorted(grouped) for v in sorted(grouped[n]))
    mac = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def url_variants(url: str) -> tuple[str, ...]:
    """``url`` as given, without its port, and with the scheme's default port: the forms Twilio
    may have signed."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    userinfo = userinfo + "@" if userinfo else ""
    try:
        port = parts.port
    except ValueError:
        return (url,)
    host = hostport.rsplit(":", 1)[0] if port is not None else hostport
    bare = urlunsplit(parts._replace(netloc=userinfo + host))
    default = _DEFAULT_PORT.get(parts.scheme.lower())
    with_port = url
    if port is None and default is not None:
        with_port = urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{default}"))
    return tuple(dict.fromkeys((url, bare, with_port)))


def valid(auth_token: str, url: str, params: Params | None, signature: str | None) -> bool:
    """True when ``signature`` (the header's value; None when absent) is Twilio's for this
    request, with or without the port in the URL. Compared in constant time."""
    if not signature or not auth_token:
        return False
    given = signature.strip().encode()
    pairs = _pairs(params)
    return any(
        hmac.compare_digest(sign(auth_token, u, pairs).encode(), given) for u in url_variants(url)
    )
