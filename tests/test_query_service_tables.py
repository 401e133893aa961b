"""Tinybird's service data sources through the Query API: ``tinybird.pipe_stats_rt`` (one row
per pipe request) and ``tinybird.datasources_ops_log`` (one row per append), compared
with the requests and appends the test made."""

from __future__ import annotations

import psycopg
import pytest

from support import EVENT, POST, ndjson


@pytest.fixture
def clean_logs(empty_events, app):
    app.extensions["cartpulse_stats"].flush()
    with psycopg.connect(empty_events.database_url) as conn:
        conn.execute("truncate cartpulse.pipe_stats, cartpulse.datasources_ops_log")
    return empty_events


def rows(client, auth, q):
    r = client.get("/v0/sql", query_string={"q": q}, headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_pipe_stats_rt_has_a_row_per_request_under_tinybirds_names(client, auth, app, clean_logs):
    assert client.post(POST, data=ndjson([EVENT]), headers=auth).status_code in (200, 202)
    answers = [client.get(f"/v0/pipes/top_products.json?{query}", headers=auth)
               for query in ("", "country=France", "limit=2", "limit=0")]
    assert [a.status_code for a in answers] == [200, 200, 200, 400]
    app.extensions["cartpulse_stats"].flush()
    got = rows(client, auth, "select pipe_name, pipe_id, count() requests, sum(error) errors, sum(result_rows) results,"
                             " countIf(status_code = 400) bad, min(token_name) who"
                             " from tinybird.pipe_stats_rt where pipe_name = 'top_products' group by pipe_name, pipe_id")
    results = sum(a.get_json()["rows"] for a in answers[:3])
    assert got == [{"pipe_name": "top_products", "pipe_id": "top_products", "requests": 4, "errors": 1,
                    "results": results, "bad": 1, "who": "admin token"}]
    app.extensions["cartpulse_stats"].flush()  # the Query API request above is recorded as query_api
    (row,) = rows(client, auth, "select count() n, max(status_code) s from tinybird.pipe_stats_rt"
                                " where pipe_name = 'query_api'")
    assert row == {"n": 1, "s": 200}
    meta = client.get("/v0/sql", query_string={"q": "select * from tinybird.pipe_stats_rt limit 1"},
                      headers=auth).get_json()["meta"]
    assert [m["name"] for m in meta] == ["start_datetime", "pipe_id", "pipe_name", "duration", "read_bytes",
                                         "read_rows", "result_rows", "error", "token_name", "status_code", "parameters"]


def test_datasources_ops_log_has_a_row_per_append(client, auth, clean_logs):
    events = client.post(POST, data=ndjson([EVENT, {**EVENT, "session_id": "s2"}, {**EVENT, "price": "nope"}]),
                         headers=auth).get_json()
    imported = client.post("/v0/datasources?name=ecommerce_events&mode=append&format=ndjson",
                           data=ndjson([EVENT] * 3), headers=auth)
    assert imported.status_code == 200, imported.get_json()
    failed = client.post("/v0/datasources?name=ecommerce_events&mode=append&format=ndjson", data=b"\n",
                         headers=auth)
    assert failed.status_code == 400
    got = rows(client, auth, "select event_type, datasource_name, result, rows, rows_quarantine, import_id,"
                             " error is not null has_error, elapsed_time >= 0 timed"
                             " from tinybird.datasources_ops_log order by timestamp, event_type")
    assert got == [
        {"event_type": "append-hf", "datasource_name": "ecommerce_events", "result": "ok", "rows": 2,
         "rows_quarantine": 1, "import_id": events["import_id"], "has_error": False, "timed": True},
        {"event_type": "append", "datasource_name": "ecommerce_events", "result": "ok", "rows": 3,
         "rows_quarantine": 0, "import_id": imported.get_json()["import_id"], "has_error": False, "timed": True},
        {"event_type": "append", "datasource_name": "ecommerce_events", "result": "error", "rows": None,
         "rows_quarantine": None, "import_id": got[2]["import_id"], "has_error": True, "timed": True},
    ]
    (stored,) = rows(client, auth, "select count() n from ecommerce_events")
    assert stored["n"] == sum(r["rows"] or 0 for r in got)


def test_a_map_value_reads_as_text_and_other_subscripts_are_refused(client, auth, app, clean_logs):
    """``parameters`` is Tinybird's Map(String, String): ``parameters['limit']`` is the text
    '3'. A jsonb subscript would compare as the number 3 with '3' and match nothing,
    silently; so map keys read as text, and any other subscript is a 400 naming it."""
    for limit in (3, 4, 3):
        assert client.get(f"/v0/pipes/top_products.json?limit={limit}", headers=auth).status_code == 200
    app.extensions["cartpulse_stats"].flush()
    (row,) = rows(client, auth, "select count() n from tinybird.pipe_stats_rt where parameters['limit'] = '3'")
    assert int(row["n"]) == 2
    r = client.get("/v0/sql", query_string={"q": "select parameters[1] from tinybird.pipe_stats_rt"}, headers=auth)
    assert r.status_code == 400 and "subscript" in r.get_json()["error"]
