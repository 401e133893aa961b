"""Tokens: who may append to a data source or read a pipe.

Tokens carry Tinybird's scopes (``ADMIN``, ``DATASOURCES:APPEND:<name>``,
``DATASOURCES:READ:<name>``, ``PIPES:READ:<name>``). Only a SHA-256 of a token is stored,
so a database dump leaks no credential; the plain token is shown once, at creation.
The admin token is ``TB_ADMIN_TOKEN`` when set, else one generated on first start and
kept (mode 0600) in the state folder so that it survives restarts. It is also the secret
that signs JWT read tokens (``jwt.py``).

Each request is resolved once into a ``Caller`` (its scopes, the fixed parameters a JWT
imposes, its rate-limit bucket); a request with a valid token then takes one request
from that token's rate limit (``ratelimit.py``).

Lookups are cached per process for ``CACHE_SECONDS``: the process that deletes or rotates
a token forgets it at once, other worker processes within that delay.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from flask import request

from cartpulse.access import jwt
from cartpulse.context import request_state, service, timed
from cartpulse.errors import ApiError

ADMIN = "ADMIN"
ADMIN_TOKEN_NAME = "admin token"
#: How long a looked-up token is trusted before it is read again (rotation delay).
CACHE_SECONDS = 2.0


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return "cp_" + secrets.token_urlsafe(32)


def ensure_admin_token(url: str, state_dir: Path, env_token: str | None) -> str:
    """Make the admin token valid in the database and return it (to be printed once)."""
    token = env_token
    if not token:
        path = state_dir / "admin_token"
        if path.exists():
            token = path.read_text().strip()
        else:
            state_dir.mkdir(parents=True, exist_ok=True)
            token = new_token()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(token + "\n")
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into cartpulse.tokens (name, token_hash, scopes) values (%s, %s, %s)"
            " on conflict (name) do update set token_hash = excluded.token_hash,"
            " scopes = excluded.scopes, updated_at = now()",
            [ADMIN_TOKEN_NAME, hash_token(token), [ADMIN]],
        )
    return token


class TokenStore:
    """Looks tokens up by hash, with a short per-process cache (one query per token per 2 s)."""

    def __init__(self, db):
        self.db = db
        self._cache: dict[bytes, tuple[float, tuple[str, list[str]] | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, token: str) -> tuple[str, list[str]] | None:
        """(name, scopes) of a token, or None for an unknown one."""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        with self.db.psycopg() as conn:
            row = conn.execute("select name, scopes from cartpulse.tokens where token_hash = %s",
                               [digest]).fetchone()
        found = (row[0], list(row[1])) if row else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, found)
        return found

    def scopes(self, token: str) -> list[str] | None:
        found = self.lookup(token)
        return found[1] if found else None

    def forget(self) -> None:
        """Drop every cached lookup (after a token was deleted or rotated here)."""
        with self._lock:
            self._cache.clear()


@dataclass(frozen=True)
class Caller:
    """Who is making the request, as far as authorization cares."""

    name: str
    scopes: list[str]
    #: pipe → parameters a signed token fixes (they override the query string)
    fixed_params: dict[str, dict] = field(default_factory=dict)
    #: the rate-limit bucket: a hash of the token, never the token itself
    bucket: bytes = b""


def admin_secret(state) -> str | None:
    """The admin token in plain text, the JWT secret: TB_ADMIN_TOKEN or the state file.

    Used only if the database says it is the admin token (it may be stale)."""
    secret = state.settings.admin_token
    if not secret:
        path = state.settings.state_dir / "admin_token"
        try:
            secret = path.read_text().strip()
        except OSError:
            return None
    scopes = state.tokens.scopes(secret)
    return secret if scopes is not None and ADMIN in scopes else None


def _resolve(token: str) -> Caller:
    state = service()
    if jwt.looks_like_jwt(token):
        secret = admin_secret(state)
        if secret is None:
            raise ApiError(401, "invalid token: JWTs cannot be verified (no admin token known to this server)")
        try:
            claims = jwt.verify(token, secret)
        except jwt.InvalidToken as err:
            raise ApiError(401, f"invalid token: {err}") from None
        return Caller(name=f"jwt:{claims.name}", scopes=claims.scopes, fixed_params=claims.pipes,
                      bucket=claims.identity)
    found = state.tokens.lookup(token)
    if found is None:
        raise ApiError(401, "invalid token")
    name, scopes = found
    return Caller(name=name, scopes=scopes, bucket=hash_token(token))


def request_caller() -> Caller:
    """The request's caller, resolved once per request; 401 JSON without a valid token,
    429 JSON when its rate limit is exhausted."""
    known = request_state()
    if known.caller is not None:
        return known.caller
    token = request_token()
    if not token:
        raise ApiError(401, "missing token: pass ?token=<token> or an 'Authorization: Bearer <token>' header")
    with timed("auth"):
        caller = _resolve(token)
    known.caller = caller
    with timed("ratelimit"):
        known.quota = service().limiter.check(caller.bucket)
    return caller


def add_rate_limit_headers(response):
    """after_request hook: every answer to an authenticated request shows its quota."""
    quota = request_state().quota
    if quota is not None:
        response.headers.update(quota.headers())
    return response


def request_token() -> str | None:
    """The token from ``Authorization: Bearer …`` or ``?token=``, as Tinybird accepts both."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.args.get("token") or None


def request_scopes() -> list[str]:
    """The scopes of the request's token; 401 JSON when it has none or an unknown one."""
    return request_caller().scopes


def allows(scopes: list[str], scope: str) -> bool:
    return ADMIN in scopes or scope in scopes


def require_scope(scope: str) -> list[str]:
    """Allow the request if its token is ADMIN or holds ``scope``; else 401/403 JSON."""
    scopes = request_scopes()
    if not allows(scopes, scope):
        raise ApiError(403, f"this token lacks the scope {scope}")
    return scopes
