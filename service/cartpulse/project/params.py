"""Endpoint parameters: typed, declared in the dbt project, validated before any SQL.

Each endpoint's yml declares its parameters (``config.meta.endpoint.params``): a
``type`` (DateTime, Int, Float, String, or an array of one such as ``Array(String)``:
the vocabulary of project/types.py, which also parses the value) and optional
``default``, ``min``, ``max``, ``enum``, ``max_length``, ``after`` (this DateTime
must be later than that one) and ``required`` (a request without it is a 400 naming it:
Tinybird's ``required=True``; ``required_message`` replaces the message, as an
imported pipe's ``error()`` does). A request's values are parsed here and then *bound* to the
endpoint's SQL function by name; a bad value is a 400 that names the parameter.
Parameters a request does not give take the function's default. An empty value counts
as not given.

An array parameter takes its values both as ``country=DE,US`` and as repeated keys
(``country=DE&country=US``, how Tinybird's TypeScript SDK sends an array), or both at
once; each element is checked against the type and the bounds (``enum``, ``max_length``,
``min``, ``max`` apply per element). A scalar parameter given twice is refused: picking
one of the values would answer a question the client did not ask.
"""

from __future__ import annotations

from dataclasses import dataclass

from cartpulse.errors import ApiError
from cartpulse.project import types
from cartpulse.project.types import BadValue, Type

#: Most elements an array parameter takes: a request is a question, not a data upload.
MAX_ELEMENTS = 10_000


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
    required: bool = False
    required_message: str | None = None

    @property
    def kind(self) -> Type:
        return types.PARAM_TYPES[self.type]

    @property
    def is_array(self) -> bool:
        return self.kind.element is not None

    @property
    def tinybird_type(self) -> str:
        """The type as Tinybird names it (``Int`` → ``Int64``), for pipe metadata."""
        return self.kind.tinybird

    @classmethod
    def declared(cls, name: str, spec: dict) -> "Param":
        types.declared(spec.get("type"), f"parameter {name}", types.PARAM_TYPES)
        enum = spec.get("enum")
        return cls(name=name, type=spec["type"], default=spec.get("default"),
                   description=spec.get("description", ""), min=spec.get("min"), max=spec.get("max"),
                   enum=tuple(str(v) for v in enum) if enum else None,
                   max_length=spec.get("max_length"), after=spec.get("after"),
                   required=bool(spec.get("required", False)), required_message=spec.get("required_message"))

    def parse(self, raw: str):
        """The request's text → the value bound to SQL, or ApiError(400) naming the parameter."""
        if self.is_array:
            return self.parse_values([raw])
        try:
            return self._value(raw)
        except BadValue as err:
            raise _bad(self.name, str(err)) from None

    def parse_values(self, raws: list[str]) -> list:
        """An array parameter's texts (each maybe ``a,b``) → the list bound to SQL; a bad
        element is a 400 naming the parameter and the element."""
        elements = [part for raw in raws for part in raw.split(",")]
        if len(elements) > MAX_ELEMENTS:
            raise _bad(self.name, f"more than {MAX_ELEMENTS} elements")
        values = []
        for number, text in enumerate(elements, start=1):
            try:
                if text.strip() == "":
                    raise BadValue("empty")
                values.append(self._value(text))
            except BadValue as err:
                raise ApiError(400, f"invalid value for parameter '{self.name}': element {number} "
                                    f"({text[:40]!r}): {err}", parameter=self.name, element=text[:100]) from None
        return values

    def _value(self, raw: str):
        """One value (an array's element) parsed and within the declared bounds."""
        value = self.kind.from_text(raw)
        if self.max_length is not None and isinstance(value, str) and len(value) > self.max_length:
            raise BadValue(f"longer than {self.max_length} characters")
        if self.enum is not None and str(value) not in self.enum:
            raise BadValue(f"must be one of: {', '.join(self.enum)}")
        if self.min is not None and value < self.min:
            raise BadValue(f"must be at least {self.min}")
        if self.max is not None and value > self.max:
            raise BadValue(f"must be at most {self.max}")
        return value


def _bad(name: str, why: str) -> ApiError:
    return ApiError(400, f"invalid value for parameter '{name}': {why}", parameter=name)


def given(args, name: str) -> list[str]:
    """Every value ``args`` (a MultiDict, or a plain dict) holds for ``name``."""
    if hasattr(args, "getlist"):
        return [str(v) for v in args.getlist(name)]
    value = args.get(name)
    return [] if value is None else [str(value)]


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
            raw = str(fixed[param.name])
            empty_list = raw == "" and param.is_array and param.kind.element is types.STRING
            values[param.name] = [""] if empty_list else param.parse(raw)
            continue
        raws = given(args, param.name)
        if len(raws) > 1 and not param.is_array:
            raise ApiError(400, f"parameter '{param.name}' given {len(raws)} times: it takes one value"
                                f" (only Array parameters take several)", parameter=param.name)
        raws = [raw for raw in raws if raw != ""]
        if not raws:
            if param.required:
                raise ApiError(400, param.required_message or f"missing required parameter '{param.name}'",
                               parameter=param.name)
            continue
        values[param.name] = param.parse_values(raws) if param.is_array else param.parse(raws[0])
    for param in params:
        if param.after and param.name in values and param.after in values:
            if values[param.name] <= values[param.after]:
                raise _bad(param.name, f"must be later than {param.after}")
    return values

