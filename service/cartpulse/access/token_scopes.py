"""Tinybird's scope objects, and JWTs minted on request: ``POST /v0/tokens/`` with a JSON body.

CartPulse stores a scope as one string (``PIPES:READ:top_products``). Tinybird's API
and SDKs speak in objects, ``{"type": "PIPES:READ", "resource": "top_products",
"fixed_params": {...}}``: tokens are listed and answered with objects, and a JSON body
of objects creates one (``?scope=`` strings keep working, and a body may give
``scope``: a string or a list of them, as Tinybird's TypeScript SDK can).

With ``expiration_time`` (epoch seconds) the answer is a JWT (jwt.py), signed with the
admin token and stored nowhere, as Tinybird's SDKs ask for one (``createJWT``,
``create_jwt``): they read ``token`` only. A JWT grants ``PIPES:READ`` alone (what
jwt.py honours), each on a pipe that exists, and its ``fixed_params`` must be parameters
that pipe declares, with values it accepts: a token that cannot do what it says is
refused now, not discovered later by its user. What CartPulse does not do is refused by
name: a data source scope's ``filter`` (row filters on data sources), ``limits``
(per-token rate limits: ``RATE_LIMIT_RPS`` applies to every token), ``fixed_params`` on
a static token.
"""

from __future__ import annotations

import time

from cartpulse.access import jwt
from cartpulse.access.auth import ADMIN
from cartpulse.errors import ApiError
from cartpulse.project.params import parse_request

_SCOPE_KEYS = {"type", "resource", "fixed_params"}
_BODY_KEYS = {"name", "scopes", "scope", "description", "limits"}


def as_object(scope: str) -> dict:
    """``PIPES:READ:x`` → ``{"type": "PIPES:READ", "resource": "x"}``; ``ADMIN`` → ``{"type": "ADMIN"}``."""
    if scope == ADMIN:
        return {"type": ADMIN}
    kind, _, resource = scope.rpartition(":")
    return {"type": kind, "resource": resource}


def _as_string(scope) -> str:
    if isinstance(scope, str):
        return scope
    if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
        raise ApiError(400, "a scope is a string or an object with a 'type' (and a 'resource')")
    unknown = sorted(set(scope) - _SCOPE_KEYS)
    if unknown:
        raise ApiError(400, f"scope key {unknown[0]!r} is not supported"
                            + (": CartPulse has no row filters on data sources" if unknown[0] == "filter" else ""))
    if scope["type"] == ADMIN:
        return ADMIN
    if not isinstance(scope.get("resource"), str):
        raise ApiError(400, f"scope {scope['type'][:40]!r} needs a 'resource' (a string)")
    return f"{scope['type']}:{scope['resource']}"


def read_body(body) -> tuple[str | None, list, list[str]]:
    """A JSON body → (name, the scope objects/strings as sent, the scopes as strings)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object: {\"name\": …, \"scopes\": [{\"type\": …, \"resource\": …}]}")
    unknown = sorted(set(body) - _BODY_KEYS)
    if unknown:
        raise ApiError(400, f"body key {unknown[0]!r} is not supported")
    if body.get("limits"):
        raise ApiError(400, "'limits' is not supported: per-token rate limits do not exist here"
                            " (RATE_LIMIT_RPS applies to every token)")
    sent = body.get("scopes") or []
    single = body.get("scope")
    sent = [*sent, *(single if isinstance(single, list) else [single] if single else [])]
    if not isinstance(sent, list):
        raise ApiError(400, "'scopes' must be a list")
    return body.get("name"), sent, [_as_string(s) for s in sent]


def static_scopes(sent: list) -> None:
    """A stored token cannot carry fixed parameters (only a JWT can)."""
    if any(isinstance(s, dict) and s.get("fixed_params") for s in sent):
        raise ApiError(400, "fixed_params are only for JWTs: pass expiration_time to mint one")


def expiration(text: str) -> int:
    try:
        exp = int(text)
    except ValueError:
        raise ApiError(400, "expiration_time must be epoch seconds (an integer)", parameter="expiration_time") from None
    if exp <= time.time() or exp > jwt.MAX_EXP:
        raise ApiError(400, "expiration_time must be in the future (epoch seconds)", parameter="expiration_time")
    return exp


def mint(name: str, exp: int, sent: list, catalog, secret: str) -> tuple[str, list[dict]]:
    """A JWT for these scope objects; (token, the scopes as granted)."""
    granted = []
    for scope in sent:
        scope = as_object(scope) if isinstance(scope, str) else scope
        if scope.get("type") != "PIPES:READ":
            raise ApiError(400, f"a JWT grants PIPES:READ only, not {str(scope.get('type'))[:40]!r}")
        endpoint = catalog.get(scope.get("resource"))
        if endpoint is None:
            raise ApiError(400, f"pipe '{str(scope.get('resource'))[:100]}' not found")
        fixed = scope.get("fixed_params") or {}
        if not isinstance(fixed, dict):
            raise ApiError(400, "fixed_params must be an object")
        unknown = sorted(set(fixed) - {p.name for p in endpoint.params})
        if unknown:
            raise ApiError(400, f"pipe '{endpoint.name}' has no parameter {unknown[0]!r} to fix")
        try:
            parse_request(endpoint.params, {}, fixed=jwt.fixed_values(fixed))  # a 400 naming a bad value
        except jwt.InvalidToken as err:
            raise ApiError(400, str(err)) from None
        granted.append({"type": "PIPES:READ", "resource": endpoint.name, **({"fixed_params": fixed} if fixed else {})})
    if not granted:
        raise ApiError(400, "give at least one scope")
    return jwt.sign({"name": name, "exp": exp, "scopes": granted}, secret), granted
