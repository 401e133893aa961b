"""A Tinybird template rendered for one request (#25's second route), safely.

Where a template changes the SQL's shape (``columns()``, ``{% else %}``, ``sql_and``, a
condition on a value), it is rendered per request from its checked tree
(tinybird_template.parse): conditions are computed from constants and the request's
parsed values only; every value becomes a marker bound later (serving/tinybird_sql.py),
never SQL text; ``column()``, ``columns()`` and ``symbol()`` take only names among the
declared columns; ``error()``/``custom_error()`` raise TemplateError with their status.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field
from datetime import date, datetime

from cartpulse.project.tinybird_template import _UNITS, TYPED, If, Param, Set, TemplateError, _literal, _typed


@dataclass
class Rendered:
    """ClickHouse SQL with ``__tbp_<n>`` markers, and what each marker binds."""

    sql: str
    binds: dict = field(default_factory=dict)   # marker → (value, CartPulse type)


def render(tree: list, values: dict, declared: dict[str, Param], columns: frozenset[str]) -> Rendered:
    """The template for one request: ``values`` are the parsed parameters given (absent ones
    take the declared default); identifiers only from ``columns``. TemplateError for an
    ``error()``, a refused construct, or a missing required parameter."""
    out = Rendered("")
    scope = {**{name: p.default for name, p in declared.items()}, **values}
    for name, p in declared.items():
        if p.required and values.get(name) is None:
            raise TemplateError(p.required_message or f"missing required parameter '{name}'", name)
    given = {name for name, v in values.items() if v is not None}
    out.sql = _render(tree, scope, given, declared, columns, out)
    return out


def _render(tree, scope, given, declared, columns, out: Rendered) -> str:
    parts = []
    for part in tree:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, Set):
            scope[part.name] = _value(part.node, scope, given, declared, columns)
            given = given | {part.name}
        elif isinstance(part, If):
            for condition, body in part.branches:
                if condition is None or _value(condition, scope, given, declared, columns):
                    parts.append(_render(body, scope, given, declared, columns, out))
                    break
        else:
            parts.append(_sql(part.node, scope, given, declared, columns, out))
    return "".join(parts)


def _sql(node, scope, given, declared, columns, out: Rendered) -> str:
    """An ``{{ … }}`` as SQL: a value as a marker, an identifier checked against ``columns``."""
    if isinstance(node, ast.Call):
        name = node.func.id
        if name in TYPED or name == "Array":
            p = _typed(node)
            return _bind(out, scope.get(p.name), declared[p.name].type if p.name in declared else p.type)
        if name in ("column", "symbol"):
            return _identifier(_value(node.args[0], scope, given, declared, columns)
                               or (_literal(node.args[1], "column's default") if len(node.args) > 1 else None), columns)
        if name == "columns":
            text = _value(node.args[0], scope, given, declared, columns)
            text = text or (_literal(node.args[1], "columns' default") if len(node.args) > 1 else "")
            names = text if isinstance(text, list) else str(text).split(",")
            return ", ".join(_identifier(n.strip(), columns) for n in names)
        if name == "sql_and":
            return _sql_and(node, scope, given, declared, columns, out)
        if name in ("error", "custom_error"):
            _raise(node, scope, given, declared, columns)
    value = _value(node, scope, given, declared, columns)
    return _bind(out, value, _kind_of(value))


def _kind_of(value) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Int"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, datetime):
        return "DateTime"
    if isinstance(value, date):
        return "Date"
    if isinstance(value, list):
        return "Array(" + (_kind_of(value[0]) if value else "String") + ")"
    return "String"


def _bind(out: Rendered, value, kind: str) -> str:
    marker = f"__tbp_{len(out.binds) + 1}"
    out.binds[marker] = (value, kind)
    return f"({marker})" if kind.startswith("Array(") else marker


def _identifier(name, columns: frozenset[str]) -> str:
    if not isinstance(name, str) or name not in columns:
        raise TemplateError(f"{str(name)[:60]!r} is not a column here (declared: {', '.join(sorted(columns))})",
                            "column")
    return '"' + name + '"'


_OPERATORS = {"": "=", "in": "IN", "not_in": "NOT IN", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _sql_and(node, scope, given, declared, columns, out: Rendered) -> str:
    """``sql_and(col__op=value, …)``: the predicates of the given values, joined by AND
    (``1`` when none is given, as Tinybird writes it)."""
    terms = []
    for keyword in node.keywords:
        column, _, op = keyword.arg.partition("__")
        if op not in _OPERATORS:
            raise TemplateError(f"sql_and's operator __{op} is not supported ({', '.join(_OPERATORS)})", f"__{op}")
        value = _value(keyword.value, scope, given, declared, columns)
        if value is None or value == [] or value == "":
            continue
        kind = _kind_of(value) if op not in ("in", "not_in") else _kind_of(list(value))
        terms.append(f"{_identifier(column, columns)} {_OPERATORS[op]} {_bind(out, value, kind)}")
    return " AND ".join(terms) or "1"


def _raise(node, scope, given, declared, columns):
    message = _value(node.args[0], scope, given, declared, columns) if node.args else "error"
    status = _value(node.args[1], scope, given, declared, columns) if len(node.args) > 1 else 400
    if not isinstance(status, int) or not 400 <= status < 500:
        status = 400
    raise TemplateError(message if isinstance(message, str) else str(message), None, status)


def _value(node, scope, given, declared, columns):
    """The value of a condition or an argument, from constants and parameters only."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(n, scope, given, declared, columns) for n in node.elts]
    if isinstance(node, ast.Name):
        if node.id in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[node.id]
        return scope.get(node.id)
    if isinstance(node, ast.UnaryOp):
        inner = _value(node.operand, scope, given, declared, columns)
        return (not inner) if isinstance(node.op, ast.Not) else -inner
    if isinstance(node, ast.BoolOp):
        results = [_value(v, scope, given, declared, columns) for v in node.values]
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        return _compare(node, scope, given, declared, columns)
    if isinstance(node, ast.Call):
        return _call(node, scope, given, declared, columns)
    raise TemplateError(f"{type(node).__name__} is not supported here", type(node).__name__)


