"""The API described as OpenAPI 3.1, generated from the declarations: ``GET /v0/openapi.json``.

Nothing here is written by hand per pipe. Each endpoint of the catalog (the dbt
project's ``meta.endpoint`` models) becomes three paths (``.json``, ``.csv``,
``.ndjson``) with its declared parameters and its columns typed from their
``data_type``; the events body comes from ``events.py``; the data sources from
``datasources.py``. So the description cannot drift from what the service does: adding
an endpoint in dbt adds it here, and a test checks every declared pipe and parameter.

The document needs no token: it says which pipes exist and what they take, never any
data, and a client (or the docs page, ``docs.py``) must be able to read it before it has
a token. ``servers`` is the URL the request came in on, so "Try it out" works from any
host the service is reached by.
"""

from __future__ import annotations

from importlib import metadata

from flask import Blueprint, jsonify, request

from cartpulse.context import service
from cartpulse.ingest.events_api import DATA_SOURCES
from cartpulse.ingest.rows import COLUMNS as EVENT_COLUMNS
from cartpulse.ingest.rows import MAX_STRING_LENGTH, STRING_COLUMNS
from cartpulse.serving.datasources import PARAMS as DATASOURCE_PARAMS
from cartpulse.serving.datasources import SOURCES
from cartpulse.serving.params import Param
from cartpulse.serving.render import FORMATS

bp = Blueprint("openapi", __name__)

DATETIME_TEXT = "UTC, `YYYY-MM-DD HH:MM:SS`"
#: Response media type of each pipe format.
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}

#: Error statuses every authenticated route may answer, and what each means here.
ERRORS = {
    "400": "A bad request: a parameter's value, a missing name; the message names what is wrong.",
    "401": "Missing, unknown, expired or tampered token.",
    "403": "The token lacks the scope this route needs.",
    "404": "Unknown pipe, data source, format or token name.",
    "429": "The token's rate limit is exhausted: retry after `Retry-After` seconds.",
    "503": "The database is unreachable or the models are not built yet: retry after `Retry-After` seconds.",
}


def column_schema(data_type: str | None, description: str = "") -> dict:
    """JSON Schema of one column from its dbt ``data_type`` (PostgreSQL's name for it).

    Values are written as ``render.plain`` writes them: timestamps as UTC text, numerics as
    numbers. An undeclared type is left open rather than guessed."""
    kind = (data_type or "").lower().split("(")[0].strip()
    if kind in ("bigint", "integer", "int", "int4", "int8", "smallint", "int2"):
        schema = {"type": "integer"}
    elif kind in ("double precision", "float8", "real", "float4", "numeric", "decimal"):
        schema = {"type": "number"}
    elif kind in ("boolean", "bool"):
        schema = {"type": "boolean"}
    elif kind.startswith("timestamp"):
        schema = {"type": "string", "description": f"A DateTime, {DATETIME_TEXT}.", "examples": ["2024-05-01 10:15:00"]}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind in ("text", "varchar", "character varying", "char", "character", "name", "uuid"):
        schema = {"type": "string"}
    elif kind.endswith("[]"):
        schema = {"type": "array", "items": {"type": "string"}}
    else:
        schema = {}
    if description:
        schema["description"] = description
    return schema


def param_schema(param: Param) -> dict:
    """JSON Schema of a declared parameter, with every constraint the service enforces."""
    if param.type == "Int":
        schema = {"type": "integer"}
    elif param.type == "Float":
        schema = {"type": "number"}
    elif param.type == "DateTime":
        schema = {"type": "string", "examples": ["2024-05-01 00:00:00", "2024-05-01"]}
    else:
        schema = {"type": "string"}
    if param.min is not None:
        schema["minimum"] = param.min
    if param.max is not None:
        schema["maximum"] = param.max
    if param.enum is not None:
        schema["enum"] = list(param.enum)
    if param.max_length is not None:
        schema["maxLength"] = param.max_length
    if param.default is not None:
        schema["default"] = param.default
    return schema


