"""The OpenAPI paths of the data sources (``openapi.py`` assembles the document): the
Events API, bulk import and reading a data source or its quarantine, for every data
source the dbt project declares (project/datasources.py), each event property typed and
bounded as its column is declared, which is what ``ingest/rows.py`` checks.
"""

from __future__ import annotations

from cartpulse.project import types
from cartpulse.project.datasources import (
    INSERTION_DATE,
    QUARANTINE_COLUMNS,
    Column,
    DataSource,
)
from cartpulse.serving.datasources import PARAMS, readables
from cartpulse.web.openapi_parts import (
    POSITION,
    error_content,
    error_responses,
    query_parameter,
    tabular,
)


def bounded(column: Column, schema: dict) -> dict:
    """``schema`` with the column's declared bounds (a DateTime's in its description)."""
    schema = dict(schema)
    if column.max_length is not None:
        schema["maxLength"] = column.max_length
    if column.type is types.DATETIME:
        schema["description"] = schema["description"].rstrip(".") + f"; from {column.accepted}."
    elif column.min is not None or column.max is not None:
        schema.update({k: v for k, v in (("minimum", column.min), ("maximum", column.max)) if v is not None})
    return schema


def event_schema(source: DataSource) -> dict:
    """One row of ``source`` as the Events API takes it, typed as ``rows.validate`` checks it."""
    properties = {}
    for column in source.columns:
        schema = bounded(column, column.type.json_schema)
        said = " ".join(filter(None, (column.description, schema.get("description"),
                                      "May be null or absent." if column.nullable else "")))
        properties[column.name] = {**schema, **({"description": said} if said else {})}
    return {"type": "object", "properties": properties,
            "required": [c.name for c in source.columns if not c.nullable],
            "additionalProperties": True,
            "description": f"A row of the data source {source.name}. Unknown extra fields are ignored. A row that"
                           " breaks this schema is quarantined, not refused: the other rows of its request are"
                           " stored."}


def event_schemas(datasources: dict[str, DataSource]) -> dict:
    """``<name>_event`` for each data source, and ``Event``: one of them."""
    schemas = {f"{name}_event": event_schema(source) for name, source in sorted(datasources.items())}
    schemas["Event"] = {"oneOf": [{"$ref": f"#/components/schemas/{title}"} for title in schemas],
                        "description": "A row of the data source that `name` names."}
    return schemas


def events_path(datasources: dict[str, DataSource]) -> dict:
    """``POST /v0/events``, its body typed by the declared data sources."""
    answer = {"description": "Committed: the rows are durable and in every endpoint's next answer.",
              "headers": POSITION,
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestAnswer"}}}}
    return {"/v0/events": {"post": {
        "operationId": "post_events", "tags": ["events"], "summary": "Append events",
        "description": "One JSON object, or many as NDJSON (one object per line); the Content-Type does not"
                       " matter. Answered after the commit. Needs `DATASOURCES:APPEND:<name>` (or `ADMIN`).",
        "parameters": [
            {"name": "name", "in": "query", "required": True, "description": "The data source to append to.",
             "schema": {"type": "string", "enum": sorted(datasources)}},
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
                              "content": error_content()},
                      "422": {"description": "This Idempotency-Key was used with a different body.",
                              "content": error_content()},
                      **error_responses("400", "401", "403", "404", "429", "503", "507")}}}}


def import_path(datasources: dict[str, DataSource]) -> dict:
    """``POST /v0/datasources``: a bulk import (``bulk.py``), all or nothing per import."""
    return {"/v0/datasources": {"post": {
        "operationId": "import_datasource", "tags": ["datasources"], "summary": "Bulk import a file",
        "description": "CSV (with a header line naming the columns, or without one: the columns in declared order),"
                       " NDJSON or Parquet; a multipart upload (`-F csv=@file.csv`) or the"
                       " raw body. Each row meets the events API's rules (bad rows are quarantined); the import"
                       " is stored whole or not at all. Needs `DATASOURCES:APPEND:<name>` (or `ADMIN`).",
        "parameters": [
            {"name": "name", "in": "query", "required": True, "schema": {"type": "string", "enum": sorted(datasources)}},
            {"name": "mode", "in": "query", "required": False,
             "description": "`replace` (an `ADMIN` token): the rows are replaced by the file's in one transaction,"
                            " exactly in every endpoint.",
             "schema": {"type": "string", "enum": ["append", "replace"], "default": "append"}},
            {"name": "replace_condition", "in": "query", "required": False,
             "description": "With `mode=replace`: only the rows matching it are replaced, and only the file's rows"
                            " matching it are stored (`discarded_rows` counts the others).",
             "schema": {"type": "string"}},
            {"name": "format", "in": "query", "required": False,
             "description": "Else from the file name's extension, else from the Content-Type.",
             "schema": {"type": "string", "enum": ["csv", "ndjson", "parquet"]}},
            {"name": "Content-Encoding", "in": "header", "required": False, "schema": {"type": "string", "enum": ["gzip"]}},
            {"name": "dialect_delimiter", "in": "query", "required": False, "description": "CSV: the field separator,"
             " one character (`\\t` for a tab).", "schema": {"type": "string", "default": ","}},
            {"name": "dialect_escapechar", "in": "query", "required": False,
             "description": "CSV: a character that takes away the meaning of the next one.", "schema": {"type": "string"}},
            {"name": "dialect_new_line", "in": "query", "required": False,
             "description": "CSV: `\\n` or `\\r\\n` (both are read anyway); other line ends are refused.",
             "schema": {"type": "string"}},
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
                      "413": {"description": "Body over `MAX_IMPORT_BYTES`.", "content": error_content()},
                      **error_responses("400", "401", "403", "404", "429", "503")}}}}


def datasource_paths(datasources: dict[str, DataSource]) -> tuple[dict, dict]:
    """(paths, row schemas) of every readable data source and quarantine
    (``serving/datasources.readables``)."""
    paths, schemas = {}, {}
    for name, readable in sorted(readables(datasources).items()):
        source = readable.source
        if readable.table == source.name:
            properties = {c.name: bounded(c, c.type.schema) for c in source.columns}
        else:
            properties = {c: {"type": ["string", "null"], "description": "The value as sent, as text."}
                          for c in source.column_names}
            for column, kind, required in QUARANTINE_COLUMNS:
                schema = dict(types.of_sql(kind).schema)
                properties[column] = schema if required else {**schema, "type": [schema["type"], "null"]}
            properties[INSERTION_DATE] = dict(types.DATETIME.schema)
        title = f"{name}_row"
        schemas[title] = {"type": "object", "properties": properties}
        who = "an `ADMIN` token (it holds raw client input)" if readable.scope == "ADMIN" else f"`{readable.scope}`"
        paths.update(tabular(f"/v0/datasources/{name}", title, [query_parameter(p) for p in PARAMS],
                             f"Read the data source {name}", f"Newest rows first. Needs {who}.", "datasources"))
    return paths, schemas
