"""Per-request statistics in ``cartpulse.pipe_stats``, like Tinybird's ``pipe_stats_rt``.

Analysts query who called which pipe with which parameters, how long it took and how
much it read, in SQL (the table is also a dbt source, ``source('cartpulse', 'pipe_stats')``).

Writing a row per request must not slow the request: the request thread only appends a
tuple to an in-memory queue; a background thread of each worker process COPYs the queue
into the table about once a second. The price is plain and documented: a worker that
crashes (or is SIGKILLed) loses up to its last second of statistics; a graceful stop
flushes. When the queue is full (the database is away for long) rows are dropped and
counted in ``cartpulse_pipe_stats_dropped_rows_total``, never blocking a request.

Only authenticated pipe requests are recorded (an anonymous flood cannot fill the table),
and never the token: ``params`` is the query string without ``token``, with a POST's
body parameters, and a repeated key's values joined with commas.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone

from flask import request

from cartpulse.context import request_state
from cartpulse.ops import metrics

log = logging.getLogger(__name__)

#: Seconds between flushes of a worker's queue.
FLUSH_SECONDS = 1.0
#: Rows a worker keeps waiting at most (about 100 bytes each).
MAX_QUEUE = 100_000
#: Longest parameter value kept (a parameter is at most 1,000 characters when valid).
MAX_PARAM_CHARS = 1000
COLUMNS = ("at", "pipe", "params", "status", "duration", "rows_read", "bytes_read", "result_rows",
           "token_name", "error")


class StatsWriter:
    """A queue of rows and the thread that writes them, one per process (started lazily,
    after gunicorn forked the worker)."""

    def __init__(self, db, flush_seconds: float = FLUSH_SECONDS, max_queue: int = MAX_QUEUE):
        self.db = db
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pid: int | None = None

    def record(self, row: tuple) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            if len(self._rows) >= self.max_queue:
                metrics.PIPE_STATS_DROPPED.inc()
                return
            self._rows.append(row)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._rows = []  # rows copied from a parent process by fork are the parent's
        threading.Thread(target=self._loop, name="pipe-stats-writer", daemon=True).start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()

    def flush(self) -> int:
        """Write the queued rows now; return how many were written."""
        with self._flushing:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                with self.db.psycopg() as conn, conn.cursor() as cur:
                    with cur.copy(f"copy cartpulse.pipe_stats ({', '.join(COLUMNS)}) from stdin") as copy:
                        for row in rows:
                            copy.write_row(row)
            except Exception as err:  # statistics must never take the service down
                metrics.PIPE_STATS_DROPPED.inc(len(rows))
                log.warning("pipe_stats: %d rows not written: %s", len(rows), str(err).strip().splitlines()[:1])
                return 0
            return len(rows)


def init_app(app, db) -> StatsWriter:
    """Record each authenticated pipe request after it is answered."""
    writer = StatsWriter(db)
    app.extensions["cartpulse_stats"] = writer

    @app.after_request
    def _record(response):
        known = request_state()
        pipe, caller = known.pipe, known.caller
        if pipe is None or caller is None:
            return response
        started = known.started
        duration = time.perf_counter() - started if started is not None else 0.0
        result_rows, statistics = known.pipe_result or (0, {})
        given = known.pipe_params if known.pipe_params is not None else request.args.to_dict()
        params = {k: v[:MAX_PARAM_CHARS] for k, v in given.items() if k != "token"}
        error = None
        if response.status_code >= 400 and response.is_json:
            error = (response.get_json(silent=True) or {}).get("error")
        writer.record((datetime.now(timezone.utc), pipe, json.dumps(params, ensure_ascii=False),
                       response.status_code, duration, statistics.get("rows_read", 0),
                       statistics.get("bytes_read", 0), result_rows, caller.name, error))
        return response

    return writer


def purge(conn, retention_days: int) -> int:
    """Delete rows older than the retention (run by the scheduler after each refresh, so
    each purge removes about one interval's worth of rows through the index on ``at``)."""
    deleted = conn.execute("delete from cartpulse.pipe_stats where at < now() - make_interval(days => %s)",
                           [retention_days]).rowcount
    # The operations log of appends (tinybird.datasources_ops_log) is kept as long.
    conn.execute("delete from cartpulse.datasources_ops_log where at < now() - make_interval(days => %s)",
                 [retention_days])
    return deleted
