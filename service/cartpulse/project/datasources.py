"""The data sources, declared once: in the dbt project's sources yml.

A source table whose yml entry carries ``config: {meta: {datasource: {...}}}`` is a data
source: CartPulse creates its table, a ``<name>_pending`` twin (rows not yet absorbed by
every rollup, docs/realtime.md) and a ``<name>_quarantine`` (rejected rows as text, with
the ``c__`` columns below), validates rows for it (Events API and bulk import), grants
``DATASOURCES:APPEND:<name>`` and ``DATASOURCES:READ:<name>`` on it, describes it in
OpenAPI, watches its pending rows, vacuums and expires it. The layout (README: "Adding a
data source")::

    sources:
      - name: raw
        schema: "{{ env_var('RAW_SCHEMA', 'raw') }}"   # every data source lives in RAW_SCHEMA
        tables:
          - name: ecommerce_events
            config:
              meta:
                datasource:
                  sorting_key: [event_time, product_id]   # the table's index
                  partition_key: event_time    # a DateTime: monthly partitions, or the hypertable's time
                  segment_by: [event_type]     # optional: TimescaleDB compression groups
                  distribute_by: product_id    # optional: Citus distribution column
            columns:
              - name: event_time
                data_type: DateTime            # a type of project/types.py
                config: {meta: {min: "1900-01-01", max: "2999-12-31"}}
              - name: quantity
                data_type: Int
                config: {meta: {min: 0}}
              - name: country
                data_type: String
                config: {meta: {max_length: 1000, nullable: true}}

Columns are ``not null`` unless ``nullable: true``; ``default: <value>`` is what a row
without the column holds (and, for a column added later, what the stored rows take:
storage/ddl.py). Bounds are inclusive: ``min``/``max``
for Int, Float and DateTime (a date alone as ``max`` means the whole day), ``max_length``
for String. The ``_pending`` and ``_quarantine`` tables may be listed as dbt sources too
(a model ``source()``-s them), with descriptions and tests but no types: their columns
follow from the data source's.

Read with PyYAML straight from the project's yml files, not from dbt's manifest: storage
is created before the first ``dbt run`` writes one. Once per process and project.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml
from psycopg import sql

from cartpulse.project import types
from cartpulse.project.types import BadValue, Type

#: Names that reach SQL (as quoted identifiers) and Prometheus labels: plain lower case,
#: short enough that every derived name (`<name>_quarantine_insertion_idx`) fits in 63 bytes.
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,37}")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: The schema every data source must declare, so that RAW_SCHEMA moves them all.
SCHEMA_TEMPLATE = "{{ env_var('RAW_SCHEMA', 'raw') }}"
_SOURCE_KEYS = {"sorting_key", "partition_key", "segment_by", "distribute_by"}
# personal: analysts read the column pseudonymised only (macros/analysts.sql).
# default: the value a row without the column gets (and the rows stored before it was added).
_COLUMN_KEYS = {"nullable", "min", "max", "max_length", "personal", "default"}

#: The quarantine's own columns (Tinybird's names), after the data source's columns as
#: text: (name, SQL type, not null). ``insertion_date`` is filled by the database.
QUARANTINE_COLUMNS = (("c__error_column", "text[]", True), ("c__error", "text[]", True),
                      ("c__import_id", "text", True), ("c__line", "bigint", True), ("c__raw", "text", False))
INSERTION_DATE = "insertion_date"


@dataclass(frozen=True)
class Column:
    """One declared column: its type and bounds decide what a row may hold there."""

    name: str
    type: Type
    nullable: bool = False
    #: Inclusive bounds, as values of the type (None: the type's own range).
    min: object = None
    max: object = None
    max_length: int | None = None
    description: str = ""
    #: A DateTime column's accepted range as declared, for messages and documentation.
    accepted: str = ""
    #: Personal data (``meta.personal``): pseudonymised for analysts, the key of an erasure.
    personal: bool = False
    #: ``meta.default``, a value of the type: what a row without the column holds.
    default: object = None

    def accept(self, value):
        """A present JSON value → the value stored; BadValue saying why not."""
        return self.check(self.type.from_json(value))

    def check(self, value):
        """``value`` (already of the type) within the declared bounds, or BadValue."""
        if self.max_length is not None and len(value) > self.max_length:
            raise BadValue(f"longer than {self.max_length} characters")
        if self.type is types.DATETIME:
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise BadValue(f"out of range (accepted: {self.accepted})")
            return value
        if self.min is not None and value < self.min:
            raise BadValue("must not be negative" if self.min == 0 else f"must be at least {self.min}")
        if self.max is not None and value > self.max:
            raise BadValue(f"must be at most {self.max}")
        return value


@dataclass(frozen=True)
class DataSource:
    """One declared data source: its table in ``schema``, the names of its twins, its keys."""

    name: str
    schema: str
    columns: tuple[Column, ...]
    sorting_key: tuple[str, ...]
    partition_key: str
    segment_by: tuple[str, ...] = ()
    description: str = ""
    #: Citus: the column the table is hash-distributed by (None: a table of the coordinator).
    distribute_by: str | None = None

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def pending(self) -> str:
        return f"{self.name}_pending"

    @property
    def quarantine(self) -> str:
        return f"{self.name}_quarantine"

    @property
    def quarantine_columns(self) -> tuple[str, ...]:
        """Every column of the quarantine, in table order."""
        return self.column_names + tuple(c for c, _, _ in QUARANTINE_COLUMNS) + (INSERTION_DATE,)

    @property
    def partition_index(self) -> int:
        """Where the partition key is in a row tuple."""
        return self.column_names.index(self.partition_key)

    def table(self, name: str | None = None) -> sql.Identifier:
        """The qualified identifier of the table (or of its twin ``name``)."""
        return sql.Identifier(self.schema, name or self.name)

    def regclass(self, name: str | None = None) -> str:
        """``"schema"."table"`` as text, to bind as a ``regclass`` argument."""
        return self.table(name).as_string(None)


def for_settings(settings) -> dict[str, DataSource]:
    """The data sources of the settings' project, in its RAW_SCHEMA."""
    return declared(Path(settings.project_dir).resolve(), settings.raw_schema)


