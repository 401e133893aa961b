"""The API described as OpenAPI 3.1, generated from the declarations: ``GET /v0/openapi.json``.

Nothing here is written by hand per pipe. Each endpoint of the catalog (the dbt
project's ``meta.endpoint`` models) becomes three paths (``.json``, ``.csv``,
``.ndjson``) with its declared parameters and its columns typed from their
``data_type``; the Events API, bulk import and data-source paths come from the declared
data sources (``openapi_datasources.py``); shared pieces are in ``openapi_parts.py``. So
the description cannot drift from what the service does: adding an endpoint or a data
source in dbt adds it here, and a test checks every declared pipe and parameter.

The document needs no token: it says which pipes exist and what they take, never any
data, and a client (or the docs page, ``docs.py``) must be able to read it before it has
a token. ``servers`` is PUBLIC_URL, else "/" (relative), so "Try it out" works from any
host the service is reached by.
"""

from __future__ import annotations

from importlib import metadata

from flask import Blueprint, jsonify

from cartpulse.context import service
from cartpulse.project.datasources import DataSource
from cartpulse.serving.render import PIPE_FORMATS
from cartpulse.web.openapi_datasources import (
    datasource_paths,
    event_schemas,
    events_path,
    import_path,
)
from cartpulse.web.openapi_metadata import SCHEMAS as METADATA_SCHEMAS
from cartpulse.web.openapi_metadata import metadata_paths, with_datasource_listing
from cartpulse.web.openapi_operations import operation_paths
from cartpulse.web.openapi_parts import (
    ERRORS,
    POSITION_PARAMETER,
    READ_FROM,
    column_schema,
    error_content,
    error_responses,
    query_parameter,
    tabular,
)
from cartpulse.web.openapi_sql import Q_PARAMETER, sql_paths
from cartpulse.web.openapi_tokens import token_paths

bp = Blueprint("openapi", __name__)

def pipe_paths(endpoints) -> tuple[dict, dict]:
    """(paths, row schemas) for every declared endpoint."""
    paths, schemas = {}, {}
    for endpoint in sorted(endpoints, key=lambda e: e.name):
        title = f"{endpoint.name}_row"
        schemas[title] = {
            "type": "object", "description": endpoint.description.strip() or f"A row of {endpoint.name}.",
            "properties": {c.name: column_schema(c.data_type, c.description) for c in endpoint.columns},
            "required": [c.name for c in endpoint.columns]}
        paths.update(tabular(
            f"/v0/pipes/{endpoint.name}", title,
            [query_parameter(p) for p in endpoint.params] + [POSITION_PARAMETER, Q_PARAMETER],
            f"Read the pipe {endpoint.name}",
            (endpoint.description.strip() + "\n\n" if endpoint.description else "")
            + f"Needs a token with `PIPES:READ:{endpoint.name}` (or `ADMIN`).",
            "pipes", READ_FROM, formats=PIPE_FORMATS, post=True))
    return paths, schemas