def param_description(param: Param) -> str:
    parts = [param.description or f"{param.type} parameter."]
    if param.type == "DateTime":
        parts.append(f"A DateTime, {DATETIME_TEXT}, or a date alone for its midnight.")
    if param.after:
        parts.append(f"Must be later than `{param.after}`.")
    parts.append("An empty value counts as not given.")
    return " ".join(parts)


def query_parameter(param: Param) -> dict:
    return {"name": param.name, "in": "query", "required": False,
            "description": param_description(param), "schema": param_schema(param)}


def _error_responses(*statuses: str) -> dict:
    return {status: {"$ref": f"#/components/responses/E{status}"} for status in statuses}


#: Read-your-writes through replicas (replicas.py): given by every ingest, taken by every pipe.
POSITION = {"CartPulse-LSN": {
    "description": "The WAL position covering this commit. Send it back in the `CartPulse-LSN` header of a"
                   " pipe request to be answered from a server that has it (read-your-writes through replicas).",
    "schema": {"type": "string", "examples": ["0/1A2B3C8"]}}}
POSITION_PARAMETER = {
    "name": "CartPulse-LSN", "in": "header", "required": False,
    "description": "A position an ingest answer gave: the answer then includes that write (read from a replica"
                   " that has replayed it, else from the primary). Without it, a replica answer may be up to"
                   " `REPLICA_MAX_LAG_SECONDS` behind; `statistics.max_staleness` says how far at most.",
    "schema": {"type": "string", "examples": ["0/1A2B3C8"]}}
READ_FROM = {
    "CartPulse-Read-From": {"description": "`primary` or `replica-<n>`: who answered.", "schema": {"type": "string"}},
    "CartPulse-Max-Staleness": {"description": "Seconds the answer may be behind the primary, at most (0 there).",
                                "schema": {"type": "number"}}}


def _tabular(name: str, title: str, parameters: list[dict], summary: str, description: str, tag: str,
             headers: dict | None = None) -> dict:
    """Paths ``<name>.json|.csv|.ndjson`` answering rows of the schema ``title`` as Tinybird does."""
    ref = {"$ref": f"#/components/schemas/{title}"}
    paths = {}
    for fmt in FORMATS:
        if fmt == "json":
            content = {"schema": {"allOf": [{"$ref": "#/components/schemas/PipeResponse"},
                                            {"type": "object", "properties": {"data": {"type": "array", "items": ref}}}]}}
        elif fmt == "ndjson":
            content = {"schema": {"type": "string", "description": f"One JSON object per line, each a {title}."}}
        else:
            content = {"schema": {"type": "string", "description": "A header line with the column names, then one line per row."}}
        paths[f"{name}.{fmt}"] = {"get": {
            "operationId": f"{name.strip('/').replace('/', '_').replace('v0_', '')}_{fmt}",
            "tags": [tag], "summary": f"{summary} ({fmt.upper()})", "description": description,
            "parameters": parameters,
            "responses": {"200": {"description": "The rows.", "content": {MEDIA_TYPES[fmt]: content},
                                  **({"headers": headers} if headers else {})},
                          **_error_responses("400", "401", "403", "404", "429", "503")}}}
    return paths


def pipe_paths(endpoints) -> tuple[dict, dict]:
    """(paths, row schemas) for every declared endpoint."""
    paths, schemas = {}, {}
    for endpoint in sorted(endpoints, key=lambda e: e.name):
        title = f"{endpoint.name}_row"
        schemas[title] = {
            "type": "object", "description": endpoint.description.strip() or f"A row of {endpoint.name}.",
            "properties": {c.name: column_schema(c.data_type, c.description) for c in endpoint.columns},
            "required": [c.name for c in endpoint.columns]}
        paths.update(_tabular(
            f"/v0/pipes/{endpoint.name}", title, [query_parameter(p) for p in endpoint.params] + [POSITION_PARAMETER],
            f"Read the pipe {endpoint.name}",
            (endpoint.description.strip() + "\n\n" if endpoint.description else "")
            + f"Needs a token with `PIPES:READ:{endpoint.name}` (or `ADMIN`).",
            "pipes", READ_FROM))
    return paths, schemas


