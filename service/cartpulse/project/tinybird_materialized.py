"""Tinybird materialized pipes, imported as the plain aggregate they stand for.

In ClickHouse a materialized pipe is one SELECT run on every insert into its source,
its rows appended to a target data source (an AggregatingMergeTree with ``-State``
columns, a SummingMergeTree, …); endpoints read the target and finish the aggregate
(``countMerge(c)``, ``sumMerge(s)``, ``sum(n)``). CartPulse keeps no such table: an
endpoint over a target is rewritten to aggregate the view's source directly
(``expand``), its columns replaced by the view's expressions, each ``xMerge`` of an
``xState`` by the plain ``x`` over the same arguments, and the view's WHERE added to
the endpoint's. The result is a plain GROUP BY over the data source's staging model,
so it falls into #24's derivation where its shape allows (docs/realtime.md, "Derived
endpoints"), and is served scanning, exact, otherwise.

Only exact rewrites are made: a ``-State`` whose plain form answers differently
(``uniqState``: an estimate in ClickHouse, ``count(distinct)`` here) or has no plain
form (``quantilesState``, ``argMaxState``, ``groupArrayState``, …) is refused by name,
as is reading the target's rows as if merged (``count()`` of them, its columns listed
without GROUP BY: they are partial aggregates, one per insert, until ClickHouse merges
them). Its keys alone (GROUP BY, DISTINCT, min, max) read the same as the source's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError


class ViewError(ValueError):
    """A construct of a materialized pipe, or of a read of its target, with no exact mapping."""

    def __init__(self, node: str, construct: str, why: str):
        super().__init__(f"{node}: {construct}: {why}")
        self.node, self.construct, self.why = node, construct, why


#: A template parameter's marker in the SQL (project/tinybird_static.py), not a column.
_MARKER = re.compile(r"__tbp_\d+")
#: -State aggregates whose plain aggregate, over the same rows, is what -Merge returns.
EXACT = {"count", "sum", "avg", "min", "max", "uniqexact", "countif", "sumif", "avgif", "minif", "maxif",
         "uniqexactif"}
#: Why the others are refused.
_INEXACT = {"uniq": "an estimate in ClickHouse (HyperLogLog-like); count(distinct) would answer differently",
            "uniqcombined": "an estimate in ClickHouse; count(distinct) would answer differently",
            "uniqcombined64": "an estimate in ClickHouse; count(distinct) would answer differently",
            "uniqhll12": "an estimate in ClickHouse; count(distinct) would answer differently",
            "quantile": "an estimate in ClickHouse (reservoir sampling)", "quantiles": "an estimate in ClickHouse",
            "any": "any row's value, which ClickHouse does not define", "anylast": "the last inserted value, which rows do not record"}
#: A plain aggregate in the view (a SummingMergeTree's or SimpleAggregateFunction's
#: column) read back by a plain aggregate: (reader, view) → the plain aggregate.
_SIMPLE = {("sum", "sum"): "sum", ("sum", "count"): "count", ("min", "min"): "min", ("max", "max"): "max"}
_PLAIN = {exp.Sum: "sum", exp.Count: "count", exp.Min: "min", exp.Max: "max", exp.Avg: "avg"}


@dataclass
class View:
    """One materialized node: what it reads and each target column's expression."""

    node: str
    target: str
    source: str
    outputs: dict[str, exp.Expression]
    where: exp.Expression | None
    aggregating: bool


def _aggregate(e: exp.Expression) -> tuple[str, str] | None:
    """("state"|"plain", base name in lower case) of an aggregate call, else None."""
    combined = (exp.CombinedAggFunc, exp.CombinedParameterizedAgg)
    if isinstance(e, combined) and str(e.this).lower().endswith("state"):
        return "state", str(e.this)[:-5].lower()
    if isinstance(e, (*combined, exp.AnonymousAggFunc)) and str(e.this).lower().endswith("merge"):
        return "merge", str(e.this)[:-5].lower()
    if type(e) in _PLAIN:
        return "plain", _PLAIN[type(e)]
    if isinstance(e, exp.AggFunc):
        return "plain", e.key
    return None


