"""The batch writer: one transaction per request, stored whole or not at all.

The Events API, bulk import and ``cartpulse import`` all write through here, so a row
reaches the events table, its pending twin (the rollups' real-time input, see
docs/realtime.md) and the quarantine by one path, with one set of retries.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import psycopg

from cartpulse.ingest import idempotency
from cartpulse.ingest.rows import COLUMNS, Batch
from cartpulse.ops import metrics
from cartpulse.storage.wal import commit_position

RETRIES = 3
#: PostgreSQL types of COLUMNS and QUARANTINE_COLUMNS, for binary COPY.
COLUMN_TYPES = ["timestamptz", "text", "text", "text", "text", "float8", "int8", "text", "text"]
QUARANTINE_TYPES = ["text"] * len(COLUMNS) + ["text[]", "text[]", "text", "int8", "text"]
QUARANTINE_COLUMNS = COLUMNS + ("c__error_column", "c__error", "c__import_id", "c__line", "c__raw")


class PartitionCache:
    """Months whose partition is known to exist, so the common case costs no query."""

    def __init__(self):
        self.months: set[tuple[int, int]] = set()
        self.lock = threading.Lock()

    def missing(self, rows) -> list[datetime]:
        months = {(r[0].year, r[0].month) for r in rows}
        return [datetime(y, m, 1, tzinfo=timezone.utc) for (y, m) in sorted(months - self.months)]

    def ensure(self, db, rows) -> None:
        missing = self.missing(rows)
        if missing:
            # Its own committed transaction: DDL must not hold locks for the batch's life.
            with db.psycopg() as conn:
                conn.execute("select cartpulse.ensure_event_partitions(%s::timestamptz[])", [missing])
            with self.lock:
                self.months.update((m.year, m.month) for m in missing)

    def forget(self) -> None:
        """Forget every month: retention (RETENTION on plain PostgreSQL) may have dropped
        a partition this process saw, and the next batch for that month recreates it."""
        with self.lock:
            self.months.clear()


def write_batch(db, partitions: PartitionCache, table: str, batch: Batch, import_id: str,
                key: idempotency.Claim | None = None, answer: tuple[int, dict] | None = None) -> str:
    """Write the batch and return the WAL position covering its commit; retry the transaction when PostgreSQL aborted it for a deadlock
    (nothing of an aborted transaction is stored, so a retry cannot duplicate).

    With ``key``, the key and ``answer`` (status, body) are recorded in the same transaction;
    raises idempotency.AlreadyStored when the key was committed first (nothing is written).
    """
    for attempt in range(1, RETRIES + 1):
        try:
            return _write_batch(db, partitions, table, batch, import_id, key, answer)
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            if attempt == RETRIES:
                raise
            time.sleep(0.05 * attempt)
        except psycopg.errors.CheckViolation:
            # "no partition of relation … found for row": a cached month was dropped by
            # retention since; the events table has no other check to violate.
            if attempt == RETRIES:
                raise
            partitions.forget()


def _write_batch(db, partitions: PartitionCache, table: str, batch: Batch, import_id: str,
                 key: idempotency.Claim | None, answer: tuple[int, dict] | None) -> str:
    """COPY the batch's valid rows (to the table and its pending twin) and its quarantined
    rows, in one transaction: all of a request becomes visible at once, or none of it."""
    partitions.ensure(db, batch.rows)
    with db.psycopg() as conn, conn.cursor() as cur:
        if key is not None:
            # First, so that a concurrent twin waits here, before either writes a row.
            idempotency.claim(conn, key, *answer)
        copy_batch(cur, table, batch, import_id)
        position = commit_position(conn)
    metrics.count_rows(table, "events", len(batch.rows), len(batch.quarantined))
    return position


def copy_batch(cur, table: str, batch: Batch, import_id: str) -> None:
    """COPY a batch's valid rows (to the table and its pending twin) and its quarantined
    rows with the caller's cursor, inside the caller's transaction: one per events request,
    one for all the chunks of a bulk import (bulk.py)."""
    # Binary COPY: psycopg then sends values without formatting them as text, and the
    # server need not parse timestamps and numbers (5x less CPU than text COPY here).
    if batch.rows:
        for target in (table, f"{table}_pending"):
            with cur.copy(f"copy {target} ({', '.join(COLUMNS)}) from stdin (format binary)") as copy:
                copy.set_types(COLUMN_TYPES)
                for row in batch.rows:
                    copy.write_row(row)
    if batch.quarantined:
        with cur.copy(f"copy {table}_quarantine ({', '.join(QUARANTINE_COLUMNS)}) from stdin"
                      " (format binary)") as copy:
            copy.set_types(QUARANTINE_TYPES)
            for q in batch.quarantined:
                copy.write_row([q.values[c] for c in COLUMNS]
                               + [q.columns, q.errors, import_id, q.line, q.raw])
