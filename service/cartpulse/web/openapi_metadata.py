"""The OpenAPI description of the metadata routes (``openapi.py`` merges it): one path
per pipe (``/v0/pipes/<name>``) and per data source (``/v0/datasources/<name>``), the
data-source listing, and the schemas of what they answer (Tinybird's keys, and
CartPulse's beside them: serving/pipe_metadata.py, serving/datasource_metadata.py).
"""

from __future__ import annotations

from cartpulse.web.openapi_parts import error_responses

_LIST = {"type": "array", "items": {"type": "object"}}
_TEXT = {"type": "string"}

SCHEMAS = {
    "PipeListing": {"type": "object", "required": ["id", "name", "type", "endpoint", "nodes"], "properties": {
        "id": _TEXT, "name": _TEXT, "description": _TEXT, "type": {"type": "string", "enum": ["endpoint"]},
        "endpoint": {"type": "string", "description": "The id of the node served as the endpoint."},
        "url": _TEXT, "parent": {"type": "null"}, "created_at": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]},
        "nodes": {"type": "array", "items": {"type": "object", "properties": {
            "id": _TEXT, "name": _TEXT, "sql": {"type": "string", "description": "The dbt model's SQL, as written."},
            "node_type": _TEXT, "dependencies": {"type": "array", "items": _TEXT}, "params": _LIST}}},
        "columns": _LIST, "params": _LIST, "endpoints": {"type": "array", "items": _TEXT}}},
    "DataSourceListing": {"type": "object", "required": ["id", "name", "columns", "engine", "statistics"],
                          "properties": {
        "id": _TEXT, "name": _TEXT, "description": _TEXT, "type": _TEXT, "sorting_key": _TEXT, "partition_key": _TEXT,
        "columns": {"type": "array", "items": {"type": "object", "properties": {
            "name": _TEXT, "type": {"type": "string", "description": "Tinybird's type name (String, Int64…)."},
            "nullable": {"type": "boolean"}, "description": _TEXT}}},
        "engine": {"type": "object", "properties": {"engine": _TEXT, "sorting_key": _TEXT, "partition_key": _TEXT}},
        "statistics": {"type": "object", "properties": {"row_count": {"type": "integer"}, "bytes": {"type": "integer"}}},
        "quarantine_rows": {"type": "integer"}}},
}


def _answer(ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def metadata_paths(endpoints, datasources) -> dict:
    paths = {}
    for endpoint in sorted(endpoints, key=lambda e: e.name):
        paths[f"/v0/pipes/{endpoint.name}"] = {"get": {
            "operationId": f"pipe_{endpoint.name}", "tags": ["pipes"], "summary": f"Describe the pipe {endpoint.name}",
            "description": f"Its node, parameters and endpoint, as Tinybird describes a pipe. Needs"
                           f" `PIPES:READ:{endpoint.name}` (or `ADMIN`).",
            "responses": {"200": _answer("#/components/schemas/PipeListing", "The pipe."),
                          **error_responses("401", "403", "404", "429", "503")}}}
    for name in sorted(datasources):
        paths[f"/v0/datasources/{name}"] = {"get": {
            "operationId": f"datasource_{name}", "tags": ["datasources"], "summary": f"Describe the data source {name}",
            "description": f"Columns, engine and statistics, as Tinybird describes a data source. Needs"
                           f" `DATASOURCES:READ:{name}` (or `ADMIN`).",
            "responses": {"200": _answer("#/components/schemas/DataSourceListing", "The data source."),
                          **error_responses("401", "403", "404", "429", "503")}}}
    return paths


def with_datasource_listing(paths: dict) -> dict:
    """``GET /v0/datasources`` beside the import's ``POST`` on the same path."""
    paths.setdefault("/v0/datasources", {})["get"] = {
        "operationId": "list_datasources", "tags": ["datasources"], "summary": "The data sources this token may read",
        "responses": {"200": {"description": "Each data source with its columns, engine and statistics.", "content": {
            "application/json": {"schema": {"type": "object", "properties": {"datasources": {
                "type": "array", "items": {"$ref": "#/components/schemas/DataSourceListing"}}}}}}},
            **error_responses("401", "429", "503")}}
    return paths
