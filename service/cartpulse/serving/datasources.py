"""The Data Sources API: reading a data source or its quarantine, and bulk import.

``GET /v0/datasources/<name>.json|.csv|.ndjson`` reads every data source the dbt project
declares and its quarantine. Mostly for the quarantine: after an import reports
``quarantined_rows``, an admin reads ``/v0/datasources/<name>_quarantine.json?import_id=<id>``
to see each bad row with its original values and the reasons. The quarantine holds raw
client input, so it is readable by an ADMIN token only; a data source is readable with
``DATASOURCES:READ:<name>``. Newest rows first (by the partition key; the quarantine by
``insertion_date``), ``limit`` (default 100, at most 10,000) and ``offset``; tables and
columns come from the declaration, values are bound.

``POST /v0/datasources?name=<name>&mode=append`` is a bulk import (``ingest/bulk.py``);
``mode=replace`` (ADMIN), with an optional ``replace_condition``, replaces rows with the
file's in one transaction, exactly (``ingest/bulk.py``, ``ingest/deletes.py``).
``GET /v0/datasources`` and ``/v0/datasources/<name>`` (no format) describe the data
sources (datasource_metadata.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from urllib.parse import parse_qs

from flask import Blueprint, jsonify, request
from psycopg import sql

from cartpulse.access.auth import ADMIN, request_caller, require_scope
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.ingest import bulk, csv_dialect, deletes, ops_log, transport
from cartpulse.ingest.delete_condition import parse
from cartpulse.ingest.events_api import append_target
from cartpulse.project.datasources import INSERTION_DATE, DataSource
from cartpulse.project.params import Param, parse_request
from cartpulse.serving.datasource_metadata import datasource_metadata
from cartpulse.serving.render import FORMATS, render, type_name
from cartpulse.storage.wal import LSN_HEADER

bp = Blueprint("datasources", __name__)


@dataclass(frozen=True)
class Readable:
    source: DataSource
    table: str
    columns: tuple[str, ...]
    order_by: str
    scope: str
    #: an optional filter: request parameter → column it must equal
    filters: dict


def readables(datasources: dict[str, DataSource]) -> dict[str, Readable]:
    """What ``GET /v0/datasources/<name>`` may read: each data source and its quarantine."""
    found = {}
    for source in datasources.values():
        found[source.name] = Readable(source, source.name, source.column_names, source.partition_key,
                                      f"DATASOURCES:READ:{source.name}", {})
        found[source.quarantine] = Readable(source, source.quarantine, source.quarantine_columns, INSERTION_DATE,
                                            ADMIN, {"import_id": "c__import_id"})
    return found


PARAMS = (Param("limit", "Int", min=1, max=10_000), Param("offset", "Int", min=0, max=10**12),
          Param("import_id", "String", max_length=100))


@bp.get("/v0/datasources/<string:filename>")
def read_datasource(filename: str):
    if "." not in filename:
        return datasource_metadata(filename)
    name, _, fmt = filename.rpartition(".")
    if not name or fmt not in FORMATS:
        raise ApiError(404, f"unknown format in '{filename}': use .json, .csv or .ndjson")
    source = readables(service().datasources).get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    require_scope(source.scope)
    values = parse_request(PARAMS, request.args)
    where = [sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(param))
             for param, column in source.filters.items() if param in values]
    query = sql.SQL("select {} from {} {} order by {} desc limit {} offset {}").format(
        sql.SQL(", ").join(map(sql.Identifier, source.columns)), source.source.table(source.table),
        sql.SQL("where ") + sql.SQL(" and ").join(where) if where else sql.SQL(""),
        sql.Identifier(source.order_by), sql.Placeholder("limit"), sql.Placeholder("offset"))
    bound = {"limit": 100, "offset": 0, **values}
    with service().db.psycopg() as conn:
        cur = conn.execute(query, bound)
        meta = [{"name": d.name, "type": type_name(d.type_code)} for d in cur.description]
        rows = [tuple(_plain_arrays(v) for v in row) for row in cur.fetchall()]
    return render(fmt, meta, rows, {"rows_read": len(rows)})


#: A form-encoded body up to this size is read to look for ``url=`` (Tinybird's SDKs send a
#: remote file's address that way). A larger one is a file sent with curl's default type.
FORM_PEEK_BYTES = 64 * 1024


def _small_form_body() -> bytes | None:
    """A small ``application/x-www-form-urlencoded`` body, read whole (and then imported
    from memory); None for any other body, which stays a stream."""
    if request.mimetype != "application/x-www-form-urlencoded":
        return None
    if request.content_length is None or request.content_length > FORM_PEEK_BYTES:
        return None
    return transport.ExactStream(request.stream, request.content_length).read()


def _plain_arrays(value):
    """Quarantine error lists are text[]: keep them lists in JSON, join them in CSV."""
    if isinstance(value, list) and request.path.endswith(".csv"):
        return "; ".join(value)
    return value


@bp.post("/v0/datasources", strict_slashes=False)
def post_datasource():
    target = append_target()
    mode = request.args.get("mode", "append")
    if mode not in ("append", "replace"):
        raise ApiError(400, f"unknown mode '{mode[:40]}': use mode=append or mode=replace")
    replace = None
    if mode == "replace":  # deletes rows: an ADMIN token, as for /delete (data_operations.py)
        require_scope(ADMIN)
        condition = request.args.get("replace_condition")
        replace = deletes.EVERY_ROW if condition is None else parse(condition, target, "replace_condition")
    elif "replace_condition" in request.args:
        raise ApiError(400, "replace_condition goes with mode=replace", parameter="replace_condition")
    require_scope(f"DATASOURCES:APPEND:{target.name}")
    small_form = _small_form_body()
    if "url" in request.args or (small_form is not None and "url" in parse_qs(small_form.decode("latin-1"))):
        raise ApiError(400, "url= imports are not supported: the server would fetch any address it is given;"
                            " download the file and send it in the body", parameter="url")
    state = service()
    request.max_content_length = state.settings.max_import_bytes
    gzipped = transport.is_gzipped(request)
    if request.mimetype == "multipart/form-data":
        upload = next(iter(request.files.values()), None)
        field = next(iter(request.files), None)
        if upload is None:
            raise ApiError(400, "no file in the multipart body: send it as -F csv=@file.csv (or ndjson=, parquet=)")
        fmt = bulk.detect_format(request.args.get("format") or (field if field in bulk.FORMATS else None),
                                 upload.filename, upload.mimetype)
        raw, gzipped = upload.stream, gzipped or (upload.filename or "").lower().endswith(".gz")
    else:
        fmt = bulk.detect_format(request.args.get("format"), None, request.mimetype)
        raw = (io.BytesIO(small_form) if small_form is not None
               else transport.ExactStream(request.stream, request.content_length))
    if fmt == "parquet" and gzipped:
        raise ApiError(400, "Parquet compresses itself: send it without gzip")
    dialect = csv_dialect.from_args(request.args, fmt)
    stream = bulk.open_stream(raw, gzipped, state.settings.max_import_bytes)
    op = ops_log.Operation(ops_log.IMPORT if replace is None else ops_log.REPLACE, target.name, request_caller().name)
    summary = bulk.import_stream(state.db, state.partitions, target, fmt, stream, op=op,
                                 absorb_after_rows=state.settings.absorb_after_rows, dialect=dialect,
                                 replace=replace)
    response = jsonify(summary.answer(target.name, mode))
    response.headers[LSN_HEADER] = summary.position  # read-your-writes (replicas.py)
    return response
