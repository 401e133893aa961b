"""SQL written for Tinybird (ClickHouse's dialect), checked and rewritten as PostgreSQL.

The Query API (``/v0/sql``) and ``q=`` on a pipe take SQL that callers wrote for Tinybird.
sqlglot parses it as ClickHouse; this module then decides on the parsed form, never on the
text:

* one statement, a SELECT (or a UNION/INTERSECT/EXCEPT of them): no INTO, FOR UPDATE,
  SETTINGS, SAMPLE, data-modifying CTE, parameter or qualified function name;
* every table it names is one the Query API exposes (a data source, its quarantine, a
  pipe, ``_``, ``tinybird.pipe_stats_rt``/``tinybird.datasources_ops_log``) or a CTE
  visible where it is named (resolved scope by scope, as PostgreSQL does: an inner CTE
  does not hide a catalog table elsewhere). The caller's scopes are checked against
  the list returned (``Compiled.refs``);
* every function is one of a fixed list (aggregates, arithmetic, text, dates); the
  ClickHouse ones with a PostgreSQL equivalent are rewritten (``count()``,
  ``countIf``/``sumIf``…, ``uniq``, ``toStartOfFifteenMinutes``…, ``toDate``…); any other
  function, type or construct is a 400 naming it.

The output names every identifier quoted, each data source by its schema, and a pipe as
``"__pipe_<name>"`` (``"__this"`` for ``_``): the caller (``sql_query.py``) defines those
from the pipe's rows. An unaliased output column keeps the name ClickHouse gives it
(``count()``, ``sum(price)``), as sqlglot writes the expression.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError

from cartpulse.errors import ApiError

#: FORMAT clause (lower case) → the writer sql_formats.py uses.
FORMATS = {"json": "json", "jsoneachrow": "ndjson", "csv": "csv", "csvwithnames": "csvwithnames",
           "tsv": "tsv", "tabseparated": "tsv", "tsvwithnames": "tsvwithnames",
           "tabseparatedwithnames": "tsvwithnames"}
#: Longest statement accepted, in characters.
MAX_CHARS = 100_000
THIS = "_"
THIS_CTE = "__this"

#: Clauses of a query that PostgreSQL has no reading of (or that write, or lock).
_CLAUSES = {"into": "SELECT … INTO", "locks": "FOR UPDATE/FOR SHARE", "sample": "SAMPLE", "settings": "SETTINGS",
            "prewhere": "PREWHERE", "distribute": "DISTRIBUTE BY", "cluster": "CLUSTER BY", "connect": "CONNECT BY",
            "options": "OPTIONS", "for_": "FOR", "match": "MATCH_RECOGNIZE", "laterals": "ARRAY JOIN/LATERAL",
            "pivots": "PIVOT", "qualify": "QUALIFY", "exclude": "EXCEPT (columns)",
            "operation_modifiers": "query modifiers", "kind": "SELECT AS STRUCT/VALUE"}
#: Node types refused wherever they appear.
_REFUSED = {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Merge: "MERGE",
            exp.Create: "CREATE", exp.Drop: "DROP", exp.Alter: "ALTER", exp.Command: "a command",
            exp.Set: "SET", exp.Transaction: "a transaction", exp.Commit: "COMMIT", exp.Rollback: "ROLLBACK",
            exp.Placeholder: "a placeholder", exp.Parameter: "a parameter", exp.SessionParameter: "a session parameter",
            exp.Dot: "a qualified name (schema.function or a.b.c)", exp.TableSample: "SAMPLE", exp.Copy: "COPY",
            exp.Into: "SELECT … INTO", exp.Lock: "FOR UPDATE/FOR SHARE", exp.Describe: "DESCRIBE",
            exp.Pragma: "PRAGMA", exp.Grant: "GRANT", exp.Use: "USE", exp.Kill: "KILL",
            exp.TruncateTable: "TRUNCATE", exp.Cache: "CACHE", exp.Uncache: "UNCACHE", exp.Declare: "DECLARE",
            exp.Execute: "EXECUTE", exp.LoadData: "LOAD DATA", exp.Refresh: "REFRESH", exp.Analyze: "ANALYZE",
            exp.Final: "FINAL"}
#: Joins PostgreSQL has (besides LEFT/RIGHT/FULL, which sqlglot keeps apart as the side).
_JOINS = {"", "INNER", "OUTER", "CROSS"}
#: Functions left as they are (sqlglot writes each in PostgreSQL's spelling).
_FUNCTIONS = tuple(getattr(exp, name) for name in (
    "Count", "Sum", "Avg", "Min", "Max", "Round", "Abs", "Floor", "Ceil", "Sqrt", "Ln", "Pow", "Coalesce",
    "Nullif", "Greatest", "Least", "If", "Case", "Cast", "Lower", "Upper", "Length", "Concat", "Substring",
    "Trim", "TimestampTrunc", "DateTrunc", "CurrentTimestamp", "CurrentDate", "Extract", "Stddev",
    "StddevPop", "StddevSamp", "Variance", "VariancePop", "RowNumber", "Lag", "Lead", "And", "Or", "Exists",
    "JSONExtractScalar"))
#: Functions the rewrite below produces by name.
_NAMED = {"date_bin"}
#: Types a CAST may name.
_TYPES = {getattr(exp.DataType.Type, name) for name in (
    "TEXT", "VARCHAR", "CHAR", "NCHAR", "NVARCHAR", "INT", "BIGINT", "SMALLINT", "TINYINT", "UINT", "UBIGINT",
    "USMALLINT", "UTINYINT", "DOUBLE", "FLOAT", "DECIMAL", "DATE", "DATETIME", "DATETIME64", "TIMESTAMP",
    "TIMESTAMPTZ", "BOOLEAN", "INTERVAL")}
_BINS = {"tostartofminute": "1 minute", "tostartoffiveminutes": "5 minutes", "tostartoffiveminute": "5 minutes",
         "tostartoftenminutes": "10 minutes", "tostartoffifteenminutes": "15 minutes"}
_CASTS = {"todate": "DATE", "todatetime": "TIMESTAMPTZ", "tostring": "TEXT", "tofloat64": "DOUBLE",
          "tofloat32": "DOUBLE", **{f"to{s}int{b}": "BIGINT" for s in ("", "u") for b in (8, 16, 32, 64)}}
_PARTS = {"toyear": "YEAR", "tomonth": "MONTH", "todayofmonth": "DAY", "tohour": "HOUR", "tominute": "MINUTE",
          "tosecond": "SECOND", "todayofweek": "ISODOW"}
_AGGREGATES = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}
_STATISTICS = {"stddevpop": exp.StddevPop, "stddevsamp": exp.StddevSamp, "varpop": exp.VariancePop,
               "varsamp": exp.Variance}


@dataclass(frozen=True)
class Ref:
    """A table the statement reads: ``kind`` is datasource, quarantine, pipe, service or this."""

    kind: str
    name: str


@dataclass(frozen=True)
class Tables:
    """What a statement may name: data sources (and quarantines) → their schema, pipes,
    and whether ``_`` (the pipe of ``q=``/``pipeline``) is defined."""

    datasources: dict[str, str]
    quarantines: dict[str, str]
    pipes: frozenset[str]
    service: frozenset[str]
    this: bool = False


@dataclass
class Compiled:
    sql: str
    format: str | None
    refs: set[Ref] = field(default_factory=set)


def refuse(what: str) -> ApiError:
    return ApiError(400, f"{what} is not supported by CartPulse's Query API", construct=what)


def compile_sql(text: str, tables: Tables) -> Compiled:
    """The caller's ClickHouse SQL as checked PostgreSQL (see the module docstring)."""
    if not text or not text.strip():
        raise ApiError(400, "missing the SQL: pass it as q=… (or as the POST body)")
    if len(text) > MAX_CHARS:
        raise ApiError(400, f"the SQL is longer than {MAX_CHARS} characters")
    try:
        statements = [s for s in sqlglot.parse(text, read="clickhouse") if s is not None]
    except (ParseError, TokenError) as err:
        raise ApiError(400, f"SQL syntax error: {_first(err)}") from None
    except RecursionError:
        raise ApiError(400, "the SQL is nested too deeply") from None
    if len(statements) != 1:
        raise ApiError(400, f"send exactly one statement (got {len(statements)})")
    tree = statements[0]
    if not isinstance(tree, (exp.Select, exp.SetOperation)):
        raise refuse(f"a {type(tree).__name__.upper()} statement (only SELECT is)")
    fmt = _format(tree)
    _name_columns(tree)
    refs: set[Ref] = set()
    _resolve(tree, frozenset(), tables, refs)
    rewrite(tree)
    try:
        sql = tree.sql(dialect="postgres", identify=True, comments=False, unsupported_level=ErrorLevel.RAISE)
    except (SqlglotError, ValueError) as err:
        raise ApiError(400, f"cannot be written for PostgreSQL: {_first(err)}") from None
    return Compiled(sql=sql, format=fmt, refs=refs)


