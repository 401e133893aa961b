"""The pieces of SQL the recognizer (project/derivation.py) reads, as sqlglot trees:
plain functions of a tree, with no knowledge of the endpoint being recognized."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlglot import exp

from cartpulse.project.derivation_spec import Refused

#: How SQL is written back (messages, the rollups' filter): functions as PostgreSQL spells them.
SQL_OPTIONS = {"dialect": "postgres", "normalize_functions": "lower"}
#: Functions whose value changes between two calls with the same arguments: a rollup
#: filtered by one would hold what was true when each event was absorbed.
_VOLATILE = {"now", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
             "clock_timestamp", "statement_timestamp", "transaction_timestamp", "random", "timeofday",
             "currenttimestamp", "currentdate", "currenttime", "rand"}


def refuse_volatile(node: exp.Expression) -> None:
    """Refused: a call in ``node`` whose value changes from one call to the next."""
    for call in node.find_all(exp.Func):
        name = (call.name if isinstance(call, exp.Anonymous) else call.key).lower()
        if name in _VOLATILE or isinstance(call, exp.CurrentTimestamp | exp.CurrentDate | exp.Rand):
            written = "now()" if isinstance(call, exp.CurrentTimestamp) else call.sql(**SQL_OPTIONS)
            raise Refused(f"{written}, whose value changes from one call to the next")


def origin_offset(origin: exp.Expression | None) -> int:
    """Seconds from a UTC midnight of date_bin's origin (time_bucket's is a midnight)."""
    if origin is None:
        return 0
    literal = origin.this if isinstance(origin, exp.Cast) else origin
    try:
        when = datetime.fromisoformat(literal.this) if isinstance(literal, exp.Literal) and literal.is_string else None
    except ValueError:
        when = None
    if when is None or when.utcoffset() not in (None, timedelta(0)):
        raise Refused(f"a time bucket whose origin {origin.sql(**SQL_OPTIONS)} is not a UTC timestamp literal")
    return when.hour * 3600 + when.minute * 60 + when.second


def plain_select(tree: exp.Select) -> None:
    """A SELECT without the clauses that put it outside the class."""
    for key, construct in (("joins", "a JOIN"), ("distinct", "SELECT DISTINCT"), ("qualify", "QUALIFY"),
                           ("windows", "a WINDOW clause"), ("laterals", "LATERAL"), ("locks", "FOR UPDATE")):
        if tree.args.get(key):
            raise Refused(construct)


def with_queries(tree: exp.Select) -> dict[str, exp.Expression]:
    """The statement's WITH queries by name."""
    with_ = tree.args.get("with_") or tree.args.get("with")
    if with_ is None:
        return {}
    if with_.args.get("recursive"):
        raise Refused("WITH RECURSIVE")
    return {cte.alias: cte.this for cte in with_.expressions}


def conjuncts(node: exp.Expression):
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        yield from conjuncts(node.this)
        yield from conjuncts(node.expression)
    else:
        yield node


def optional_test(node: exp.Expression) -> tuple[exp.Parameter | None, exp.Expression]:
    """``$p is null or <predicate>`` → (``$p``, the predicate); else (None, the node)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Or):
        left, right = node.this, node.expression
        for test, predicate in ((left, right), (right, left)):
            inner = test.this if isinstance(test, exp.Paren) else test
            if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
                target = inner.this
                while isinstance(target, exp.Paren | exp.Cast):
                    target = target.this
                if isinstance(target, exp.Parameter):
                    while isinstance(predicate, exp.Paren):
                        predicate = predicate.this
                    return target, predicate
    return None, node


def unqualified(node: exp.Expression) -> exp.Expression:
    node = node.copy()
    for column in node.find_all(exp.Column):
        column.set("table", None)
    return node


def construct_name(node) -> str:
    return type(node).__name__.upper() if node is not None else "nothing"