def service_paths() -> dict:
    """The pipe listing and the operational routes: health, readiness, refresh runs,
    metrics and this document."""
    public = {"security": []}
    status = {"application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}
    return {
        "/v0/pipes": {"get": {
            "operationId": "list_pipes", "tags": ["pipes"], "summary": "The pipes this token may read",
            "responses": {"200": {"description": "Each pipe with its columns and parameters.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {"pipes": {"type": "array", "items": {
                    "$ref": "#/components/schemas/PipeListing"}}}}}}},
                **error_responses("401", "429", "503")}}},
        "/healthz": {"get": {**public, "operationId": "healthz", "tags": ["service"], "summary": "The process is up",
                             "responses": {"200": {"description": "Always.", "content": status}}}},
        "/readyz": {"get": {**public, "operationId": "readyz", "tags": ["service"],
                            "summary": "The service can serve (database, storage, models)",
                            "responses": {"200": {"description": "Ready.", "content": status},
                                          "503": {"description": "Not ready; the message names what is missing.",
                                                  "content": error_content()}}}},
        "/v0/refresh": {"get": {
            "operationId": "refresh_runs", "tags": ["service"], "summary": "The last scheduled refreshes, newest first",
            "description": "Needs an `ADMIN` token.",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}}],
            "responses": {"200": {"description": "The runs, and the scheduler's period.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "runs": {"type": "array", "items": {"type": "object"}},
                    "refresh_seconds": {"type": "number"}}}}}},
                **error_responses("400", "401", "403", "429", "503")}}},
        "/metrics": {"get": {
            **public, "operationId": "metrics", "tags": ["service"], "summary": "Prometheus metrics",
            "description": "Prometheus text format. When `METRICS_TOKEN` is set it needs"
                           " `Authorization: Bearer <METRICS_TOKEN>` (not an API token).",
            "responses": {"200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "401": {"description": "Missing or wrong `METRICS_TOKEN`.", "content": error_content()}}}},
        "/v0/openapi.json": {"get": {**public, "operationId": "openapi", "tags": ["service"],
                                     "summary": "This document (no token: it holds no data)",
                                     "responses": {"200": {"description": "OpenAPI 3.1.",
                                                           "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }


def components(row_schemas: dict) -> dict:
    retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <token>`."},
            "token": {"type": "apiKey", "in": "query", "name": "token", "description": "`?token=<token>`."},
        },
        "responses": {f"E{status}": {"description": text, "content": error_content(),
                                     **({"headers": retry} if status in ("429", "503", "507") else {})}
                      for status, text in ERRORS.items()},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "additionalProperties": True,
                      "properties": {"error": {"type": "string", "description": "What went wrong."}},
                      "description": "The one error shape of the whole API; some errors add keys"
                                     " (`parameter`, `line`)."},
            "PipeResponse": {"type": "object", "required": ["meta", "data", "rows", "statistics"], "properties": {
                "meta": {"type": "array", "items": {"type": "object", "required": ["name", "type"], "properties": {
                    "name": {"type": "string"},
                    "type": {"type": "string", "description": "Tinybird's type name: String, Int64, Float64, DateTime, …"}}}},
                "data": {"type": "array", "items": {"type": "object"}},
                "rows": {"type": "integer", "minimum": 0},
                "statistics": {"type": "object", "properties": {
                    "elapsed": {"type": "number", "description": "Seconds."},
                    "rows_read": {"type": "integer"}, "bytes_read": {"type": "integer"},
                    "source": {"type": "string", "description": "`primary` or `replica-<n>` (READ_DATABASE_URLS)."},
                    "max_staleness": {"type": "number",
                                      "description": "Seconds this answer may be behind the primary, at most."}}}}},
            **METADATA_SCHEMAS,
            "IngestAnswer": {"type": "object", "required": ["successful_rows", "quarantined_rows", "import_id"],
                             "properties": {"successful_rows": {"type": "integer"},
                                            "quarantined_rows": {"type": "integer"},
                                            "import_id": {"type": "string"}}},
            **row_schemas,
        },
    }


def _version() -> str:
    try:
        return metadata.version("cartpulse")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "0"


def build_spec(endpoints, datasources: dict[str, DataSource], server_url: str = "/") -> dict:
    """The whole document for these endpoints (``catalog.all().values()``) and data sources."""
    pipes, pipe_rows = pipe_paths(endpoints)
    sources, source_rows = datasource_paths(datasources)
    return {
        "openapi": "3.1.0",
        "info": {"title": "CartPulse", "version": _version(),
                 "description": "Real-time e-commerce analytics: events in, dbt models out as Tinybird-style"
                                " endpoints. Every pipe below is declared in the dbt project."},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"token": []}],
        "tags": [{"name": "pipes", "description": "Endpoints declared in the dbt project."},
                 {"name": "events", "description": "The Events API."},
                 {"name": "datasources", "description": "Reading the raw data and the quarantine."},
                 {"name": "sql", "description": "The Query API: Tinybird's SQL over data sources and pipes."},
                 {"name": "tokens", "description": "Managing tokens (admin)."},
                 {"name": "service", "description": "Health and this document."}],
        "paths": with_datasource_listing({**pipes, **metadata_paths(endpoints, datasources), **events_path(datasources),
                                          **import_path(datasources), **sources, **operation_paths(datasources), **token_paths(), **sql_paths(),
                                          **service_paths()}),
        "components": components({**pipe_rows, **source_rows, **event_schemas(datasources)}),
    }


@bp.get("/v0/openapi.json")
def openapi_json():
    """The document; no token needed (it reveals no data). Its server is PUBLIC_URL, or
    "/" (the host the page came from): never the request's Host header, which would let
    a forged request put another site in "Try it out", and in any cache in between."""
    state = service()
    return jsonify(build_spec(state.catalog.all().values(), state.datasources, state.settings.public_url or "/"))
