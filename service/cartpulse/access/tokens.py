"""Managing tokens: create, list, refresh (rotate) and delete, over ``/v0/tokens`` and the CLI.

The HTTP shape is Tinybird's: ``POST /v0/tokens?name=N&scope=S&scope=S2`` (or a JSON
body of scope objects; with ``expiration_time``, a JWT: token_scopes.py) answers the new
token once, in JSON; ``GET /v0/tokens`` lists names and scopes as Tinybird's objects
(``{"type", "resource"}``; never a secret, none is stored); ``POST /v0/tokens/<name>/refresh`` replaces the secret (the old one stops working);
``DELETE /v0/tokens/<name>``. Only an ADMIN token may do any of it. The CLI
(``cartpulse token …``) calls the same functions with a direct database connection.

The admin token itself is managed by ``TB_ADMIN_TOKEN`` (or the state file) and signs JWTs:
it cannot be deleted or refreshed here, and no other token may be named like it.
"""

from __future__ import annotations

import re

import psycopg
from flask import Blueprint, jsonify, request

from cartpulse.access.auth import (
    ADMIN,
    ADMIN_TOKEN_NAME,
    admin_secret,
    hash_token,
    new_token,
    require_scope,
)
from cartpulse.access.token_scopes import (
    as_object,
    expiration,
    mint,
    read_body,
    static_scopes,
)
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.project.datasources import DataSource

bp = Blueprint("tokens", __name__)

_RESOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_NAME = 200


class TokenError(ValueError):
    """A request to manage tokens that cannot be done; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_scope(scope: str, datasources: dict[str, DataSource]) -> str:
    """Return ``scope`` if CartPulse knows it, else raise TokenError(400) saying why.

    A data-source scope names a declared data source: APPEND one, READ one or its
    quarantine (reading a quarantine still needs ADMIN: it holds raw client input)."""
    if scope == ADMIN:
        return scope
    kind, _, resource = scope.rpartition(":")
    if kind not in ("DATASOURCES:APPEND", "DATASOURCES:READ", "PIPES:READ") or not _RESOURCE.fullmatch(resource):
        raise TokenError(400, f"unknown scope {scope[:100]!r}: use ADMIN, DATASOURCES:APPEND:<name>,"
                              " DATASOURCES:READ:<name> or PIPES:READ:<pipe>")
    if kind == "DATASOURCES:APPEND" and resource not in datasources:
        raise TokenError(400, f"data source '{resource}' does not accept appends")
    readable = {*datasources, *(s.quarantine for s in datasources.values())}
    if kind == "DATASOURCES:READ" and resource not in readable:
        raise TokenError(400, f"data source '{resource}' not found")
    return scope


def check_name(name: str | None) -> str:
    if not name or not name.strip():
        raise TokenError(400, "missing the 'name' parameter")
    if len(name) > MAX_NAME or "\x00" in name or not name.isprintable():
        raise TokenError(400, f"a token name is at most {MAX_NAME} printable characters")
    return name


def _is_admin_token(name: str) -> None:
    if name == ADMIN_TOKEN_NAME:
        raise TokenError(400, "the admin token is set by TB_ADMIN_TOKEN (or .cartpulse/admin_token)"
                              " and signs JWTs: it cannot be changed here")


def create(conn: psycopg.Connection, name: str, scopes: list[str], datasources: dict[str, DataSource]) -> str:
    """Store a new token's hash and scopes; return the token (its only appearance).
    ``datasources``: the declared ones, which data-source scopes may name."""
    check_name(name)
    _is_admin_token(name)
    if not scopes:
        raise TokenError(400, "give at least one 'scope'")
    scopes = list(dict.fromkeys(check_scope(s, datasources) for s in scopes))
    token = new_token()
    try:
        conn.execute("insert into cartpulse.tokens (name, token_hash, scopes) values (%s, %s, %s)",
                     [name, hash_token(token), scopes])
    except psycopg.errors.UniqueViolation:
        raise TokenError(409, f"a token named '{name}' exists: refresh or delete it") from None
    return token


def listing(conn: psycopg.Connection) -> list[dict]:
    rows = conn.execute("select name, scopes, created_at, updated_at from cartpulse.tokens order by name").fetchall()
    return [{"name": n, "scopes": list(s), "created_at": c.isoformat(), "updated_at": u.isoformat()}
            for n, s, c, u in rows]


def refresh(conn: psycopg.Connection, name: str) -> str:
    """Give the token a new secret; the old one is refused from now on."""
    _is_admin_token(name)
    token = new_token()
    row = conn.execute("update cartpulse.tokens set token_hash = %s, updated_at = now() where name = %s"
                       " returning name", [hash_token(token), name]).fetchone()
    if row is None:
        raise TokenError(404, f"token '{name}' not found")
    return token


def delete(conn: psycopg.Connection, name: str) -> None:
    _is_admin_token(name)
    if conn.execute("delete from cartpulse.tokens where name = %s returning name", [name]).fetchone() is None:
        raise TokenError(404, f"token '{name}' not found")


def _state():
    return service()


def _run(operation, *args):
    """Run one operation in a transaction, as the admin; TokenError becomes the JSON error."""
    require_scope(ADMIN)
    state = _state()
    try:
        with state.db.psycopg() as conn:
            result = operation(conn, *args)
    except TokenError as err:
        raise ApiError(err.status, str(err)) from None
    # This process forgets cached lookups at once; other workers within CACHE_SECONDS.
    state.tokens.forget()
    return result


def _answer(name: str, token: str):
    with _state().db.psycopg() as conn:
        row = conn.execute("select scopes from cartpulse.tokens where name = %s", [name]).fetchone()
    return jsonify(name=name, token=token, scopes=[as_object(s) for s in (row[0] if row else [])])


@bp.post("/v0/tokens", strict_slashes=False)  # Tinybird's SDKs post to /v0/tokens/
def post_token():
    """``?name=&scope=`` strings, or a JSON body of scope objects; with
    ``expiration_time``, a JWT instead of a stored token (token_scopes.py)."""
    require_scope(ADMIN)
    name, sent, scopes = request.args.get("name"), [], request.args.getlist("scope")
    if request.mimetype == "application/json":
        body_name, sent, from_body = read_body(request.get_json(silent=True))
        name, scopes = body_name or name, scopes + from_body
    expiration_time = request.args.get("expiration_time") or request.args.get("expiration")
    if expiration_time is not None:
        return _jwt(name, expiration_time, [*sent, *request.args.getlist("scope")])
    static_scopes(sent)
    token = _run(create, name, scopes, _state().datasources)
    return _answer(name, token)


def _jwt(name: str | None, expiration_time: str, sent: list):
    require_scope(ADMIN)
    state = _state()
    try:
        name = check_name(name)
    except TokenError as err:
        raise ApiError(err.status, str(err)) from None
    secret = admin_secret(state)
    if secret is None:
        raise ApiError(503, "no admin token is known to this server to sign JWTs with")
    token, granted = mint(name, expiration(expiration_time), sent, state.catalog, secret)
    return jsonify(token=token, name=name, scopes=granted, expiration_time=int(expiration_time))


@bp.get("/v0/tokens", strict_slashes=False)
def list_tokens():
    tokens = _run(listing)
    return jsonify(tokens=[{**t, "scopes": [as_object(s) for s in t["scopes"]]} for t in tokens])


@bp.post("/v0/tokens/<path:name>/refresh")
def refresh_token(name: str):
    token = _run(refresh, name)
    return _answer(name, token)


@bp.delete("/v0/tokens/<path:name>")
def delete_token(name: str):
    _run(delete, name)
    return "", 204
