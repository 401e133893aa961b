"""Citus columnar storage for old monthly partitions (``COMPRESS_AFTER`` on Citus).

On a Citus cluster, ``COMPRESS_AFTER`` converts each monthly partition of a distributed
data source whose whole month is older than it to Citus's ``columnar`` access method
(``alter_table_set_access_method``, one partition per transaction). Columnar tables take
INSERT and COPY, so late events still land in their month and count at once, but they
refuse UPDATE and DELETE: a DELETE on the parent fails as soon as one columnar partition
is not pruned, even when no row of it matches. docs/citus.md gives the design; three
rules make it exact:

* **Conversion never loses a concurrent write.** ``alter_table_set_access_method`` copies
  the partition into a new table, then drops the old one and attaches the new. Citus's
  COPY into the parent locks only the parent on the coordinator, so a batch committed on
  a worker after the copy read that shard would be dropped with it. Ingest therefore
  takes a shared advisory lock per month of its rows that is not the current one
  (``lock_months``, the key the partition's creators and retention already use), and a
  conversion takes it exclusive: a late batch waits for the conversion, or the
  conversion for it. Current-month ingest, the hot path, takes nothing and never waits
  but for the moment the partition is swapped.
* **Deletes see every row they should.** ``prepare_delete`` (inside the delete's own
  transaction: ``/delete``, a replace, ``erase``) locks the columnar months against
  ingest, converts back to heap each columnar partition holding a row the condition
  matches (or answers 503 when it cannot get the locks in time), and returns a predicate that keeps the delete out of the other columnar
  partitions by their range, so PostgreSQL prunes them on the workers. A rollback undoes
  the conversion with the delete; the next pass converts the month again.
* **One conversion or delete at a time per data source** (``hold``): deletes lock every
  partition and conversions lock the parent last, so unserialized they could deadlock.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from cartpulse.errors import ApiError
from cartpulse.project.datasources import DataSource

log = logging.getLogger(__name__)

COLUMNAR = "columnar"
#: How long a conversion waits for a lock before giving up until the next pass: while it
#: waits for the parent (to swap the partition), reads and writes queue behind it.
LOCK_TIMEOUT = "5s"
#: Ingest locks every month ending before now + this: a month is converted only once it
#: has ended COMPRESS_AFTER ago by the database's clock, so this covers clock skew
#: between the service and the database.
SKEW = timedelta(hours=1)


def month_key(source: DataSource, partition: str) -> str:
    """The advisory lock key of one monthly partition (its name, without schema): the same
    text ``cartpulse.ensure_partitions`` and ``drop_expired_partitions`` hash."""
    return f"cartpulse.partition.{source.schema}.{partition}"


def lock_months(cur, source: DataSource, months: set[tuple[int, int]]) -> None:
    """Before a batch is written to ``source``'s table: a shared lock on every one of its
    ``months`` (year, month) that may be converted meanwhile (all but the current one),
    held to commit."""
    horizon = datetime.now(timezone.utc) + SKEW
    keys = sorted(month_key(source, f"{source.name}_{y:04d}m{m:02d}") for y, m in months
                  if _month_end(y, m) <= horizon)
    if keys:
        cur.execute("select pg_advisory_xact_lock_shared(hashtext(k)) from unnest(%s::text[]) with ordinality"
                    " as t(k, n) order by n", [keys])


def _month_end(year: int, month: int) -> datetime:
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)


def hold(conn, source: DataSource) -> None:
    """Serialize conversions and deletes of ``source`` until the transaction ends."""
    conn.execute("select pg_advisory_xact_lock(hashtext(%s))", [f"cartpulse.columnar.{source.schema}.{source.name}"])


def _on_citus(conn, source: DataSource) -> bool:
    """Whether ``source``'s table is a Citus distributed table (else nothing is columnar)."""
    if conn.execute("select to_regclass('pg_catalog.pg_dist_partition') is null").fetchone()[0]:
        return False
    return conn.execute("select exists (select 1 from pg_dist_partition where logicalrelid = %s::regclass)",
                        [source.regclass()]).fetchone()[0]


def partitions(conn, source: DataSource, method: str | None = None) -> list[tuple[str, str, str, str]]:
    """``source``'s monthly partitions (name, lower bound, upper bound, access method),
    oldest first; only those whose access method is ``method`` when given."""
    if not _on_citus(conn, source):
        return []
    return conn.execute(
        "select c.relname, tp.from_value, tp.to_value, tp.access_method from pg_catalog.time_partitions tp"
        " join pg_class c on c.oid = tp.partition where tp.parent_table = %s::regclass"
        " and (%s::text is null or tp.access_method = %s) order by tp.to_value::timestamptz",
        [source.regclass(), method, method]).fetchall()


