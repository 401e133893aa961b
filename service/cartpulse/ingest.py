"""The Events API: ``POST /v0/events?name=<data source>`` with NDJSON or one JSON object.

A request is answered only after its rows are committed, so an acknowledgement means
the events are durable (``synchronous_commit`` is left on). Valid rows and quarantined
rows of one request are written in one transaction: a request is stored whole or not
at all, never half. With an ``Idempotency-Key`` the key and the answer are recorded in
that same transaction (``idempotency.py``), so a retried batch is stored exactly once.

``wait=true`` is accepted for Tinybird compatibility and changes only the status (200
instead of 202): CartPulse answers after the commit either way.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from datetime import datetime, timezone

import psycopg
from flask import Blueprint, current_app, jsonify, request

from . import idempotency, metrics
from .auth import request_caller, require_scope
from .errors import ApiError
from .events import COLUMNS, Batch, parse_body
from .replicas import LSN_HEADER, commit_position, current_position

bp = Blueprint("ingest", __name__)

#: Data sources that accept events, and the table each lands in.
DATA_SOURCES = {"ecommerce_events": "raw.ecommerce_events"}
RETRIES = 3
#: PostgreSQL types of COLUMNS and QUARANTINE_COLUMNS, for binary COPY.
COLUMN_TYPES = ["timestamptz", "text", "text", "text", "text", "float8", "int8", "text", "text"]
QUARANTINE_TYPES = ["text"] * len(COLUMNS) + ["text[]", "text[]", "text", "int8", "text"]
QUARANTINE_COLUMNS = COLUMNS + ("c__error_column", "c__error", "c__import_id", "c__line", "c__raw")


def _body(max_bytes: int) -> bytes:
    body = request.get_data(cache=False)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, max_bytes + 1)
        except zlib.error as err:
            raise ApiError(400, f"body is not valid gzip: {err}") from None
        if len(body) > max_bytes or inflater.unconsumed_tail:
            raise ApiError(413, f"decompressed body over the limit of {max_bytes} bytes")
        if not inflater.eof:
            raise ApiError(400, "body is not valid gzip: truncated stream")
    return body


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


@bp.post("/v0/events")
def post_events():
    name = request.args.get("name")
    if not name:
        raise ApiError(400, "missing the 'name' parameter (the data source to append to)")
    if name not in DATA_SOURCES:
        raise ApiError(404, f"data source '{name}' not found")
    require_scope(f"DATASOURCES:APPEND:{name}")
    state = current_app.extensions["cartpulse"]
    body = _body(state.settings.max_body_bytes)
    if not body.strip():
        raise ApiError(400, "empty body: send one JSON object, or one per line (NDJSON)")
    settings = state.settings
    key = idempotency.request_key(request.headers)
    claim = None
    if key is not None:
        claim = idempotency.Claim(token_name=request_caller().name, data_source=name, key=key,
                                  body_sha256=idempotency.body_digest(body),
                                  ttl_seconds=settings.idempotency_ttl_seconds)
        with state.db.psycopg() as conn:
            replay = idempotency.lookup(conn, claim)
        if replay is not None:
            return _replayed(replay)
    batch = parse_body(body)
    if batch.json_lines == 0:
        line, why = batch.first_bad_line
        raise ApiError(400, f"line {line}: {why}; nothing was stored", line=line)
    import_id = uuid.uuid4().hex
    wait = request.args.get("wait", "false").lower() == "true"
    status = 200 if wait else 202
    answer = {"successful_rows": len(batch.rows), "quarantined_rows": len(batch.quarantined),
              "import_id": import_id}
    try:
        position = write_batch(state.db, state.partitions, DATA_SOURCES[name], batch, import_id, claim,
                               (status, answer))
    except idempotency.AlreadyStored as twin:  # a concurrent retry committed first
        return _replayed(twin.replay)
    if claim is not None:
        state.purger.maybe_purge(state.db, settings.idempotency_ttl_seconds)
    response = jsonify(answer)
    response.status_code = status
    response.headers[LSN_HEADER] = position  # read-your-writes through replicas (replicas.py)
    return response


def _replayed(replay: idempotency.Replay):
    """The first answer given for this key, marked as a replay. Its position is the
    primary's current one: the first request's commit is at or before it."""
    response = jsonify(replay.response)
    response.status_code = replay.status
    response.headers["Idempotent-Replayed"] = "true"
    response.headers[LSN_HEADER] = current_position(current_app.extensions["cartpulse"].db)
    return response
