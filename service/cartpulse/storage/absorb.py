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

from cartpulse.errors import first_line

log = logging.getLogger(__name__)


def absorb(conn: psycopg.Connection) -> int | None:
    """Absorb the pending events of every rollup; return how many pending rows that
    freed, or None while the models have not been built (no function yet). The call
    must be its own transaction (``conn`` in autocommit, or committed right after):
    it holds the rollups' state rows until it ends."""
    if conn.execute("select to_regprocedure('cartpulse.absorb(text)') is null").fetchone()[0]:
        return None
    return conn.execute("select cartpulse.absorb()").fetchone()[0]


def absorb_after_batch(db, rows: int, threshold: int) -> None:
    """After a committed batch of ``rows`` rows: absorb now when it is large, so that the
    reads that follow do not each aggregate it. The batch is durable and counted either
    way (pending rows are read live), so a failure here is logged, never answered."""
    if threshold <= 0 or rows < threshold:
        return
    try:
        with db.psycopg() as conn:  # committed on exit: one transaction
            conn.execute("set local statement_timeout = 0")  # a large batch may take a while
            absorb(conn)
    except psycopg.Error as err:
        log.warning("absorbing a batch of %d rows failed (the scheduler will): %s", rows, first_line(err))
