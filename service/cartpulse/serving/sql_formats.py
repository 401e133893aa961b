"""Writing a Query API answer in the format its ``FORMAT`` clause names.

JSON and JSONEachRow are written as pipe endpoints write them (``render.py``: ``meta``,
``data``, ``rows``, ``statistics``); CSV and TSV as ClickHouse writes them, with or
without a first row of column names: CSV quotes a field only when it must, TSV escapes
tab, newline and backslash, and both write NULL as ``\\N``.

Two of Tinybird's JSON settings are honoured when a request sets them to 1:
``output_format_json_quote_64bit_integers`` (Int64/UInt64 values as strings, for
JavaScript) and ``output_format_json_quote_denormals`` (NaN and infinities as ``"nan"``,
``"inf"``, ``"-inf"`` instead of null).
"""

from __future__ import annotations

import csv
import io
import math

from flask import Response

from cartpulse.serving.render import plain, render

_MIMETYPES = {"csv": "text/csv", "csvwithnames": "text/csv", "tsv": "text/tab-separated-values",
              "tsvwithnames": "text/tab-separated-values"}
_WIDE_INTEGERS = {"Int64", "UInt64", "Int128", "UInt128", "Int256", "UInt256"}


def write(fmt: str, meta: list[dict], rows: list[tuple], statistics: dict,
          quote_64bit: bool = False, quote_denormals: bool = False) -> Response:
    """The answer in ``fmt`` (a value of sql_dialect.FORMATS)."""
    if fmt in ("json", "ndjson"):
        if quote_64bit or quote_denormals:
            rows = _json_settings(meta, rows, quote_64bit, quote_denormals)
        return render(fmt, meta, rows, statistics)
    names = [m["name"] for m in meta]
    out = io.StringIO()
    if fmt.startswith("csv"):
        writer = csv.writer(out, lineterminator="\n")
        if fmt == "csvwithnames":
            writer.writerow(names)
        writer.writerows([[r"\N" if v is None else _text(v) for v in row] for row in rows])
    else:
        if fmt == "tsvwithnames":
            out.write("\t".join(map(_tsv, names)) + "\n")
        for row in rows:
            out.write("\t".join(r"\N" if v is None else _tsv(_text(v)) for v in row) + "\n")
    return Response(out.getvalue(), mimetype=_MIMETYPES[fmt])


def _text(value) -> str:
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _json_settings(meta: list[dict], rows: list[tuple], quote_64bit: bool, quote_denormals: bool) -> list[tuple]:
    wide = [m["type"] in _WIDE_INTEGERS for m in meta]

    def value(v, is_wide):
        if quote_64bit and is_wide and isinstance(v, int):
            return str(v)
        if quote_denormals and isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return v

    return [tuple(value(v, w) for v, w in zip(row, wide)) for row in rows]
