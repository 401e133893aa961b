"""One row per append in ``cartpulse.datasources_ops_log`` (Tinybird's ``datasources_ops_log``).

An append that succeeds writes its row inside its own transaction, beside the rows it
counts: the log and the data commit together, so the log never shows an append that is
not there, nor misses one that is. An append that fails writes a row with result
``error`` and the message afterwards, in a transaction of its own (best effort: when the
database itself is away, there is nowhere to write it). Read through the Query API as
``tinybird.datasources_ops_log`` (storage/sql/service_datasources.sql).

``event_type`` is Tinybird's: ``append-hf`` for the Events API, ``append`` for a bulk
import (``POST /v0/datasources``), ``replace`` for ``mode=replace``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from cartpulse.errors import first_line

log = logging.getLogger(__name__)

EVENTS = "append-hf"
IMPORT = "append"
REPLACE = "replace"
_INSERT = ("insert into cartpulse.datasources_ops_log (event_type, datasource, result, elapsed, error, import_id,"
           " rows, rows_quarantine, token_name) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)")


@dataclass(frozen=True)
class Operation:
    """An append in progress: what it is, who asked, when it started."""

    event_type: str
    datasource: str
    token_name: str | None
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def record_ok(cur, op: Operation | None, import_id: str, rows: int, quarantined: int) -> None:
    """The success row, with the caller's cursor: inside the append's transaction."""
    if op is not None:
        cur.execute(_INSERT, [op.event_type, op.datasource, "ok", op.elapsed(), None, import_id, rows, quarantined,
                              op.token_name])


def record_error(db, op: Operation | None, error: BaseException | str, import_id: str | None = None) -> None:
    """The failure row, in a transaction of its own; never raises."""
    if op is None:
        return
    message = error if isinstance(error, str) else first_line(error)
    try:
        with db.psycopg() as conn:
            conn.execute(_INSERT, [op.event_type, op.datasource, "error", op.elapsed(), message[:1000], import_id,
                                   None, None, op.token_name])
    except Exception as err:  # the log must never turn a failure into another one
        log.warning("datasources_ops_log: could not record a failed append: %s", first_line(err))
