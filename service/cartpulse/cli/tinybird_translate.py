"""One Tinybird pipe's nodes as one endpoint model's SQL: ClickHouse → PostgreSQL.

Each node before the endpoint node becomes a CTE of the endpoint model, named like the
node (a node that reads template parameters cannot be a model of its own: parameters
belong to the endpoint's function). Tables named in the SQL must be a data source of the
import (→ its staging model, ``ref('stg_<name>')``) or an earlier node. The template
goes through the static route (project/tinybird_static.py): a template that changes the
SQL's shape is refused by name, since pipes are served from one SQL function.

Output types: the endpoint's yml declares each column's type (its contract), so each is
read off the expression (a column's declared type, ``count()`` bigint, ``avg`` double,
``toStartOf…`` timestamptz, a CAST its type…) and the column is cast to it; an
expression whose type cannot be told is refused, naming the column, rather than guessed.
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from cartpulse.errors import ApiError
from cartpulse.project.tinybird_materialized import ViewError, expand
from cartpulse.project.tinybird_static import static
from cartpulse.project.tinybird_template import TemplateError, is_template, parse
from cartpulse.serving import sql_dialect
from cartpulse.serving.tinybird_sql import substitute


class Untranslatable(ValueError):
    """A node CartPulse cannot translate: ``construct`` and ``why``."""

    def __init__(self, node: str, construct: str, why: str):
        super().__init__(f"node {node}: {construct}: {why}")
        self.node, self.construct, self.why = node, construct, why


_TIMES = re.compile(r"^(tostartof\w+|todatetime|todatetime64|now|date_bin|timestamptrunc|datetrunc)$", re.IGNORECASE)
_SQL_TYPES = {"bigint": "bigint", "double precision": "double precision", "text": "text", "timestamptz": "timestamptz",
              "date": "date", "boolean": "boolean"}
_CAST_TYPES = {exp.DataType.Type.BIGINT: "bigint", exp.DataType.Type.INT: "bigint", exp.DataType.Type.DOUBLE: "double precision",
               exp.DataType.Type.FLOAT: "double precision", exp.DataType.Type.TEXT: "text", exp.DataType.Type.VARCHAR: "text",
               exp.DataType.Type.DATE: "date", exp.DataType.Type.TIMESTAMPTZ: "timestamptz",
               exp.DataType.Type.DATETIME: "timestamptz", exp.DataType.Type.BOOLEAN: "boolean"}


def endpoint_sql(nodes: list, sources: dict[str, dict[str, str]], views: dict | None = None,
                 staging: dict[str, str] | None = None, renamed: dict[str, str] | None = None
                 ) -> tuple[str, dict, list[tuple[str, str]]]:
    """The pipe's nodes (the last is the endpoint) → (model SQL, params, output columns).

    ``sources``: data source → {column: SQL type}; ``staging``: data source → its staging
    model when not ``stg_<ds>``; ``renamed``: a data source's name in the datafiles → its
    imported name (``--prefix``), for tables only; ``views``: materialized pipes' targets → their View
    (a read of one becomes a read of its source: project/tinybird_materialized.py). The
    SQL reads ``{{ ref('<staging model>') }}`` and ``{{ param('x') }}``."""
    staging = staging or {}
    params: dict = {}
    markers: dict[str, str] = {}
    ctes: list[tuple[str, exp.Expression]] = []
    known = dict(sources)
    for node in nodes:
        text = node.sql
        if is_template(text):
            try:
                st = static(parse(text))
            except TemplateError as err:
                raise Untranslatable(node.name, err.construct or "template", str(err)) from None
            offset = len(markers)
            markers.update({f"__tbp_{int(m[6:]) + offset}": name for m, name in st.markers.items()})
            text = re.sub(r"__tbp_(\d+)", lambda m, offset=offset: f"__tbp_{int(m.group(1)) + offset}", st.sql)
            params.update(st.params)
        tree = _parse(node.name, text)
        try:
            tree = expand(node.name, tree, views or {})
        except ViewError as err:
            raise Untranslatable(err.node, err.construct, err.why) from None
        _inline_aliases(tree, known)
        _tables(node.name, tree, known, {name for name, _ in ctes}, renamed or {})
        try:
            sql_dialect.rewrite(tree)
        except ApiError as err:
            raise Untranslatable(node.name, err.extra.get("construct") or "SQL", err.message) from None
        _boolean_numbers(tree)
        known[node.name] = {name: _type(node.name, e, known, name) for name, e in _outputs(tree)}
        ctes.append((node.name, tree))
    last_name, last = ctes[-1]
    columns = list(known[last_name].items())
    _cast_outputs(last, known[last_name])
    for name, tree in ctes[:-1]:
        last = last.with_(name, as_=tree, copy=False) if isinstance(last, exp.Select) else last
    try:
        pg = last.sql(dialect="postgres", unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as err:
        raise Untranslatable(last_name, "SQL", str(err).splitlines()[0][:200]) from None
    cast = {m: params[n].type for m, n in markers.items()}
    sql = substitute(pg, cast, lambda marker: "{{ param('" + markers[marker] + "') }}")
    for ds in sources:
        sql = re.sub(rf'"?__tbref_{ds}"?', "{{ ref('" + staging.get(ds, f"stg_{ds}") + "') }}", sql)
    return sql, params, columns


def _inline_aliases(tree: exp.Select, known: dict) -> None:
    """ClickHouse lets a select item use an earlier item's alias (``sum(x) AS total,
    total / n``); PostgreSQL does not: each such name, when no table read has a column of
    that name, is replaced by the aliased expression."""
    reads = {t.name for t in tree.find_all(exp.Table)}
    columns = {c for t in reads for c in known.get(t, {})}
    aliases: dict[str, exp.Expression] = {}
    for item in tree.expressions:
        for column in list(item.find_all(exp.Column)):
            if not column.table and column.name in aliases and column.name not in columns:
                column.replace(exp.Paren(this=aliases[column.name].copy()))
        if isinstance(item, exp.Alias):
            aliases[item.alias] = item.this


def _boolean_numbers(tree: exp.Expression) -> None:
    """``WHERE 1 AND …``: ClickHouse reads a number as a condition, PostgreSQL does not."""
    for clause in list(tree.find_all(exp.Where, exp.Having)):
        for node in [clause.this, *(c for c in clause.this.find_all(exp.And, exp.Or) for c in (c.this, c.expression))]:
            if isinstance(node, exp.Literal) and not node.is_string:
                node.replace(exp.true() if float(node.this) else exp.false())


def _parse(node: str, text: str) -> exp.Expression:
    try:
        trees = [t for t in sqlglot.parse(text, read="clickhouse") if t is not None]
    except SqlglotError as err:
        raise Untranslatable(node, "SQL", f"cannot read it as ClickHouse: {str(err).splitlines()[0][:160]}") from None
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        raise Untranslatable(node, "SQL", "a node is one SELECT")
    return trees[0]


def _tables(node: str, tree: exp.Expression, known: dict, nodes: set[str], renamed: dict[str, str]) -> None:
    local = {cte.alias for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        written = table.name
        if table.args.get("db") is not None or not isinstance(table.this, exp.Identifier):
            raise Untranslatable(node, table.sql("clickhouse")[:60], "only data sources and nodes of the pipe are read")
        if written in local or written in nodes:
            continue
        name = renamed.get(written, written)
        if name not in known:
            raise Untranslatable(node, written, "no data source or earlier node of that name")
        table.set("this", exp.to_identifier(f"__tbref_{name}"))
        if table.args.get("alias") is None:
            table.set("alias", exp.TableAlias(this=exp.to_identifier(written)))


def _outputs(tree: exp.Select) -> list[tuple[str, exp.Expression]]:
    out = []
    for e in tree.expressions:
        if isinstance(e, exp.Star):
            raise Untranslatable("?", "SELECT *", "an endpoint's columns are declared: name them")
        name = e.alias_or_name
        if not name or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise Untranslatable("?", e.sql("clickhouse")[:60], "give the column a name (AS …)")
        out.append((name, e.unalias() if isinstance(e, exp.Alias) else e))
    return out


def _type(node: str, e: exp.Expression, known: dict, name: str) -> str:
    """The SQL type of an output expression, or Untranslatable naming the column."""
    if isinstance(e, exp.Column):
        for columns in known.values():
            if e.name in columns:
                return columns[e.name]
    if isinstance(e, exp.Cast):
        to = _CAST_TYPES.get(e.to.this)
        if to:
            return to
    if isinstance(e, (exp.Count, exp.ApproxDistinct, exp.RowNumber)) or (isinstance(e, exp.Sum) and isinstance(e.this, exp.If)):
        return "bigint"
    if isinstance(e, (exp.Filter, exp.Window)):
        return _type(node, e.this, known, name)
    if isinstance(e, exp.Case) and e.args.get("ifs"):
        return _type(node, e.args["ifs"][0].args["true"], known, name)
    if isinstance(e, exp.If):
        return _type(node, e.args["true"], known, name)
    if isinstance(e, (exp.Avg, exp.Div)):
        return "double precision"
    if isinstance(e, (exp.Sum, exp.Min, exp.Max, exp.Round, exp.Abs, exp.Coalesce, exp.Paren)):
        return _type(node, e.this, known, name)
    if isinstance(e, (exp.Mul, exp.Add, exp.Sub)):
        kinds = {_type(node, e.left, known, name), _type(node, e.right, known, name)}
        return "double precision" if "double precision" in kinds else kinds.pop() if len(kinds) == 1 else "double precision"
    if isinstance(e, exp.Literal):
        return "text" if e.is_string else ("bigint" if e.is_int else "double precision")
    if isinstance(e, (exp.TimestampTrunc, exp.DateTrunc)) or (isinstance(e, exp.Anonymous) and _TIMES.match(e.name)):
        return "timestamptz"
    if isinstance(e, (exp.Lower, exp.Upper, exp.Concat, exp.Substring, exp.Trim)):
        return "text"
    raise Untranslatable(node, name, f"cannot tell the type of {e.sql('postgres')[:60]}: write a CAST (toFloat64(…), …)")


def _cast_outputs(tree: exp.Select, types_: dict[str, str]) -> None:
    for i, e in enumerate(tree.expressions):
        name = e.alias_or_name
        inner = e.unalias() if isinstance(e, exp.Alias) else e
        tree.expressions[i] = exp.alias_(exp.cast(inner.copy(), types_[name]), name)
