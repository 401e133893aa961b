"""Tinybird's template language (``{{ … }}``, ``{% … %}``), parsed and checked, never evaluated.

A Tinybird node whose SQL starts with ``%`` is a template. CartPulse reads it into a small
tree (text, expressions, ``if``/``elif``/``else``/``end`` blocks, ``set``) and either
*translates* it (``static``: an ``{% if defined(x) %} AND … {% end %}`` that only
switches a predicate becomes ``AND (x is null or …)``, so the endpoint stays one static
SQL function that dbt builds and #24 can derive from) or *renders* it per request
(``render``: values bound as parameters, identifiers only from declared columns).

Why Python's parser and not Jinja or ``eval``: each expression is read with
``ast.parse(mode="eval")`` and walked against a fixed list of node kinds and function
names (``FUNCTIONS``); nothing is ever evaluated, and anything else is refused by name
(``TemplateError``), so a template cannot reach attributes, imports or builtins.

The SQL around the template stays ClickHouse: the caller translates it (sqlglot). Each
value becomes a marker identifier (``__tbp_<n>``) in that SQL, which the caller replaces
by what binds it (``{{ param('x') }}`` in a dbt model, ``%(x)s`` per request).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from cartpulse.project import types

#: Tinybird's typed parameter functions → CartPulse's parameter type and integer bounds.
_INTS = {f"{sign}Int{bits}": (0 if sign else -(2 ** (bits - 1)), (2 ** bits - 1) if sign else 2 ** (bits - 1) - 1)
         for sign in ("", "U") for bits in (8, 16, 32, 64, 128, 256)}
TYPED = {"String": "String", "Float32": "Float", "Float64": "Float", "Boolean": "Boolean", "Date": "Date",
         "DateTime": "DateTime", "DateTime64": "DateTime", **{name: "Int" for name in _INTS}}
#: Array(x, 'Type') element types → CartPulse's array types.
ARRAY_TYPES = {"String": "Array(String)", "Int8": "Array(Int32)", "Int16": "Array(Int32)", "Int32": "Array(Int32)",
               "UInt8": "Array(Int32)", "UInt16": "Array(Int32)", "Int64": "Array(Int64)", "UInt32": "Array(Int64)",
               "Float32": "Array(Float64)", "Float64": "Array(Float64)", "DateTime": "Array(DateTime)",
               "DateTime64": "Array(DateTime)", "Date": "Array(Date)"}
#: Every function a template may call; anything else is refused by name.
FUNCTIONS = {*TYPED, "Array", "defined", "error", "custom_error", "column", "columns", "symbol", "sql_and",
             "split_to_array", "day_diff", "date_diff_in_seconds", "date_diff_in_minutes", "date_diff_in_hours",
             "date_diff_in_days"}
#: Documented by Tinybird, refused here, and why.
REFUSED = {"sql_unescape": "it pastes a value into SQL unescaped", "enum_with_default": "not supported yet",
           "TABLE": "a table named by a parameter", "tb_secret": "secrets are settings, not SQL",
           "tb_var": "variables are settings, not SQL"}
#: Keyword arguments the typed functions take.
_KEYWORDS = {"description", "required", "default", "example"}
_NODES = (ast.Expression, ast.Call, ast.Name, ast.Constant, ast.keyword, ast.Load, ast.BoolOp, ast.And, ast.Or,
          ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
          ast.List, ast.Tuple, ast.Dict)
_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}", re.DOTALL)
_UNITS = {"date_diff_in_seconds": 1, "date_diff_in_minutes": 60, "date_diff_in_hours": 3600, "date_diff_in_days": 86400}


class TemplateError(ValueError):
    """A construct CartPulse does not take, named; ``status`` is the HTTP status of an
    ``error()``/``custom_error()`` raised by the template itself."""

    def __init__(self, message: str, construct: str | None = None, status: int = 400):
        super().__init__(message)
        self.construct, self.status = construct, status


@dataclass
class Param:
    """A parameter a template declares, as the yml of an endpoint declares it."""

    name: str
    type: str
    default: object = None
    description: str = ""
    required: bool = False
    required_message: str | None = None
    min: int | None = None
    max: int | None = None

    def spec(self) -> dict:
        spec = {"type": self.type}
        for key in ("default", "min", "max", "required_message"):
            if getattr(self, key) is not None:
                spec[key] = getattr(self, key)
        if self.required:
            spec["required"] = True
        if self.description:
            spec["description"] = self.description
        return spec


@dataclass
class If:
    branches: list = field(default_factory=list)  # [(condition ast or None, [parts])]


@dataclass
class Expr:
    node: ast.expr


@dataclass
class Set:
    name: str
    node: ast.expr


def is_template(sql: str) -> bool:
    return sql.lstrip().startswith("%")


def parse(sql: str) -> list:
    """The template's tree: text (str), Expr, If, Set; TemplateError on what it refuses."""
    text = sql.lstrip()
    text = text.removeprefix("%")
    root: list = []
    stack: list = [root]
    blocks: list[If] = []
    pos = 0
    for match in _TAG.finditer(text):
        if match.start() > pos:
            stack[-1].append(text[pos:match.start()])
        pos = match.end()
        if match.group(1) is not None:
            stack[-1].append(Expr(_expression(match.group(1))))
            continue
        word, _, rest = match.group(2).strip().partition(" ")
        if word == "if":
            block = If([(_expression(rest), [])])
            stack[-1].append(block)
            blocks.append(block)
            stack.append(block.branches[0][1])
        elif word in ("elif", "else") and blocks:
            stack.pop()
            branch = (_expression(rest) if word == "elif" else None, [])
            blocks[-1].branches.append(branch)
            stack.append(branch[1])
        elif word == "end" and blocks:
            stack.pop()
            blocks.pop()
        elif word == "set":
            name, eq, value = rest.partition("=")
            if not eq or not name.strip().isidentifier():
                raise TemplateError(f"{{% set {rest[:40]} %}} is not NAME = value", "set")
            stack[-1].append(Set(name.strip(), _expression(value)))
        else:
            raise TemplateError(f"the template tag {{% {word[:20]} %}} is not supported (if, elif, else, end, set are)",
                                word[:20])
    if blocks:
        raise TemplateError("an {% if %} without its {% end %}", "if")
    if pos < len(text):
        stack[-1].append(text[pos:])
    if "{{" in "".join(p for p in root if isinstance(p, str)) or "{%" in "".join(p for p in root if isinstance(p, str)):
        raise TemplateError("an unclosed {{ or {% in the template", "{{")
    return root