def view(node, target: str) -> View:
    """A materialized node (TYPE materialized, DATASOURCE ``target``) read as a View."""
    text = node.sql
    if text.lstrip().startswith("%") or "{{" in text or "{%" in text:
        raise ViewError(node.name, "template", "a materialized node runs on every insert, with no parameters")
    try:
        trees = [t for t in sqlglot.parse(text, read="clickhouse") if t is not None]
    except SqlglotError as err:
        raise ViewError(node.name, "SQL", f"cannot read it as ClickHouse: {str(err).splitlines()[0][:160]}") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        raise ViewError(node.name, "SQL", "a materialized node is one SELECT")
    tree = trees[0]
    tree.set("order", None)  # the order rows are inserted in: no bearing on the target's aggregates
    for key, construct in (("with", "WITH"), ("joins", "JOIN"), ("having", "HAVING"), ("limit", "LIMIT"), ("distinct", "DISTINCT"), ("settings", "SETTINGS")):
        if tree.args.get(key):
            raise ViewError(node.name, construct, "a materialized node maps each inserted row; only WHERE and "
                            "GROUP BY are translated")
    if tree.find(exp.Window) or tree.find(exp.Subquery):
        raise ViewError(node.name, "a subquery or window", "a materialized node maps each inserted row")
    source = (tree.args.get("from_") or tree.args.get("from")).this
    if not isinstance(source, exp.Table) or source.args.get("db") is not None:
        raise ViewError(node.name, "FROM", "a materialized node reads one data source")
    for column in tree.find_all(exp.Column):
        column.set("table", None)
    outputs: dict[str, exp.Expression] = {}
    aggregating = False
    for e in tree.expressions:
        name = e.alias_or_name
        inner = e.unalias() if isinstance(e, exp.Alias) else e
        if not name or isinstance(inner, exp.Star):
            raise ViewError(node.name, inner.sql("clickhouse")[:60], "name each column of the target (AS …)")
        kind = _aggregate(inner)
        if kind is not None:
            aggregating = True
            if kind[0] == "state" and kind[1] not in EXACT:
                raise ViewError(node.name, str(inner.this), _INEXACT.get(kind[1], "no exact plain aggregate in PostgreSQL"))
            if kind[0] == "plain" and kind[1] not in ("sum", "count", "min", "max"):
                raise ViewError(node.name, inner.sql("clickhouse")[:60], "only sum, count, min and max are summed by "
                                "the target's merges; write an -State aggregate")
        elif inner.find(exp.AggFunc):
            raise ViewError(node.name, inner.sql("clickhouse")[:60], "an aggregate inside an expression of the target")
        outputs[name] = inner
    where = tree.args.get("where")
    return View(node.name, target, source.name, outputs, where.this if where else None, aggregating)


def _plain(state: exp.Expression, base: str | None = None) -> exp.Expression:
    """The plain aggregate ``base(args…)`` (by default x of an ``xState(args…)`` call)."""
    base = base or str(state.this)[:-5]
    args = ", ".join(a.sql("clickhouse") for a in state.expressions)
    return sqlglot.parse_one(f"{base}({args})", read="clickhouse")


def expand(node: str, tree: exp.Select, views: dict[str, View | None]) -> exp.Select:
    """``tree`` with every read of a view's target replaced by a read of its source
    (a target whose view was refused, None in ``views``, is refused in turn)."""
    for table in list(tree.find_all(exp.Table)):
        if table.name not in views or table.args.get("db") is not None:
            continue
        if views[table.name] is None:
            raise ViewError(node, table.name, "the materialized pipe into it was refused (above)")
        _expand_one(node, table, views[table.name])
    return tree


