"""The fast path of row validation, compiled once per data source.

Ingest spends most of its CPU validating rows, and nearly every row is well formed. A
loop over the declared columns that calls each type's parser and checks each bound costs
about twice what straight-line code does, so for each data source this module writes that
straight-line code once, from the declaration: a function of a decoded JSON object that
returns the row tuple when every value has its usual shape (a ``YYYY-MM-DD HH:MM:SS``
string for a DateTime, an int for an Int, a float or a small int for a Float, a string
without NUL for a String) and is within the declared bounds, or None. None never means
"bad": it sends the row to ``rows.validate``, which decides and names each bad field, so
the two paths agree on every row the fast one accepts (``tests/test_events.py``).

The generated code holds no declared text but the column names, as ``repr`` string
literals (dict keys); bounds are passed in as values (keyword-only defaults, read as
locals), locals are named by position. Only
rows that orjson decoded may come here: their strings are valid UTF-8, their numbers
finite and 64-bit.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta
from typing import Callable

from cartpulse.project import types
from cartpulse.project.datasources import Column, DataSource

#: Ints that convert to a float exactly (|n| < 2**53): a Float column takes them as is.
_EXACT_INT = 2**53


def _checks(column: Column, v: str, i: int, constants: dict) -> tuple[list[str], list[str]]:
    """(cheap checks, conversions) for one column's value in local ``v``; each line
    returns None from the generated function when the value is not of the usual shape."""
    kind = column.type
    if kind is types.STRING:
        longer = f" or len({v}) > {column.max_length}" if column.max_length is not None else ""
        return [f"if type({v}) is not str{longer} or '\\x00' in {v}: return None"], []
    if kind is types.INT:
        constants[f"lo{i}"] = types.MIN_INT64 if column.min is None else column.min
        constants[f"hi{i}"] = types.MAX_INT64 if column.max is None else column.max
        return [f"if type({v}) is not int or not lo{i} <= {v} <= hi{i}: return None"], []
    if kind is types.FLOAT:
        lines = [f"if type({v}) is int and -{_EXACT_INT} < {v} < {_EXACT_INT}: {v} = float({v})",
                 f"if type({v}) is not float or not isfinite({v}): return None"]
        if column.min is not None or column.max is not None:
            constants[f"lo{i}"] = -math.inf if column.min is None else column.min
            constants[f"hi{i}"] = math.inf if column.max is None else column.max
            lines.append(f"if not lo{i} <= {v} <= hi{i}: return None")
        return lines, []
    if kind is types.DATETIME:
        # The exact shape YYYY-MM-DD HH:MM:SS: no room for an offset of its own. Parsed
        # with "+00:00" appended, which gives the UTC datetime directly: .replace(tzinfo=UTC)
        # on the naive one costs six times the parse (2.2 against 0.36 µs here).
        constants[f"lo{i}"] = max(types.MIN_TIME, column.min or types.MIN_TIME)
        constants[f"hi{i}"] = min(types.MAX_TIME - timedelta(microseconds=1), column.max or types.MAX_TIME)
        return ([f"if type({v}) is not str or len({v}) != 19 or {v}[10] != ' ' or {v}[13] != ':'"
                 f" or {v}[16] != ':': return None"],
                [f"{v} = fromisoformat({v} + '+00:00')",
                 f"if not lo{i} <= {v} <= hi{i}: return None"])
    raise ValueError(f"no fast path for type {kind.name}")  # a new type: add its shape here


@functools.lru_cache(maxsize=None)
def fast_row_for(source: DataSource) -> Callable[[dict], tuple | None]:
    """The compiled fast path of ``source`` (see the module docstring)."""
    constants = {"fromisoformat": datetime.fromisoformat, "isfinite": math.isfinite}
    required, optional, checks, conversions = [], [], [], []
    for i, column in enumerate(source.columns):
        v = f"v{i}"
        cheap, convert = _checks(column, v, i, constants)
        if column.nullable and column.default is None:  # absent or null is a value (None) here
            optional.append(f"{v} = obj.get({column.name!r})")
            cheap = [f"if {v} is not None:"] + [f"    {line}" for line in cheap]
            convert = [f"if {v} is not None:"] + [f"    {line}" for line in convert] if convert else []
        else:
            required.append(f"{v} = obj[{column.name!r}]")
        checks += cheap
        conversions += convert
    body = ["try:", *(f"    {line}" for line in required), "except KeyError:", "    return None",
            *optional, *checks]
    if conversions:
        body += ["try:", *(f"    {line}" for line in conversions), "except ValueError:", "    return None"]
    body.append(f"return ({''.join(f'v{i}, ' for i in range(len(source.columns)))})")
    # The constants as keyword-only defaults: locals, faster to read than globals.
    signature = ", ".join(f"{name}={name}" for name in constants)
    code = f"def fast_row(obj, *, {signature}):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(code, f"<fast_row of {source.name}>", "exec"), constants)  # noqa: S102 - our own code, see above
    fast_row = constants["fast_row"]
    fast_row.source_code = code  # for a reader wondering what runs
    return fast_row
