"""The one vocabulary of types: endpoint parameters, data-source columns and answers.

A declared type has a name — what a yml writes: an endpoint parameter's ``type``, a
data-source column's ``data_type`` — and, here, everything the service needs to know
about it: the PostgreSQL type it is stored and bound as, the name Tinybird reports for it
in an answer's ``meta``, the JSON Schemas of its values (in answers, in a query string,
in an ingested JSON row) and its two parsers: a query-string value (parameters) and a
JSON value (ingested rows), each raising ``BadValue`` with the reason. A type's own
range (a DateTime's years, an Int's 64 bits) is checked by its JSON parser; the bounds a
column or a parameter adds are checked by their owners.

Answers may hold more PostgreSQL types than can be declared (an endpoint may return a
boolean or a 4-byte integer): ``RESULT_TYPES`` names those too, for ``meta`` and OpenAPI.

Why a Python table, with a generated macro for dbt: the parsers and schemas are code, and
dbt's Jinja cannot import Python. The endpoint materialization needs only name → SQL
type, so ``python -m cartpulse.project.types`` writes that column to ``macros/types.sql``
and ``tests/test_types.py`` fails when the file and this table disagree. (A var in
dbt_project.yml read by both would split each type across two files, and make parsing a
query string depend on finding and parsing a dbt project.)
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

UTC = timezone.utc
#: A DateTime's own range (the README's "years 1900–2999"); columns may narrow it.
MIN_TIME = datetime(1900, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(3000, 1, 1, tzinfo=UTC)
MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1
MIN_INT32, MAX_INT32 = -(2**31), 2**31 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DATETIME_TEXT = "UTC, `YYYY-MM-DD HH:MM:SS`"


class BadValue(ValueError):
    """A value its type (or a declared bound) does not accept; the message says why."""


def kind(value) -> str:
    """What a JSON value is, for error messages."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def parse_time(value) -> datetime:
    """``YYYY-MM-DD HH:MM:SS``, ISO 8601 (``T``, ``Z``, offsets), or epoch seconds → UTC."""
    if isinstance(value, bool):
        raise BadValue("expected a date-time string or epoch seconds, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise BadValue("epoch seconds must be finite")
        try:
            ts = _EPOCH + timedelta(seconds=value)
        except OverflowError:
            raise BadValue("out of range") from None
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 19 or text[10] not in "T ":
            raise BadValue(f"not a date-time: {value[:40]!r} (expected YYYY-MM-DD HH:MM:SS)")
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise BadValue(f"not a date-time: {value[:40]!r} (expected YYYY-MM-DD HH:MM:SS)") from None
        try:  # an offset may move a time near 0001 or 9999 out of what datetime can hold
            ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        except OverflowError:
            raise BadValue(f"out of range (accepted: {MIN_TIME:%Y} to {MAX_TIME.year - 1})") from None
    else:
        raise BadValue(f"expected a date-time string or epoch seconds, got {kind(value)}")
    if not MIN_TIME <= ts < MAX_TIME:
        raise BadValue(f"out of range (accepted: {MIN_TIME:%Y} to {MAX_TIME.year - 1})")
    return ts


def _datetime_text(raw: str) -> datetime:
    text = raw.strip()
    if len(text) == 10:  # a date alone: its midnight (what a date picker sends)
        text += " 00:00:00"
    try:
        return parse_time(text)
    except BadValue:
        raise BadValue(f"expected a DateTime as YYYY-MM-DD HH:MM:SS (UTC), got {raw[:40]!r}") from None


def _int_json(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"expected an integer, got {kind(value)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise BadValue("expected an integer")
        value = int(value)
    if not MIN_INT64 <= value <= MAX_INT64:
        raise BadValue("out of range (must fit Int64)")
    return value


def _int_text(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise BadValue(f"expected an integer, got {raw[:40]!r}") from None


def _int32_text(raw: str) -> int:
    value = _int_text(raw)
    if not MIN_INT32 <= value <= MAX_INT32:
        raise BadValue(f"out of range (must fit Int32), got {raw[:40]!r}")
    return value


def _date_text(raw: str) -> date:
    try:
        value = date.fromisoformat(raw.strip()) if len(raw.strip()) == 10 else None
    except ValueError:
        value = None
    if value is None or not MIN_TIME.date() <= value < MAX_TIME.date():
        raise BadValue(f"expected a Date as YYYY-MM-DD (years {MIN_TIME:%Y} to {MAX_TIME.year - 1}), got {raw[:40]!r}")
    return value


def _float_json(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadValue(f"expected a number, got {kind(value)}")
    number = float(value) if isinstance(value, int) and abs(value) < 2**1023 else value
    if not isinstance(number, float) or not math.isfinite(number):
        raise BadValue("out of range (must be a finite Float64)")
    return number


def _float_text(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise BadValue(f"expected a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise BadValue("expected a finite number")
    return value


def _string_json(value) -> str:
    if not isinstance(value, str):
        raise BadValue(f"expected a string, got {kind(value)}")
    return _string_text(value)


def _string_text(value: str) -> str:
    if "\x00" in value:
        raise BadValue("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadValue("not valid UTF-8 (lone surrogate)") from None
    return value


@dataclass(frozen=True, eq=False)
class Type:
    """One type of the vocabulary (see the module docstring)."""

    name: str
    #: The PostgreSQL type values are stored and bound as (as ``format_type`` accepts it).
    sql: str
    #: Tinybird's name for it in an answer's ``meta``.
    tinybird: str
    #: JSON Schema of a value as an answer writes it (``render.plain``).
    schema: dict
    #: Other PostgreSQL spellings of ``sql`` (a model column's ``data_type``, an OID's name).
    spellings: tuple[str, ...] = ()
    #: A query-string value → the value bound to SQL (declared types only).
    from_text: Callable[[str], object] | None = None
    #: A JSON value of an ingested row → the value stored (declared types only).
    from_json: Callable[[object], object] | None = None
    #: JSON Schema of a query-string value and of an ingested JSON value, without bounds.
    param_schema: dict = field(default_factory=dict)
    json_schema: dict = field(default_factory=dict)
    #: Bulk import: a CSV field that reads as a number is given as one (as JSON would).
    numbers_in_csv: bool = False
    #: An array parameter's element type (``Array(String)`` → STRING); None for scalars.
    element: "Type | None" = None


_DATETIME_SCHEMA = {"type": "string", "description": f"A DateTime, {DATETIME_TEXT}.",
                    "examples": ["2024-05-01 10:15:00"]}

DATETIME = Type(
    "DateTime", "timestamptz", "DateTime", _DATETIME_SCHEMA, ("timestamp with time zone",),
    from_text=_datetime_text, from_json=parse_time,
    param_schema={"type": "string", "examples": ["2024-05-01 00:00:00", "2024-05-01"]},
    json_schema={"oneOf": [{"type": "string", "examples": ["2024-05-01 10:15:00", "2024-05-01T10:15:00Z"]},
                           {"type": "number", "description": "Epoch seconds."}],
                 "description": "`YYYY-MM-DD HH:MM:SS` (UTC), ISO 8601 with `T`, `Z` or an offset, or epoch seconds."},
    numbers_in_csv=True)
INT = Type("Int", "bigint", "Int64", {"type": "integer"}, ("int8",), from_text=_int_text, from_json=_int_json,
           param_schema={"type": "integer"},
           json_schema={"type": "integer", "minimum": MIN_INT64, "maximum": MAX_INT64}, numbers_in_csv=True)
FLOAT = Type("Float", "double precision", "Float64", {"type": "number"}, ("float8",),
             from_text=_float_text, from_json=_float_json, param_schema={"type": "number"},
             json_schema={"type": "number", "description": "Float64; integers accepted; finite."}, numbers_in_csv=True)
STRING = Type("String", "text", "String", {"type": "string"}, from_text=_string_text, from_json=_string_json,
              param_schema={"type": "string"}, json_schema={"type": "string", "description": "No NUL character."})

#: The types a yml may declare, by name.
DECLARED = {t.name: t for t in (DATETIME, INT, FLOAT, STRING)}

INT32 = Type("Int32", "integer", "Int32", {"type": "integer"}, ("int", "int4"), from_text=_int32_text,
             param_schema={"type": "integer", "minimum": MIN_INT32, "maximum": MAX_INT32})
DATE = Type("Date", "date", "Date", {"type": "string", "format": "date"}, from_text=_date_text,
            param_schema={"type": "string", "format": "date", "examples": ["2024-05-01"]})


def _array(name: str, element: Type) -> Type:
    """``Array(<name>)``: a parameter holding a list of ``element`` values, bound as a
    PostgreSQL array (a model reads it with ``= any(…)``). Each element is parsed by the
    element's own parser."""
    return Type(f"Array({name})", f"{element.sql}[]", f"Array({element.tinybird})",
                {"type": "array", "items": element.schema}, from_text=element.from_text,
                param_schema={"type": "array", "items": element.param_schema}, element=element)


#: Array parameters (Tinybird's ``Array(T)``), under CartPulse's element names and
#: Tinybird's (``Int32``, ``Int64``, ``Float64``, ``Date``). Parameters only: a data
#: source column holds one value.
ARRAYS = {t.name: t for t in (_array(n, e) for n, e in (
    ("String", STRING), ("Int", INT), ("Int32", INT32), ("Int64", INT), ("Float", FLOAT), ("Float64", FLOAT),
    ("DateTime", DATETIME), ("Date", DATE)))}


def _boolean_text(raw: str) -> bool:
    text = raw.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise BadValue(f"expected a Boolean (true, false, 1 or 0), got {raw[:40]!r}")
    return text in ("true", "1")


#: Tinybird's ``Boolean(x)`` template parameter (parameters only: no column holds one).
BOOLEAN = Type("Boolean", "boolean", "UInt8", {"type": "boolean"}, ("bool",), from_text=_boolean_text,
               param_schema={"type": "boolean"})
#: The types a parameter may declare: a column's, Date and Boolean (Tinybird's template
#: parameters have both), and the arrays.
PARAM_TYPES = {**DECLARED, "Date": DATE, "Boolean": BOOLEAN, **ARRAYS}

#: Every type an answer may hold: the declared ones and other common PostgreSQL types.
RESULT_TYPES = (
    *DECLARED.values(),
    BOOLEAN,
    Type("Int16", "smallint", "Int16", {"type": "integer"}, ("int2",)),
    INT32,
    Type("Float32", "real", "Float32", {"type": "number"}, ("float4",)),
    Type("Decimal", "numeric", "Float64", {"type": "number"}, ("decimal",)),
    DATE,
    Type("Timestamp", "timestamp", "DateTime", _DATETIME_SCHEMA, ("timestamp without time zone",)),
    Type("VarChar", "varchar", "String", {"type": "string"},
         ("character varying", "char", "character", "bpchar", "name", "uuid")),
    Type("Array(String)", "text[]", "Array(String)", {"type": "array", "items": {"type": "string"}}, ("_text",)),
)
_BY_SPELLING = {s: t for t in RESULT_TYPES for s in (t.sql, *t.spellings)}


def declared(name: str, what: str, among: dict[str, Type] = DECLARED) -> Type:
    """The type called ``name`` in ``among`` (a column's types by default, PARAM_TYPES for a
    parameter); ValueError naming ``what`` declared it otherwise."""
    if name not in among:
        raise ValueError(f"{what}: type must be one of {', '.join(among)}, not {name!r}")
    return among[name]


def of_sql(data_type: str | None) -> Type | None:
    """The type of a PostgreSQL type name (``numeric(12,2)``, ``int8``, ``text[]``…), or None."""
    spelling = (data_type or "").lower().split("(")[0].strip()
    if spelling.endswith("[]"):
        spelling = "text[]"  # answers write every array as a list of strings
    return _BY_SPELLING.get(spelling)


def tinybird_names() -> dict[int, str]:
    """PostgreSQL type OID → Tinybird name, for every result type psycopg knows."""
    from psycopg.postgres import types as registry

    names = {}
    for t in RESULT_TYPES:
        for spelling in (t.sql, *t.spellings):
            if spelling.endswith("[]"):
                base = registry.get(spelling[:-2])
                if base is not None:
                    names.setdefault(base.array_oid, t.tinybird)
                continue
            info = registry.get(spelling)
            if info is not None:
                names.setdefault(info.oid, t.tinybird)
    return names


MACRO_PATH = Path("macros") / "types.sql"


def macro() -> str:
    """``macros/types.sql``: the name → SQL type table, as dbt's Jinja reads it."""
    table = json.dumps({t.name: t.sql for t in PARAM_TYPES.values()})
    return ("{#- Generated from service/cartpulse/project/types.py by `python -m cartpulse.project.types`:\n"
            "    do not edit. tests/test_types.py fails when this file and the vocabulary disagree. -#}\n"
            "{% macro cartpulse_types() -%}\n"
            f"  {{{{ return({table}) }}}}\n"
            "{%- endmacro %}\n")


if __name__ == "__main__":  # python -m cartpulse.project.types [PROJECT_DIR]
    from cartpulse.config import PROJECT_DIR

    target = Path(sys.argv[1] if len(sys.argv) > 1 else PROJECT_DIR) / MACRO_PATH
    target.write_text(macro())
    print(f"wrote {target}")
