"""Writing a result as Tinybird writes a pipe endpoint: JSON, CSV or NDJSON.

The JSON keys (``meta``, ``data``, ``rows``, ``statistics``) are a promise to clients:
new keys may be added, documented ones never change. DateTime values are written
``YYYY-MM-DD HH:MM:SS`` in UTC, as Tinybird writes its DateTime type.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timezone
from decimal import Decimal

import orjson
from flask import Response

#: PostgreSQL type OID → the type name Tinybird reports in ``meta``.
TYPE_NAMES = {
    16: "UInt8", 20: "Int64", 21: "Int16", 23: "Int32", 700: "Float32", 701: "Float64",
    1700: "Float64", 25: "String", 1043: "String", 19: "String", 1082: "Date",
    1114: "DateTime", 1184: "DateTime", 1009: "Array(String)",
}
FORMATS = ("json", "csv", "ndjson")


def type_name(oid: int) -> str:
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


def _records(names: list[str], rows: list[tuple]) -> list[dict]:
    """Rows as dicts, converting only the columns that hold values JSON cannot write
    as they are (datetimes, decimals): most endpoint columns pass through untouched."""
    convert = [i for i in range(len(names))
               if any(v is not None and not isinstance(v, (str, int, float)) for v in (r[i] for r in rows[:50]))]
    if not convert:
        return [dict(zip(names, row)) for row in rows]
    return [dict(zip(names, map(plain, row))) for row in rows]


def render(fmt: str, meta: list[dict], rows: list[tuple], statistics: dict) -> Response:
    names = [m["name"] for m in meta]
    records = _records(names, rows)
    if fmt == "json":
        body = orjson.dumps({"meta": meta, "data": records, "rows": len(records), "statistics": statistics},
                            default=plain)
        return Response(body, mimetype="application/json")
    if fmt == "ndjson":
        body = b"".join(orjson.dumps(r, default=plain) + b"\n" for r in records)
        return Response(body, mimetype="application/x-ndjson")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([[plain(r[n]) for n in names] for r in records])
    return Response(out.getvalue(), mimetype="text/csv")