def _convert(conn, source: DataSource, partition: str, method: str) -> None:
    """Convert one partition to ``method`` in the caller's transaction, which holds its month."""
    conn.execute("select alter_table_set_access_method(format('%%I.%%I', %s::text, %s::text)::regclass, %s)",
                 [source.schema, partition, method])


def compress_old_partitions(conn: psycopg.Connection, source: DataSource, older_than: str) -> list[str]:
    """Convert to columnar every heap partition of ``source`` whose whole month is older
    than ``older_than`` (COMPRESS_AFTER); return their names. ``conn`` is in autocommit:
    each partition is one transaction (a failure or a lock wait past LOCK_TIMEOUT leaves
    it for the next pass). Nothing on an engine other than Citus, or for a data source
    that is not distributed (it stays a table of the coordinator)."""
    if not _on_citus(conn, source):
        return []
    conn.execute("create extension if not exists citus_columnar")
    due = [name for (name,) in conn.execute(
        "select c.relname from pg_catalog.time_partitions tp join pg_class c on c.oid = tp.partition"
        " where tp.parent_table = %s::regclass and tp.access_method is distinct from 'columnar'"
        " and tp.to_value::timestamptz <= now() - %s::interval order by tp.to_value::timestamptz",
        [source.regclass(), older_than])]
    done = []
    for name in due:
        try:
            with conn.transaction():
                conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
                hold(conn, source)
                conn.execute("select pg_advisory_xact_lock(hashtext(%s))", [month_key(source, name)])
                # Under the locks, as it is now: retention may have dropped it, a twin converted it.
                if any(p[0] == name and p[3] != COLUMNAR for p in partitions(conn, source)):
                    _convert(conn, source, name, COLUMNAR)
                    done.append(name)
        except psycopg.Error as err:
            log.warning("COMPRESS_AFTER: %s.%s stays heap until the next pass: %s", source.schema, name,
                        str(err).strip().splitlines()[0])
    if done:
        log.info("COMPRESS_AFTER=%s: %s converted to columnar", older_than, ", ".join(done))
    return done


def _back_to_heap(conn, source: DataSource, name: str) -> None:
    """Convert a columnar partition back to heap inside a delete's transaction, waiting at
    most LOCK_TIMEOUT for each lock: while it waits for the parent, every read and write
    of the data source queues behind it. Past that, a 503 (the transaction, and with it
    the delete, rolls back)."""
    before = conn.execute("select current_setting('lock_timeout')").fetchone()[0]
    conn.execute(f"set local lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        _convert(conn, source, name, "heap")
    except psycopg.errors.LockNotAvailable:
        raise ApiError(503, f"rows to delete are in {source.schema}.{name}, a month in columnar storage"
                            " (COMPRESS_AFTER), which must go back to heap first; it could not within"
                            f" {LOCK_TIMEOUT}, as a long read or import holds the data source: nothing was"
                            " deleted, retry", headers={"Retry-After": "5"}) from None
    conn.execute("select set_config('lock_timeout', %s, true)", [before])


def prepare_delete(conn, source: DataSource, condition: sql.Composable, params: list) -> sql.Composable:
    """Make a delete of the rows matching ``condition`` possible in the caller's
    transaction, and return the predicate the delete must add (``true`` when nothing is
    columnar): each columnar partition holding a matching row goes back to heap, and
    the others are excluded by their range. Their months stay locked against ingest
    until the transaction ends, so no matching row can arrive in one unseen."""
    if not _on_citus(conn, source):
        return sql.SQL("true")
    hold(conn, source)
    columnar = partitions(conn, source, COLUMNAR)
    if not columnar:
        return sql.SQL("true")
    key = sql.Identifier(source.partition_key)
    conn.execute("select pg_advisory_xact_lock(hashtext(k)) from unnest(%s::text[]) with ordinality"
                 " as t(k, n) order by n", [[month_key(source, name) for name, *_ in columnar]])
    spared = []
    for name, lower, upper, _ in columnar:
        matches = conn.execute(sql.SQL("select exists (select 1 from {} where {})").format(
            sql.Identifier(source.schema, name), condition), params).fetchone()[0]
        if matches:
            _back_to_heap(conn, source, name)
            log.info("a delete on %s.%s converted it back to heap (COMPRESS_AFTER converts it again)",
                     source.schema, name)
        else:
            spared.append(sql.SQL("({key} < {lower} or {key} >= {upper})").format(
                key=key, lower=sql.Literal(lower), upper=sql.Literal(upper)))
    return sql.SQL(" and ").join(spared) if spared else sql.SQL("true")
