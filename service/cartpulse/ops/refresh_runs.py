"""The record of scheduled refreshes: the table ``cartpulse.refresh_runs``.

The scheduler (``scheduler.py``) writes one row per run; operators read the last runs
over the API (``GET /v0/refresh``, ``status.py``) or in SQL, and ``/metrics`` exposes
the last one.
"""

from __future__ import annotations

import json
import os
import socket

COLUMNS = ("id", "started_at", "finished_at", "status", "duration_seconds", "freshness",
           "freshness_results", "error", "host", "pid")


def record(conn, result) -> None:
    """Insert one finished run (``scheduler.RunResult``)."""
    host, pid = socket.gethostname(), os.getpid()
    conn.execute(
        "insert into cartpulse.refresh_runs (started_at, finished_at, status, duration_seconds,"
        " freshness, freshness_results, error, host, pid) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [result.started_at, result.finished_at, result.status, result.duration_seconds, result.freshness,
         json.dumps(result.freshness_results) if result.freshness_results else None, result.error, host, pid])


def last_runs(conn, limit: int = 20) -> list[dict]:
    cur = conn.execute(f"select {', '.join(COLUMNS)} from cartpulse.refresh_runs order by id desc limit %s",
                       [limit])
    return [dict(zip(COLUMNS, row)) for row in cur.fetchall()]


def purge(conn, retention_days: int) -> int:
    return conn.execute("delete from cartpulse.refresh_runs where started_at < now() - make_interval(days => %s)",
                        [retention_days]).rowcount
