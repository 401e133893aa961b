"""Pipe endpoints: ``GET /v0/pipes/<model>.json|.csv|.ndjson``.

Which models are pipes comes from the catalog (the dbt project's declarations); the
relation queried is the one dbt built, quoted as an identifier, never text from the
request. ``statistics.rows_read`` is the number of table rows this query's transaction
read (``pg_stat_xact_user_tables``); ``bytes_read`` estimates their size from each
table's average row width. Parallel workers keep their own counters, so pipe queries
run without them: the counts are then exact, and the models answer from small tables.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request
from psycopg import sql

from .auth import allows, request_caller, request_scopes, require_scope
from .errors import ApiError
from .params import parse_request
from .render import FORMATS, render, type_name

bp = Blueprint("pipes", __name__)

# Rows read so far per table. The backend's counters are not reset between
# transactions (they are flushed when it goes idle), so a query's reads are the
# difference of two readings taken inside its transaction.
_TUPLES = "select relid, seq_tup_read + coalesce(idx_tup_fetch, 0) from pg_stat_xact_user_tables"
# Average bytes per row of each table: its size over its (estimated) row count.
_WIDTHS = """
select c.oid, pg_relation_size(c.oid)::float8 / greatest(
    case when c.reltuples >= 0 then c.reltuples else pg_stat_get_live_tuples(c.oid) end, 1)
from pg_class c where c.oid = any(%s)
"""


def _reads(conn) -> dict[int, int]:
    return dict(conn.execute(_TUPLES).fetchall())


def _read_statistics(conn, before: dict[int, int]) -> tuple[int, int]:
    """(rows_read, bytes_read) since ``before``, measured in the same transaction."""
    delta = {rel: n - before.get(rel, 0) for rel, n in _reads(conn).items() if n != before.get(rel, 0)}
    if not delta:
        return 0, 0
    widths = dict(conn.execute(_WIDTHS, [list(delta)]).fetchall())
    return sum(delta.values()), int(sum(n * widths.get(rel, 0.0) for rel, n in delta.items()))


def _state():
    return current_app.extensions["cartpulse"]


def endpoint_query(endpoint, values: dict) -> sql.Composed:
    """``select * from <schema>.<endpoint>(<param> => %(param)s, …)``: names from the
    declarations, values bound; absent parameters take the function's defaults."""
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in values)
    return sql.SQL("select * from {}.{}({})").format(
        sql.Identifier(endpoint.schema), sql.Identifier(endpoint.relation), args)


def run_endpoint(endpoint, values: dict) -> tuple[list[dict], list[tuple], dict]:
    """Query one endpoint with validated parameter values; return (meta, rows, statistics)."""
    started = time.perf_counter()
    with _state().db.psycopg() as conn:
        conn.execute("set local max_parallel_workers_per_gather = 0")
        before = _reads(conn)
        cur = conn.execute(endpoint_query(endpoint, values), values)
        meta = [{"name": d.name, "type": type_name(d.type_code)} for d in cur.description]
        rows = cur.fetchall()
        rows_read, bytes_read = _read_statistics(conn, before)
    statistics = {"elapsed": round(time.perf_counter() - started, 6),
                  "rows_read": rows_read, "bytes_read": bytes_read}
    return meta, rows, statistics


@bp.get("/v0/pipes/<string:filename>")
def get_pipe(filename: str):
    name, _, fmt = filename.rpartition(".")
    if not name or fmt not in FORMATS:
        raise ApiError(404, f"unknown format in '{filename}': use .json, .csv or .ndjson")
    catalog = _state().catalog
    if not catalog.built:
        raise ApiError(503, "the dbt models are not built yet: run `cartpulse build`", headers={"Retry-After": "5"})
    endpoint = catalog.get(name)
    if endpoint is None:
        raise ApiError(404, f"pipe '{name}' not found")
    require_scope(f"PIPES:READ:{name}")
    fixed = request_caller().fixed_params.get(name)
    if fixed:
        # A signed token's filter must bind: one the pipe does not declare would be
        # silently ignored and show everything, so it is refused instead.
        unknown = sorted(set(fixed) - {p.name for p in endpoint.params})
        if unknown:
            raise ApiError(403, f"this token fixes {', '.join(unknown)}, which pipe '{name}' does not take")
    values = parse_request(endpoint.params, request.args, fixed=fixed)
    meta, rows, statistics = run_endpoint(endpoint, values)
    return render(fmt, meta, rows, statistics)


@bp.get("/v0/pipes")
def list_pipes():
    """The pipes this token may read, with their descriptions and columns."""
    scopes = request_scopes()
    pipes = [{"name": e.name, "description": e.description,
              "columns": [{"name": c.name, "type": c.data_type, "description": c.description} for c in e.columns],
              "params": [{"name": p.name, "type": p.type, "default": p.default, "description": p.description}
                         for p in e.params],
              "endpoints": [f"/v0/pipes/{e.name}.{fmt}" for fmt in FORMATS]}
             for e in sorted(_state().catalog.all().values(), key=lambda e: e.name)
             if allows(scopes, f"PIPES:READ:{e.name}")]
    return jsonify(pipes=pipes)
