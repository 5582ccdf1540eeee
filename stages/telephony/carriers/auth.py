"""How the carriers sign: our requests to their APIs, and their webhooks to us.

* **Vonage, our requests**: the Voice API takes a JWT signed RS256 with the Vonage
  application's private key, with claims ``application_id``, ``iat``, ``exp`` and a unique
  ``jti`` (:func:`vonage_app_jwt`), sent as ``Authorization: Bearer <jwt>``.
* **Vonage, its webhooks** (signed callbacks): ``Authorization: Bearer <jwt>``, HS256 with the
  account's *signature secret*; its claims carry ``iat`` and ``payload_hash``, the SHA-256 (hex)
  of the request body (:func:`vonage_webhook_valid`).
* **Telnyx**: every webhook carries ``telnyx-signature-ed25519`` (base64 Ed25519 signature) and
  ``telnyx-timestamp`` (Unix seconds); the signed message is ``"{timestamp}|{raw body}"``,
  checked with the account's public key (base64, from the portal) and a 5-minute window against
  replays (:func:`telnyx_valid`).
* **Plivo** (``X-Plivo-Signature-V3``): base64 HMAC-SHA256, keyed with the auth token, of the
  URL (scheme, host, path; then ``?`` and the query parameters sorted, ``k=v`` joined by ``&``;
  for a POST with a body, ``.`` after a non-empty query, then the body's parameters sorted,
  each name followed by its value) followed by ``.`` and the ``X-Plivo-Signature-V3-Nonce``.
  The header may hold several signatures separated by commas (:func:`plivo_v3_valid`).

Pure functions over bytes and strings (``cryptography`` for RSA and Ed25519); the clock is an
argument. Nothing here logs, and no secret appears in an error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "JWT_LIFETIME_S",
    "TELNYX_TOLERANCE_S",
    "b64url",
    "jwt_hs256",
    "load_rsa_key",
    "plivo_v3_sign",
    "plivo_v3_valid",
    "telnyx_valid",
    "vonage_app_jwt",
    "vonage_webhook_valid",
]

JWT_LIFETIME_S = 15 * 60
TELNYX_TOLERANCE_S = 300
#: how old a Vonage webhook's ``iat`` may be (and how far in the future, for clock skew)
VONAGE_TOLERANCE_S = 300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


def load_rsa_key(pem: str | bytes) -> RSAPrivateKey:
    """An RSA private key from PEM text; ValueError (naming no key material) otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError("not a PEM private key (-----BEGIN PRIVATE KEY----- ...)") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(f"a {type(key).__name__}, not an RSA private key")
    return key


def vonage_app_jwt(application_id: str, key: RSAPrivateKey, *, now: float, jti: str = "") -> str:
    """A Vonage application JWT (RS256), valid from ``now`` for :data:`JWT_LIFETIME_S`."""
    header = {"alg": "RS256", "typ": "JWT"}
    iat = int(now)
    claims = {
        "application_id": application_id,
        "iat": iat,
        "exp": iat + JWT_LIFETIME_S,
        "jti": jti or str(uuid.uuid4()),
    }
    signing = f"{b64url(_json(header))}.{b64url(_json(claims))}"
    sig = key.sign(signing.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing}.{b64url(sig)}"


def jwt_hs256(claims: Mapping[str, Any], secret: str) -> str:
    """A JWT signed HS256 (what Vonage sends on signed webhooks; simulators use it)."""
    signing = f"{b64url(_json({'alg': 'HS256', 'typ': 'JWT'}))}.{b64url(_json(claims))}"
    mac = hmac.new(secret.encode(), signing.encode("ascii"), hashlib.sha256).digest()
    return f"{signing}.{b64url(mac)}"


