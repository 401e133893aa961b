"""Deleting and truncating through the Data Sources API, and the jobs that report it.

* ``POST /v0/datasources/<name>/delete`` with ``delete_condition`` (and ``dry_run``), in
  the form body as Tinybird's clients send it, or the query string: answered with a job
  in Tinybird's shape, which ``GET /v0/jobs/<id>`` reads back. ``dry_run=true`` answers
  ``{"rows_to_be_deleted": n}`` and changes nothing;
* ``POST /v1/datasources/<name>/delete``: the synchronous variant, answered with the
  finished job and ``rows_affected`` (the v0 route is just as synchronous: CartPulse
  deletes inside the request, ingest/jobs.py says why);
* ``POST /v0/datasources/<name>/truncate``: empties the data source and its rollups;
  ``<name>_quarantine`` empties its quarantine;
* ``POST /v0/datasources/<name>/alter``: adds the columns declared in the yml since the
  tables were made (schema evolution, storage/ddl.py); ``dry=true`` lists them;
* ``GET /v0/jobs`` (the latest 100, ``kind=`` and ``status=`` filters) and
  ``GET /v0/jobs/<id>``.

All need an ADMIN token (Tinybird asks for ``DATASOURCES:CREATE``, which CartPulse's
tokens do not have). The condition is parsed and checked (ingest/delete_condition.py);
how the rollups stay exact is in ingest/deletes.py and docs/realtime.md.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from cartpulse.access.auth import ADMIN, request_caller, require_scope
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.ingest import deletes, jobs
from cartpulse.ingest.delete_condition import parse
from cartpulse.project.datasources import DataSource, declared_now
from cartpulse.storage.ddl import Unaddable, add_columns
from cartpulse.storage.wal import LSN_HEADER

bp = Blueprint("data_operations", __name__)
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def _source(name: str) -> DataSource:
    source = service().datasources.get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    return source


def _value(name: str) -> str | None:
    """A parameter from the form body (Tinybird's clients) or the query string."""
    value = request.form.get(name) if request.mimetype == "application/x-www-form-urlencoded" else None
    if value is None and request.is_json:
        body = request.get_json(silent=True)
        value = body.get(name) if isinstance(body, dict) else None
        value = None if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return value if value is not None else request.args.get(name)


def _flag(name: str) -> bool:
    value = (_value(name) or "").lower()
    if value not in _TRUE + _FALSE:
        raise ApiError(400, f"{name} must be true or false", parameter=name)
    return value in _TRUE


def _answer(body: dict, position: str, status: int = 200):
    response = jsonify(body)
    response.status_code = status
    response.headers[LSN_HEADER] = position  # read-your-writes (replicas.py)
    return response


def _delete(name: str, shape):
    """A delete (or its dry run); ``shape`` makes the answer from the finished job."""
    require_scope(ADMIN)
    source = _source(name)
    condition = parse(_value("delete_condition"), source)
    state = service()
    if _flag("dry_run"):
        return jsonify({"rows_to_be_deleted": deletes.count_matching(state.db, source, condition)})
    done = deletes.delete_rows(state.db, source, condition, request_caller().name, state.settings.absorb_after_rows)
    return _answer(shape(jobs.get(state.db, done.job_id).as_json(request.host_url)), done.position)


@bp.post("/v0/datasources/<string:name>/delete")
def delete_v0(name: str):
    """Tinybird's asynchronous shape: the job's fields, the job itself, its delete_id."""
    return _delete(name, lambda job: {**job, "job": job, "delete_id": job["id"]})


@bp.post("/v1/datasources/<string:name>/delete")
def delete_v1(name: str):
    """The synchronous variant: the finished job."""
    return _delete(name, lambda job: job)


@bp.post("/v0/datasources/<string:name>/truncate")
def truncate(name: str):
    require_scope(ADMIN)
    state = service()
    quarantined = next((s for s in state.datasources.values() if s.quarantine == name), None)
    if quarantined is not None:
        return jsonify({"datasource": {"id": name, "name": name},
                        "rows_affected": deletes.truncate_quarantine(state.db, quarantined)})
    done = deletes.truncate(state.db, _source(name), request_caller().name)
    return _answer(jobs.get(state.db, done.job_id).as_json(request.host_url), done.position)


#: Tinybird's /alter parameters that change what the dbt project declares.
_DECLARED = ("schema", "description", "ttl", "indexes", "engine_settings", "kafka_store_raw_value",
             "kafka_store_headers")


@bp.post("/v0/datasources/<string:name>/alter")
def alter(name: str):
    """Apply the data source's declaration as the yml says it now: the columns declared
    since its tables were made are added (``dry=true``: listed, not added). What Tinybird
    alters through parameters is declared in the dbt project here, so those are refused."""
    require_scope(ADMIN)
    for parameter in _DECLARED:
        if _value(parameter) is not None:
            raise ApiError(400, f"{parameter} is not supported by /alter: a data source is declared in the dbt project"
                                " (models/staging/__sources.yml); declare the change there, then call /alter",
                           parameter=parameter)
    dry = _flag("dry")
    state = service()
    source = declared_now(state.settings).get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    try:
        with state.db.psycopg() as conn:
            operations = add_columns(conn, source, dry)
    except Unaddable as err:
        raise ApiError(400, str(err)) from None
    return jsonify({"operations": operations, "dry": dry,
                    "datasource": {"id": name, "name": name, "columns": [
                        {"name": c.name, "type": c.type.name, "nullable": c.nullable} for c in source.columns]}})


@bp.get("/v0/jobs", strict_slashes=False)
def list_jobs():
    require_scope(ADMIN)
    found = jobs.recent(service().db, request.args.get("kind"), request.args.get("status"))
    return jsonify({"jobs": [job.as_json(request.host_url) for job in found]})


@bp.get("/v0/jobs/<string:job_id>")
def get_job(job_id: str):
    require_scope(ADMIN)
    job = jobs.get(service().db, job_id[:100])
    if job is None:
        raise ApiError(404, f"job '{job_id[:100]}' not found")
    return jsonify(job.as_json(request.host_url))