def event_schema() -> dict:
    """One event of ``ecommerce_events``, typed as ``events.validate`` checks it."""
    properties = {}
    for column in EVENT_COLUMNS:
        if column == "event_time":
            properties[column] = {
                "oneOf": [{"type": "string", "examples": ["2024-05-01 10:15:00", "2024-05-01T10:15:00Z"]},
                          {"type": "number", "description": "Epoch seconds."}],
                "description": "`YYYY-MM-DD HH:MM:SS` (UTC), ISO 8601 with `T`, `Z` or an offset, or epoch seconds;"
                               " years 1900-2999."}
        elif column == "price":
            properties[column] = {"type": "number", "description": "Float64; integers accepted; finite."}
        elif column == "quantity":
            properties[column] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif column in STRING_COLUMNS:
            properties[column] = {"type": "string", "maxLength": MAX_STRING_LENGTH,
                                  "description": "No NUL character."}
    return {"type": "object", "properties": properties, "required": list(EVENT_COLUMNS),
            "additionalProperties": True,
            "description": "Unknown extra fields are ignored. A row that breaks this schema is quarantined,"
                           " not refused: the other rows of its request are stored.",
            "examples": [{"event_time": "2024-05-01 10:15:00", "event_type": "purchase", "user_id": "u123",
                          "product_id": "p456", "category": "electronics", "price": 199.99, "quantity": 2,
                          "session_id": "s789", "country": "US"}]}


def events_path() -> dict:
    answer = {"description": "Committed: the rows are durable and in every endpoint's next answer.",
              "headers": POSITION,
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestAnswer"}}}}
    return {"/v0/events": {"post": {
        "operationId": "post_events", "tags": ["events"], "summary": "Append events",
        "description": "One JSON object, or many as NDJSON (one object per line); the Content-Type does not"
                       " matter. Answered after the commit. Needs `DATASOURCES:APPEND:<name>` (or `ADMIN`).",
        "parameters": [
            {"name": "name", "in": "query", "required": True, "description": "The data source to append to.",
             "schema": {"type": "string", "enum": sorted(DATA_SOURCES)}},
            {"name": "wait", "in": "query", "required": False,
             "description": "Accepted for Tinybird compatibility: `true` answers 200 instead of 202.",
             "schema": {"type": "string", "enum": ["true", "false"], "default": "false"}},
            {"name": "Idempotency-Key", "in": "header", "required": False,
             "description": "Your id for this batch: a retry with the same key is stored once and replays the"
                            " first answer (remembered for `IDEMPOTENCY_TTL_SECONDS`).",
             "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
            {"name": "Content-Encoding", "in": "header", "required": False,
             "schema": {"type": "string", "enum": ["gzip"]}},
        ],
        "requestBody": {"required": True, "content": {
            "application/x-ndjson": {"schema": {"type": "string", "description": "One event object per line."},
                                     "examples": {"two events": {"value": "{…}\n{…}\n"}}},
            "application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
        "responses": {"200": answer, "202": answer,
                      "413": {"description": "Body over `MAX_BODY_BYTES` (after gzip decompression).",
                              "content": _error_content()},
                      "422": {"description": "This Idempotency-Key was used with a different body.",
                              "content": _error_content()},
                      **_error_responses("400", "401", "403", "404", "429", "503")}}}}


def import_path() -> dict:
    """``POST /v0/datasources``: a bulk import (``bulk.py``), all or nothing per import."""
    return {"/v0/datasources": {"post": {
        "operationId": "import_datasource", "tags": ["datasources"], "summary": "Bulk import a file",
        "description": "CSV (with a header line), NDJSON or Parquet; a multipart upload (`-F csv=@file.csv`) or the"
                       " raw body. Each row meets the events API's rules (bad rows are quarantined); the import"
                       " is stored whole or not at all. Needs `DATASOURCES:APPEND:<name>` (or `ADMIN`).",
        "parameters": [
            {"name": "name", "in": "query", "required": True, "schema": {"type": "string", "enum": sorted(DATA_SOURCES)}},
            {"name": "mode", "in": "query", "required": False, "schema": {"type": "string", "enum": ["append"],
                                                                           "default": "append"}},
            {"name": "format", "in": "query", "required": False,
             "description": "Else from the file name's extension, else from the Content-Type.",
             "schema": {"type": "string", "enum": ["csv", "ndjson", "parquet"]}},
            {"name": "Content-Encoding", "in": "header", "required": False, "schema": {"type": "string", "enum": ["gzip"]}},
        ],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "csv": {"type": "string", "contentMediaType": "text/csv"},
                "ndjson": {"type": "string", "contentMediaType": "application/x-ndjson"},
                "parquet": {"type": "string", "contentMediaType": "application/vnd.apache.parquet"}}}},
            "text/csv": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "contentMediaType": "application/vnd.apache.parquet"}}}},
        "responses": {"200": {"description": "Committed: every row of the file is stored or quarantined.",
                              "headers": POSITION, "content": {"application/json": {"schema": {"allOf": [
                                  {"$ref": "#/components/schemas/IngestAnswer"},
                                  {"type": "object", "properties": {
                                      "datasource": {"type": "string"}, "mode": {"type": "string"},
                                      "format": {"type": "string"}, "elapsed": {"type": "number"}}}]}}}},
                      "413": {"description": "Body over `MAX_IMPORT_BYTES`.", "content": _error_content()},
                      **_error_responses("400", "401", "403", "404", "429", "503")}}}}


