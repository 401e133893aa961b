"""OpenAPI paths of deleting, truncating and the jobs (``serving/data_operations.py``)."""

from __future__ import annotations

from cartpulse.project.datasources import DataSource
from cartpulse.web.openapi_parts import error_responses

_JOB = {"type": "object", "description": "Tinybird's job object; CartPulse's jobs are finished when answered.",
        "properties": {"id": {"type": "string"}, "job_id": {"type": "string"}, "kind": {"type": "string"},
                       "status": {"type": "string", "enum": ["done"]}, "job_url": {"type": "string"},
                       "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                       "started_at": {"type": ["string", "null"]}, "is_cancellable": {"type": "boolean"},
                       "datasource": {"type": "object"}, "delete_condition": {"type": "string"},
                       "rows_affected": {"type": ["integer", "null"]}}}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_FORM = {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["delete_condition"],
    "properties": {"delete_condition": {"type": "string", "description": "A condition on the data source's columns "
                                        "(comparisons, IN, BETWEEN, IS NULL, LIKE, AND/OR/NOT, toDate, now…)."},
                   "dry_run": {"type": "string", "enum": ["true", "false"]}}}}}}
_ADMIN = "Needs an `ADMIN` token."


def _answer(description: str, schema: dict) -> dict:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}},
            **error_responses("400", "401", "403", "404", "429", "503")}


def operation_paths(datasources: dict[str, DataSource]) -> dict:
    names = sorted(datasources)
    name = {**_NAME, "schema": {"type": "string", "enum": names}}
    delete = {"tags": ["datasources"], "parameters": [name], "requestBody": _FORM}
    return {
        "/v0/datasources/{name}/delete": {"post": {
            **delete, "operationId": "delete_rows", "summary": "Delete the rows matching a condition",
            "description": "Exact at once in every endpoint (docs/realtime.md). `dry_run=true` counts the rows "
                           "instead (`rows_to_be_deleted`). " + _ADMIN,
            "responses": _answer("The finished job, also under `job`.", _JOB)}},
        "/v1/datasources/{name}/delete": {"post": {
            **delete, "operationId": "delete_rows_v1", "summary": "Delete the rows matching a condition (synchronous)",
            "description": _ADMIN, "responses": _answer("The finished job.", _JOB)}},
        "/v0/datasources/{name}/truncate": {"post": {
            "tags": ["datasources"], "operationId": "truncate", "summary": "Empty a data source and its rollups",
            "description": "`<name>_quarantine` empties the quarantine. " + _ADMIN,
            "parameters": [{**_NAME, "schema": {"type": "string", "enum": names + [f"{n}_quarantine" for n in names]}}],
            "responses": _answer("The finished job.", _JOB)}},
        "/v0/datasources/{name}/alter": {"post": {
            "tags": ["datasources"], "operationId": "alter", "summary": "Add the columns declared since",
            "description": "Adds to the data source's tables the columns its yml declares that they lack (nullable,"
                           " or with a `default` the stored rows take), without rewriting them. `schema`, `ttl` and"
                           " the other declared properties are refused: they are declared in the dbt project. " + _ADMIN,
            "parameters": [name, {"name": "dry", "in": "query", "required": False,
                                  "schema": {"type": "string", "enum": ["true", "false"]}}],
            "responses": _answer("What was (with `dry`: would be) done.", {"type": "object", "properties": {
                "operations": {"type": "array", "items": {"type": "string"}}, "datasource": {"type": "object"}}})}},
        "/v0/jobs": {"get": {
            "tags": ["datasources"], "operationId": "list_jobs", "summary": "The latest 100 jobs", "description": _ADMIN,
            "parameters": [{"name": k, "in": "query", "required": False, "schema": {"type": "string"}}
                           for k in ("kind", "status")],
            "responses": _answer("The jobs, newest first.", {"type": "object", "properties": {
                "jobs": {"type": "array", "items": _JOB}}})}},
        "/v0/jobs/{job_id}": {"get": {
            "tags": ["datasources"], "operationId": "get_job", "summary": "One job", "description": _ADMIN,
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": _answer("The job.", _JOB)}},
    }
