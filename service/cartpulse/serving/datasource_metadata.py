"""Describing data sources as Tinybird does: ``GET /v0/datasources`` and
``GET /v0/datasources/<name>`` (``<name>.json|.csv|.ndjson`` still reads rows:
datasources.py, which routes a name without a format here).

From the declaration (project/datasources.py): the columns with Tinybird's type names
(``Int`` is ``Int64``; a nullable column is ``Nullable(<type>)``, as Tinybird writes
it), the sorting and partition keys. ``engine.engine`` says what really stores the rows,
``PostgreSQL`` (monthly partitions) or ``TimescaleDB`` (a hypertable), not a ClickHouse
engine the data never met. From the database, at the time of the request:
``statistics.row_count`` (an exact ``count(*)``: a scan, so it costs on a large table),
``statistics.bytes`` (the table with its indexes and every partition or chunk: a
TimescaleDB chunk compressed into its internal table is not counted) and
``quarantine_rows``. Ids are derived from names (pipe_metadata.tinybird_id).

Listed: the data sources the token may read (``DATASOURCES:READ:<name>`` or ADMIN).
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from psycopg import sql

from cartpulse.access.auth import allows, request_scopes, require_scope
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.project.datasources import DataSource
from cartpulse.serving.pipe_metadata import tinybird_id
from cartpulse.storage import engine

bp = Blueprint("datasource_metadata", __name__)

#: Every table under a table: its partitions (PostgreSQL) or chunks (TimescaleDB), at any depth.
_BYTES = """
    with recursive tree(oid) as (
        select %(table)s::regclass::oid
        union all
        select i.inhrelid from pg_inherits i join tree t on i.inhparent = t.oid)
    select coalesce(sum(pg_total_relation_size(oid)), 0)::bigint from tree
"""
#: On Citus the rows are in the workers' shards: the leaves (each a distributed table) are
#: measured there, with their indexes (a partitioned parent itself holds no storage).
_CITUS_BYTES = _BYTES.replace(
    "sum(pg_total_relation_size(oid))",
    "sum(citus_total_relation_size(oid)) filter (where not exists (select from pg_inherits where inhparent = oid))")


def _statistics(conn, source: DataSource, storage_engine: str) -> dict:
    count = sql.SQL("select count(*) from {}")
    rows = conn.execute(count.format(source.table())).fetchone()[0]
    quarantined = conn.execute(count.format(source.table(source.quarantine))).fetchone()[0]
    size = conn.execute(_CITUS_BYTES if storage_engine == engine.CITUS else _BYTES,
                        {"table": source.regclass()}).fetchone()[0]
    return {"statistics": {"row_count": rows, "bytes": size}, "quarantine_rows": quarantined}


def describe(source: DataSource, storage_engine: str, stats: dict) -> dict:
    columns = [{"name": c.name, "type": f"Nullable({c.type.tinybird})" if c.nullable else c.type.tinybird,
                "nullable": c.nullable, "default_value": None, "codec": None, "jsonpath": f"$.{c.name}",
                "normalized_name": c.name, "description": c.description} for c in source.columns]
    return {
        "id": tinybird_id("datasource", source.name), "name": source.name, "description": source.description,
        "type": "ndjson",  # rows arrive as JSON (Events API) or files: no connector
        "columns": columns,
        "engine": {"engine": {engine.TIMESCALEDB: "TimescaleDB", engine.CITUS: "Citus"}.get(storage_engine, "PostgreSQL"),
                   "sorting_key": ", ".join(source.sorting_key), "partition_key": source.partition_key},
        "sorting_key": ", ".join(source.sorting_key), "partition_key": source.partition_key,
        **stats,
    }


def _described(sources: list[DataSource]) -> list[dict]:
    state = service()
    with state.db.psycopg() as conn:
        storage_engine = engine.current(conn)
        return [describe(s, storage_engine, _statistics(conn, s, storage_engine)) for s in sources]


def datasource_metadata(name: str):
    """``GET /v0/datasources/<name>``."""
    source = service().datasources.get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    require_scope(f"DATASOURCES:READ:{name}")
    return jsonify(_described([source])[0])


@bp.get("/v0/datasources", strict_slashes=False)  # Tinybird's clients call /v0/datasources/
def list_datasources():
    scopes = request_scopes()
    readable = [s for name, s in sorted(service().datasources.items()) if allows(scopes, f"DATASOURCES:READ:{name}")]
    return jsonify(datasources=_described(readable))
