"""Drives PyPI ``tinybird-python-sdk`` (module ``tb``): its buffered ``Datasource``.

    python tinybird_python_sdk_calls.py <operation> '<json arguments>'
"""

from __future__ import annotations

from _calls import run, server
from requests import HTTPError
from tb.datasource import Datasource

URL, TOKEN = server()


def append(datasource: str, rows: list):
    """Rows go into the buffer one by one; leaving the ``with`` block flushes it."""
    with Datasource(datasource, TOKEN, api_url=URL) as ds:
        for row in rows:
            ds << row
    return {"appended": len(rows)}


run({"append": append}, (HTTPError,), lambda err: err.response.status_code)
