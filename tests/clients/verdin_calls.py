"""Drives PyPI ``verdin`` as an application would.

    python verdin_calls.py <operation> '<json arguments>'
"""

from __future__ import annotations

import base64

from _calls import run, server
from verdin.api import ApiError
from verdin.client import Client
from verdin.pipe import PipeError
from verdin.query import QueryError

URL, TOKEN = server()
client = Client(TOKEN, api=URL)


def send_events(datasource: str, records: list, wait=False):
    answer = client.datasource(datasource).send_events(records, wait=wait)
    return {"successful_rows": answer.successful_rows, "quarantined_rows": answer.quarantined_rows}


def send_events_gzip(datasource: str, records: list):
    answer = client.api.events.send(datasource, records, wait=True, compress=True)
    return {"successful_rows": answer.successful_rows, "quarantined_rows": answer.quarantined_rows}


def append_ndjson(datasource: str, records: list):
    response = client.datasource(datasource).append_ndjson(records)
    return {"status": response.status_code, "body": response.json()}


def append_csv(datasource: str, records: list, delimiter=","):
    response = client.datasource(datasource).append_csv(records, delimiter=delimiter)
    return {"status": response.status_code, "body": response.json()}


def pipe_query(pipe: str, params: dict):
    answer = client.pipe(pipe).query(params)
    return {"meta": answer.meta, "data": answer.data}


def pipe_query_format(pipe: str, params: dict, format: str):
    answer = client.api.pipes.query(pipe, parameters=params, format=format)
    return {"data": answer.data}


def pipe_raw(pipe: str, params: dict, format: str):
    """Formats verdin hands back unparsed (parquet, csvwithnames): the bytes, in base64."""
    answer = client.api.pipes.query(pipe, parameters=params, format=format)
    return {"content_type": answer._response.headers.get("Content-Type"),
            "base64": base64.b64encode(answer.content).decode()}


def pipe_sql(pipe: str, sql: str):
    answer = client.pipe(pipe).sql(sql)
    return {"meta": answer.meta, "data": answer.data}


def pipe_pages(pipe: str, page_size: int):
    return [page.data for page in client.pipe(pipe).pages(page_size=page_size)]


def sql(sql: str):
    answer = client.sql(sql).json()
    return {"meta": answer.meta, "data": answer.data}


def list_pipes():
    return client.api.pipes.list().pipes


def pipe_info(name: str):
    return client.api.pipes.get_information(name).info


def list_datasources():
    return client.api.datasources.list().datasources


def datasource_info(name: str):
    return client.api.datasources.get_information(name).info


def list_tokens():
    return client.api.tokens.list().tokens


def truncate(datasource: str):
    client.datasource(datasource).truncate()
    return {}


OPERATIONS = (send_events, send_events_gzip, append_ndjson, append_csv, pipe_query, pipe_query_format, pipe_raw,
              pipe_sql, pipe_pages, sql, list_pipes, pipe_info, list_datasources, datasource_info, list_tokens,
              truncate)
run({f.__name__: f for f in OPERATIONS},
    (ApiError, PipeError, QueryError),
    lambda err: (getattr(err, "status_code", None) or getattr(getattr(err, "response", None), "status_code", None)))
