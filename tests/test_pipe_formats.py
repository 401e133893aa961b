"""More ways to call a pipe: POST with form-encoded or JSON parameters, and the
``.csvwithnames``, ``.parquet`` and ``.prometheus`` formats. Each answer is checked
against the JSON answer to the same question (itself checked against expected.py) and
the Parquet file is read back with pyarrow."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pyarrow.parquet as pq
import pytest

import expected
from cartpulse.errors import ApiError
from cartpulse.serving.prometheus import prometheus_text
from support import EVENT, load_events

EVENTS = [{**EVENT, "product_id": f"p{i}", "country": ["France", "Spain", "Ελλάδα"][i % 3], "price": 1.25 * (i + 1),
           "quantity": 1 + i % 2, "event_time": f"2026-10-05 1{i % 10}:0{i % 6}:00"} for i in range(18)]
PIPES = ("top_products", "events_by_country", "total_revenue")


@pytest.fixture(scope="module")
def loaded(app, settings, admin_token):
    return load_events(app, settings, admin_token, EVENTS)


def as_json(client, auth, pipe, query=""):
    r = client.get(f"/v0/pipes/{pipe}.json?{query}", headers=auth)
    assert r.status_code == 200
    return r.get_json()


@pytest.mark.parametrize("pipe", PIPES)
def test_csvwithnames_is_a_header_then_the_rows(client, auth, loaded, pipe):
    r = client.get(f"/v0/pipes/{pipe}.csvwithnames", headers=auth)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    answer = as_json(client, auth, pipe)
    lines = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert lines[0] == [m["name"] for m in answer["meta"]]
    assert expected.same([dict(zip(lines[0], row)) for row in lines[1:]], getattr(expected, pipe)(loaded))


@pytest.mark.parametrize("pipe", PIPES)
def test_parquet_reads_back_as_the_json_answer(client, auth, loaded, pipe):
    r = client.get(f"/v0/pipes/{pipe}.parquet?country=France,Spain", headers=auth)
    assert r.status_code == 200 and r.mimetype == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(r.get_data()))
    answer = as_json(client, auth, pipe, "country=France,Spain")
    assert table.column_names == [m["name"] for m in answer["meta"]]
    rows = table.to_pylist()
    for row in rows:
        for key, value in row.items():
            if isinstance(value, datetime):
                assert value.tzinfo is not None and value.utcoffset().total_seconds() == 0
                row[key] = value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert rows == answer["data"] and rows
    assert expected.same(rows, getattr(expected, pipe)(loaded, country=["France", "Spain"]))
    kinds = {f.name: str(f.type) for f in table.schema}
    if pipe == "top_products":
        assert kinds == {"product_id": "string", "total_quantity": "int64", "total_revenue": "double"}
    if pipe == "total_revenue":
        assert kinds["time_bin"] == "timestamp[ms, tz=UTC]"


@pytest.mark.parametrize("body, kind", [
    ({"country": ["France", "Ελλάδα"], "limit": "3"}, "form"),
    ({"country": ["France", "Ελλάδα"], "limit": 3}, "json"),
    ({"country": "France,Ελλάδα", "limit": 3}, "json"),
])
def test_post_takes_the_parameters_in_the_body(client, auth, loaded, body, kind):
    sent = {"data": body} if kind == "form" else {"json": body}
    r = client.post("/v0/pipes/top_products.json", headers=auth, **sent)
    assert r.status_code == 200, r.get_json()
    want = expected.top_products(loaded, limit=3, country=["France", "Ελλάδα"])
    assert want and expected.same(r.get_json()["data"], want)
    assert r.get_json()["data"] == as_json(client, auth, "top_products", "limit=3&country=France&country=Ελλάδα")["data"]


def test_post_in_every_format_and_with_the_query_string_too(client, auth, loaded):
    r = client.post("/v0/pipes/events_by_country.csvwithnames?event_type=purchase", data={"country": "Spain"},
                    headers=auth)
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert expected.same(rows, expected.events_by_country(loaded, event_type="purchase", country="Spain"))


@pytest.mark.parametrize("query, sent, status, words", [
    ("limit=3", {"data": {"limit": "4"}}, 400, "given 2 times"),
    ("", {"json": {"limit": {"a": 1}}}, 400, "'limit'"),
    ("", {"json": [1, 2]}, 400, "object"),
    ("", {"data": b"{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ("", {"data": b"limit=3", "content_type": "text/plain"}, 400, "text/plain"),
])
def test_a_body_that_cannot_be_read_is_a_400(client, auth, query, sent, status, words):
    r = client.post(f"/v0/pipes/top_products.json?{query}", headers=auth, **sent)
    assert r.status_code == status and words in r.get_json()["error"]


def test_post_needs_the_same_scope(client, loaded):
    assert client.post("/v0/pipes/top_products.json", data={"limit": "3"}).status_code == 401


def test_prometheus_needs_name_and_value_and_says_so(client, auth, loaded):
    r = client.get("/v0/pipes/top_products.prometheus", headers=auth)
    assert r.status_code == 400 and "name, value" in r.get_json()["error"]


def test_unknown_formats_are_named(client, auth):
    r = client.get("/v0/pipes/top_products.tsv", headers=auth)
    assert r.status_code == 404 and ".parquet" in r.get_json()["error"] and "'top_products.tsv'" in r.get_json()["error"]


def test_prometheus_text_format():
    meta = [{"name": n, "type": "String"} for n in ("name", "value", "help", "type", "labels", "timestamp")]
    rows = [("http_requests", 3, "Requests.", "counter", {"method": "GET", "code": "200"}, 1700000000000),
            ("http_requests", 1.5, "Requests.", "counter", {"method": 'P"OST'}, None),
            ("up", 1, None, None, None, None)]
    assert prometheus_text(meta, rows) == (
        "# HELP http_requests Requests.\n"
        "# TYPE http_requests counter\n"
        'http_requests{code="200",method="GET"} 3 1700000000000\n'
        'http_requests{method="P\\"OST"} 1.5\n'
        "up 1\n")


@pytest.mark.parametrize("row, words", [
    (("bad name", 1, None), "metric name"), (("m", "x", None), "number"), (("m", 1, "gauge!"), "type"),
])
def test_prometheus_refuses_what_it_cannot_write(row, words):
    meta = [{"name": n, "type": "String"} for n in ("name", "value", "type")]
    with pytest.raises(ApiError, match=words):
        prometheus_text(meta, [row])


def test_pipe_stats_records_the_body_and_every_repeated_value(app, client, auth, loaded, settings):
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        since = conn.execute("select clock_timestamp()").fetchone()[0]
    r = client.post("/v0/pipes/events_by_country.json?event_type=purchase", headers=auth,
                    data={"country": ["France", "Spain"]})
    assert r.status_code == 200
    app.extensions["cartpulse_stats"].flush()
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("select params from cartpulse.pipe_stats where pipe = 'events_by_country' and at >= %s",
                            [since]).fetchall()
    assert [row[0] for row in rows] == [{"event_type": "purchase", "country": "France,Spain"}]
