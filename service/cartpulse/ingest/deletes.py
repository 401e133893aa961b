"""Taking events out: delete by condition and truncate, exact at once in every rollup.

**Delete** (``POST /v0/datasources/<name>/delete``, ``cartpulse delete``) is one statement
in one transaction: it deletes the matching rows from the data source's table and writes
each of them again into the ``_pending`` table with ``sign = -1``, stamped with its own
transaction id. A pending row is what a rollup absorbs, and rollups sum ``sign``-weighted
measures, so a retraction travels the same path as an addition (docs/realtime.md): until
absorbed, each ``_live`` view subtracts it; absorbed, it has been subtracted from the table
(and a rollup row whose count of events reaches 0 is removed). The +1 pending rows of
deleted events that no rollup absorbed yet stay: they and their retraction cancel out in
the live view, and are absorbed together. Ingest running meanwhile needs nothing: a row
committed after the delete's snapshot is not deleted (the delete came first), one
committed before it is.

**Truncate** empties the table, its pending rows and every rollup built on them, and
records in each rollup's state the snapshot taken after the locks: nothing is left to
subtract. It locks the rollups' state rows (a ``dbt run`` or absorption of them ends
first), then the table (ingest waits), then the pending table, in the order the other
writers take them, so it cannot deadlock with them.

Each change writes its job row (jobs.py) in its own transaction and returns the WAL
position of its commit, for read-your-writes on replicas.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from cartpulse.errors import ApiError, first_line
from cartpulse.ingest import jobs
from cartpulse.ingest.delete_condition import Condition
from cartpulse.project.datasources import DataSource
from cartpulse.storage import columnar
from cartpulse.storage.absorb import absorb_after_batch
from cartpulse.storage.wal import commit_position


@dataclass(frozen=True)
class Done:
    """A committed change: its job, how many rows it removed, the WAL position of its commit."""

    job_id: str
    rows: int
    position: str


def count_matching(db, source: DataSource, condition: Condition) -> int:
    """How many rows a delete with ``condition`` would remove now (``dry_run``)."""
    query = sql.SQL("select count(*) from {} where {}").format(source.table(), condition.sql)
    with db.psycopg() as conn, _condition_errors(condition):
        return conn.execute(query, condition.params).fetchone()[0]


def delete_statement(source: DataSource, condition: Condition, spared: sql.Composable = sql.SQL("true")) -> sql.Composed:
    """Delete the matching rows and write each one's retraction into the pending table;
    ``spared``: the predicate that keeps the delete out of columnar partitions without a
    matching row (storage/columnar.py)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, source.column_names))
    return sql.SQL("with gone as (delete from {events} where ({condition}) and {spared} returning {columns})"
                   " insert into {pending} ({columns}, sign) select {columns}, -1 from gone").format(
        events=source.table(), condition=condition.sql, spared=spared, columns=columns,
        pending=source.table(source.pending))


def delete_in(cur, source: DataSource, condition: Condition) -> int:
    """Run the delete with the caller's cursor, inside the caller's transaction (a
    replace appends in the same one); return how many rows it removed.

    Refused (409, nothing deleted) while a rollup of the data source was built by a
    version of the models that did not weigh rows by ``sign``: it would add the
    retractions instead of subtracting them. Its next ``dbt run`` rebuilds it.

    On Citus, columnar partitions with a matching row go back to heap first, in this
    transaction (storage/columnar.py: columnar storage cannot delete)."""
    stale = cur.execute("select string_agg(rollup, ', ' order by rollup) from cartpulse.rollup_state"
                        " where to_regclass(pending) = %s::regclass and prune_sql is null"
                        " and to_regclass(rollup) is not null", [source.regclass(source.pending)]).fetchone()[0]
    if stale:
        raise ApiError(409, f"the rollups {stale} were built before deletes were supported: run `cartpulse build`"
                            " (a dbt run rebuilds them) first; nothing was deleted")
    with _condition_errors(condition):
        spared = columnar.prepare_delete(cur, source, condition.sql, condition.params)
        cur.execute(delete_statement(source, condition, spared), condition.params)
    return cur.rowcount


def delete_rows(db, source: DataSource, condition: Condition, token_name: str | None,
                absorb_after_rows: int = 0) -> Done:
    """Delete the rows matching ``condition``, exactly, in one transaction with its job."""
    job_id = jobs.new_id()
    with db.psycopg() as conn, conn.cursor() as cur:
        conn.execute("set local statement_timeout = 0")  # a large delete is one statement
        rows = delete_in(cur, source, condition)
        jobs.record_done(cur, job_id, jobs.DELETE, source.name, rows, condition.text, token_name)
        position = commit_position(conn)
    # As for a large batch: fold its retractions into the rollups before answering.
    absorb_after_batch(db, rows, absorb_after_rows)
    return Done(job_id, rows, position)