def _expand_one(node: str, table: exp.Table, found: View) -> None:
    select = table.parent.parent if isinstance(table.parent, exp.From) else None
    if not isinstance(select, exp.Select) or select.args.get("joins"):
        raise ViewError(node, table.name, "the target of a materialized pipe is read only as the one FROM of a SELECT")
    if any(s is not select for s in select.find_all(exp.Select)):
        raise ViewError(node, table.name, "a subquery beside a read of a materialized pipe's target")
    alias = table.alias_or_name
    aliases = {e.alias_or_name for e in select.expressions}
    if found.aggregating:
        _partial_rows(node, select, found)
    merged = False
    for column in list(select.find_all(exp.Column)):
        if column.table not in ("", alias, table.name) or _MARKER.fullmatch(column.name):
            continue
        clause = column.find_ancestor(exp.Order, exp.Having, exp.Where, exp.Group, exp.Select)
        if isinstance(clause, (exp.Order, exp.Having)) and column.name in aliases and not column.table:
            continue
        expression = found.outputs.get(column.name)
        if expression is None:
            raise ViewError(node, column.name, f"not a column of {found.target}")
        if _aggregate(expression) is None:
            replacement = expression.copy()
            if column.parent is select and not (isinstance(replacement, exp.Column) and replacement.name == column.name):
                replacement = exp.alias_(replacement, column.name)
            column.replace(replacement)
            continue
        merged = True
        _merge(node, column, expression, found)
    if found.aggregating and not merged and not (select.args.get("group") or select.args.get("distinct")
                                                  or select.find(exp.Min, exp.Max)):
        raise ViewError(node, found.target, "read without -Merge: its rows are partial aggregates until ClickHouse "
                        "merges them")
    table.replace(exp.to_table(found.source))
    if found.where is not None:
        select.where(found.where.copy(), append=True, copy=False)


def _partial_rows(node: str, select: exp.Select, found: View) -> None:
    """Refuse an aggregate that counts or sums the target's own rows (``count()``,
    ``sum(key)``…): they are partial aggregates, one per insert, until ClickHouse merges
    them. ``-Merge`` calls, ``min``/``max`` (the same over groups as over rows) and a
    plain aggregate of a summed column are what reads them exactly."""
    for call in select.find_all(exp.AggFunc):
        kind = _aggregate(call)
        if kind is None or kind[0] == "merge" or kind[1] in ("min", "max"):
            continue
        argument = call.this if isinstance(call.this, exp.Column) else None
        summed = found.outputs.get(argument.name) if argument is not None else None
        if summed is None or (_aggregate(summed) or ("",))[0] != "plain":
            raise ViewError(node, call.sql("clickhouse")[:60], f"over {found.target}'s rows, which are partial "
                            "aggregates until ClickHouse merges them: read its columns with -Merge")


def _merge(node: str, column: exp.Column, expression: exp.Expression, found: View) -> None:
    """Replace the call that reads an aggregate column of the target by its plain aggregate."""
    call = column.parent
    kind = _aggregate(call) if call is not None else None
    view_kind, base = _aggregate(expression)
    # countMerge of a countIfState: the -If combinator's state is its aggregate's state.
    if view_kind == "state" and kind in (("merge", base), ("merge", base.removesuffix("if"))) \
            and len(call.expressions) == 1:
        plain = _plain(expression)
    elif view_kind == "plain" and kind is not None and kind[0] == "plain" and (kind[1], base) in _SIMPLE \
            and call.this is column:
        plain = _plain(expression, _SIMPLE[(kind[1], base)]) if base != _SIMPLE[(kind[1], base)] else expression.copy()
    else:
        written = call.sql("clickhouse")[:60] if call is not None else column.name
        want = f"{base}Merge({column.name})" if view_kind == "state" else f"sum/min/max({column.name})"
        raise ViewError(node, written, f"{column.name} is {expression.sql('clickhouse')[:60]} in {found.node}: read "
                        f"it as {want}")
    call.replace(plain)
