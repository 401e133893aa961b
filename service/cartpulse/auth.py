"""Tokens: who may append to a data source or read a pipe.

Tokens carry Tinybird's scopes (``ADMIN``, ``DATASOURCES:APPEND:<name>``,
``DATASOURCES:READ:<name>``, ``PIPES:READ:<name>``). Only a SHA-256 of a token is stored,
so a database dump leaks no credential; the plain token is shown once, at creation.
The admin token is ``TB_ADMIN_TOKEN`` when set, else one generated on first start and
kept (mode 0600) in the state folder so that it survives restarts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from pathlib import Path

import psycopg
from flask import current_app, request

from .errors import ApiError

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
        self._cache: dict[bytes, tuple[float, list[str] | None]] = {}
        self._lock = threading.Lock()

    def scopes(self, token: str) -> list[str] | None:
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        with self.db.psycopg() as conn:
            row = conn.execute("select scopes from cartpulse.tokens where token_hash = %s", [digest]).fetchone()
        scopes = list(row[0]) if row else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, scopes)
        return scopes


def request_token() -> str | None:
    """The token from ``Authorization: Bearer …`` or ``?token=``, as Tinybird accepts both."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.args.get("token") or None


def request_scopes() -> list[str]:
    """The scopes of the request's token; 401 JSON when it has none or an unknown one."""
    token = request_token()
    if not token:
        raise ApiError(401, "missing token: pass ?token=<token> or an 'Authorization: Bearer <token>' header")
    scopes = current_app.extensions["cartpulse"].tokens.scopes(token)
    if scopes is None:
        raise ApiError(401, "invalid token")
    return scopes


def allows(scopes: list[str], scope: str) -> bool:
    return ADMIN in scopes or scope in scopes


def require_scope(scope: str) -> list[str]:
    """Allow the request if its token is ADMIN or holds ``scope``; else 401/403 JSON."""
    scopes = request_scopes()
    if not allows(scopes, scope):
        raise ApiError(403, f"this token lacks the scope {scope}")
    return scopes