def _expression(text: str) -> ast.expr:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise TemplateError(f"cannot read the template expression {text.strip()[:60]!r}", text.strip()[:60]) from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            what = type(node).__name__
            raise TemplateError(f"{what} in a template expression is not supported ({text.strip()[:60]!r})", what)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise TemplateError(f"a call of {ast.unparse(node.func)[:40]} is not supported", ast.unparse(node.func)[:40])
            name = node.func.id
            if name in REFUSED:
                raise TemplateError(f"the template function {name} is not supported: {REFUSED[name]}", name)
            if name not in FUNCTIONS:
                raise TemplateError(f"the template function {name} is not supported", name)
    return tree.body


def params(tree: list) -> dict[str, Param]:
    """Every parameter the template's typed functions declare, by name (a parameter
    typed twice takes the first type, its default and description from wherever given)."""
    found: dict[str, Param] = {}
    for call in _calls(tree):
        param = _typed(call)
        if param is None:
            continue
        seen = found.setdefault(param.name, param)
        if seen is not param:
            if seen.type != param.type:
                raise TemplateError(f"parameter {param.name} is typed both {seen.type} and {param.type}", param.name)
            seen.default = seen.default if seen.default is not None else param.default
            seen.description = seen.description or param.description
            seen.required = seen.required or param.required
    return found


def _calls(tree: list):
    for part in tree:
        nodes = []
        if isinstance(part, (Expr, Set)):
            nodes = [part.node]
        elif isinstance(part, If):
            for condition, body in part.branches:
                nodes += [condition] if condition is not None else []
                yield from _calls(body)
        for node in nodes:
            yield from (n for n in ast.walk(node) if isinstance(n, ast.Call))


def _literal(node: ast.expr, what: str):
    try:
        return ast.literal_eval(node)  # constants only: literal_eval evaluates no code
    except ValueError:
        raise TemplateError(f"{what} must be a constant, not {ast.unparse(node)[:40]}", what) from None


def _typed(call: ast.Call) -> Param | None:
    name = call.func.id
    if name not in TYPED and name != "Array":
        return None
    if not call.args or not isinstance(call.args[0], ast.Name):
        raise TemplateError(f"{name}(…) takes a parameter name first", name)
    pname = call.args[0].id
    keywords = {k.arg: k.value for k in call.keywords}
    unknown = sorted(set(keywords) - _KEYWORDS)
    if unknown:
        raise TemplateError(f"{name}({pname}, {unknown[0]}=…) is not supported", unknown[0])
    if name == "Array":
        element = _literal(call.args[1], "Array's type") if len(call.args) > 1 else "String"
        if element not in ARRAY_TYPES:
            raise TemplateError(f"Array({pname}, '{element}') is not supported (types: {', '.join(ARRAY_TYPES)})",
                                f"Array(, '{element}')")
        kind, rest = ARRAY_TYPES[element], call.args[2:3]
    else:
        kind, rest = TYPED[name], call.args[1:]
    default = _literal(rest[0], "a default") if rest else None
    if "default" in keywords:
        default = _literal(keywords["default"], "a default")
    if kind.startswith("Array(") and isinstance(default, str):
        default = [v for v in default.split(",") if v != ""] or None
    low, high = _INTS.get(name, (None, None))
    low = max(low, types.MIN_INT64) if low is not None else None
    high = min(high, types.MAX_INT64) if high is not None else None
    return Param(pname, kind, default=default, description=str(_literal(keywords["description"], "description"))
                 if "description" in keywords else "", required=bool(_literal(keywords.get("required", ast.Constant(False)),
                                                                              "required")), min=low, max=high)