def rewrite(tree: exp.Expression) -> None:
    """Check every node of a parsed ClickHouse query and rewrite it, in place, as
    PostgreSQL (also what an imported Tinybird node goes through: cli/tinybird_import.py)."""
    for node in reversed(list(tree.walk())):
        _check(node)
        new = _rewrite(node)
        if new is not node:
            node.replace(new)
    for node in tree.walk():
        _check_function(node)


def _first(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _format(tree: exp.Expression) -> str | None:
    given = tree.args.get("format")
    if given is None:
        return None
    tree.set("format", None)
    name = given.name
    if name.lower() not in FORMATS:
        raise ApiError(400, f"FORMAT {name[:40]} is not supported: use one of JSON, JSONEachRow, CSV, CSVWithNames,"
                            " TSV, TSVWithNames", construct=f"FORMAT {name[:40]}")
    return FORMATS[name.lower()]


def _name_columns(tree: exp.Expression) -> None:
    """Give each unaliased output expression the name ClickHouse would (``count()``)."""
    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    if not isinstance(select, exp.Select):
        return
    for i, column in enumerate(select.expressions):
        if isinstance(column, (exp.Alias, exp.Column, exp.Star)):
            continue
        select.expressions[i] = exp.alias_(column, column.sql("clickhouse")[:63], quoted=True)


def _resolve(node: exp.Expression, ctes: frozenset[str], tables: Tables, refs: set[Ref]) -> None:
    """Check and replace each table reference, knowing which CTE names are visible here."""
    if isinstance(node, exp.Table):
        _table(node, ctes, tables, refs)
        return
    with_ = node.args.get("with_")
    if with_ is not None:
        names = [cte.alias for cte in with_.expressions]
        for name in names:
            if not name or name.startswith("__"):
                raise ApiError(400, f"invalid CTE name {name!r}: names starting with __ are CartPulse's")
        for i, cte in enumerate(with_.expressions):
            seen = names if with_.args.get("recursive") else names[:i]
            _resolve(cte.this, ctes | frozenset(seen), tables, refs)
        ctes = ctes | frozenset(names)
    for child in list(node.iter_expressions()):
        if child is not with_:
            _resolve(child, ctes, tables, refs)


def _table(node: exp.Table, ctes: frozenset[str], tables: Tables, refs: set[Ref]) -> None:
    if not isinstance(node.this, exp.Identifier):
        raise refuse(f"the table function {node.this.sql('clickhouse')[:60]}")
    if node.args.get("catalog") is not None:
        raise refuse(f"the three-part name {node.sql('clickhouse')[:80]}")
    name, schema = node.name, node.args.get("db")
    schema = schema.name if schema is not None else None
    if schema is None and name in ctes:
        return
    if schema == "tinybird" and name in tables.service:
        ref, target = Ref("service", name), ("tinybird", name)
    elif schema is not None:
        raise ApiError(404, f"table {schema}.{name} not found: the Query API reads data sources, pipes and"
                            f" tinybird.{', tinybird.'.join(sorted(tables.service))}", table=f"{schema}.{name}")
    elif name == THIS and tables.this:
        ref, target = Ref("this", name), (None, THIS_CTE)
    elif name in tables.datasources:
        ref, target = Ref("datasource", name), (tables.datasources[name], name)
    elif name in tables.quarantines:
        ref, target = Ref("quarantine", name), (tables.quarantines[name], name)
    elif name in tables.pipes:
        ref, target = Ref("pipe", name), (None, f"__pipe_{name}")
    else:
        raise ApiError(404, f"table {name} not found: the Query API reads data sources, their quarantines,"
                            " pipes (and _ on a pipe)", table=name)
    refs.add(ref)
    alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(name, quoted=True))
    new = exp.Table(this=exp.to_identifier(target[1], quoted=True), alias=alias)
    if target[0] is not None:
        new.set("db", exp.to_identifier(target[0], quoted=True))
    node.replace(new)


