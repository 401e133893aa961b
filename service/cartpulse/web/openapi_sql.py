"""The Query API in the OpenAPI document: ``/v0/sql`` (GET and POST) and ``q`` on pipes.

The JSON settings listed are ``query_api.FLAGS``, the list the route itself accepts.
"""

from __future__ import annotations

from cartpulse.serving.query_api import FLAGS
from cartpulse.web.openapi_parts import error_content, error_responses

#: ``q`` on a pipe path (serving/pipe_query.py).
Q_PARAMETER = {
    "name": "q", "in": "query", "required": False,
    "description": "SQL (Tinybird's dialect) over this pipe's answer, the table `_`, e.g. `select count() from _`"
                   " or `select * from _ limit 100 offset 200`. The answer is in this path's format; see"
                   " docs/query-api.md for what maps.",
    "schema": {"type": "string"}}


def sql_paths() -> dict:
    q = {"name": "q", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "One SELECT in Tinybird's (ClickHouse's) SQL, optionally ending in `FORMAT <name>`"
                        " (JSON, JSONEachRow, CSV, CSVWithNames, TSV, TSVWithNames); JSON without one. On a POST,"
                        " the body (or the form field `q`)."}
    parameters = [q, {"name": "pipeline", "in": "query", "required": False, "schema": {"type": "string"},
                      "description": "A pipe whose answer is the table `_`; the request's other parameters are"
                                     " then that pipe's."}]
    parameters += [{"name": flag, "in": "query", "required": False, "schema": {"type": "integer", "enum": [0, 1]}}
                   for flag in FLAGS]
    answer = {"200": {"description": "The rows, in the statement's FORMAT.", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/PipeResponse"}},
        "text/csv": {"schema": {"type": "string"}}, "text/tab-separated-values": {"schema": {"type": "string"}},
        "application/x-ndjson": {"schema": {"type": "string"}}}},
        "408": {"description": "The statement ran past `QUERY_TIMEOUT_MS`.", "content": error_content()},
        **error_responses("400", "401", "403", "404", "429", "503")}
    description = ("SQL over the data sources (`DATASOURCES:READ:<name>`), pipes (`PIPES:READ:<name>`) and, with an"
                   " `ADMIN` token, quarantines and `tinybird.pipe_stats_rt`/`tinybird.datasources_ops_log`."
                   " Read-only, run as a role that reads only these, within `QUERY_TIMEOUT_MS`, `QUERY_MAX_ROWS`"
                   " and `QUERY_MAX_BYTES`.")
    return {"/v0/sql": {
        "get": {"operationId": "sql_get", "tags": ["sql"], "summary": "Run SQL (Query API)",
                "description": description, "parameters": parameters, "responses": answer},
        "post": {"operationId": "sql_post", "tags": ["sql"], "summary": "Run SQL sent as the body (Query API)",
                 "description": description, "parameters": parameters[1:],
                 "requestBody": {"required": True, "content": {
                     "text/plain": {"schema": {"type": "string"}},
                     "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                         "q": {"type": "string"}}, "required": ["q"]}}}},
                 "responses": answer}}}
