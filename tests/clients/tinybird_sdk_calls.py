"""Drives PyPI ``tinybird-sdk`` (module ``tinybird_sdk``) as an application would.

    python tinybird_sdk_calls.py <operation> '<json arguments>'
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from _calls import run, server
from tinybird_sdk import TinybirdError, create_client
from tinybird_sdk.api import resources
from tinybird_sdk.api.resources import ResourceApiError

URL, TOKEN = server()
client = create_client({"base_url": URL, "token": TOKEN})


def _datetimes(values: dict, names) -> dict:
    """The named values as datetime objects, as Python code holds them."""
    return {k: datetime.fromisoformat(v) if k in names else v for k, v in values.items()}


def ingest(datasource: str, event: dict):
    return client.ingest(datasource, event)


def ingest_batch(datasource: str, events: list, datetimes=(), wait=True):
    rows = [_datetimes(e, datetimes) for e in events]
    return client.ingest_batch(datasource, rows, {"wait": wait})


def query(pipe: str, params: dict, datetimes=()):
    return client.query(pipe, _datetimes(params, datetimes))


def sql(sql: str):
    return client.sql(sql)


def append_file(datasource: str, file: str, csv_dialect=None):
    options = {"file": file}
    if csv_dialect:
        options["csv_dialect"] = csv_dialect
    return client.datasources.append(datasource, options)


def replace_file(datasource: str, file: str):
    return client.datasources.replace(datasource, {"file": file})


def delete_rows(datasource: str, condition: str):
    return client.datasources.delete(datasource, {"delete_condition": condition})


def truncate(datasource: str):
    return client.datasources.truncate(datasource)


def create_jwt(name: str, scopes: list, seconds: int):
    expires = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return client.tokens.create_jwt({"name": name, "expires_at": expires, "scopes": scopes})


def _config():
    return {"base_url": URL, "token": TOKEN}


def list_pipes():
    return resources.list_pipes(_config())


def get_pipe(name: str):
    return resources.get_pipe(_config(), name)


def list_datasources():
    return resources.list_datasources(_config())


def get_datasource(name: str):
    return resources.get_datasource(_config(), name)


OPERATIONS = (ingest, ingest_batch, query, sql, append_file, replace_file, delete_rows, truncate, create_jwt,
              list_pipes, get_pipe, list_datasources, get_datasource)
run({f.__name__: f for f in OPERATIONS},
    (TinybirdError, ResourceApiError),
    lambda err: getattr(err, "status_code", None) or getattr(err, "status", None))