def _check(node: exp.Expression) -> None:
    for kind, what in _REFUSED.items():
        if isinstance(node, kind):
            raise refuse(what)
    for arg, what in _CLAUSES.items():
        if isinstance(node, exp.Query) and node.args.get(arg):
            raise refuse(what)
    if isinstance(node, exp.Join):
        kind = (node.args.get("kind") or "").upper()
        if node.args.get("global_") or node.args.get("method") or kind not in _JOINS:
            raise refuse(f"{node.args.get('method') or kind or 'GLOBAL'} JOIN")
    if isinstance(node, exp.Column) and (node.args.get("db") is not None or node.args.get("catalog") is not None):
        raise refuse(f"the qualified column {node.sql('clickhouse')[:80]}")


def _check_function(node: exp.Expression) -> None:
    if isinstance(node, exp.Anonymous) and node.name.lower() in _NAMED:
        return
    if isinstance(node, exp.Func) and not isinstance(node, _FUNCTIONS):
        name = node.name if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc, exp.CombinedAggFunc)) else \
            node.sql_name()
        raise ApiError(400, f"function {name[:60]} is not supported by CartPulse's Query API (it has no"
                            " PostgreSQL equivalent here; see docs/query-api.md)", construct=name[:60])
    if isinstance(node, exp.DataType) and node.this not in _TYPES:
        raise refuse(f"the type {node.sql('clickhouse')[:40]}")