def vonage_webhook_valid(secret: str, authorization: str | None, body: bytes, *, now: float) -> str:
    """'' when ``authorization`` (the header) is ``Bearer <jwt>`` signed HS256 with
    ``secret``, issued within :data:`VONAGE_TOLERANCE_S` of ``now``, whose ``payload_hash`` (if
    any) is the SHA-256 of ``body``; else what is wrong (for the log line)."""
    if not authorization or not authorization.startswith("Bearer "):
        return "no Authorization: Bearer JWT"
    parts = authorization[7:].strip().split(".")
    if len(parts) != 3:
        return "the Authorization JWT is not three dot-separated parts"
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        sig = _unb64url(parts[2])
    except (ValueError, binascii.Error):
        return "the Authorization JWT is not base64url JSON"
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return "the JWT is not HS256"
    signing = f"{parts[0]}.{parts[1]}".encode("ascii")
    want = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    if not hmac.compare_digest(want, sig):
        return "bad JWT signature"
    if not isinstance(claims, dict) or not isinstance(claims.get("iat"), int | float):
        return "the JWT has no iat"
    if abs(now - claims["iat"]) > VONAGE_TOLERANCE_S:
        return f"the JWT was issued {now - claims['iat']:.0f} s ago (the limit is 300 s)"
    if "exp" in claims and isinstance(claims["exp"], int | float) and now > claims["exp"]:
        return "the JWT has expired"
    digest = claims.get("payload_hash")
    if digest is not None and not hmac.compare_digest(
        str(digest).lower(), hashlib.sha256(body).hexdigest()
    ):
        return "payload_hash does not match the body"
    return ""


def telnyx_valid(
    public_key_b64: str,
    signature_b64: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = TELNYX_TOLERANCE_S,
) -> str:
    """'' when Telnyx signed ``body`` at ``timestamp`` (within ``tolerance_s`` of ``now``) with
    the key whose public half is ``public_key_b64``; else what is wrong."""
    if not signature_b64 or not timestamp:
        return "no telnyx-signature-ed25519 / telnyx-timestamp"
    try:
        ts = int(timestamp)
    except ValueError:
        return f"telnyx-timestamp {timestamp[:20]!r} is not Unix seconds"
    if abs(now - ts) > tolerance_s:
        return f"telnyx-timestamp is {now - ts:.0f} s off (the limit is {tolerance_s:.0f} s)"
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        sig = base64.b64decode(signature_b64, validate=True)
    except (ValueError, binascii.Error):
        return "the signature or the public key is not base64 Ed25519"
    try:
        key.verify(sig, f"{timestamp}|".encode() + body)
    except InvalidSignature:
        return "bad telnyx-signature-ed25519"
    return ""


def _plivo_base(url: str, method: str, form: Iterable[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    grouped: dict[str, list[str]] = {}
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        grouped.setdefault(k, []).append(v)
    query = "&".join(f"{k}={v}" for k in sorted(grouped) for v in sorted(grouped[k]))
    body: dict[str, list[str]] = {}
    if method.upper() == "POST":
        for k, v in form:
            body.setdefault(k, []).append(v)
    if query or body:
        base += "?" + query
    if query and body:
        base += "."
    return base + "".join(f"{k}{v}" for k in sorted(body) for v in sorted(body[k]))


def plivo_v3_sign(auth_token: str, url: str, nonce: str, method: str = "POST",
                  form: Iterable[tuple[str, str]] = ()) -> str:  # fmt: skip
    """``X-Plivo-Signature-V3`` for a request to ``url`` with these form parameters."""
    text = f"{_plivo_base(url, method, form)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), text, hashlib.sha256).digest()).decode()


def plivo_v3_valid(
    auth_token: str,
    url: str,
    nonce: str | None,
    signature: str | None,
    method: str = "POST",
    form: Iterable[tuple[str, str]] = (),
) -> str:
    """'' when one of the comma-separated ``signature``s is Plivo's for this request; else
    what is wrong."""
    if not signature or not nonce:
        return "no X-Plivo-Signature-V3 / X-Plivo-Signature-V3-Nonce"
    want = plivo_v3_sign(auth_token, url, nonce, method, form).encode()
    if any(hmac.compare_digest(want, s.strip().encode()) for s in signature.split(",")):
        return ""
    return "bad X-Plivo-Signature-V3"
