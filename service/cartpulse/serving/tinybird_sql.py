"""A rendered Tinybird template (ClickHouse SQL with ``__tbp_<n>`` markers) as PostgreSQL
with every value bound: ``%(__tbp_<n>)s`` placeholders cast to the parameter's type.

Why markers rather than values: sqlglot translates the SQL around them without ever
seeing a value, and a value never becomes SQL text. ``x IN (marker)`` of an Array
parameter becomes ``x = ANY(marker)`` (``NOT IN``: ``<> ALL``), PostgreSQL's reading of
a bound array.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot.errors import ErrorLevel, SqlglotError

from cartpulse.errors import ApiError
from cartpulse.project import types
from cartpulse.project.tinybird_render import Rendered
from cartpulse.project.tinybird_template import TemplateError
from cartpulse.serving import sql_dialect

_MARKER = re.compile(r'(?:(NOT\s+)?(IN)\s*\(\s*)?"?(__tbp_\d+)"?(?(2)\s*\))', re.IGNORECASE)


def postgres(sql: str, cast: dict[str, str], placeholder=None) -> str:
    """``sql`` (ClickHouse, with markers) as PostgreSQL; each marker → its placeholder
    (psycopg's ``%(marker)s`` unless ``placeholder`` says otherwise, such as a dbt
    ``{{ param('x') }}``), cast to the SQL type of ``cast[marker]`` (a parameter type)."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="clickhouse") if t is not None]
        if len(trees) != 1:
            raise TemplateError(f"a node holds one statement (got {len(trees)})", "statements")
        sql_dialect.rewrite(trees[0])
        out = trees[0].sql(dialect="postgres", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as err:
        raise TemplateError(f"cannot translate the SQL: {str(err).splitlines()[0][:200]}", "SQL") from None
    except ApiError as err:
        raise TemplateError(err.message, err.extra.get("construct")) from None
    if placeholder is None:  # psycopg reads % as its own: a modulo or a LIKE pattern's is doubled
        out = out.replace("%", "%%")
        placeholder = "%({})s".format

    return substitute(out, cast, placeholder)


def substitute(pg: str, cast: dict[str, str], placeholder) -> str:
    """Each marker of generated PostgreSQL → ``placeholder(marker)`` cast to its type."""
    def typed(marker: str) -> str:
        return f"CAST({placeholder(marker)} AS {types.PARAM_TYPES[cast[marker]].sql})"

    def replaced(m: re.Match) -> str:
        if m.group(2):  # x IN (array) → x = ANY(array)
            return ("<> ALL" if m.group(1) else "= ANY") + f"({typed(m.group(3))})"
        return typed(m.group(3))

    return _MARKER.sub(replaced, pg)


def bound(rendered: Rendered) -> tuple[str, dict]:
    """A request's rendered template → (PostgreSQL, the values to bind by name)."""
    cast = {marker: kind for marker, (_, kind) in rendered.binds.items()}
    sql = postgres(rendered.sql, cast)
    return sql, {marker: value for marker, (value, _) in rendered.binds.items()}