#: A replace without ``replace_condition`` replaces every row.
EVERY_ROW = Condition(sql.SQL("true"), [], "true")
#: Where a replace with a condition stages the new rows, to keep those matching it.
_STAGED = sql.Identifier("pg_temp", "cartpulse_replace_rows")


def stage_replacement(cur, source: DataSource) -> sql.Identifier:
    """A temporary table, gone at commit, for the new rows of a replace with a condition."""
    cur.execute(sql.SQL("create temporary table {} (like {}) on commit drop").format(_STAGED, source.table()))
    return _STAGED


def keep_matching(cur, source: DataSource, condition: Condition) -> int:
    """Move the staged new rows that match ``condition`` into the table and its pending
    twin (the others are not stored, as Tinybird does); return how many moved."""
    columns = sql.SQL(", ").join(map(sql.Identifier, source.column_names))
    for target in (source.table(), source.table(source.pending)):
        with _condition_errors(condition):
            cur.execute(sql.SQL("insert into {} ({}) select {} from {} where {}").format(
                target, columns, columns, _STAGED, condition.sql), condition.params)
    return cur.rowcount


def lock_for_reset(conn: psycopg.Connection, source: DataSource) -> list[tuple[str, str]]:
    """Lock what a reset of ``source`` rewrites, in the order every other writer takes it:
    its rollups' state rows, its table (ingest waits), its pending table. Returns the
    rollups: their key in ``cartpulse.rollup_state`` and their table's name as
    PostgreSQL writes it (``regclass``)."""
    rollups = [(r[0], r[1]) for r in conn.execute(
        "select rollup, to_regclass(rollup)::text from cartpulse.rollup_state where to_regclass(pending) = %s::regclass"
        " and to_regclass(rollup) is not null order by rollup for update", [source.regclass(source.pending)])]
    columnar.hold(conn, source)  # a conversion to columnar in progress ends first
    conn.execute(sql.SQL("lock table {} in access exclusive mode").format(source.table()))
    conn.execute(sql.SQL("lock table {} in exclusive mode").format(source.table(source.pending)))
    return rollups


def reset_in(conn: psycopg.Connection, source: DataSource) -> int:
    """Empty the data source, its pending rows and its rollups inside the caller's
    transaction; return how many rows the table held. A rollup then holds nothing, and
    its ``absorbed`` snapshot (taken after the locks: every earlier writer committed)
    says so: any row written later, this transaction's included, is pending for it."""
    rollups = lock_for_reset(conn, source)
    rows = conn.execute(sql.SQL("select count(*) from {}").format(source.table())).fetchone()[0]
    conn.execute(sql.SQL("truncate {}, {}").format(source.table(), source.table(source.pending)))
    for _, table in rollups:
        conn.execute(sql.SQL("delete from {}").format(sql.SQL(table)))  # regclass output: a quoted name
    conn.execute("update cartpulse.rollup_state set absorbed = pg_current_snapshot(), refreshed_at = now()"
                 " where rollup = any(%s)", [[key for key, _ in rollups]])
    return rows


def truncate(db, source: DataSource, token_name: str | None) -> Done:
    """Empty the data source and every rollup built on it, in one transaction with its job."""
    job_id = jobs.new_id()
    with db.psycopg() as conn, conn.cursor() as cur:
        conn.execute("set local statement_timeout = 0")
        rows = reset_in(conn, source)
        jobs.record_done(cur, job_id, jobs.TRUNCATE, source.name, rows, None, token_name)
        position = commit_position(conn)
    return Done(job_id, rows, position)


def truncate_quarantine(db, source: DataSource) -> int:
    """Empty the data source's quarantine (no rollup reads it)."""
    with db.psycopg() as conn:
        rows = conn.execute(sql.SQL("select count(*) from {}").format(source.table(source.quarantine))).fetchone()[0]
        conn.execute(sql.SQL("truncate {}").format(source.table(source.quarantine)))
    return rows


class _condition_errors:
    """A condition that parses but that PostgreSQL cannot apply to the column's type
    (``quantity = 'many'``, ``event_time like 'x'``) is the caller's error: a 400 with
    PostgreSQL's reason, and the transaction rolls back."""

    def __init__(self, condition: Condition):
        self.condition = condition

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if isinstance(err, (psycopg.DataError, psycopg.errors.UndefinedFunction,
                            psycopg.errors.DatatypeMismatch)):
            raise ApiError(400, f"delete_condition cannot be applied: {first_line(err)}",
                           parameter="delete_condition") from None
        return False
