"""What a derivable endpoint is, once recognized (project/derivation.py): the data the
rollup plans (project/rollup_plans.py) and the answer path are made from.

The module docstring of derivation.py gives the class and why each aggregate can be kept
as sign-weighted sums; these are its results, plain values that compare and hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

#: Widths a time bucket may have: fixed lengths only (a month has none).
_WIDTH = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
class Refused(Exception):
    """The endpoint is outside the class: the message names the construct."""


@dataclass(frozen=True)
class StagingModel:
    """A data source's staging model, as the recognizer needs it."""

    name: str  # the model's name (its relation's identifier)
    datasource: str
    time_column: str  # the data source's partition key
    columns: tuple[str, ...]
    #: The model of the same columns over the data source's ``_pending`` twin, plus
    #: ``ingest_xid`` and ``sign`` (``<name>_pending``): what rollups absorb. None: the
    #: project has none, and endpoints over this model are served as written.
    pending: str | None = None


@dataclass(frozen=True)
class Bucket:
    """The time bucket the endpoint groups by: its widths (one, or a parameter's enum)."""

    widths: tuple[str, ...]
    param: str | None = None
    origin: str | None = None  # date_bin's origin as written; None: time_bucket's

    @property
    def seconds(self) -> tuple[int, ...]:
        return tuple(width_seconds(w) for w in self.widths)


_PLAIN = re.compile(r"[a-z_][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class ParamFilter:
    """``column = $param`` (or ``= any($param)`` for an array), optional when written
    ``$param is null or …``."""

    column: str
    param: str
    form: str  # "=" or "any"
    optional: bool
    sql: str = ""  # the predicate as written (columns unqualified), applied to every piece


@dataclass(frozen=True)
class Measure:
    """A sign-weighted sum a rollup keeps: ``events`` (``sum(sign)``), the count of rows
    where ``expression`` is not null, or the sum of ``expression``."""

    kind: str  # "events", "count", "sum"
    expression: str = ""

    @property
    def label(self) -> str:
        return self.kind if self.kind == "events" else f"{self.kind}({self.expression})"

    @property
    def column(self) -> str:
        """Its column in a rollup: readable for a plain column, a digest for an expression."""
        if self.kind == "events":
            return "events"
        key = self.expression if _PLAIN.fullmatch(self.expression) else \
            hashlib.sha256(self.expression.encode()).hexdigest()[:8]
        return f"{self.kind[0]}_{key}"


@dataclass(frozen=True)
class Derivation:
    """An endpoint in the derivable class, described for the rollups that serve it."""

    staging: StagingModel
    group_by: tuple[str, ...]  # grouped columns
    bucket: Bucket | None
    range_params: tuple[str | None, str | None]  # (start, end): t >= start, t < end
    range_optional: tuple[bool, bool]
    param_filters: tuple[ParamFilter, ...]
    fixed_filter: str | None  # the rollups' own WHERE (SQL over the staging row)
    measures: tuple[Measure, ...]
    extrema: tuple[str, ...]  # columns of min()/max(), kept in the grain
    post: tuple[str, ...] = field(default=())  # HAVING, ORDER BY, LIMIT as present

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The rollups' grain, besides time: grouped, filtered and min/max columns."""
        wanted = [*self.group_by, *(f.column for f in self.param_filters), *self.extrema]
        return tuple(dict.fromkeys(wanted))

    @property
    def has_range(self) -> bool:
        return any(self.range_params)


def width_seconds(width: str) -> int:
    match = _WIDTH.match(width)
    if not match:
        raise Refused(f"a time bucket of width '{width}' (only seconds, minutes, hours, days or weeks)")
    return int(match.group(1)) * _SECONDS[match.group(2).lower()]
