"""The Events API: ``POST /v0/events?name=<data source>`` with NDJSON or one JSON object.

A request is answered only after its rows are committed, so an acknowledgement means
the events are durable (``synchronous_commit`` is left on). Valid rows and quarantined
rows of one request are written in one transaction: a request is stored whole or not
at all, never half. With an ``Idempotency-Key`` the key and the answer are recorded in
that same transaction (``idempotency.py``), so a retried batch is stored exactly once.
A request over ``MAX_BODY_BYTES`` (after decompression) or ``MAX_ROWS_PER_REQUEST`` rows
is refused whole with a 413: one request is one transaction, and these bound it.

``wait=true`` is accepted for Tinybird compatibility and changes only the status (200
instead of 202): CartPulse answers after the commit either way.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from cartpulse.access.auth import request_caller, require_scope
from cartpulse.context import service
from cartpulse.errors import ApiError
from cartpulse.ingest import idempotency, ops_log
from cartpulse.ingest.rows import parse_body
from cartpulse.ingest.transport import is_gzipped, read_body
from cartpulse.ingest.writer import write_batch
from cartpulse.project.datasources import DataSource
from cartpulse.storage.absorb import absorb_after_batch
from cartpulse.storage.wal import LSN_HEADER, current_position

bp = Blueprint("ingest", __name__)


def append_target() -> DataSource:
    """The data source ``?name=`` appends to: 400 without a name, 404 for a name the
    project does not declare."""
    name = request.args.get("name")
    if not name:
        raise ApiError(400, "missing the 'name' parameter (the data source to append to)")
    source = service().datasources.get(name)
    if source is None:
        raise ApiError(404, f"data source '{name}' not found")
    return source


@bp.post("/v0/events")
def post_events():
    source = append_target()
    name = source.name
    require_scope(f"DATASOURCES:APPEND:{name}")
    state = service()
    op = ops_log.Operation(ops_log.EVENTS, name, request_caller().name)
    body = read_body(request, is_gzipped(request), state.settings.max_body_bytes)
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
    batch = parse_body(body, source)
    if batch.json_lines == 0:
        line, why = batch.first_bad_line
        raise ApiError(400, f"line {line}: {why}; nothing was stored", line=line)
    rows = len(batch.rows) + len(batch.quarantined)
    if rows > settings.max_rows_per_request:
        raise ApiError(413, f"{rows} rows, over the limit of {settings.max_rows_per_request} rows per request"
                            " (MAX_ROWS_PER_REQUEST); nothing was stored: split the batch")
    import_id = uuid.uuid4().hex
    wait = request.args.get("wait", "false").lower() == "true"
    status = 200 if wait else 202
    answer = {"successful_rows": len(batch.rows), "quarantined_rows": len(batch.quarantined),
              "import_id": import_id}
    try:
        position = write_batch(state.db, state.partitions, source, batch, import_id, claim,
                               (status, answer), op)
    except idempotency.AlreadyStored as twin:  # a concurrent retry committed first
        return _replayed(twin.replay)
    except Exception as err:
        ops_log.record_error(state.db, op, err, import_id)
        raise
    absorb_after_batch(state.db, len(batch.rows), settings.absorb_after_rows)
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
    response.headers[LSN_HEADER] = current_position(service().db)
    return response