def _args(node: exp.Expression, count: int) -> list[exp.Expression]:
    args = list(node.expressions)
    if len(args) != count:
        raise ApiError(400, f"{node.name}() takes {count} argument{'s' if count != 1 else ''}", construct=node.name)
    return args


def _cast(value: exp.Expression, to: str) -> exp.Cast:
    return exp.Cast(this=value, to=exp.DataType.build(to))


def _rewrite(node: exp.Expression) -> exp.Expression:
    """One ClickHouse function as its PostgreSQL equivalent (node unchanged otherwise)."""
    if isinstance(node, exp.Count) and node.this is None and not node.expressions:
        return exp.Count(this=exp.Star())
    if isinstance(node, exp.ApproxDistinct):
        return exp.Count(this=exp.Distinct(expressions=[node.this]))
    if isinstance(node, exp.CountIf):
        return exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=node.this))
    if isinstance(node, exp.AnonymousAggFunc) and node.name.lower() == "uniqexact":
        return exp.Count(this=exp.Distinct(expressions=_args(node, 1)))
    if isinstance(node, (exp.Anonymous, exp.AnonymousAggFunc)) and node.name.lower() in _STATISTICS:
        return _STATISTICS[node.name.lower()](this=_args(node, 1)[0])
    if isinstance(node, exp.CombinedAggFunc):
        return _combined(node)
    if isinstance(node, exp.Round) and isinstance(node.args.get("decimals"), exp.Literal) \
            and node.args["decimals"].is_int and int(node.args["decimals"].this) >= 0:
        return _round(node.this, int(node.args["decimals"].this))
    if isinstance(node, exp.Bracket):
        return _map_value(node)
    if isinstance(node, exp.DayOfWeekIso):
        return _cast(exp.Extract(this=exp.var("ISODOW"), expression=node.this), "BIGINT")
    if not isinstance(node, exp.Anonymous):
        return node
    name = node.name.lower()
    if name in _BINS:
        (value,) = _args(node, 1)
        return exp.Anonymous(this="date_bin", expressions=[
            _cast(exp.Literal.string(_BINS[name]), "INTERVAL"), value,
            _cast(exp.Literal.string("2000-01-01 00:00:00+00"), "TIMESTAMPTZ")])
    if name == "todatetime":  # a DateTime has whole seconds: toDateTime of a DateTime64 truncates
        return exp.TimestampTrunc(this=_cast(_args(node, 1)[0], "TIMESTAMPTZ"), unit=exp.var("SECOND"))
    if name in _CASTS:
        return _cast(_args(node, 1)[0], _CASTS[name])
    if name in _PARTS:
        (value,) = _args(node, 1)
        return _cast(exp.Extract(this=exp.var(_PARTS[name]), expression=value), "BIGINT")
    if name == "now":
        _args(node, 0)
        return exp.CurrentTimestamp()
    if name == "today":
        _args(node, 0)
        return exp.CurrentDate()
    if name == "multiif":
        args = list(node.expressions)
        if len(args) < 3 or len(args) % 2 == 0:
            raise ApiError(400, "multiIf() takes condition, value pairs and a last value", construct="multiIf")
        ifs = [exp.If(this=args[i], true=args[i + 1]) for i in range(0, len(args) - 1, 2)]
        return exp.Case(ifs=ifs, default=args[-1])
    return node


