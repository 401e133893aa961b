"""Folding pending events into the rollups between dbt runs: ``cartpulse.absorb()``.

The function is the dbt project's (``macros/realtime/absorb.sql``, created by every
``dbt run``): it runs, for every rollup, the statement its materialization stored, so the
service absorbs exactly as an incremental ``dbt run`` would, without dbt's start-up. A
read then aggregates about a second of pending events instead of everything since the
last ``dbt run`` (docs/realtime.md). Called by the scheduler's absorber every
``ABSORB_SECONDS`` and, after a batch of at least ``ABSORB_AFTER_ROWS`` rows, by the
request that wrote it, before it answers.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from cartpulse.errors import first_line

log = logging.getLogger(__name__)

#: Dead rows past which a pending table or rollup is vacuumed (or a tenth of its live rows).
DEAD_ROWS = 1000
#: The pending tables and rollups holding many dead rows (with the second parameter
#: true, every pending table too).
_DEAD = """
    select s.relid::regclass::text from pg_stat_user_tables s
    where s.relid in (select to_regclass(pending) from cartpulse.rollup_state
                      union select to_regclass(rollup) from cartpulse.rollup_state)
      and (s.n_dead_tup > greatest(%s, s.n_live_tup / 10)
           or %s and s.relid in (select to_regclass(pending) from cartpulse.rollup_state))
"""
#: This backend's counts (the rollups' dead rows it just made) in the statistics before
#: they are read; a superuser's function unless granted, which is then left to the absorber.
_FLUSH = ("select pg_stat_force_next_flush()"
          " where has_function_privilege('pg_stat_force_next_flush()', 'execute')")


def absorb(conn: psycopg.Connection) -> int | None:
    """Absorb the pending events of every rollup; return how many pending rows that
    freed, or None while the models have not been built (no function yet). The call
    must be its own transaction (``conn`` in autocommit, or committed right after):
    it holds the rollups' state rows until it ends."""
    if conn.execute("select to_regprocedure('cartpulse.absorb(text)') is null").fetchone()[0]:
        return None
    return conn.execute("select cartpulse.absorb()").fetchone()[0]


def vacuum_dead(conn: psycopg.Connection, pending: bool = False) -> None:
    """VACUUM the pending tables and rollups that hold many dead rows (``conn`` in
    autocommit); with ``pending``, every pending table. Every read scans a pending table,
    dead rows included, and a rollup's upserts leave the old versions behind: whoever
    absorbed them (the absorber, a ``dbt run``, a large batch's request), they are
    cleared then, not whenever autovacuum comes by. A pending table emptied by one
    absorption may hold fewer dead rows than the threshold yet be read by every request,
    so a caller that has just absorbed a large batch asks for all of them (``pending``)."""
    for (table,) in conn.execute(_DEAD, [DEAD_ROWS, pending]).fetchall():
        # SKIP_LOCKED: never wait behind another VACUUM of the table (a concurrent batch's,
        # or autovacuum's, which yields only after deadlock_timeout); it clears the same rows.
        conn.execute(sql.SQL("vacuum (analyze, skip_locked) {}").format(sql.SQL(table)))  # a regclass's own text


def absorb_after_batch(db, rows: int, threshold: int) -> None:
    """After a committed batch of ``rows`` rows: absorb now when it is large, so that the
    reads that follow do not each aggregate it. The batch is durable and counted either
    way (pending rows are read live), so a failure here is logged, never answered."""
    if threshold <= 0 or rows < threshold:
        return
    try:
        with db.psycopg() as conn:
            conn.execute("set local statement_timeout = 0")  # a large batch may take a while
            absorb(conn)
            conn.commit()  # one transaction; then its dead pending rows go before this answers
            conn.autocommit = True
            try:
                conn.execute("set statement_timeout = 0")
                conn.execute(_FLUSH)
                vacuum_dead(conn, pending=True)
            finally:
                conn.execute("reset statement_timeout")
                conn.autocommit = False
    except psycopg.Error as err:
        log.warning("absorbing a batch of %d rows failed (the scheduler will): %s", rows, first_line(err))
