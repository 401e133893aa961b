"""A delete condition (Tinybird's ``delete_condition``, ``replace_condition``), parsed, never pasted.

Callers write the condition as they would for Tinybird: a ClickHouse boolean expression
over the data source's columns (``country = 'France' and event_time < '2024-01-01'``).
sqlglot parses it as ClickHouse; the parsed tree is then checked against a short list:

* columns: the data source's declared columns, unqualified;
* values: string and number literals (negative numbers too), ``NULL``, ``true``/``false``;
* operators: ``= != <> < <= > >=``, ``AND``, ``OR``, ``NOT``, parentheses, ``IN (…)`` and
  ``NOT IN (…)`` of values, ``BETWEEN … AND …``, ``IS [NOT] NULL``, ``LIKE``, ``ILIKE``;
* functions: ``toDate(x)`` (the UTC day of a DateTime), ``toDateTime(x)``, ``now()``,
  ``today()``, ``lower(x)``, ``upper(x)``.

Anything else (a subquery, another function, arithmetic, a second statement, a column
the data source does not declare) is a 400 that names it. The output is a psycopg
``sql.Composed`` with every identifier quoted from the declaration and every value a
bound parameter: the caller's text never reaches SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlglot
from psycopg import sql
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cartpulse.errors import ApiError
from cartpulse.project.datasources import DataSource

#: Longest condition accepted, in characters.
MAX_CHARS = 10_000
_COMPARISONS = {exp.EQ: "=", exp.NEQ: "<>", exp.LT: "<", exp.LTE: "<=", exp.GT: ">", exp.GTE: ">=",
                exp.Like: "like", exp.ILike: "ilike"}
_BOOLEAN = (exp.And, exp.Or, exp.Not, exp.Paren, exp.In, exp.Between, exp.Is, exp.Boolean, *_COMPARISONS)
#: Functions by lower-case name → (number of arguments, PostgreSQL template).
_FUNCTIONS = {"todate": (1, "(({}) at time zone 'UTC')::date"), "todatetime": (1, "({})::timestamptz"),
              "now": (0, "now()"), "today": (0, "(now() at time zone 'UTC')::date"),
              "lower": (1, "lower({})"), "upper": (1, "upper({})")}


@dataclass(frozen=True)
class Condition:
    """A checked condition: the SQL to put after WHERE, its parameters, and the text as sent."""

    sql: sql.Composed
    params: list
    text: str


def parse(text: str | None, source: DataSource, parameter: str = "delete_condition") -> Condition:
    """Parse and check ``text`` for ``source``; 400 naming what is not accepted."""
    if text is None or not text.strip():
        raise ApiError(400, f"{parameter} is required: a condition on the columns of '{source.name}'",
                       parameter=parameter)
    if len(text) > MAX_CHARS:
        raise ApiError(400, f"{parameter} is longer than {MAX_CHARS} characters", parameter=parameter)
    try:
        statements = [s for s in sqlglot.parse(text, read="clickhouse") if s is not None]
    except SqlglotError as err:
        raise ApiError(400, f"{parameter} is not a valid expression: {str(err).splitlines()[0][:200]}",
                       parameter=parameter) from None
    if len(statements) != 1:
        raise ApiError(400, f"{parameter} must be one expression, not {len(statements)} statements",
                       parameter=parameter)
    tree = statements[0]
    if not isinstance(tree, _BOOLEAN):
        raise ApiError(400, f"{parameter} must be a condition (a comparison, IN, BETWEEN, IS NULL, LIKE, "
                            f"joined by AND/OR/NOT), not {_name(tree)}", parameter=parameter)
    renderer = _Renderer(source, parameter)
    return Condition(renderer.render(tree), renderer.params, text)


def _name(node: exp.Expression) -> str:
    """How a refused node is named in the message: its SQL, shortened, and its kind."""
    try:
        text = node.sql(dialect="clickhouse")
    except SqlglotError:
        text = node.key
    text = text if len(text) <= 80 else text[:77] + "..."
    return f"'{text}' ({node.key.upper()})"


class _Renderer:
    def __init__(self, source: DataSource, parameter: str):
        self.columns = set(source.column_names)
        self.source = source
        self.parameter = parameter
        self.params: list = []

    def refuse(self, node: exp.Expression, why: str = "is not supported in a delete condition"):
        raise ApiError(400, f"{self.parameter}: {_name(node)} {why}", parameter=self.parameter)

    def render(self, node: exp.Expression) -> sql.Composable:
        if isinstance(node, exp.Paren):
            return sql.SQL("({})").format(self.render(node.this))
        if isinstance(node, (exp.And, exp.Or)):
            word = "and" if isinstance(node, exp.And) else "or"
            return sql.SQL("({} " + word + " {})").format(self.render(node.this), self.render(node.expression))
        if isinstance(node, exp.Not):
            return sql.SQL("(not {})").format(self.render(node.this))
        if type(node) in _COMPARISONS:
            return sql.SQL("({} " + _COMPARISONS[type(node)] + " {})").format(
                self.value(node.this), self.value(node.expression))
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, exp.Null):
                self.refuse(node, "is not supported: only IS NULL and IS NOT NULL")
            return sql.SQL("({} is null)").format(self.value(node.this))
        if isinstance(node, exp.In):
            if node.args.get("query") is not None or node.args.get("unnest") is not None or not node.expressions:
                self.refuse(node, "is not supported: IN takes a list of values")
            return sql.SQL("({} in ({}))").format(self.value(node.this),
                                                  sql.SQL(", ").join(self.value(v) for v in node.expressions))
        if isinstance(node, exp.Between):
            return sql.SQL("({} between {} and {})").format(self.value(node.this), self.value(node.args["low"]),
                                                            self.value(node.args["high"]))
        if isinstance(node, exp.Boolean):
            return sql.SQL("true" if node.this else "false")
        return self.refuse(node)

    def value(self, node: exp.Expression) -> sql.Composable:
        if isinstance(node, exp.Paren):
            return sql.SQL("({})").format(self.value(node.this))
        if isinstance(node, exp.Column):
            if node.table or node.name not in self.columns or not isinstance(node.this, exp.Identifier):
                self.refuse(node, f"is not a column of '{self.source.name}' (its columns: "
                                  f"{', '.join(self.source.column_names)})")
            return sql.Identifier(node.name)
        if isinstance(node, exp.Literal):
            return self.bind(node.this if node.is_string else _number(node.this))
        if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
            return self.bind(-_number(node.this.this))
        if isinstance(node, exp.Null):
            return sql.SQL("null")
        if isinstance(node, exp.Boolean):
            return sql.SQL("true" if node.this else "false")
        if isinstance(node, exp.Func):
            return self.function(node)
        return self.refuse(node)

    def function(self, node: exp.Func) -> sql.Composable:
        name = (node.name if isinstance(node, exp.Anonymous) else node.sql_name()).lower()
        if isinstance(node, exp.CurrentTimestamp):
            name = "now"
        elif isinstance(node, exp.CurrentDate):
            name = "today"
        arguments = list(node.expressions) if isinstance(node, exp.Anonymous) else [
            a for a in node.args.values() if isinstance(a, exp.Expression)]
        known = _FUNCTIONS.get(name)
        if known is None:
            self.refuse(node, "is not supported: the functions a delete condition may call are "
                              "toDate, toDateTime, now, today, lower, upper")
        if len(arguments) != known[0]:
            self.refuse(node, f"takes {known[0]} argument{'s' if known[0] != 1 else ''}")
        return sql.SQL(known[1]).format(*(self.value(a) for a in arguments))

    def bind(self, value) -> sql.Composable:
        self.params.append(value)
        return sql.Placeholder()


def _number(text: str) -> int | Decimal:
    """A numeric literal as an exact Python number (PostgreSQL compares it with the column's type)."""
    try:
        return int(text)
    except ValueError:
        return Decimal(text)