def datasource_paths() -> tuple[dict, dict]:
    """The readable data sources (``datasources.SOURCES``), with their fixed columns."""
    paths, schemas = {}, {}
    events = event_schema()["properties"]
    for name, source in sorted(SOURCES.items()):
        title = f"{name}_row"
        properties = {}
        for column in source.columns:
            if name == "ecommerce_events" and column == "event_time":
                properties[column] = column_schema("timestamptz")
            elif name == "ecommerce_events":
                properties[column] = {k: v for k, v in events[column].items() if k != "description"}
            elif column == "c__error_column" or column == "c__error":
                properties[column] = {"type": "array", "items": {"type": "string"}}
            elif column == "c__line":
                properties[column] = {"type": "integer"}
            elif column == "insertion_date":
                properties[column] = column_schema("timestamptz")
            else:
                properties[column] = {"type": ["string", "null"], "description": "The value as sent, as text."}
        schemas[title] = {"type": "object", "properties": properties}
        who = "an `ADMIN` token (it holds raw client input)" if source.scope == "ADMIN" else f"`{source.scope}`"
        paths.update(_tabular(f"/v0/datasources/{name}", title, [query_parameter(p) for p in DATASOURCE_PARAMS],
                              f"Read the data source {name}", f"Newest rows first. Needs {who}.", "datasources"))
    return paths, schemas


