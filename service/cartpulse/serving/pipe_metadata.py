"""Describing pipes as Tinybird does: ``GET /v0/pipes`` and ``GET /v0/pipes/<name>``.

A CartPulse pipe is one dbt model, so it has one node: the model, its SQL as written
(dbt Jinja, not ClickHouse SQL), its parameters and what it reads. Tinybird's keys
(``id``, ``name``, ``description``, ``type``, ``endpoint``, ``nodes``, ``url``,
``created_at``, ``updated_at``, ``parent``) come first; CartPulse's own (``columns``,
``params``, ``endpoints``) are kept beside them, so older CartPulse clients read the
listing as before. Ids are not stored anywhere: each is derived from the pipe's name
(``t_`` and 32 hex digits, Tinybird's spelling), so it is the same on every server and
after every ``dbt run``. Types in ``nodes`` are Tinybird's names (``Int`` is ``Int64``,
a ``double precision`` column ``Float64``); a parameter is optional (``required``:
false, its default null at least) unless its yml says ``required: true``.

Only pipes the token may read are listed; a pipe it may not read is a 403, as reading
it would be. ``url`` is under PUBLIC_URL when set, else a path: never built from the
request's Host header.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from flask import Blueprint, jsonify, request

from cartpulse.access.auth import allows, request_scopes, require_scope
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.project import types
from cartpulse.serving.render import PIPE_FORMATS

bp = Blueprint("pipe_metadata", __name__)


def tinybird_id(*parts: str) -> str:
    """A stable id in Tinybird's spelling, derived from names."""
    return "t_" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _tinybird_type(data_type: str | None) -> str:
    kind = types.of_sql(data_type)
    return kind.tinybird if kind else "String"


def _params(endpoint) -> list[dict]:
    return [{"name": p.name, "type": p.tinybird_type, "default": p.default, "description": p.description,
             "required": p.required} for p in endpoint.params]


def describe(endpoint, public_url: str | None) -> dict:
    """One pipe: Tinybird's keys, then CartPulse's."""
    node_id = tinybird_id(endpoint.name, "node")
    created = _time(endpoint.created_at)
    node = {"id": node_id, "name": endpoint.name, "sql": endpoint.sql, "description": endpoint.description,
            "materialized": None, "node_type": "endpoint", "dependencies": list(endpoint.depends_on),
            "params": _params(endpoint), "columns": [{"name": c.name, "type": _tinybird_type(c.data_type)}
                                                     for c in endpoint.columns],
            "created_at": created, "updated_at": created}
    return {
        "id": tinybird_id(endpoint.name), "name": endpoint.name, "description": endpoint.description,
        "type": "endpoint", "endpoint": node_id, "parent": None, "created_at": created, "updated_at": created,
        "url": f"{(public_url or '').rstrip('/')}/v0/pipes/{endpoint.name}.json", "nodes": [node],
        # CartPulse's keys, as the listing always had them (types as declared: Int, not Int64).
        "columns": [{"name": c.name, "type": c.data_type, "description": c.description} for c in endpoint.columns],
        "params": [{"name": p.name, "type": p.type, "default": p.default, "description": p.description}
                   for p in endpoint.params],
        "endpoints": [f"/v0/pipes/{endpoint.name}.{fmt}" for fmt in PIPE_FORMATS],
        "derivation": derivation(endpoint),
    }


def derivation(endpoint) -> dict:
    """Whether the endpoint's SQL is in the class CartPulse answers from rollups it derives
    (project/derivation.py), and which rollups those are; else why it is served as written.
    ``answered_from`` is ``derived`` when reads call the answer built from those rollups,
    ``sql`` when they call the endpoint's own function (not derivable, or not derived
    since its SQL last changed: ops/derive.py)."""
    answered_from = "derived" if endpoint.answer else "sql"
    if endpoint.derivation is None:
        return {"derivable": False, "reason": endpoint.as_written, "rollups": [], "answered_from": answered_from}
    return {"derivable": True, "reason": None, "rollups": [r.describe() for r in endpoint.rollups],
            "answered_from": answered_from}


def _catalog():
    catalog = service().catalog
    if not catalog.built:
        raise ApiError(503, "the dbt models are not built yet: run `cartpulse build`", headers={"Retry-After": "5"})
    return catalog


def pipe_metadata(name: str):
    """``GET /v0/pipes/<name>`` (routed by pipes.py, which owns ``/v0/pipes/<file>``)."""
    endpoint = _catalog().get(name)
    if endpoint is None:
        raise ApiError(404, f"pipe '{name}' not found")
    require_scope(f"PIPES:READ:{name}")
    return jsonify(describe(endpoint, service().settings.public_url))


@bp.get("/v0/pipes", strict_slashes=False)  # Tinybird's clients call /v0/pipes/
def list_pipes():
    """The pipes this token may read."""
    scopes = request_scopes()
    public_url = service().settings.public_url
    pipes = [_selected(describe(e, public_url)) for e in sorted(service().catalog.all().values(), key=lambda e: e.name)
             if allows(scopes, f"PIPES:READ:{e.name}")]
    return jsonify(pipes=pipes)


def _keys(name: str) -> set[str] | None:
    value = request.args.get(name)
    return {k.strip() for k in value.split(",") if k.strip()} if value else None


def _selected(pipe: dict) -> dict:
    """Tinybird's listing options: ``attrs`` (the pipe's keys to keep), ``node_attrs``
    (each node's) and ``dependencies`` (``false``: without the nodes' dependencies)."""
    attrs, node_attrs = _keys("attrs"), _keys("node_attrs")
    dependencies = request.args.get("dependencies", "true").lower()
    if dependencies not in ("true", "false"):
        raise ApiError(400, "dependencies must be true or false", parameter="dependencies")
    nodes = []
    for node in pipe["nodes"]:
        node = {k: v for k, v in node.items() if node_attrs is None or k in node_attrs}
        if dependencies == "false":
            node.pop("dependencies", None)
        nodes.append(node)
    pipe = {**pipe, "nodes": nodes}
    return {k: v for k, v in pipe.items() if attrs is None or k in attrs}
