"""Recognizing endpoints whose SQL can be answered from rollups (issue #24, docs/realtime.md).

An endpoint is the SQL its author writes. When that SQL aggregates one data source
through its staging model, in a shape whose every aggregate can be kept as sums and
counts, CartPulse can keep rollups of it current and answer from them exactly; this
module decides, from the *compiled* SQL (parameters are ``$n``), whether the endpoint is
in that class, and describes it (``Derivation``). Anything else is served as written,
and the ``Refusal`` says why in one line, naming the construct, so that the build and
``GET /v0/pipes/<name>`` can tell the author.

The class (``recognize``):

- ``FROM`` one staging model of a data source that has a pending twin (the model over
  its ``_pending`` table that rollups absorb), directly or through ``WITH`` queries that
  only pick its columns and filter them without parameters; no join, no subquery;
- ``GROUP BY`` columns, and at most one time bucket of the data source's time column:
  ``date_bin(width, t, origin)`` or ``time_bucket(width, t)`` (what ``time_bin()``
  compiles to), the width a fixed interval or a declared parameter with an ``enum``; or
  ``date_trunc`` to the second, minute, hour or day (in UTC, as the service reads);
- aggregates ``sum``, ``count(*)``, ``count(x)``, ``avg``, ``min``, ``max`` over columns
  or expressions of them (no ``DISTINCT``, ``FILTER`` or parameter inside);
- ``WHERE`` conjuncts that are fixed predicates of the row (kept in the rollup's own
  filter), or declared parameters in the README's forms: ``t >= $start``, ``t < $end``,
  ``col = $p``, ``col = any($p)``, each optionally as ``$p is null or …``;
- then ``HAVING``, ``ORDER BY``, ``LIMIT``/``OFFSET`` over the aggregated rows.

How each aggregate is kept (the rollup's measures are sign-weighted sums: a retraction
of a deleted event is a pending row with sign -1, docs/realtime.md):
``count(*)`` is ``sum(sign)``; ``count(x)`` is ``sum(sign)`` over rows where x is not
null; ``sum(x)`` is ``sum(sign * x)`` beside ``count(x)`` (a sum over no non-null value
is NULL in SQL, which a sum of signs cannot tell from 0); ``avg(x)`` is that sum over
that count. ``min(x)`` and ``max(x)`` cannot be undone by a retraction, so ``x`` joins
the rollup's grain instead: a grain row whose count of events falls to 0 is removed,
hence the min over the remaining rows is the min over the remaining events.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from cartpulse.project import types
from cartpulse.project.derivation_spec import Bucket, Derivation, Measure, ParamFilter, Refused, StagingModel, width_seconds
from cartpulse.project.derivation_sql import (SQL_OPTIONS, conjuncts, construct_name, optional_test, origin_offset,
                                              plain_select, refuse_volatile, unqualified, with_queries)

__all__ = ["AGGREGATES", "SQL_OPTIONS", "Bucket", "Derivation", "Measure", "ParamFilter", "Refused", "StagingModel",
           "recognize", "unqualified", "width_seconds"]

#: date_trunc's units that are buckets of a fixed width on UTC midnights (the service's
#: sessions are UTC, and a derived answer's function is pinned to it: macros/endpoint.sql).
_TRUNCATED = {"second": "1 second", "minute": "1 minute", "hour": "1 hour", "day": "1 day"}
AGGREGATES = (exp.Sum, exp.Count, exp.Avg, exp.Min, exp.Max)


def recognize(sql: str, params: dict[str, object], staging: dict[str, StagingModel]) -> Derivation:
    """The endpoint's compiled ``sql`` as a ``Derivation``, or ``Refused`` naming the
    construct that puts it outside the class. ``params`` maps each declared parameter's
    name (in declaration order: ``$1`` is the first) to its ``Param``; ``staging`` the
    staging models by name."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError as err:
        raise Refused(f"SQL the recognizer cannot parse ({str(err).splitlines()[0]})") from None
    return _Recognizer(list(params.items()), staging).select(tree)


