"""The batch writer: one transaction per request, stored whole or not at all.

The Events API, bulk import and ``cartpulse import`` all write through here, so a row
reaches its data source's table, the pending twin (the rollups' real-time input, see
docs/realtime.md) and the quarantine by one path, with one set of retries. Tables,
columns and COPY types come from the data source's declaration.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter

from cartpulse.errors import ApiError, worker_unreachable
from cartpulse.ingest import idempotency, ops_log
from cartpulse.ingest.rows import Batch
from cartpulse.ops import metrics
from cartpulse.project.datasources import QUARANTINE_COLUMNS, DataSource
from cartpulse.storage import citus, columnar
from cartpulse.storage.wal import commit_position

RETRIES = 3


class PartitionCache:
    """Months whose partition is known to exist, per data source, so the common case
    costs no query."""

    def __init__(self):
        self.months: set[tuple[str, int, int]] = set()
        self.lock = threading.Lock()

    def ensure(self, db, source: DataSource, rows) -> set[tuple[int, int]]:
        """Make the partitions of the rows' months exist; return those months (year, month)."""
        at = source.partition_index
        months = {(r[at].year, r[at].month) for r in rows}
        missing = [datetime(y, m, 1, tzinfo=timezone.utc) for y, m in sorted(months)
                   if (source.name, y, m) not in self.months]
        if missing:
            # Its own committed transaction: DDL must not hold locks for the batch's life.
            with db.psycopg() as conn:
                conn.execute("select cartpulse.ensure_partitions(%s::regclass, %s::timestamptz[])",
                             [source.regclass(), missing])
            with self.lock:
                self.months.update((source.name, m.year, m.month) for m in missing)
        return months

    def forget(self) -> None:
        """Forget every month: retention (RETENTION on plain PostgreSQL) may have dropped
        a partition this process saw, and the next batch for that month recreates it."""
        with self.lock:
            self.months.clear()


def write_batch(db, partitions: PartitionCache, source: DataSource, batch: Batch, import_id: str,
                key: idempotency.Claim | None = None, answer: tuple[int, dict] | None = None,
                op: ops_log.Operation | None = None) -> str:
    """Write the batch and return the WAL position covering its commit; retry the transaction when PostgreSQL aborted it for a deadlock
    (nothing of an aborted transaction is stored, so a retry cannot duplicate).

    With ``key``, the key and ``answer`` (status, body) are recorded in the same transaction;
    raises idempotency.AlreadyStored when the key was committed first (nothing is written).
    With ``op``, its row of the operations log too (ops_log.py).
    """
    for attempt in range(1, RETRIES + 1):
        try:
            return _write_batch(db, partitions, source, batch, import_id, key, answer, op)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure,
                psycopg.errors.CheckViolation, psycopg.errors.InternalError_) as err:
            # Each aborted the transaction whole, so a retry cannot duplicate: a deadlock;
            # "no partition of relation … found for row" (a cached month dropped by
            # retention since: a data source's table has no other check to violate; Citus
            # relays a worker's as an internal error, told apart by its words); a Citus
            # worker out of reach (restarted: a pooled connection's cached link broken).
            missing_month = (isinstance(err, psycopg.errors.CheckViolation)
                             or "no partition of relation" in str(err))
            if isinstance(err, psycopg.errors.InternalError_) and not (missing_month or worker_unreachable(err)):
                raise
            if attempt == RETRIES:
                raise
            if missing_month:
                partitions.forget()
            else:
                time.sleep(0.05 * attempt)


def _write_batch(db, partitions: PartitionCache, source: DataSource, batch: Batch, import_id: str,
                 key: idempotency.Claim | None, answer: tuple[int, dict] | None,
                 op: ops_log.Operation | None = None) -> str:
    """COPY the batch's valid rows (to the table and its pending twin) and its quarantined
    rows, in one transaction: all of a request becomes visible at once, or none of it."""
    months = partitions.ensure(db, source, batch.rows)
    with db.psycopg() as conn, conn.cursor() as cur:
        if key is not None:
            # First, so that a concurrent twin waits here, before either writes a row.
            idempotency.claim(conn, key, *answer)
        columnar.lock_months(cur, source, months)  # a month being converted to columnar waits for it
        copy_batch(cur, source, batch, import_id)
        ops_log.record_ok(cur, op, import_id, len(batch.rows), len(batch.quarantined))
        try:
            with citus.confirmed_commit(conn):
                position = commit_position(conn)
        except citus.WorkerUnconfirmed as err:
            raise ApiError(503, "the batch is committed, but a Citus worker has not confirmed its part yet"
                                f" ({err}): its rows join reads of the data source when that worker is back."
                                " Resend it only with the same Idempotency-Key (which answers as the first"
                                " time), or it is stored twice", headers={"Retry-After": "5"}) from None
    metrics.count_rows(source.name, "events", len(batch.rows), len(batch.quarantined))
    return position


class _Recording(LibpqWriter):
    """COPY data sent to the server and kept: the binary stream (its header, the rows and
    its trailer) that a second COPY of the same columns can send unchanged, instead of
    formatting every row again (about 2 µs a row)."""

    def __init__(self, cursor):
        super().__init__(cursor)
        self.blocks: list[bytes] = []

    def write(self, data) -> None:
        self.blocks.append(bytes(data))
        super().write(data)


def copy_batch(cur, source: DataSource, batch: Batch, import_id: str, into: sql.Composable | None = None) -> None:
    """COPY a batch's valid rows (to the table and its pending twin, or to the table
    ``into``) and its quarantined rows with the caller's cursor, inside the caller's
    transaction: one per events request, one for all the chunks of a bulk import (bulk.py)."""
    # Binary COPY: psycopg then sends values without formatting them as text, and the
    # server need not parse timestamps and numbers (5x less CPU than text COPY here).
    if batch.rows:
        columns = sql.SQL(", ").join(map(sql.Identifier, source.column_names))
        copy_into = sql.SQL("copy {} ({}) from stdin (format binary)")
        first, *others = [into] if into is not None else [source.table(source.name), source.table(source.pending)]
        # The rows are formatted once: what the first COPY sent, the others send as it is.
        sent = _Recording(cur)
        with cur.copy(copy_into.format(first, columns), writer=sent) as copy:
            copy.set_types([c.type.sql for c in source.columns])
            for row in batch.rows:
                copy.write_row(row)
        for target in others:
            with cur.copy(copy_into.format(target, columns)) as copy:
                for block in sent.blocks:
                    copy.write(block)
    if batch.quarantined:
        names = source.column_names + tuple(name for name, _, _ in QUARANTINE_COLUMNS)
        with cur.copy(sql.SQL("copy {} ({}) from stdin (format binary)").format(
                source.table(source.quarantine), sql.SQL(", ").join(map(sql.Identifier, names)))) as copy:
            copy.set_types(["text"] * len(source.columns) + [kind for _, kind, _ in QUARANTINE_COLUMNS])
            for q in batch.quarantined:
                copy.write_row([q.values[c] for c in source.column_names]
                               + [q.columns, q.errors, import_id, q.line, q.raw])
