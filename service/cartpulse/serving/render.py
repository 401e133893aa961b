"""Writing a result as Tinybird writes a pipe endpoint: JSON, CSV, NDJSON, and for pipes
also CSV with names, Parquet (``parquet.py``) and Prometheus' text (``prometheus.py``).

The JSON keys (``meta``, ``data``, ``rows``, ``statistics``) are a promise to clients:
new keys may be added, documented ones never change. ``meta`` names each column's type
as Tinybird does (the vocabulary of project/types.py). DateTime values are written
``YYYY-MM-DD HH:MM:SS`` in UTC, as Tinybird writes its DateTime type.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from decimal import Decimal

import orjson
from flask import Response

from cartpulse.project.types import tinybird_names
from cartpulse.serving.parquet import parquet_bytes
from cartpulse.serving.prometheus import prometheus_text

#: PostgreSQL type OID → the type name Tinybird reports in ``meta``.
TYPE_NAMES = tinybird_names()
#: Formats of every tabular answer (pipes and data sources).
FORMATS = ("json", "csv", "ndjson")
#: A pipe's formats: those, and the ones Tinybird adds for pipes.
PIPE_FORMATS = (*FORMATS, "csvwithnames", "parquet", "prometheus")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "csvwithnames": "text/csv",
               "ndjson": "application/x-ndjson", "parquet": "application/vnd.apache.parquet",
               "prometheus": "text/plain; version=0.0.4"}


def type_name(oid: int) -> str:
    """Tinybird's name for a column of this PostgreSQL type (String when it has none)."""
    return TYPE_NAMES.get(oid, "String")


def plain(value):
    """A database value as JSON/CSV writes it."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


#: orjson hands datetimes (and dates, decimals: it cannot write those) to ``plain``.
_JSON = orjson.OPT_PASSTHROUGH_DATETIME


def render(fmt: str, meta: list[dict], rows: list[tuple], statistics: dict) -> Response:
    """The answer in ``fmt``. Every value is written as ``plain`` says: JSON and NDJSON
    pass the rows to orjson as they are, which calls ``plain`` for each datetime, date
    and decimal (text and numbers it writes itself); CSV calls it for every value."""
    names = [m["name"] for m in meta]
    records = [dict(zip(names, row)) for row in rows]
    if fmt == "json":
        body = orjson.dumps({"meta": meta, "data": records, "rows": len(records), "statistics": statistics},
                            default=plain, option=_JSON)
        return Response(body, mimetype="application/json")
    if fmt == "ndjson":
        body = b"".join(orjson.dumps(r, default=plain, option=_JSON) + b"\n" for r in records)
        return Response(body, mimetype="application/x-ndjson")
    if fmt == "parquet":
        return Response(parquet_bytes(meta, rows), content_type=MEDIA_TYPES[fmt])
    if fmt == "prometheus":
        return Response(prometheus_text(meta, rows), content_type=MEDIA_TYPES[fmt])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([[plain(r[n]) for n in names] for r in records])
    return Response(out.getvalue(), mimetype="text/csv")