def _round(value: exp.Expression, digits: int) -> exp.Expression:
    """``round(x, d)`` as ClickHouse rounds a float: x scaled by 10^d, rounded half to
    even (PostgreSQL's round of a double precision), scaled back. PostgreSQL has no
    round(double precision, int), and round(numeric, int) rounds half away from zero."""
    scale = exp.Literal.number(10 ** digits)
    scaled = exp.Mul(this=_cast(exp.Paren(this=value), "DOUBLE"), expression=scale)
    return exp.Div(this=exp.Round(this=scaled), expression=scale.copy())


def _map_value(node: exp.Bracket) -> exp.Expression:
    """``parameters['limit']``: a value of a ClickHouse Map(String, String) (the one map
    exposed is ``tinybird.pipe_stats_rt.parameters``, a jsonb object here) as text,
    ``->>``. Left as a subscript it would be a jsonb value, which ``= '10'`` compares
    as the number 10 with the string "10", silently false. Anything else is refused."""
    keys = list(node.expressions)
    if len(keys) != 1 or not (isinstance(keys[0], exp.Literal) and keys[0].is_string):
        raise refuse("a subscript other than a map key given as a string (map['key'])")
    return exp.JSONExtractScalar(this=node.this, expression=keys[0])


def _combined(node: exp.CombinedAggFunc) -> exp.Expression:
    """``sumIf(x, cond)`` → ``sum(x) FILTER (WHERE cond)`` (and avg, min, max, count, uniq)."""
    name = node.name
    base = name[:-2].lower() if name.lower().endswith("if") else ""
    args = list(node.expressions)
    if base in _AGGREGATES and len(args) == 2:
        aggregate = _AGGREGATES[base](this=args[0])
    elif base == "count" and len(args) == 1:
        aggregate = exp.Count(this=exp.Star())
    elif base in ("uniq", "uniqexact") and len(args) == 2:
        aggregate = exp.Count(this=exp.Distinct(expressions=[args[0]]))
    else:
        raise ApiError(400, f"function {name[:60]} is not supported by CartPulse's Query API", construct=name[:60])
    return exp.Filter(this=aggregate, expression=exp.Where(this=args[-1]))
