"""Reading data sources over the API: ``GET /v0/datasources/<name>.json|.csv|.ndjson``.

Mostly for the quarantine: after an import reports ``quarantined_rows``, an admin reads
``/v0/datasources/ecommerce_events_quarantine.json?import_id=<id>`` to see each bad row
with its original values and the reasons. The quarantine holds raw client input, so it
is readable by an ADMIN token only; ``ecommerce_events`` is readable with
``DATASOURCES:READ:ecommerce_events``. Newest rows first, ``limit`` (default 100, at most
10,000) and ``offset``; the table and its columns are fixed here, values are bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, current_app, request
from psycopg import sql

from .auth import ADMIN, require_scope
from .errors import ApiError
from .events import COLUMNS
from .params import Param, parse_request
from .render import FORMATS, render, type_name

bp = Blueprint("datasources", __name__)


@dataclass(frozen=True)
class Readable:
    table: tuple[str, str]
    columns: tuple[str, ...]
    order_by: str
    scope: str
    #: an optional filter: request parameter → column it must equal
    filters: dict


SOURCES = {
    "ecommerce_events": Readable(
        ("raw", "ecommerce_events"), COLUMNS, "event_time", "DATASOURCES:READ:ecommerce_events", {}),
    "ecommerce_events_quarantine": Readable(
        ("raw", "ecommerce_events_quarantine"),
        COLUMNS + ("c__error_column", "c__error", "c__import_id", "c__line", "c__raw", "insertion_date"),
        "insertion_date", ADMIN, {"import_id": "c__import_id"}),
}
PARAMS = (Param("limit", "Int", min=1, max=10_000), Param("offset", "Int", min=0, max=10**12),
          Param("import_id", "String", max_length=100))


@bp.get("/v0/datasources/<string:filename>")
def read_datasource(filename: str):
    name, _, fmt = filename.rpartition(".")
    if not name or fmt not in FORMATS:
        raise ApiError(404, f"unknown format in '{filename}': use .json, .csv or .ndjson")
    source = SOURCES.get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    require_scope(source.scope)
    values = parse_request(PARAMS, request.args)
    where = [sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(param))
             for param, column in source.filters.items() if param in values]
    query = sql.SQL("select {} from {}.{} {} order by {} desc limit {} offset {}").format(
        sql.SQL(", ").join(map(sql.Identifier, source.columns)),
        sql.Identifier(source.table[0]), sql.Identifier(source.table[1]),
        sql.SQL("where ") + sql.SQL(" and ").join(where) if where else sql.SQL(""),
        sql.Identifier(source.order_by), sql.Placeholder("limit"), sql.Placeholder("offset"))
    bound = {"limit": 100, "offset": 0, **values}
    with current_app.extensions["cartpulse"].db.psycopg() as conn:
        cur = conn.execute(query, bound)
        meta = [{"name": d.name, "type": type_name(d.type_code)} for d in cur.description]
        rows = [tuple(_plain_arrays(v) for v in row) for row in cur.fetchall()]
    return render(fmt, meta, rows, {"rows_read": len(rows)})


def _plain_arrays(value):
    """Quarantine error lists are text[]: keep them lists in JSON, join them in CSV."""
    if isinstance(value, list) and request.path.endswith(".csv"):
        return "; ".join(value)
    return value