def token_paths() -> dict:
    token = {"description": "The token, shown this once.", "content": {"application/json": {"schema": {
        "type": "object", "required": ["name", "token", "scopes"],
        "properties": {"name": {"type": "string"}, "token": {"type": "string"},
                       "scopes": {"type": "array", "items": {"type": "string"}}}}}}}
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}}
    admin = "Needs an `ADMIN` token."
    return {
        "/v0/tokens": {
            "get": {"operationId": "list_tokens", "tags": ["tokens"], "summary": "List tokens (names and scopes, no secrets)",
                    "description": admin, "responses": {"200": {"description": "The tokens.", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {"tokens": {
                            "type": "array", "items": {"type": "object", "properties": {
                                "name": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}},
                                "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}}}}}}},
                        **_error_responses("401", "403", "429", "503")}},
            "post": {"operationId": "create_token", "tags": ["tokens"], "summary": "Create a token", "description": admin,
                     "parameters": [
                         {"name": "name", "in": "query", "required": True, "schema": {"type": "string", "maxLength": 200}},
                         {"name": "scope", "in": "query", "required": True, "style": "form", "explode": True,
                          "description": "`ADMIN`, `DATASOURCES:APPEND:<name>`, `DATASOURCES:READ:<name>` or"
                                         " `PIPES:READ:<pipe>`; repeat for several.",
                          "schema": {"type": "array", "items": {"type": "string"}}}],
                     "responses": {"200": token, "409": {"description": "A token of that name exists.",
                                                         "content": _error_content()},
                                   **_error_responses("400", "401", "403", "429", "503")}}},
        "/v0/tokens/{name}/refresh": {"post": {
            "operationId": "refresh_token", "tags": ["tokens"], "summary": "Give a token a new secret (the old one stops)",
            "description": admin, "parameters": [name],
            "responses": {"200": token, **_error_responses("400", "401", "403", "404", "429", "503")}}},
        "/v0/tokens/{name}": {"delete": {
            "operationId": "delete_token", "tags": ["tokens"], "summary": "Delete a token", "description": admin,
            "parameters": [name],
            "responses": {"204": {"description": "Deleted."}, **_error_responses("400", "401", "403", "404", "429", "503")}}},
    }


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
                **_error_responses("401", "429", "503")}}},
        "/healthz": {"get": {**public, "operationId": "healthz", "tags": ["service"], "summary": "The process is up",
                             "responses": {"200": {"description": "Always.", "content": status}}}},
        "/readyz": {"get": {**public, "operationId": "readyz", "tags": ["service"],
                            "summary": "The service can serve (database, storage, models)",
                            "responses": {"200": {"description": "Ready.", "content": status},
                                          "503": {"description": "Not ready; the message names what is missing.",
                                                  "content": _error_content()}}}},
        "/v0/refresh": {"get": {
            "operationId": "refresh_runs", "tags": ["service"], "summary": "The last scheduled refreshes, newest first",
            "description": "Needs an `ADMIN` token.",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}}],
            "responses": {"200": {"description": "The runs, and the scheduler's period.", "content": {
                "application/json": {"schema": {"type": "object", "properties": {
                    "runs": {"type": "array", "items": {"type": "object"}},
                    "refresh_seconds": {"type": "number"}}}}}},
                **_error_responses("400", "401", "403", "429", "503")}}},
        "/metrics": {"get": {
            **public, "operationId": "metrics", "tags": ["service"], "summary": "Prometheus metrics",
            "description": "Prometheus text format. When `METRICS_TOKEN` is set it needs"
                           " `Authorization: Bearer <METRICS_TOKEN>` (not an API token).",
            "responses": {"200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "401": {"description": "Missing or wrong `METRICS_TOKEN`.", "content": _error_content()}}}},
        "/v0/openapi.json": {"get": {**public, "operationId": "openapi", "tags": ["service"],
                                     "summary": "This document (no token: it holds no data)",
                                     "responses": {"200": {"description": "OpenAPI 3.1.",
                                                           "content": {"application/json": {"schema": {"type": "object"}}}}}}},
    }


def _error_content() -> dict:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def components(row_schemas: dict) -> dict:
    retry = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <token>`."},
            "token": {"type": "apiKey", "in": "query", "name": "token", "description": "`?token=<token>`."},
        },
        "responses": {f"E{status}": {"description": text, "content": _error_content(),
                                     **({"headers": retry} if status in ("429", "503") else {})}
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
            "PipeListing": {"type": "object", "properties": {
                "name": {"type": "string"}, "description": {"type": "string"},
                "columns": {"type": "array", "items": {"type": "object"}},
                "params": {"type": "array", "items": {"type": "object"}},
                "endpoints": {"type": "array", "items": {"type": "string"}}}},
            "Event": event_schema(),
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


def build_spec(endpoints, server_url: str = "/") -> dict:
    """The whole document for these endpoints (``catalog.all().values()``)."""
    pipes, pipe_rows = pipe_paths(endpoints)
    sources, source_rows = datasource_paths()
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
                 {"name": "tokens", "description": "Managing tokens (admin)."},
                 {"name": "service", "description": "Health and this document."}],
        "paths": {**pipes, **events_path(), **import_path(), **sources, **token_paths(), **service_paths()},
        "components": components({**pipe_rows, **source_rows}),
    }


@bp.get("/v0/openapi.json")
def openapi_json():
    """The document, for this request's host; no token needed (it reveals no data)."""
    endpoints = service().catalog.all().values()
    return jsonify(build_spec(endpoints, request.url_root.rstrip("/") or "/"))
