"""One error shape for the whole API: ``{"error": "<message>"}`` with the HTTP status.

Every error path answers JSON, including Flask's own (404 for an unknown URL, 405, 413),
so that a client never has to parse an HTML error page.
"""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """Raised anywhere in a request to answer ``status`` with a JSON error."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, message: str, headers: dict | None = None, **extra):
    body = {"error": message, **extra}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.message, err.headers, **err.extra)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        messages = {413: f"request body too large (limit: {app.config.get('MAX_CONTENT_LENGTH')} bytes)"}
        return error_response(err.code or 500, messages.get(err.code, err.description or err.name))
