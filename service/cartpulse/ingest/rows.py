"""Parsing and validating rows for a data source, as its declaration says.

One JSON object per line (NDJSON), or a single object. Each line is checked on its own:
a valid row is stored, an invalid one goes to the quarantine with its original values
as text and one reason per bad field, so that one bad row never costs the good rows of
its batch. Only when *no* line parses as JSON is the whole request refused (it is not
NDJSON).

Each value is checked by its column's type (project/types.py) and the column's declared
bounds (project/datasources.py). Well-formed rows, the vast majority, take a fast path
compiled for the data source (``fastpath.py``); anything else goes through ``validate``,
which names every bad field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson

from cartpulse.ingest.fastpath import fast_row_for
from cartpulse.project.datasources import DataSource
from cartpulse.project.types import BadValue, kind

#: How much of a quarantined line is kept verbatim.
MAX_RAW_LINE = 65536


class RowError(ValueError):
    """A value that cannot be stored; ``column`` names the field ("line": the line itself)."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


class RowErrors(ValueError):
    """Every bad field of one row, in column order."""

    def __init__(self, errors: list[RowError]):
        super().__init__("; ".join(f"{e.column}: {e}" for e in errors))
        self.errors = errors


@dataclass
class Quarantined:
    line: int
    values: dict  # column -> original value as text (or None when absent)
    columns: list[str]
    errors: list[str]
    raw: str


@dataclass
class Batch:
    rows: list[tuple] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    #: Lines that parsed as JSON (valid or not); 0 with lines present means "not NDJSON".
    json_lines: int = 0
    first_bad_line: tuple[int, str] | None = None


def validate(obj: dict, source: DataSource) -> tuple:
    """Return the row tuple in the data source's column order, or raise RowErrors naming
    every bad field (a missing one included).

    Unknown extra fields are ignored (documented), as Tinybird does for JSONPaths it
    does not map. A declared-nullable column may be missing or null; a column with a
    declared default takes it when missing or null.
    """
    errors: list[RowError] = []
    out = []
    for column in source.columns:
        value = obj.get(column.name)
        if value is None and column.default is not None:
            out.append(column.default)
            continue
        if value is None:
            if not column.nullable:
                errors.append(RowError(column.name, "missing"))
            out.append(None)
            continue
        try:
            out.append(column.accept(value))
        except BadValue as err:
            errors.append(RowError(column.name, str(err)))
            out.append(None)
    if errors:
        raise RowErrors(errors)
    return tuple(out)


def _as_text(value) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _capped(text: str | None) -> str | None:
    """A quarantined value or line, kept to its first MAX_RAW_LINE characters: enough to
    see what was wrong, never a 10 MB value whole in the quarantine."""
    return text if text is None or len(text) <= MAX_RAW_LINE else text[:MAX_RAW_LINE]


def _quarantine(batch: Batch, source: DataSource, number: int, raw: str, values: dict,
                errors: list[RowError]) -> None:
    batch.quarantined.append(Quarantined(
        line=number,
        values={c: _capped(_as_text(values.get(c))) for c in source.column_names},
        columns=[e.column for e in errors],
        errors=[str(e) for e in errors],
        raw=_capped(_as_text(raw[:MAX_RAW_LINE])),
    ))


def quarantine_line(batch: Batch, source: DataSource, number: int, raw: str, why: str) -> None:
    """Quarantine a whole line that could not be read as a record (not JSON, not an
    object, too long, a CSV field past the limit): its text, cut as every quarantined
    line is, and the reason."""
    _quarantine(batch, source, number, raw, {}, [RowError("line", why)])


def _loads(line: bytes) -> tuple[object, bool]:
    """(value, strict): orjson for speed; the standard library when orjson refuses the line,
    so that NaN/Infinity, huge integers and lone surrogates get per-field verdicts.
    Only orjson's values (``strict``: valid UTF-8, finite, 64-bit) may take the fast path."""
    try:
        return orjson.loads(line), True
    except orjson.JSONDecodeError:
        try:
            return json.loads(line.decode("utf-8")), False
        except RecursionError:  # orjson refused it for its depth (over 1024) too
            raise ValueError("nested too deeply") from None


def _several_values_hint(err: ValueError) -> str:
    """What to do when a line is several JSON values one after the other: that is what
    ``curl -d @events.ndjson`` sends, as it strips the file's newlines."""
    if not (isinstance(err, json.JSONDecodeError) and err.msg == "Extra data"):
        return ""
    try:
        json.JSONDecoder().raw_decode(err.doc[err.pos:].lstrip())
    except ValueError:
        return ""
    return ("; this line holds more than one JSON value: send NDJSON with its newlines kept,"
            " e.g. curl --data-binary @file (curl -d @file strips them)")


#: A line orjson could not read as it came: read again, stripped, by ``_loads``.
_UNREAD = object()


def parse_body(body: bytes, source: DataSource) -> Batch:
    """Split an NDJSON (or single JSON object) body into valid rows and quarantined ones."""
    batch = Batch()
    fast_row, loads, JSONDecodeError = fast_row_for(source), orjson.loads, orjson.JSONDecodeError
    for number, line in enumerate(body.split(b"\n"), start=1):
        # Nearly every line is one JSON object that orjson reads as it is (surrounding JSON
        # whitespace included): try that first, without stripping or a call to _loads.
        try:
            obj, strict = loads(line), True
        except JSONDecodeError:
            line = line.strip()
            if not line:
                continue
            obj = _UNREAD
        try:
            if obj is _UNREAD:
                obj, strict = _loads(line)
        except ValueError as err:  # UnicodeDecodeError included
            why = (f"invalid UTF-8 at byte {err.start}" if isinstance(err, UnicodeDecodeError)
                   else f"not valid JSON: {err}{_several_values_hint(err)}")
            batch.first_bad_line = batch.first_bad_line or (number, why)
            quarantine_line(batch, source, number, line.decode("utf-8", "backslashreplace"), why)
            continue
        batch.json_lines += 1
        if strict and type(obj) is dict:
            row = fast_row(obj)
            if row is not None:
                batch.rows.append(row)
                continue
        text = line.strip().decode("utf-8")
        if not isinstance(obj, dict):
            quarantine_line(batch, source, number, text, f"expected a JSON object, got {kind(obj)}")
            continue
        add_record(batch, source, number, text, obj, counted=True)
    return batch


def add_record(batch: Batch, source: DataSource, number: int, raw: str, record: dict, counted: bool = False) -> None:
    """Validate one decoded record (a JSON object, a CSV row, a Parquet row) into
    ``batch``: a row, or a quarantined line numbered ``number`` with ``raw`` as its text.
    Bulk imports use this so that their rows meet exactly the events API's rules.
    ``counted``: the caller already counted the record in ``json_lines``."""
    if not counted:
        batch.json_lines += 1
    try:
        batch.rows.append(validate(record, source))
    except RowErrors as errs:
        _quarantine(batch, source, number, raw, record, errs.errors)
