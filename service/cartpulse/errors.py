"""One error shape for the whole API: ``{"error": "<message>"}`` with the HTTP status.

Every error path answers JSON, including Flask's own (404 for an unknown URL, 405, 413),
so that a client never has to parse an HTML error page.

A database that cannot be reached (down, restarting, refusing connections, the pool
exhausted) is a 503 with ``Retry-After``, not a 500: nothing was acknowledged, the client
retries (with its ``Idempotency-Key`` for a batch), and the service recovers by itself —
the pool pre-pings and reconnects as soon as the database answers again. A database out
of disk space (SQLSTATE 53100: its transaction rolled back whole) is a 507 with
``Retry-After``, and stores again once space is freed, with no restart.
"""

from __future__ import annotations

import logging

import psycopg
import sqlalchemy.exc
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

#: Seconds a client is told to wait while the database is unreachable.
UNAVAILABLE_RETRY_AFTER = 2


class ApiError(Exception):
    """Raised anywhere in a request to answer ``status`` with a JSON error."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_body(message: str, **extra) -> dict:
    """The one error shape; the HTTP front (cli/front.py) writes it outside Flask too."""
    return {"error": message, **extra}


def error_response(status: int, message: str, headers: dict | None = None, **extra):
    response = jsonify(error_body(message, **extra))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def first_line(err: BaseException) -> str:
    """An error's first line, for one-line log entries (PostgreSQL adds DETAIL/CONTEXT lines)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def database_unavailable(err: BaseException) -> bool:
    """Is this the database being unreachable (rather than a query's own fault)?"""
    if isinstance(err, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
        return True
    if isinstance(err, sqlalchemy.exc.DBAPIError):
        if err.connection_invalidated:
            return True
        err = err.orig
    # QueryCanceled (statement timeout) is an OperationalError too, but the server is up.
    return (isinstance(err, psycopg.OperationalError) and not isinstance(err, psycopg.errors.QueryCanceled)
            or worker_unreachable(err))


#: How a Citus coordinator words a worker it cannot reach (an internal error, XX000; the
#: statement's transaction is aborted whole): docs/citus.md.
_CITUS_UNREACHABLE = ("failure on connection marked as essential", "connection to the remote node",
                      "could not establish any connections to the node")


def worker_unreachable(err: BaseException) -> bool:
    """Is this a Citus coordinator saying that a worker is out of reach?"""
    return isinstance(err, psycopg.errors.InternalError_) and str(err).startswith(_CITUS_UNREACHABLE)


#: How PostgreSQL words a connection refused for want of a slot (FATAL 53300 at connect,
#: which libpq reports as text only).
_FULL = ("too many clients already", "remaining connection slots are reserved")


def _why(err: BaseException) -> str:
    """What the operator can act on, when the error says it: the server at ``max_connections``."""
    if isinstance(err, sqlalchemy.exc.TimeoutError):
        return " (every connection of this process's pool is busy)"
    return " (PostgreSQL is at max_connections)" if any(text in str(err) for text in _FULL) else ""


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.message, err.headers, **err.extra)

    @app.errorhandler(psycopg.Error)
    @app.errorhandler(sqlalchemy.exc.SQLAlchemyError)
    def _database_error(err: Exception):
        if isinstance(getattr(err, "orig", err), psycopg.errors.DiskFull):
            log.error("the database is out of disk space, answering 507: %s", first_line(err))
            return error_response(507, "the database is out of disk space: nothing of this request was stored;"
                                  " retry after Retry-After seconds (a batch with the same Idempotency-Key)",
                                  {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
        if not database_unavailable(err):
            raise err
        log.warning("database unavailable, answering 503: %s", first_line(err))
        return error_response(503, f"database unavailable{_why(err)}: retry after Retry-After seconds"
                              " (a batch with the same Idempotency-Key)", {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        messages = {413: f"request body too large (limit: {app.config.get('MAX_CONTENT_LENGTH')} bytes)"}
        return error_response(err.code or 500, messages.get(err.code, err.description or err.name))
