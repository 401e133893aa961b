"""A pipe's answer as Parquet (``/v0/pipes/<name>.parquet``), typed from ``meta``.

Each column's Arrow type follows the Tinybird type ``meta`` names (project/types.py's
vocabulary): a DateTime is a UTC timestamp (milliseconds: Parquet has no seconds
unit), an Array(String) a list of strings, a type without an Arrow twin is written as
text. The file is built whole in
memory: an endpoint answers a bounded result (its ``limit``), not an export. pyarrow is
imported on the first Parquet answer, not when the service starts.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone


def arrow_types() -> dict:
    """Tinybird type name → Arrow type (String and anything unnamed: text)."""
    import pyarrow as pa

    return {"Int64": pa.int64(), "Int32": pa.int32(), "Int16": pa.int16(), "UInt8": pa.bool_(),
            "Float64": pa.float64(), "Float32": pa.float32(), "Date": pa.date32(),
            "DateTime": pa.timestamp("ms", tz="UTC"), "Array(String)": pa.list_(pa.string())}


def _utc(value):
    """A DateTime as the pipe read it (UTC text, or a datetime) → an aware datetime."""
    if isinstance(value, str):
        return datetime.strptime(value[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _column(kind, values: list):
    import pyarrow as pa

    if pa.types.is_timestamp(kind):
        values = [None if v is None else _utc(v) for v in values]
    elif pa.types.is_floating(kind):
        values = [None if v is None else float(v) for v in values]  # numeric (Decimal) columns
    elif pa.types.is_string(kind):
        values = [None if v is None else json.dumps(v) if isinstance(v, (dict, list)) else str(v) for v in values]
    return pa.array(values, type=kind)


def parquet_bytes(meta: list[dict], rows: list[tuple]) -> bytes:
    """The rows as one Parquet file with the columns of ``meta``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    known = arrow_types()
    kinds = [known.get(m["type"], pa.string()) for m in meta]
    columns = [_column(kind, [row[i] for row in rows]) for i, kind in enumerate(kinds)]
    table = pa.Table.from_arrays(columns, schema=pa.schema(
        [pa.field(m["name"], kind) for m, kind in zip(meta, kinds)]))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()
