"""Is the service up, can it serve, and how are the refreshes going.

``/healthz`` says the process is up; ``/readyz`` says it can serve: the database answers,
storage exists and the dbt models are built. It also lists the read replicas and whether
each is in this process's rotation. ``/v0/refresh`` lists the last scheduled refreshes
(``cartpulse.refresh_runs``), for an ADMIN token.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from cartpulse import errors
from cartpulse.access.auth import ADMIN, require_scope
from cartpulse.context import service
from cartpulse.ops import refresh_runs
from cartpulse.project.params import Param, parse_request

bp = Blueprint("status", __name__)

PARAMS = (Param("limit", "Int", min=1, max=1000),)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """200 when requests can be served; else 503 naming what is missing."""
    state = service()
    try:
        with state.db.psycopg() as conn:
            storage = conn.execute("select to_regclass('cartpulse.tokens') is not null").fetchone()[0]
    except Exception as err:  # any failure to reach the database means "not ready"
        if not errors.database_unavailable(err):
            raise
        return errors.error_response(503, "database unreachable", {"Retry-After": str(errors.UNAVAILABLE_RETRY_AFTER)},
                                     database=False, storage=None, models=None)
    models = state.catalog.built
    if not (storage and models):
        missing = "storage (run `cartpulse init`)" if not storage else "dbt models (run `cartpulse build`)"
        return errors.error_response(503, f"not ready: {missing}", {"Retry-After": "5"},
                                     database=True, storage=storage, models=models)
    # Replicas are reported, never required: reads fall back to the primary.
    state.reads.watch()
    replicas = [replica.status() for replica in state.reads.replicas]
    return jsonify(status="ready", database=True, storage=True, models=True, replicas=replicas)


@bp.get("/v0/refresh")
def get_refresh():
    """The last scheduled refreshes, newest first (``limit``, default 20); ADMIN only."""
    require_scope(ADMIN)
    values = parse_request(PARAMS, request.args)
    with service().db.psycopg() as conn:
        runs = refresh_runs.last_runs(conn, values.get("limit", 20))
    for run in runs:
        for key in ("started_at", "finished_at"):
            run[key] = run[key].isoformat()
    return jsonify(runs=runs, refresh_seconds=service().settings.refresh_seconds)
