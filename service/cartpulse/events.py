"""Parsing and validating event rows for the ``ecommerce_events`` data source.

One JSON object per line (NDJSON), or a single object. Each line is checked on its own:
a valid row is stored, an invalid one goes to the quarantine with its original values
as text and the reasons, so that one bad row never costs the good rows of its batch.
Only when *no* line parses as JSON is the whole request refused (it is not NDJSON).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

#: Column order of ``raw.ecommerce_events`` and of the rows this module produces.
COLUMNS = ("event_time", "event_type", "user_id", "product_id", "category",
           "price", "quantity", "session_id", "country")
STRING_COLUMNS = ("event_type", "user_id", "product_id", "category", "session_id", "country")

#: Longest accepted string value, in characters (documented in the README).
MAX_STRING_LENGTH = 1000
#: Accepted event_time range: anything outside is quarantined as out of range.
MIN_TIME = datetime(1900, 1, 1, tzinfo=timezone.utc)
MAX_TIME = datetime(3000, 1, 1, tzinfo=timezone.utc)
MAX_INT64 = 2**63 - 1
#: How much of a quarantined line is kept verbatim.
MAX_RAW_LINE = 65536

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class RowError(ValueError):
    """A value that cannot be stored; ``column`` names the field."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


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


def parse_time(value) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, ISO 8601 (``T``, ``Z``, offsets), or epoch seconds → UTC."""
    if isinstance(value, bool):
        raise RowError("event_time", "expected a date-time string or epoch seconds, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RowError("event_time", "epoch seconds must be finite")
        try:
            ts = _EPOCH + timedelta(seconds=value)
        except OverflowError:
            raise RowError("event_time", "out of range") from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 19 or text[10] not in "T ":
            raise RowError("event_time", f"not a date-time: {value[:40]!r} (expected YYYY-MM-DD HH:MM:SS)")
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise RowError("event_time", f"not a date-time: {value[:40]!r} (expected YYYY-MM-DD HH:MM:SS)") from None
        ts = ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
    else:
        raise RowError("event_time", f"expected a date-time string or epoch seconds, got {_kind(value)}")
    if not MIN_TIME <= ts < MAX_TIME:
        raise RowError("event_time", f"out of range (accepted: {MIN_TIME:%Y} to {MAX_TIME.year - 1})")
    return ts


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _string(column: str, value) -> str:
    if not isinstance(value, str):
        raise RowError(column, f"expected a string, got {_kind(value)}")
    if len(value) > MAX_STRING_LENGTH:
        raise RowError(column, f"longer than {MAX_STRING_LENGTH} characters")
    if "\x00" in value:
        raise RowError(column, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError(column, "not valid UTF-8 (lone surrogate)") from None
    return value


def _float(column: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(column, f"expected a number, got {_kind(value)}")
    number = float(value) if isinstance(value, int) and abs(value) < 2**1023 else value
    if not isinstance(number, float) or not math.isfinite(number):
        raise RowError(column, "out of range (must be a finite Float64)")
    return number


def _int(column: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(column, f"expected an integer, got {_kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise RowError(column, "expected an integer")
        value = int(value)
    if value < 0:
        raise RowError(column, "must not be negative")
    if value > MAX_INT64:
        raise RowError(column, "out of range (must fit Int64)")
    return value


def validate(obj: dict) -> tuple:
    """Return the row tuple in COLUMNS order, or raise RowError for the first bad field.

    Unknown extra fields are ignored (documented), as Tinybird does for JSONPaths it
    does not map.
    """
    errors: list[RowError] = []
    out = []
    for column in COLUMNS:
        if column not in obj or obj[column] is None:
            errors.append(RowError(column, "missing"))
            out.append(None)
            continue
        value = obj[column]
        try:
            if column == "event_time":
                out.append(parse_time(value))
            elif column == "price":
                out.append(_float(column, value))
            elif column == "quantity":
                out.append(_int(column, value))
            else:
                out.append(_string(column, value))
        except RowError as err:
            errors.append(err)
            out.append(None)
    if errors:
        raise _RowErrors(errors)
    return tuple(out)


class _RowErrors(Exception):
    def __init__(self, errors: list[RowError]):
        super().__init__("; ".join(f"{e.column}: {e}" for e in errors))
        self.errors = errors


def _as_text(value) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _quarantine(batch: Batch, number: int, raw: str, values: dict, errors: list[RowError]) -> None:
    batch.quarantined.append(Quarantined(
        line=number,
        values={c: _as_text(values.get(c)) for c in COLUMNS},
        columns=[e.column for e in errors],
        errors=[str(e) for e in errors],
        raw=_as_text(raw[:MAX_RAW_LINE]),
    ))


def _fast_row(obj: dict) -> tuple | None:
    """The row for the common, well-formed case, or None to take the thorough path.

    Ingest spends most of its CPU here, so the usual shapes (a ``YYYY-MM-DD HH:MM:SS``
    string, strings, a float or int price, an int quantity) are checked inline; anything
    else — and every error — goes through ``validate``, which names each bad field.
    """
    try:
        when, price, quantity = obj["event_time"], obj["price"], obj["quantity"]
        strings = (obj["event_type"], obj["user_id"], obj["product_id"], obj["category"],
                   obj["session_id"], obj["country"])
    except KeyError:
        return None
    if type(when) is not str or len(when) != 19 or when[10] != " ":
        return None
    for value in strings:
        if type(value) is not str or len(value) > MAX_STRING_LENGTH or "\x00" in value:
            return None
    if type(price) is int and abs(price) < 2**53:
        price = float(price)
    if type(price) is not float or not math.isfinite(price):
        return None
    if type(quantity) is not int or not 0 <= quantity <= MAX_INT64:
        return None
    try:
        ts = datetime.fromisoformat(when).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    if not MIN_TIME <= ts < MAX_TIME:
        return None
    event_type, user_id, product_id, category, session_id, country = strings
    return (ts, event_type, user_id, product_id, category, price, quantity, session_id, country)


def _loads(line: bytes) -> tuple[object, bool]:
    """(value, strict): orjson for speed; the standard library when orjson refuses the line,
    so that NaN/Infinity, huge integers and lone surrogates get per-field verdicts.
    Only orjson's values (``strict``: valid UTF-8, finite, 64-bit) may take the fast path."""
    try:
        return orjson.loads(line), True
    except orjson.JSONDecodeError:
        return json.loads(line.decode("utf-8")), False


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


