"""Endpoint parameters: typed, declared in the dbt project, validated before any SQL.

Each endpoint's yml declares its parameters (``config.meta.endpoint.params``): a
``type`` (DateTime, Int, Float, String) and optional ``default``, ``min``, ``max``,
``enum``, ``max_length`` and ``after`` (this DateTime must be later than that one).
A request's values are parsed here and then *bound* to the endpoint's SQL function by
name; a bad value is a 400 that names the parameter. Parameters a request does not give
take the function's default. An empty value counts as not given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from cartpulse.errors import ApiError
from cartpulse.ingest.rows import RowError, parse_time

TYPES = ("DateTime", "Int", "Float", "String")


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: object = None
    description: str = ""
    min: float | None = None
    max: float | None = None
    enum: tuple | None = None
    max_length: int | None = None
    after: str | None = None

    @classmethod
    def declared(cls, name: str, spec: dict) -> "Param":
        if spec.get("type") not in TYPES:
            raise ValueError(f"parameter {name}: type must be one of {', '.join(TYPES)}")
        enum = spec.get("enum")
        return cls(name=name, type=spec["type"], default=spec.get("default"),
                   description=spec.get("description", ""), min=spec.get("min"), max=spec.get("max"),
                   enum=tuple(str(v) for v in enum) if enum else None,
                   max_length=spec.get("max_length"), after=spec.get("after"))

    def parse(self, raw: str):
        """The request's text → the value bound to SQL, or ApiError(400) naming the parameter."""
        if self.type == "DateTime":
            value = _datetime(self.name, raw)
        elif self.type == "Int":
            try:
                value = int(raw)
            except ValueError:
                raise _bad(self.name, f"expected an integer, got {raw[:40]!r}") from None
        elif self.type == "Float":
            try:
                value = float(raw)
            except ValueError:
                raise _bad(self.name, f"expected a number, got {raw[:40]!r}") from None
            if not math.isfinite(value):
                raise _bad(self.name, "expected a finite number")
        else:
            value = raw
            if "\x00" in value:
                raise _bad(self.name, "contains a NUL character")
            if self.max_length is not None and len(value) > self.max_length:
                raise _bad(self.name, f"longer than {self.max_length} characters")
        if self.enum is not None and str(value) not in self.enum:
            raise _bad(self.name, f"must be one of: {', '.join(self.enum)}")
        if self.min is not None and value < self.min:
            raise _bad(self.name, f"must be at least {self.min}")
        if self.max is not None and value > self.max:
            raise _bad(self.name, f"must be at most {self.max}")
        return value


def _bad(name: str, why: str) -> ApiError:
    return ApiError(400, f"invalid value for parameter '{name}': {why}", parameter=name)


def _datetime(name: str, raw: str) -> datetime:
    text = raw.strip()
    if len(text) == 10:  # a date alone: its midnight (what a date picker sends)
        text += " 00:00:00"
    try:
        return parse_time(text)
    except RowError:
        raise _bad(name, f"expected a DateTime as YYYY-MM-DD HH:MM:SS (UTC), got {raw[:40]!r}") from None


def parse_request(params: tuple[Param, ...], args, fixed: dict | None = None) -> dict:
    """Validate the request's values; return ``{name: value}`` for those given.

    ``fixed`` values (from a signed token) override whatever the query string says, and
    bind even when empty.
    """
    values = {}
    for param in params:
        if fixed and param.name in fixed:
            # A signed token's value always binds, the empty one included: read as
            # "absent", it would lift the token's filter and show every row.
            values[param.name] = param.parse(str(fixed[param.name]))
            continue
        raw = args.get(param.name)
        if raw is None or raw == "":
            continue
        values[param.name] = param.parse(str(raw))
    for param in params:
        if param.after and param.name in values and param.after in values:
            if values[param.name] <= values[param.after]:
                raise _bad(param.name, f"must be later than {param.after}")
    return values

