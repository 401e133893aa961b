"""The rollups that serve derived endpoints: their grains, shared where they coincide.

A derived endpoint (project/derivation.py) is answered from rollups of its data source
whose grain is its dimensions (grouped, filtered and min/max columns) plus, when it reads
a time range or groups by a time bucket, a time column at some width. Which widths:

- no range and no bucket: one rollup over all time (no time column);
- a range: whole days, then whole hours for the partial days at its ends, as the seed's
  endpoints have always read (docs/realtime.md, "Which rollup answers what"), the events
  themselves only for the partial hours at the very ends; plus the all-time rollup when
  both bounds may be left out (the range is then the whole history);
- a time bucket of width W (one, or each of a parameter's enum): a rollup at each W,
  which answers without a range by reading one row per bucket and grain; with a range,
  the hour and the minute where they divide every W, for the partial buckets at its ends.

A column filtered only by optional parameters (``$p is null or column = $p``) need not
be in every rollup: a request that leaves those parameters out sums over it anyway, and
reading a rollup without it reads fewer rows (top products over all countries: one row
per product, not one per product and country). So each *variant* of an endpoint keeps
a subset of those columns, every subset when there are at most two, else none or all;
a request is answered by the variant holding exactly the columns its parameters filter
(or all of them).

Endpoints whose rollups have the same data source, filter, dimensions and width share
one rollup, which keeps the union of their measures.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

from cartpulse.project.derivation import Derivation, Measure

_DAY, _HOUR, _MINUTE = 86400, 3600, 60
_UNITS = ((7 * _DAY, "w"), (_DAY, "d"), (_HOUR, "h"), (_MINUTE, "m"), (1, "s"))
#: PostgreSQL's limit on an identifier (63) less the longest suffix the rollup
#: materialization adds (``__grain_new``); a longer name is shortened to a hash.
_MAX_NAME = 63 - len("__grain_new")


@dataclass(frozen=True)
class RollupPlan:
    name: str
    datasource: str
    staging: str
    fixed_filter: str | None
    dimensions: tuple[str, ...]
    width: int | None  # seconds of the time column's buckets; None: all time
    measures: tuple[Measure, ...]

    def describe(self) -> dict:
        """As pipe metadata shows it."""
        return {"name": self.name, "data_source": self.datasource, "dimensions": list(self.dimensions),
                "time_grain": width_name(self.width), "filter": self.fixed_filter,
                "measures": [m.label for m in self.measures]}


def width_name(seconds: int | None) -> str:
    """``86400`` → ``"1 day"``-like names for humans: ``1d``, ``15m``; ``None`` → ``all``."""
    if seconds is None:
        return "all"
    for size, unit in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError(seconds)


def widths(derivation: Derivation) -> tuple[int | None, ...]:
    """The time widths of the rollups that serve ``derivation``, coarsest first."""
    chosen: set[int | None] = set()
    start, end = derivation.range_params
    whole_history = (start is None or derivation.range_optional[0]) and (end is None or derivation.range_optional[1])
    if derivation.bucket is not None:
        buckets = derivation.bucket.seconds
        chosen.update(buckets)
        if derivation.has_range:
            chosen.update(w for w in (_HOUR, _MINUTE) if w < min(buckets) and all(b % w == 0 for b in buckets))
    else:
        if derivation.has_range:
            chosen.update((_DAY, _HOUR))
        if whole_history:
            chosen.add(None)
    return tuple(sorted(chosen, key=lambda w: -(w or 10**12)))


@dataclass(frozen=True)
class Variant:
    """The rollups that answer requests whose optional filters are on ``active`` columns
    (``everything``: on any columns; the variant keeping all of them when there are too
    many for every subset)."""

    active: frozenset[str]
    dimensions: tuple[str, ...]
    everything: bool = False


def optional_columns(derivation: Derivation) -> tuple[str, ...]:
    """Columns only optional parameters filter (not grouped, not min/max, no required filter)."""
    required = {f.column for f in derivation.param_filters if not f.optional}
    kept = set(derivation.group_by) | set(derivation.extrema) | required
    return tuple(dict.fromkeys(f.column for f in derivation.param_filters if f.optional and f.column not in kept))


def variants(derivation: Derivation) -> tuple[Variant, ...]:
    """The endpoint's variants, the one keeping every column last."""
    optional = optional_columns(derivation)
    base = [d for d in derivation.dimensions if d not in optional]
    if len(optional) > 2:
        return (Variant(frozenset(), tuple(sorted(base))),
                Variant(frozenset(optional), tuple(sorted(derivation.dimensions)), everything=True))
    subsets = [frozenset(c) for n in range(len(optional) + 1) for c in itertools.combinations(optional, n)]
    return tuple(Variant(s, tuple(sorted(base + list(s)))) for s in subsets)


def rollup_name(derivation: Derivation, dimensions: tuple[str, ...], width: int | None) -> str:
    parts = [f"derived_{derivation.staging.datasource}", "_".join(dimensions) or "total", width_name(width)]
    if derivation.fixed_filter:
        parts.append("f" + hashlib.sha256(derivation.fixed_filter.encode()).hexdigest()[:6])
    name = "__".join(parts)
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"derived_{derivation.staging.datasource}"[:_MAX_NAME - 14] + "__" + digest
    return name


def plan(derivations: dict[str, Derivation]) -> tuple[dict[str, tuple[str, ...]], dict[str, RollupPlan]]:
    """(the rollups of each endpoint by name, each rollup's plan), shared where equal."""
    rollups: dict[str, RollupPlan] = {}
    served: dict[str, tuple[str, ...]] = {}
    for endpoint in sorted(derivations):
        derivation = derivations[endpoint]
        names = []
        for width, variant in itertools.product(widths(derivation), variants(derivation)):
            dimensions = variant.dimensions
            name = rollup_name(derivation, dimensions, width)
            known = rollups.get(name)
            measures = dict.fromkeys((known.measures if known else ()) + derivation.measures)
            rollups[name] = RollupPlan(name=name, datasource=derivation.staging.datasource,
                                       staging=derivation.staging.name, fixed_filter=derivation.fixed_filter,
                                       dimensions=dimensions, width=width, measures=tuple(measures))
            names.append(name)
        served[endpoint] = tuple(names)
    return served, rollups
