"""Endpoint parameters: typed, declared in the dbt project, validated before any SQL.

Each endpoint's yml declares its parameters (``config.meta.endpoint.params``): a
``type`` (DateTime, Int, Float, String: the vocabulary of project/types.py, which also
parses the value) and optional ``default``, ``min``, ``max``,
``enum``, ``max_length`` and ``after`` (this DateTime must be later than that one).
A request's values are parsed here and then *bound* to the endpoint's SQL function by
name; a bad value is a 400 that names the parameter. Parameters a request does not give
take the function's default. An empty value counts as not given.
"""

from __future__ import annotations

from dataclasses import dataclass

from cartpulse.errors import ApiError
from cartpulse.project import types
from cartpulse.project.types import BadValue, Type


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

    @property
    def kind(self) -> Type:
        return types.DECLARED[self.type]

    @classmethod
    def declared(cls, name: str, spec: dict) -> "Param":
        types.declared(spec.get("type"), f"parameter {name}")
        enum = spec.get("enum")
        return cls(name=name, type=spec["type"], default=spec.get("default"),
                   description=spec.get("description", ""), min=spec.get("min"), max=spec.get("max"),
                   enum=tuple(str(v) for v in enum) if enum else None,
                   max_length=spec.get("max_length"), after=spec.get("after"))

    def parse(self, raw: str):
        """The request's text → the value bound to SQL, or ApiError(400) naming the parameter."""
        try:
            value = self.kind.from_text(raw)
        except BadValue as err:
            raise _bad(self.name, str(err)) from None
        if self.max_length is not None and isinstance(value, str) and len(value) > self.max_length:
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

