"""The record of scheduled refreshes: ``cartpulse.refresh_runs`` and ``GET /v0/refresh``.

The scheduler (``scheduler.py``) writes one row per run; operators read the last runs
over the API with an ADMIN token (or in SQL), and ``/metrics`` exposes the last one.
"""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request

from .auth import ADMIN, require_scope
from .params import Param, parse_request

bp = Blueprint("refresh", __name__)

PARAMS = (Param("limit", "Int", min=1, max=1000),)
COLUMNS = ("id", "started_at", "finished_at", "status", "duration_seconds", "freshness",
           "freshness_results", "error", "host", "pid")


def record(conn, result) -> None:
    """Insert one finished run (``scheduler.RunResult``)."""
    from .scheduler import host_and_pid

    host, pid = host_and_pid()
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


@bp.get("/v0/refresh")
def get_refresh():
    """The last scheduled refreshes, newest first (``limit``, default 20); ADMIN only."""
    require_scope(ADMIN)
    values = parse_request(PARAMS, request.args)
    with current_app.extensions["cartpulse"].db.psycopg() as conn:
        runs = last_runs(conn, values.get("limit", 20))
    for run in runs:
        for key in ("started_at", "finished_at"):
            run[key] = run[key].isoformat()
    return jsonify(runs=runs, refresh_seconds=current_app.extensions["cartpulse"].settings.refresh_seconds)