def declared_now(settings) -> dict[str, DataSource]:
    """The data sources as the yml declares them at this moment (``/alter`` applies a
    column declared after the process started; everything else keeps the first reading)."""
    return declared.__wrapped__(Path(settings.project_dir).resolve(), settings.raw_schema)


@functools.lru_cache(maxsize=None)
def declared(project_dir: Path, raw_schema: str) -> dict[str, DataSource]:
    """Every data source declared in the project's model-path yml files, by name."""
    if not _IDENTIFIER.fullmatch(raw_schema):
        raise ValueError(f"RAW_SCHEMA={raw_schema!r}: use lower-case letters, digits and _")
    project = _yaml(project_dir / "dbt_project.yml")
    found: dict[str, DataSource] = {}
    for folder in project.get("model-paths") or ["models"]:
        for path in sorted((project_dir / folder).rglob("*.y*ml")):
            document = _yaml(path)
            for source in document.get("sources") or []:
                for table in source.get("tables") or []:
                    spec = _meta(table).get("datasource")
                    if spec is None:
                        continue
                    where = f"{path.relative_to(project_dir)}: data source {table.get('name')!r}"
                    if source.get("schema") != SCHEMA_TEMPLATE:
                        raise ValueError(f"{where}: its source must say schema: \"{SCHEMA_TEMPLATE}\"")
                    datasource = _datasource(table, spec, raw_schema, where)
                    if datasource.name in found:
                        raise ValueError(f"{where}: declared twice")
                    found[datasource.name] = datasource
    return found


def _yaml(path: Path) -> dict:
    """A yml file's content; OSError when it cannot be read, ValueError when it is no YAML."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: {err}") from None


def _meta(entry: dict) -> dict:
    """dbt's meta of a yml entry: ``config.meta`` (dbt ≥ 1.10), or ``meta`` beside it."""
    return {**(entry.get("meta") or {}), **((entry.get("config") or {}).get("meta") or {})}


