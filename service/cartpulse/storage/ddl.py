"""The tables of a data source, made from its declaration (project/datasources.py).

Three tables per data source, in RAW_SCHEMA, each created if missing:

* ``<name>``: the declared columns with their types, ``not null`` unless declared
  nullable, and an index on the sorting key. On PostgreSQL it is partitioned by range of
  the partition key (monthly partitions made on demand, ``sql/partitions.sql``); on
  TimescaleDB ``schema.py`` makes it a hypertable on that key;
* ``<name>_pending``: the same columns plus ``ingest_xid``, the transaction that wrote
  the row, and ``sign``: 1 for an event, -1 for the retraction a delete writes of an
  event it removed (docs/realtime.md). A plain table on both engines, vacuumed eagerly: rows are
  deleted in bulk after every refresh, and endpoint queries must not scan dead ones;
* ``<name>_quarantine``: every declared column as text (the value as sent), then the
  ``c__`` columns and ``insertion_date``, indexed by ``insertion_date``.

A statement-level trigger bumps the data generation (``cartpulse.touch_data``) on every
change to the table (``ensure_touch_trigger``), which cached answers are checked against.

Identifiers come from the declaration, quoted by psycopg.sql; no value is spliced in.

Schema evolution: a column declared later (at the end of the data source's columns) is
added to the three tables of an existing data source (``add_columns``): ``nullable``, or
with a declared ``default``, which the rows stored before take. PostgreSQL adds such a
column without rewriting the table (the default is kept in the catalog), so this is a
short lock, not downtime. A column removed, renamed or retyped in the yml is not
applied: that is a migration of stored data, done by hand.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from cartpulse.project.datasources import INSERTION_DATE, QUARANTINE_COLUMNS, DataSource


def create_tables(conn: psycopg.Connection, source: DataSource, partitioned: bool) -> None:
    """Create the data source's three tables and their indexes (idempotent)."""
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(source.schema)))
    columns = [sql.SQL("{} {}{}").format(sql.Identifier(c.name), sql.SQL(c.type.sql),
                                         sql.SQL("" if c.nullable else " not null")) for c in source.columns]
    conn.execute(sql.SQL("create table if not exists {} ({}){}").format(
        source.table(), sql.SQL(", ").join(columns),
        sql.SQL(" partition by range ({})").format(sql.Identifier(source.partition_key)) if partitioned else sql.SQL("")))
    ensure_index(conn, source, source.name, source.sorting_key, f"{source.name}_sorting_key_idx")

    conn.execute(sql.SQL("create table if not exists {} (like {}, ingest_xid xid8 not null"
                         " default pg_current_xact_id())").format(source.table(source.pending), source.table()))
    # Added, not in the create: tables made before deletes existed gain it (no rewrite).
    conn.execute(sql.SQL("alter table {} add column if not exists sign smallint not null default 1"
                         " check (sign in (1, -1))").format(source.table(source.pending)))
    conn.execute(sql.SQL("alter table {} set (autovacuum_vacuum_scale_factor = 0,"
                         " autovacuum_vacuum_threshold = 10000)").format(source.table(source.pending)))

    quarantine = [sql.SQL("{} text").format(sql.Identifier(name)) for name in source.column_names]
    quarantine += [sql.SQL("{} {}{}").format(sql.Identifier(name), sql.SQL(kind), sql.SQL(" not null" if required else ""))
                   for name, kind, required in QUARANTINE_COLUMNS]
    quarantine.append(sql.SQL("{} timestamptz not null default now()").format(sql.Identifier(INSERTION_DATE)))
    conn.execute(sql.SQL("create table if not exists {} ({})").format(
        source.table(source.quarantine), sql.SQL(", ").join(quarantine)))
    ensure_index(conn, source, source.quarantine, (INSERTION_DATE,), f"{source.quarantine}_insertion_idx")
    add_columns(conn, source)


class Unaddable(ValueError):
    """A declared column that an existing table cannot be given."""


def missing_columns(conn: psycopg.Connection, source: DataSource) -> list:
    """The declared columns the data source's table lacks, in declared order."""
    present = {r[0] for r in conn.execute(
        "select attname::text from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        [source.regclass()])}
    return [c for c in source.columns if c.name not in present]


def add_columns(conn: psycopg.Connection, source: DataSource, dry: bool = False) -> list[str]:
    """Add the declared columns the tables lack (schema evolution); return what was (with
    ``dry``: would be) done, one line per column. Unaddable when one is neither nullable
    nor has a default: the rows already stored would have no value for it."""
    operations = []
    for column in missing_columns(conn, source):
        if column.default is None and not column.nullable:
            raise Unaddable(f"column '{column.name}' of '{source.name}' cannot be added to a table that exists:"
                            " declare it nullable: true or give it a default")
        default = sql.SQL("") if column.default is None else sql.SQL(" default {}").format(sql.Literal(column.default))
        required = sql.SQL("" if column.default is None else " not null")
        for table in (source.name, source.pending):
            statement = sql.SQL("alter table {} add column if not exists {} {}{}{}").format(
                source.table(table), sql.Identifier(column.name), sql.SQL(column.type.sql), default, required)
            if table == source.name:
                operations.append(statement.as_string(conn))
            if not dry:
                conn.execute(statement)
        if not dry:
            conn.execute(sql.SQL("alter table {} add column if not exists {} text").format(
                source.table(source.quarantine), sql.Identifier(column.name)))
    return operations


def ensure_touch_trigger(conn: psycopg.Connection, source: DataSource, table: str) -> None:
    """Every change to ``table``'s rows bumps the data generation (sql/storage.sql), whoever
    makes it: a cached answer (serving/result_cache.py) is then never served past it. The
    data source's own table, except where Citus distributes it (Citus refuses to distribute
    a table with triggers, and would run them on the workers): there, its pending table on
    the coordinator, which every ingest and delete writes (schema.py chooses); there not on
    ``delete``, which is how an absorption empties it without changing any answer."""
    events = "insert or update or truncate" if table == source.pending else "insert or update or delete or truncate"
    conn.execute(sql.SQL("create or replace trigger {} after {} on {}"
                         " for each statement execute function cartpulse.touch_data_trigger()").format(
        sql.Identifier(f"{table}_touch_data"), sql.SQL(events), source.table(table)))


def ensure_index(conn: psycopg.Connection, source: DataSource, table: str, columns: tuple[str, ...],
                 name: str) -> None:
    """An index on ``columns`` of ``table``, unless one on exactly those columns exists
    (whatever its name: databases made before the declaration have their own names)."""
    existing = conn.execute(
        "select 1 from pg_index i where i.indrelid = %s::regclass and i.indnkeyatts = %s"
        " and array(select a.attname::text from unnest(i.indkey::int2[]) with ordinality k(attnum, n)"
        "           join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum"
        "           order by k.n) = %s::text[]",
        [source.regclass(table), len(columns), list(columns)]).fetchone()
    if existing is None:
        conn.execute(sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(name), source.table(table), sql.SQL(", ").join(map(sql.Identifier, columns))))