_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def _compare(node, scope, given, declared, columns) -> bool:
    left = _value(node.left, scope, given, declared, columns)
    for op, right_node in zip(node.ops, node.comparators):
        right = _value(right_node, scope, given, declared, columns)
        try:
            ok = _COMPARE[type(op)](left, right)
        except TypeError:
            raise TemplateError(f"cannot compare {left!r} with {right!r}", "comparison") from None
        if not ok:
            return False
        left = right
    return True


def _call(node, scope, given, declared, columns):
    name = node.func.id
    args = [_value(a, scope, given, declared, columns) for a in node.args if not isinstance(a, ast.Name)
            or name not in ("defined",)]
    if name == "defined":
        return isinstance(node.args[0], ast.Name) and node.args[0].id in given and scope.get(node.args[0].id) is not None
    if name in TYPED or name == "Array":
        return scope.get(_typed(node).name)
    if name == "split_to_array":
        text = args[0] if args[0] not in (None, "") else (args[1] if len(args) > 1 else "")
        return [part.strip() for part in str(text).split(",") if part.strip() != ""]
    if name == "day_diff" or name in _UNITS:
        if len(node.args) != 2 or node.keywords:
            raise TemplateError(f"{name} takes two dates here (date_format, backup_date_format, none_if_error"
                                " are not supported)", name)
        first, second = (_as_time(v, name) for v in args[:2])
        seconds = abs((second - first).total_seconds())
        return int(seconds // _UNITS.get(name, 86400))
    if name in ("error", "custom_error"):
        _raise(node, scope, given, declared, columns)
    raise TemplateError(f"{name}(…) cannot be used as a value here", name)


def _as_time(value, function: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    try:
        text = str(value).strip().replace("T", " ").removesuffix("Z")
        return datetime.fromisoformat(text[:19] if len(text) > 10 else text)
    except ValueError:
        raise TemplateError(f"{function}: {str(value)[:40]!r} is not a date or a DateTime", function) from None
