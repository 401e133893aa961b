"""Building blocks of the OpenAPI document (``openapi.py``): schemas of typed values,
query parameters, error responses and the tabular ``.json|.csv|.ndjson`` paths that pipes
and data sources share. Types come from the one vocabulary (project/types.py).
"""

from __future__ import annotations

from cartpulse.project import types
from cartpulse.project.params import MAX_ELEMENTS, Param
from cartpulse.serving.render import FORMATS, MEDIA_TYPES

#: What each format's answer is, beyond JSON's typed rows.
_FORMAT_TEXT = {
    "csv": "A header line with the column names, then one line per row.",
    "csvwithnames": "CSV with a header line of column names (Tinybird's name for it), then one line per row.",
    "parquet": "One Parquet file; column types follow `meta` (DateTime: UTC timestamp, milliseconds).",
    "prometheus": "Prometheus text format: needs the columns `name` and `value` (optionally `help`, `type`,"
                  " `timestamp`, `labels`); other pipes answer 400.",
}

#: Error statuses every authenticated route may answer, and what each means here.
ERRORS = {
    "400": "A bad request: a parameter's value, a missing name; the message names what is wrong.",
    "401": "Missing, unknown, expired or tampered token.",
    "403": "The token lacks the scope this route needs.",
    "404": "Unknown pipe, data source, format or token name.",
    "429": "The token's rate limit is exhausted: retry after `Retry-After` seconds.",
    "503": "The database is unreachable or the models are not built yet: retry after `Retry-After` seconds.",
    "507": "The database is out of disk space: nothing of the request was stored; retry after `Retry-After` seconds.",
}


def column_schema(data_type: str | None, description: str = "") -> dict:
    """JSON Schema of one column from its dbt ``data_type`` (PostgreSQL's name for it).

    Values are written as ``render.plain`` writes them: timestamps as UTC text, numerics as
    numbers. An undeclared or unknown type is left open rather than guessed."""
    kind = types.of_sql(data_type)
    schema = dict(kind.schema) if kind else {}
    if description:
        schema["description"] = description
    return schema


def param_schema(param: Param) -> dict:
    """JSON Schema of a declared parameter, with every constraint the service enforces
    (an array's bounds hold for each element)."""
    schema = dict(param.kind.param_schema)
    if param.is_array:
        items = _bounded(param, dict(schema["items"]))
        return {**schema, "items": items, "maxItems": MAX_ELEMENTS}
    return _bounded(param, schema)


def _bounded(param: Param, schema: dict) -> dict:
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
        parts.append(f"A DateTime, {types.DATETIME_TEXT}, or a date alone for its midnight.")
    if param.after:
        parts.append(f"Must be later than `{param.after}`.")
    if param.is_array:
        parts.append("Several values as `a,b` or as repeated keys (or both); each is checked.")
    parts.append("An empty value counts as not given.")
    return " ".join(parts)


def query_parameter(param: Param) -> dict:
    described = {"name": param.name, "in": "query", "required": False,
                 "description": param_description(param), "schema": param_schema(param)}
    if param.is_array:
        described.update(style="form", explode=True)  # repeated keys; `a,b` works too
    return described


def error_responses(*statuses: str) -> dict:
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


def tabular(name: str, title: str, parameters: list[dict], summary: str, description: str, tag: str,
            headers: dict | None = None, formats: tuple[str, ...] = FORMATS, post: bool = False) -> dict:
    """Paths ``<name>.<format>`` answering rows of the schema ``title`` as Tinybird does;
    with ``post``, each also takes its query parameters in a form-encoded or JSON body."""
    ref = {"$ref": f"#/components/schemas/{title}"}
    paths = {}
    for fmt in formats:
        if fmt == "json":
            content = {"schema": {"allOf": [{"$ref": "#/components/schemas/PipeResponse"},
                                            {"type": "object", "properties": {"data": {"type": "array", "items": ref}}}]}}
        elif fmt == "ndjson":
            content = {"schema": {"type": "string", "description": f"One JSON object per line, each a {title}."}}
        else:
            content = {"schema": {"type": "string", "description": _FORMAT_TEXT[fmt]}}
        operation_id = f"{name.strip('/').replace('/', '_').replace('v0_', '')}_{fmt}"
        operation = {
            "operationId": operation_id,
            "tags": [tag], "summary": f"{summary} ({fmt.upper()})", "description": description,
            "parameters": parameters,
            "responses": {"200": {"description": "The rows.", "content": {MEDIA_TYPES[fmt].split(";")[0]: content},
                                  **({"headers": headers} if headers else {})},
                          **error_responses("400", "401", "403", "404", "429", "503")}}
        paths[f"{name}.{fmt}"] = {"get": operation}
        if post:
            paths[f"{name}.{fmt}"]["post"] = {**operation, "operationId": f"{operation_id}_post",
                                              "summary": f"{summary} ({fmt.upper()}, parameters in the body)",
                                              "parameters": [p for p in parameters if p["in"] != "query"],
                                              "requestBody": post_body(parameters)}
    return paths


def post_body(parameters: list[dict]) -> dict:
    """A POST's body: the query parameters, form-encoded or as one JSON object."""
    schema = {"type": "object", "properties": {p["name"]: {**p["schema"], "description": p["description"]}
                                               for p in parameters if p["in"] == "query"}}
    return {"required": False, "description": "The parameters, as the query string would carry them (an array"
                                               " parameter as a JSON list, or its key repeated).",
            "content": {"application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}}}


def error_content() -> dict:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