class _Recognizer:
    def __init__(self, params: list[tuple[str, object]], staging: dict[str, StagingModel]):
        self.params = params
        self.staging_models = staging

    # -- the statement -----------------------------------------------------------------

    def select(self, tree: exp.Expression) -> Derivation:
        if not isinstance(tree, exp.Select):
            raise Refused(f"a {construct_name(tree)} statement (only a SELECT with GROUP BY is derived)")
        plain_select(tree)
        if tree.find(exp.Window):
            raise Refused("a window function (OVER)")
        self.qualifiers: set[str] = set()
        self.staging, self.columns, self.view_filter = self._from(tree, with_queries(tree), ())
        outputs = {(e.alias_or_name if isinstance(e, exp.Alias) else None): e for e in tree.expressions}
        group = self._group(tree, outputs)
        if not group[0] and group[1] is None and not any(e.find(*AGGREGATES) for e in tree.expressions):
            raise Refused("no GROUP BY and no aggregate (the endpoint returns rows, not aggregates)")
        self.grouped = {g.sql(**SQL_OPTIONS) for g in group[2]}
        measures: dict[str, Measure] = {"events": Measure("events")}
        extrema: list[str] = []
        for item in tree.expressions:
            self._output(item.this if isinstance(item, exp.Alias) else item, measures, extrema)
        having = tree.args.get("having")
        if having is not None:
            self._post(having.this, measures, extrema, "HAVING")
        for ordered in (tree.args.get("order") or exp.Order()).expressions:
            self._post(ordered.this, measures, extrema, "ORDER BY", outputs)
        for key in ("limit", "offset"):
            value = tree.args.get(key)
            if value is not None:
                self._count_or_param(value.expression, key.upper())
        ranges, filters, fixed = self._where(tree.args.get("where"))
        post = tuple(name for name, key in (("HAVING", "having"), ("ORDER BY", "order"), ("LIMIT", "limit"),
                                            ("OFFSET", "offset")) if tree.args.get(key))
        return Derivation(staging=self.staging, group_by=tuple(group[0]), bucket=group[1],
                          range_params=(ranges["start"][0], ranges["end"][0]),
                          range_optional=(ranges["start"][1], ranges["end"][1]), param_filters=tuple(filters),
                          fixed_filter=fixed, measures=tuple(measures.values()), extrema=tuple(extrema), post=post)

    def _from(self, tree: exp.Select, ctes: dict[str, exp.Select], seen: tuple[str, ...]):
        """The staging model ``tree`` reads, the columns it sees, and the fixed predicates
        on the way: a WITH query (an intermediate node of a Tinybird pipe, a dbt-style
        ``with source as (…)``) that only picks columns of the staging model and filters
        them without parameters is the staging model with that filter."""
        source = tree.args.get("from_") or tree.args.get("from")
        if source is None:
            raise Refused("no FROM")
        table = source.this
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
            raise Refused(f"FROM {construct_name(table)} (only a data source's staging model is derived)")
        self.qualifiers |= {table.name, table.alias} - {""}
        if not table.db and table.name in ctes and table.name not in seen:
            return self._view(table.name, ctes, seen + (table.name,))
        model = self.staging_models.get(table.name)
        if model is None:
            raise Refused(f"FROM {table.name}, which is not a data source's staging model")
        if model.pending is None:
            raise Refused(f"FROM {table.name}, which has no pending twin {table.name}_pending (the model of the same "
                          f"columns over the data source's _pending table that rollups absorb: docs/realtime.md)")
        return model, set(model.columns), ()

    def _view(self, name: str, ctes: dict[str, exp.Select], seen: tuple[str, ...]):
        body = ctes[name]
        if not isinstance(body, exp.Select):
            raise Refused(f"the WITH query {name}: a {construct_name(body)} statement (only a filter of columns is read through)")
        plain_select(body)
        for key, construct in (("group", "GROUP BY"), ("having", "HAVING"), ("order", "ORDER BY"), ("limit", "LIMIT"),
                               ("offset", "OFFSET")):
            if body.args.get(key):
                raise Refused(f"the WITH query {name}: {construct} (only a filter of columns is read through)")
        self.staging, columns, fixed = self._from(body, ctes, seen)
        self.columns = columns
        picked: set[str] = set()
        for item in body.expressions:
            if isinstance(item, exp.Star) or isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                picked |= columns
                continue
            inner = item.this if isinstance(item, exp.Alias) else item
            if not isinstance(inner, exp.Column) or item.alias_or_name != inner.name:
                raise Refused(f"the WITH query {name}: the computed column {item.sql(**SQL_OPTIONS)}"
                              " (only columns, under their own names, are read through)")
            picked.add(self._column(inner))
        where = body.args.get("where")
        if where is not None:
            if where.find(exp.Parameter):
                raise Refused(f"the WITH query {name}: a parameter in its WHERE (parameters filter the endpoint's own WHERE)")
            fixed += tuple(self._fixed(c) for c in conjuncts(where.this))
        return self.staging, picked, fixed

    # -- GROUP BY and the time bucket --------------------------------------------------

    def _group(self, tree, outputs) -> tuple[list[str], Bucket | None, list[exp.Expression]]:
        columns, bucket, exprs = [], None, []
        for item in (tree.args.get("group") or exp.Group()).expressions:
            if isinstance(item, exp.Literal) and not item.is_string:
                position = int(item.this)
                if not 1 <= position <= len(tree.expressions):
                    raise Refused(f"GROUP BY {position}, past the select list")
                chosen = tree.expressions[position - 1]
                item = chosen.this if isinstance(chosen, exp.Alias) else chosen
            elif isinstance(item, exp.Column) and not item.table and item.name not in self.columns \
                    and item.name in outputs:
                item = outputs[item.name].this
            exprs.append(item)
            if isinstance(item, exp.Column):
                columns.append(self._column(item))
                continue
            found = self._bucket(item)
            if found is None:
                raise Refused(f"GROUP BY {item.sql(**SQL_OPTIONS)} (only columns and a time bucket of "
                              f"{self.staging.time_column})")
            if bucket is not None:
                raise Refused("GROUP BY two time buckets")
            bucket = found
        return columns, bucket, exprs

    def _bucket(self, node: exp.Expression) -> Bucket | None:
        if isinstance(node, exp.Cast):
            node = node.this
        if isinstance(node, exp.TimestampTrunc | exp.DateTrunc):
            unit = node.args.get("unit")
            unit = (unit.name if isinstance(unit, exp.Var | exp.Literal) else "").lower()
            if unit not in _TRUNCATED:
                raise Refused(f"{node.sql(**SQL_OPTIONS)} (date_trunc derives by second, minute, hour or day; "
                              "date_bin takes any width)")
            width, column, origin = exp.Literal.string(_TRUNCATED[unit]), node.this, None
        elif isinstance(node, exp.DateBin):
            width, column, origin = node.this, node.expression, node.args.get("unit")
        elif isinstance(node, exp.Anonymous) and node.name.lower() == "time_bucket" and len(node.expressions) == 2:
            (width, column), origin = node.expressions, None
        else:
            return None
        if not (isinstance(column, exp.Column) and self._column(column) == self.staging.time_column):
            raise Refused(f"a time bucket of {column.sql(**SQL_OPTIONS)} (only of {self.staging.time_column})")
        if origin is not None and origin.find(exp.Parameter, exp.Column):
            raise Refused("a time bucket whose origin is not a constant")
        width = width.this if isinstance(width, exp.Cast) else width
        if isinstance(width, exp.Interval):
            width = exp.Literal.string(f"{width.this.name} {width.unit.name if width.unit else ''}".strip())
        if isinstance(width, exp.Parameter) or isinstance(width, exp.Paren) and isinstance(width.this, exp.Parameter):
            name, param = self._param(width)
            if not getattr(param, "enum", None):
                raise Refused(f"a time bucket whose width is the parameter {name} without an enum of widths")
            widths = tuple(param.enum)
        elif isinstance(width, exp.Literal) and width.is_string:
            name, widths = None, (width.this,)
        else:
            raise Refused(f"a time bucket of width {width.sql(**SQL_OPTIONS)} (a constant or an enum parameter)")
        offset = origin_offset(origin)
        for each in widths:
            seconds = width_seconds(each)  # a fixed length
            if 86400 % seconds:
                raise Refused(f"a time bucket of width '{each}' (only widths that divide a day: the rollups' "
                              "buckets must fall inside the endpoint's)")
            if offset % seconds:
                raise Refused(f"a time bucket of width '{each}' whose origin is not on a '{each}' boundary of a UTC day")
        return Bucket(widths=widths, param=name, origin=origin.sql(**SQL_OPTIONS) if origin is not None else None)

    # -- the select list, HAVING and ORDER BY ------------------------------------------

    def _output(self, node: exp.Expression, measures: dict, extrema: list, clause: str = "SELECT") -> None:
        """An output expression: group keys outside aggregates, aggregates we can keep."""
        if node.sql(**SQL_OPTIONS) in self.grouped:
            return
        if isinstance(node, AGGREGATES):
            self._aggregate(node, measures, extrema)
            return
        if isinstance(node, exp.Column):
            raise Refused(f"{clause} {node.sql(**SQL_OPTIONS)}, neither grouped nor aggregated")
        if isinstance(node, exp.Parameter):
            return  # a parameter's value is the same for every row
        if isinstance(node, (exp.Subquery, exp.Select, exp.Exists)):
            raise Refused(f"a subquery in {clause}")
        if isinstance(node, (exp.Anonymous, exp.AggFunc)) and node.name.lower() not in ("coalesce", "round", "abs"):
            if isinstance(node, exp.AggFunc) or node.name.lower() in ("string_agg", "array_agg", "percentile_cont"):
                raise Refused(f"the aggregate {node.sql(**SQL_OPTIONS)} (only sum, count, avg, min and max)")
            refuse_volatile(node)
        for child in node.iter_expressions():
            self._output(child, measures, extrema, clause)

    def _post(self, node, measures, extrema, clause, outputs=None) -> None:
        if isinstance(node, exp.Literal) and not node.is_string and clause == "ORDER BY":
            return  # a position in the select list
        if isinstance(node, exp.Collate):
            node = node.this
        if outputs and isinstance(node, exp.Column) and not node.table and node.name in outputs:
            return  # an output column by its alias
        self._output(node, measures, extrema, clause)

    def _aggregate(self, node: exp.Expression, measures: dict, extrema: list) -> None:
        call = node.sql(**SQL_OPTIONS)
        if node.find(exp.Distinct):
            raise Refused(f"{call} (DISTINCT inside an aggregate)")
        if isinstance(node.parent, exp.Filter):
            raise Refused(f"{call} FILTER (...)")
        argument = node.this
        if isinstance(node, exp.Count) and (argument is None or isinstance(argument, exp.Star)):
            return  # count(*): events
        if argument is None or node.expressions:
            raise Refused(f"{call} (one argument only)")
        if argument.find(AGGREGATES):
            raise Refused(f"{call} (an aggregate inside an aggregate)")
        if argument.find(exp.Parameter):
            raise Refused(f"{call} (a parameter inside an aggregate)")
        for column in argument.find_all(exp.Column):
            self._column(column)
        refuse_volatile(argument)
        expression = unqualified(argument).sql(**SQL_OPTIONS)
        if isinstance(node, (exp.Min, exp.Max)):
            if not isinstance(argument, exp.Column):
                raise Refused(f"{call} (min and max are derived over a column, which joins the rollup's grain)")
            extrema.append(self._column(argument))
            return
        measures.setdefault(f"count({expression})", Measure("count", expression))
        if not isinstance(node, exp.Count):
            measures.setdefault(f"sum({expression})", Measure("sum", expression))

    def _count_or_param(self, node, clause: str) -> None:
        if isinstance(node, exp.Literal) and not node.is_string:
            return
        if isinstance(self._uncast(node), exp.Parameter):
            self._param(node)
            return
        raise Refused(f"{clause} {node.sql(**SQL_OPTIONS)} (a number or a parameter)")

    # -- WHERE -------------------------------------------------------------------------

    def _where(self, where):
        ranges = {"start": (None, False), "end": (None, False)}
        filters: list[ParamFilter] = []
        fixed: list[str] = list(self.view_filter)
        for conjunct in conjuncts(where.this) if where is not None else ():
            if not conjunct.find(exp.Parameter):
                fixed.append(self._fixed(conjunct))
                continue
            optional, predicate = optional_test(conjunct)
            kind, column, name = self._param_predicate(predicate, conjunct)
            if optional is not None and self._param(optional)[0] != name:
                raise Refused(f"WHERE {conjunct.sql(**SQL_OPTIONS)} (the IS NULL test names another parameter)")
            if kind in ("start", "end"):
                if ranges[kind][0] is not None:
                    raise Refused(f"two {'start' if kind == 'start' else 'end'} bounds on {column}")
                ranges[kind] = (name, optional is not None)
            else:
                filters.append(ParamFilter(column, name, kind, optional is not None, unqualified(conjunct).sql(**SQL_OPTIONS)))
        fixed_sql = " and ".join(f"({f})" for f in fixed) if fixed else None
        return ranges, filters, fixed_sql

    def _fixed(self, conjunct: exp.Expression) -> str:
        """A predicate without parameters, as the rollups keep it."""
        for column in conjunct.find_all(exp.Column):
            self._column(column)
        if conjunct.find(exp.Subquery, exp.Select, exp.Exists):
            raise Refused("a subquery in WHERE")
        refuse_volatile(conjunct)
        return unqualified(conjunct).sql(**SQL_OPTIONS)

    def _param_predicate(self, node, conjunct) -> tuple[str, str, str]:
        """(kind, column, parameter) of ``t >= $p``, ``t < $p``, ``c = $p``, ``c = any($p)``."""
        flipped = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE, exp.EQ: exp.EQ}
        if type(node) in flipped and isinstance(node.this, exp.Parameter | exp.Any):
            node = flipped[type(node)](this=node.expression, expression=node.this)
        if type(node) in flipped and isinstance(node.this, exp.Column):
            column = self._column(node.this)
            value = self._uncast(node.expression)
            if isinstance(node, exp.EQ) and isinstance(value, exp.Any):
                name, param = self._param(value.this)
                if not getattr(param, "is_array", False):
                    raise Refused(f"WHERE {conjunct.sql(**SQL_OPTIONS)} (= any() of a parameter that is not an Array)")
                return "any", column, name
            if isinstance(value, exp.Parameter):
                name, param = self._param(value)
                if isinstance(node, exp.EQ):
                    if getattr(param, "is_array", False):
                        raise Refused(f"WHERE {conjunct.sql(**SQL_OPTIONS)} (an Array parameter compared with =)")
                    return "=", column, name
                if column == self.staging.time_column and isinstance(node, exp.GTE):
                    return "start", column, name
                if column == self.staging.time_column and isinstance(node, exp.LT):
                    return "end", column, name
                raise Refused(f"WHERE {conjunct.sql(**SQL_OPTIONS)} (a parameter bounds only {self.staging.time_column},"
                              f" as {self.staging.time_column} >= start and {self.staging.time_column} < end)")
        raise Refused(f"WHERE {conjunct.sql(**SQL_OPTIONS)} (a parameter is used as column = $p, column = any($p),"
                      f" a range on {self.staging.time_column}, or `$p is null or …` of one of those)")

    # -- names -------------------------------------------------------------------------

    def _uncast(self, node: exp.Expression) -> exp.Expression:
        """``$p::t`` (and ``cast($p as t)``) as ``$p`` where t is the parameter's own type
        (what a Tinybird template's typed parameter translates to): the cast changes nothing."""
        inner = node
        while isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Cast):
            bare = inner.this
            while isinstance(bare, exp.Paren):
                bare = bare.this
            if isinstance(bare, exp.Parameter):
                param = self._param(bare)[1]
                kind = getattr(param, "kind", None)
                if kind is not None and types.of_sql(inner.to.sql(dialect="postgres")) == kind:
                    return bare
        return node

    def _column(self, column: exp.Column) -> str:
        if column.table and column.table not in self.qualifiers | {self.staging.name}:
            raise Refused(f"the column {column.sql(**SQL_OPTIONS)} of another relation")
        if column.name not in self.columns:
            raise Refused(f"the column {column.name}, which {self.staging.name} does not have")
        return column.name

    def _param(self, node: exp.Expression) -> tuple[str, object]:
        while isinstance(node, exp.Paren | exp.Cast):
            node = node.this
        if not isinstance(node, exp.Parameter):
            raise Refused(f"{node.sql(**SQL_OPTIONS)} where a parameter was expected")
        index = int(node.this.this) - 1
        if not 0 <= index < len(self.params):
            raise Refused(f"${index + 1}, which no declared parameter is")
        return self.params[index]