def parse_body(body: bytes) -> Batch:
    """Split an NDJSON (or single JSON object) body into valid rows and quarantined ones."""
    batch = Batch()
    for number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj, strict = _loads(line)
        except UnicodeDecodeError as err:
            raw = line.decode("utf-8", "backslashreplace")
            batch.first_bad_line = batch.first_bad_line or (number, f"invalid UTF-8 at byte {err.start}")
            _quarantine(batch, number, raw, {}, [RowError("line", f"invalid UTF-8 at byte {err.start}")])
            continue
        except ValueError as err:
            text = line.decode("utf-8", "backslashreplace")
            why = f"not valid JSON: {err}{_several_values_hint(err)}"
            batch.first_bad_line = batch.first_bad_line or (number, why)
            _quarantine(batch, number, text, {}, [RowError("line", why)])
            continue
        batch.json_lines += 1
        if strict and type(obj) is dict:
            row = _fast_row(obj)
            if row is not None:
                batch.rows.append(row)
                continue
        text = line.decode("utf-8")
        if not isinstance(obj, dict):
            _quarantine(batch, number, text, {}, [RowError("line", f"expected a JSON object, got {_kind(obj)}")])
            continue
        try:
            batch.rows.append(validate(obj))
        except _RowErrors as errs:
            _quarantine(batch, number, text, obj, errs.errors)
    return batch


def add_record(batch: Batch, number: int, raw: str, record: dict) -> None:
    """Validate one already-decoded record (a CSV row, a Parquet row) into ``batch``: a
    row, or a quarantined line numbered ``number`` with ``raw`` as its text. Bulk imports
    use this so that their rows meet exactly the events API's rules."""
    batch.json_lines += 1
    try:
        batch.rows.append(validate(record))
    except _RowErrors as errs:
        _quarantine(batch, number, raw, record, errs.errors)
