"""How a CSV import is read: Tinybird's dialect parameters, and whether its first line
is a header.

**Dialect.** ``dialect_delimiter`` (one character; ``\\t`` may be written as those two
characters), ``dialect_escapechar`` (one character that takes away the meaning of the
next one, as well as doubled quotes) and ``dialect_new_line`` (``\\n`` or ``\\r\\n``,
either of which is read anyway; another line end, such as ``;``, is refused rather than
read as one long line). Any other ``dialect_*`` parameter is a 400 naming it, and so is
a dialect given for NDJSON or Parquet: a parameter that cannot apply must not look as
if it did.

**Header or data.** Tinybird takes a first line with the column names as a header and
reads the columns by name; without one, the fields are the data source's columns in
declared order (its docs: "if you can't guarantee the order of columns in your CSV,
include the CSV header"). CartPulse decides as follows, from the first line alone:
it is a header when every field on it (trimmed) is a column name, or when its fields
include every column that may not be empty; otherwise it is the first row of data. A
real row cannot pass for a header: its DateTime field would have to read
``event_time``, which no DateTime is. A headerless row with another number of fields
than the data source has columns is quarantined with that reason (a missing or extra
field would shift every value after it into the wrong column).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from cartpulse.errors import ApiError
from cartpulse.project.datasources import Column, DataSource

PARAMS = ("dialect_delimiter", "dialect_escapechar", "dialect_new_line")
_NEW_LINES = {"\n", "\r\n", "\\n", "\\r\\n"}


@dataclass(frozen=True)
class Dialect:
    delimiter: str = ","
    escapechar: str | None = None


def _one_character(name: str, value: str) -> str:
    value = "\t" if value == "\\t" else value
    if len(value) != 1 or value in "\r\n\"":
        raise ApiError(400, f"{name} must be one character (not a quote or a line end), got {value[:10]!r}",
                       parameter=name)
    return value


def from_args(args, fmt: str) -> Dialect:
    """The dialect a request's parameters ask for (the default one when none)."""
    given = [name for name in args if name.startswith("dialect_")]
    unknown = [name for name in given if name not in PARAMS]
    if unknown:
        raise ApiError(400, f"{unknown[0][:60]} is not supported (the CSV dialect takes {', '.join(PARAMS)})",
                       parameter=unknown[0][:60])
    if given and fmt != "csv":
        raise ApiError(400, f"{given[0]} applies to CSV only, not {fmt}", parameter=given[0])
    new_line = args.get("dialect_new_line")
    if new_line is not None and new_line not in _NEW_LINES:
        raise ApiError(400, f"dialect_new_line {new_line[:10]!r} is not supported: rows end with \\n or \\r\\n",
                       parameter="dialect_new_line")
    delimiter = _one_character("dialect_delimiter", args.get("dialect_delimiter", ","))
    escapechar = args.get("dialect_escapechar")
    if escapechar is not None:
        escapechar = _one_character("dialect_escapechar", escapechar)
        if escapechar == delimiter:
            raise ApiError(400, "dialect_escapechar must differ from the delimiter", parameter="dialect_escapechar")
    return Dialect(delimiter, escapechar)


def reader(text, dialect: Dialect | None):
    dialect = dialect or Dialect()
    return csv.reader(text, delimiter=dialect.delimiter, escapechar=dialect.escapechar, doublequote=True)


def is_header(fields: list[str], source: DataSource) -> bool:
    names = [f.strip() for f in fields]
    declared = set(source.column_names)
    required = {c.name for c in source.columns if not c.nullable}
    return all(n in declared for n in names) or required <= set(names)


def layout(first: list[str], source: DataSource) -> tuple[list[tuple[Column, int]] | None, bool]:
    """(each column with its field index, or None for declared order; whether ``first``
    is data rather than a header)."""
    if not is_header(first, source):
        return None, True
    header = [h.strip() for h in first]
    missing = [c.name for c in source.columns if c.name not in header and not c.nullable]
    if missing:
        raise ApiError(400, f"the CSV header lacks {', '.join(missing)} (the first line must name the columns)")
    return [(c, header.index(c.name)) for c in source.columns if c.name in header], False


def field_count_error(fields: list[str], source: DataSource) -> str | None:
    """Why a headerless row cannot be read in declared order, or None."""
    if len(fields) == len(source.columns):
        return None
    return (f"{len(fields)} fields, but the data source has {len(source.columns)} columns; without a header line"
            f" the fields are the columns in declared order: {', '.join(source.column_names)}")
