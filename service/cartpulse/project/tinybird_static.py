"""A Tinybird template that only switches predicates, as one static SQL (#25's first route).

``{% if defined(country) %} AND country = {{String(country)}} {% end %}`` asks one thing
of the request: filter when the parameter is given. The same reads
``AND ((country is null) OR (country = country))`` with the parameter bound (null when
absent), which needs no rendering per request: the endpoint stays one SQL function that
dbt builds, PostgreSQL plans with the values inlined, and #24 can derive from.

What is static: text; typed parameters; ``{% if defined(a) [and defined(b)…] %}`` around a
fragment starting with ``AND`` or ``WHERE`` holding text and typed parameters only; and
``{% if not defined(a) %}{{ error('…') }}{% end %}`` (the parameter becomes required, with
that message), and ``{% if defined(a) [and …] %} AND … {% else %}{{ error('…') }}{% end %}``
(each becomes required, and the fragment applies always). Anything else changes the SQL's shape (``NotStatic`` says what), so it is
rendered per request (tinybird_template.render).

A parameter read under ``defined()`` is declared without a default: Tinybird's
``defined`` is false for an absent parameter even when a typed call gives a default, and
``x is null`` must say the same.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from cartpulse.project.tinybird_template import TYPED, Expr, If, Param, TemplateError, _literal, _typed, params


class NotStatic(TemplateError):
    """The template changes the SQL's shape; the message names the construct."""


@dataclass
class Static:
    """ClickHouse SQL with ``__tbp_<n>`` markers, each standing for one parameter."""

    sql: str
    markers: dict[str, str] = field(default_factory=dict)   # marker → parameter name
    arrays: set[str] = field(default_factory=set)           # markers of Array parameters
    params: dict[str, Param] = field(default_factory=dict)


_LEAD = re.compile(r"^\s*(and|where)\s+", re.IGNORECASE)


def static(tree: list) -> Static:
    """The template as one SQL, or NotStatic naming what needs rendering per request."""
    out = Static("", params=params(tree))
    guarded: set[str] = set()
    out.sql = "".join(_part(part, out, guarded) for part in tree)
    for name in guarded:
        if out.params[name].default is not None:
            raise NotStatic(f"parameter {name} has a default but is read under defined(), which ignores it",
                            f"defined({name})")
    return out


def _part(part, out: Static, guarded: set[str]) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, Expr):
        return _marker(part.node, out)
    if isinstance(part, If):
        return _block(part, out, guarded)
    raise NotStatic(f"{{% set %}} changes the SQL per request ({part.name})", "set")


def _marker(node: ast.expr, out: Static, name: str | None = None) -> str:
    if name is None:
        if not (isinstance(node, ast.Call) and (node.func.id in TYPED or node.func.id == "Array")):
            what = node.func.id if isinstance(node, ast.Call) else ast.unparse(node)[:40]
            raise NotStatic(f"{{{{ {what} }}}} changes the SQL per request", what)
        name = _typed(node).name
    marker = f"__tbp_{len(out.markers) + 1}"
    out.markers[marker] = name
    if out.params[name].type.startswith("Array("):
        out.arrays.add(marker)
        return f"({marker})"
    return marker


def _defined_names(node: ast.expr) -> list[str] | None:
    """``defined(a) and defined(b)`` → [a, b]; None for any other condition."""
    terms = node.values if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And) else [node]
    names = []
    for term in terms:
        if not (isinstance(term, ast.Call) and term.func.id == "defined" and len(term.args) == 1
                and isinstance(term.args[0], ast.Name)):
            return None
        names.append(term.args[0].id)
    return names


def _error(body: list) -> ast.Call | None:
    """The ``error()``/``custom_error()`` call a branch holds and nothing else, or None."""
    parts = [p for p in body if not (isinstance(p, str) and not p.strip())]
    if len(parts) == 1 and isinstance(parts[0], Expr) and isinstance(parts[0].node, ast.Call) \
            and parts[0].node.func.id in ("error", "custom_error") and parts[0].node.args:
        return parts[0].node
    return None


def _require(names: list[str], error: ast.Call, out: Static) -> None:
    """Each of ``names`` required, with the error's message (a default never applies)."""
    message = _literal(error.args[0], "error's message")
    for name in names:
        if name not in out.params:
            raise NotStatic(f"{name} is required by error() but typed nowhere", name)
        out.params[name].required, out.params[name].default = True, None
        out.params[name].required_message = message if isinstance(message, str) else None


def _block(block: If, out: Static, guarded: set[str]) -> str:
    condition, body = block.branches[0]
    required = None
    if len(block.branches) == 2 and block.branches[1][0] is None and _error(block.branches[1][1]) is not None \
            and _defined_names(condition):
        required = _error(block.branches[1][1])  # {% if defined(a) %} AND … {% else %}{{ error(…) }}{% end %}
    elif len(block.branches) != 1:
        raise NotStatic("{% if %} with {% elif %}/{% else %} changes the SQL per request", "else")
    if (isinstance(condition, ast.UnaryOp) and isinstance(condition.op, ast.Not)
            and _defined_names(condition.operand) and len(_defined_names(condition.operand)) == 1) \
            and _error(body) is not None:
        _require(_defined_names(condition.operand), _error(body), out)
        return ""
    names = _defined_names(condition)
    if names is None:
        raise NotStatic(f"{{% if {ast.unparse(condition)[:60]} %}} changes the SQL per request",
                        ast.unparse(condition)[:60])
    for name in names:
        if name not in out.params:
            raise NotStatic(f"defined({name}) of a parameter typed nowhere", f"defined({name})")
    text = "".join(_inner(p, out) for p in body)
    lead = _LEAD.match(text)
    if lead is None:
        raise NotStatic("{% if defined(…) %} around SQL that does not start with AND or WHERE changes its shape",
                        "if defined")
    if required is not None:
        _require(names, required, out)
        return f" {lead.group(1)} ({text[lead.end():].strip()}) "
    guarded.update(names)
    absent = " OR ".join(f"{_marker(None, out, n)} IS NULL" for n in names)
    return f" {lead.group(1)} (({absent}) OR ({text[lead.end():].strip()})) "


def _inner(part, out: Static) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, Expr):
        return _marker(part.node, out)
    raise NotStatic("a nested {% if %} or {% set %} changes the SQL per request", "nested if")
