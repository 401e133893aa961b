"""Signed read tokens (JWT), as Tinybird issues them: HS256, signed with the admin token.

A backend that holds the admin token can mint short-lived read tokens for its own users
without asking CartPulse: ``{"exp": <epoch seconds>, "name": "...", "scopes": [{"type":
"PIPES:READ", "resource": "<pipe>", "fixed_params": {"country": "France"}}]}``. A fixed
parameter replaces whatever the query string says, so a token minted for France only
ever reads France. Only ``PIPES:READ`` scopes grant anything; ``exp`` is required.

Verified with the standard library (HMAC-SHA256 and a constant-time comparison): the
header must say ``HS256`` (never ``none`` or another algorithm chosen by the caller).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass, field

#: Longest JWT accepted, in characters: a token is a header, not a payload.
MAX_LENGTH = 8192
#: Largest ``exp`` accepted (the year 10000): beyond, no clock will ever get there.
MAX_EXP = 253_402_300_800


class InvalidToken(ValueError):
    """The text is not a valid, unexpired JWT signed with the admin token."""


@dataclass(frozen=True)
class Claims:
    name: str
    expires: int
    #: pipe name → its fixed parameters (empty dict when none)
    pipes: dict[str, dict] = field(default_factory=dict)
    #: A digest of the claims (keys sorted): what the token *is*, whatever its spelling;
    #: the rate-limit bucket of every request made with it.
    identity: bytes = b""

    @property
    def scopes(self) -> list[str]:
        return [f"PIPES:READ:{pipe}" for pipe in self.pipes]


def looks_like_jwt(token: str) -> bool:
    """CartPulse's own tokens have no dots; a JWT has exactly two."""
    return token.count(".") == 2


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64decode(part: str) -> bytes:
    """Strict base64url: the alphabet only, no padding, and the one canonical spelling
    (unused trailing bits zero). Python's decoder is lenient — it skips stray characters
    and ignores trailing bits — so one token would have many accepted spellings, each
    its own rate-limit bucket and log line."""
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidToken("not base64url")
    try:
        data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("not base64url") from None
    if b64encode(data) != part:
        raise InvalidToken("not canonical base64url")
    return data


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(payload: dict, secret: str) -> str:
    """Mint a JWT (what a backend does; used by the tests and the documentation)."""
    header = b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64encode(json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{body}.{b64encode(signature)}"


def fixed_values(fixed: dict) -> dict[str, str]:
    """A scope's fixed parameters as the query string would carry them: a string or a
    number as text, a list (an Array parameter's values) joined with commas."""
    values = {}
    for key, value in fixed.items():
        if isinstance(value, list):
            if not value or any(isinstance(v, (dict, list)) or v is None or "," in str(v) for v in value):
                raise InvalidToken("a fixed_params list holds strings or numbers, none with a comma")
            values[str(key)] = ",".join(str(v) for v in value)
        elif isinstance(value, dict) or value is None:
            raise InvalidToken("fixed_params values must be strings or numbers (or a list of them)")
        else:
            values[str(key)] = str(value)
    return values


def verify(token: str, secret: str, now: float | None = None) -> Claims:
    """Check signature, algorithm and expiry; return the claims or raise InvalidToken.

    ``exp`` is a timestamp, the issuer's wall clock: it is compared with the wall clock
    (``now``, else ``time.time()``) at every check, never with a monotonic clock nor a
    cached verdict, and with no leeway. So a clock set back makes a token live as much
    longer, and one set forward ends it sooner; what a monotonic clock would measure (a
    duration since start) is not what the issuer wrote."""
    if len(token) > MAX_LENGTH or not token.isascii() or not looks_like_jwt(token):
        raise InvalidToken("malformed")
    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = json.loads(_b64decode(header_b64))
    except ValueError:
        raise InvalidToken("malformed header") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("only HS256 is accepted")
    expected = hmac.new(secret.encode(), f"{header_b64}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _b64decode(signature_b64)):
        raise InvalidToken("bad signature")
    try:
        payload = json.loads(_b64decode(payload_b64))
    except ValueError:
        raise InvalidToken("malformed payload") from None
    if not isinstance(payload, dict):
        raise InvalidToken("malformed payload")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise InvalidToken("exp (epoch seconds) is required")
    # json reads NaN, Infinity and 1e309 (infinite) as floats: none is a time.
    if not math.isfinite(exp) or abs(exp) > MAX_EXP:
        raise InvalidToken("exp must be a finite number of epoch seconds")
    if exp <= (time.time() if now is None else now):
        raise InvalidToken("expired")
    pipes: dict[str, dict] = {}
    for scope in payload.get("scopes") or []:
        if not isinstance(scope, dict) or scope.get("type") != "PIPES:READ":
            continue  # only pipe reads can be delegated by a JWT
        resource, fixed = scope.get("resource"), scope.get("fixed_params") or {}
        if not isinstance(resource, str) or not isinstance(fixed, dict):
            raise InvalidToken("a scope needs a resource (string) and fixed_params (object)")
        pipes[resource] = fixed_values(fixed)
    return Claims(name=str(payload.get("name") or "jwt"), expires=int(exp), pipes=pipes,
                  identity=hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).digest())