def _datasource(table: dict, spec: dict, schema: str, where: str) -> DataSource:
    name = table.get("name", "")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: a data source's name is lower-case letters, digits and _ (at most 38)")
    spec = spec or {}
    if not isinstance(spec, dict) or set(spec) - _SOURCE_KEYS:
        raise ValueError(f"{where}: meta.datasource takes {', '.join(sorted(_SOURCE_KEYS))}")
    columns = tuple(_column(c, f"{where}, column {c.get('name')!r}") for c in table.get("columns") or [])
    if not columns:
        raise ValueError(f"{where}: declares no columns")
    by_name = {c.name: c for c in columns}
    if len(by_name) != len(columns):
        raise ValueError(f"{where}: a column is declared twice")
    partition = by_name.get(spec.get("partition_key"))
    if partition is None or partition.type is not types.DATETIME or partition.nullable:
        raise ValueError(f"{where}: partition_key must name a DateTime column that is not nullable")
    keys = {}
    for key in ("sorting_key", "segment_by"):
        keys[key] = tuple(spec.get(key) or ())
        unknown = [c for c in keys[key] if c not in by_name]
        if unknown:
            raise ValueError(f"{where}: {key} names unknown columns {unknown}")
    if not keys["sorting_key"]:
        raise ValueError(f"{where}: sorting_key must name the indexed columns")
    distribute_by = spec.get("distribute_by")
    if distribute_by is not None and (distribute_by not in by_name or by_name[distribute_by].nullable):
        raise ValueError(f"{where}: distribute_by must name a column that is not nullable")
    return DataSource(name=name, schema=schema, columns=columns, sorting_key=keys["sorting_key"],
                      partition_key=partition.name, segment_by=keys["segment_by"], distribute_by=distribute_by,
                      description=" ".join((table.get("description") or "").split()))


def _column(entry: dict, where: str) -> Column:
    name = entry.get("name", "")
    if not _IDENTIFIER.fullmatch(name) or name == INSERTION_DATE or name.startswith("c__"):
        raise ValueError(f"{where}: a column name is lower-case letters, digits and _, not c__… or {INSERTION_DATE}")
    kind = types.declared(entry.get("data_type"), where)
    meta = _meta(entry)
    if set(meta) - _COLUMN_KEYS:
        raise ValueError(f"{where}: meta takes {', '.join(sorted(_COLUMN_KEYS))}")
    if "max_length" in meta and kind is not types.STRING:
        raise ValueError(f"{where}: max_length is for String columns")
    if ("min" in meta or "max" in meta) and kind is types.STRING:
        raise ValueError(f"{where}: min and max are for Int, Float and DateTime columns")
    bounds = {side: _bound(kind, meta[side], side, where) for side in ("min", "max") if side in meta}
    accepted = (f"{meta.get('min', types.MIN_TIME.date())} to {meta.get('max', (types.MAX_TIME - timedelta(days=1)).date())}"
                if kind is types.DATETIME else "")
    column = Column(name=name, type=kind, nullable=bool(meta.get("nullable", False)), max_length=meta.get("max_length"),
                    description=" ".join((entry.get("description") or "").split()), accepted=accepted,
                    personal=bool(meta.get("personal", False)), **bounds)
    if "default" not in meta:
        return column
    try:
        default = column.check(_bound(kind, meta["default"], "default", where))
    except BadValue as err:
        raise ValueError(f"{where}: default {meta['default']!r}: {err}") from None
    return dataclasses.replace(column, default=default)


def _bound(kind: Type, value, side: str, where: str):
    """A declared bound as a value of the column's type; a DateTime ``max`` given as a
    date alone means the end of that day."""
    try:
        if kind is types.DATETIME:
            text = str(value)
            bound = kind.from_text(text)
            return bound + timedelta(days=1, microseconds=-1) if side == "max" and len(text.strip()) == 10 else bound
        return kind.from_json(value)
    except BadValue as err:
        raise ValueError(f"{where}: {side} {value!r}: {err}") from None
