"""Tinybird's own clients, unchanged, against a running CartPulse (`cartpulse serve`).

Each client is installed from its registry (tests/real_clients.py) and driven by a
script written as its users write code (tests/clients/). Every answer is checked against
Python's own computation over the events the test sent (expected.py) or against the
database, never only for a 2xx. What the clients call is written up in docs/clients.md;
tests/test_clients_pending.py holds the calls that need #14's new routes.
"""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import psycopg
import pytest
from real_clients import node_driver, python_driver

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import count, truncate_events

DS = "ecommerce_events"
COLUMNS = ("event_time", "event_type", "user_id", "product_id", "category", "price", "quantity",
           "session_id", "country")
WEEK = {"start_date": "2026-10-02 00:00:00", "end_date": "2026-10-05 00:00:00"}


def sample(n: int, seed: int) -> list[dict]:
    return EventGenerator(seed=seed, products=40, span=timedelta(days=7)).events(n)


@pytest.fixture(scope="module")
def server(live_server):
    return live_server


@pytest.fixture
def fresh(settings):
    """No events before the test."""
    truncate_events(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def tinybird_sdk(server):
    return python_driver("tinybird_sdk_calls.py", server.base, server.token)


@pytest.fixture(scope="module")
def verdin(server):
    return python_driver("verdin_calls.py", server.base, server.token)


@pytest.fixture(scope="module")
def ts_sdk(server):
    return node_driver("tinybird_ts_calls.mjs", server.base, server.token)


def assert_pipes_match(server, events) -> None:
    """Every endpoint, read over plain HTTP, answers what Python computes from ``events``."""
    for pipe, compute in (("top_products", expected.top_products), ("events_by_country", expected.events_by_country),
                          ("total_revenue", expected.total_revenue)):
        got = server.pipe(pipe, limit=1000) if pipe == "top_products" else server.pipe(pipe)
        want = compute(events, limit=1000) if pipe == "top_products" else compute(events)
        assert expected.same(got, want), (pipe, got[:3], want[:3])


def test_tinybird_python_sdk_buffered_datasource_appends(server, fresh):
    events = sample(300, seed=1)
    driver = python_driver("tinybird_python_sdk_calls.py", server.base, server.token)
    assert driver("append", datasource=DS, rows=events) == {"appended": 300}
    assert count(fresh.database_url) == 300
    assert_pipes_match(server, events)


def test_tinybird_python_sdk_error_raises(server, fresh):
    driver = python_driver("tinybird_python_sdk_calls.py", server.base, server.token)
    answer = driver("append", datasource="no_such_source", rows=sample(2, seed=2))
    assert answer["raised"] == "HTTPError" and answer["status"] == 404
    assert count(fresh.database_url) == 0


def test_tinybird_sdk_ingests_datetimes_and_queries_with_params(server, fresh, tinybird_sdk):
    events = sample(400, seed=3)
    # Python code holds times as datetime objects; the SDK sends them as ISO 8601 ("T").
    answer = tinybird_sdk("ingest_batch", datasource=DS, events=events, datetimes=["event_time"])
    assert answer["successful_rows"] == 400 and answer["quarantined_rows"] == 0
    assert count(fresh.database_url) == 400
    one = tinybird_sdk("ingest", datasource=DS, event=events[0])
    assert one["successful_rows"] == 1
    events.append(events[0])

    top = tinybird_sdk("query", pipe="top_products", params={**WEEK, "limit": 5, "country": "France"},
                       datetimes=["start_date", "end_date"])
    assert [m["name"] for m in top["meta"]] == ["product_id", "total_quantity", "total_revenue"]
    assert top["rows"] == len(top["data"]) and "elapsed" in top["statistics"]
    assert expected.same(top["data"], expected.top_products(events, limit=5, country="France", **WEEK))

    by_country = tinybird_sdk("query", pipe="events_by_country", params={"event_type": "view"})
    assert expected.same(by_country["data"], expected.events_by_country(events, event_type="view"))
    hourly = tinybird_sdk("query", pipe="total_revenue", params={"interval": "1 hour", **WEEK})
    assert expected.same(hourly["data"], expected.total_revenue(events, interval="1 hour", **WEEK))


def test_tinybird_sdk_ingest_without_wait(server, fresh, tinybird_sdk):
    events = sample(20, seed=4)
    answer = tinybird_sdk("ingest_batch", datasource=DS, events=events, wait=False)
    assert answer["successful_rows"] == 20
    assert_pipes_match(server, events)


def test_tinybird_sdk_errors_carry_status_and_message(server, fresh, tinybird_sdk):
    bad = tinybird_sdk("query", pipe="top_products", params={"limit": "many"})
    assert bad["raised"] == "TinybirdError" and bad["status"] == 400 and "limit" in bad["message"]
    missing = tinybird_sdk("query", pipe="no_such_pipe", params={})
    assert missing["status"] == 404


def test_tinybird_sdk_appends_files_with_a_header(server, fresh, tinybird_sdk, tmp_path):
    events = sample(120, seed=5)
    with open(tmp_path / "events.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(events[:60])
    (tmp_path / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events[60:]))
    for name in ("events.csv", "events.ndjson"):
        answer = tinybird_sdk("append_file", datasource=DS, file=str(tmp_path / name))
        assert answer["successful_rows"] == 60 and answer["quarantined_rows"] == 0, answer
    assert count(fresh.database_url) == 120
    assert_pipes_match(server, events)


def test_truncate_is_refused_and_keeps_every_row(server, fresh, tinybird_sdk, ts_sdk, verdin):
    """Rollups only absorb additions (as with mode=replace): truncate is not offered, and
    each client says so instead of reporting an empty data source."""
    server.post_events(sample(10, seed=6))
    for driver, operation in ((tinybird_sdk, "truncate"), (ts_sdk, "truncate"), (verdin, "truncate")):
        answer = driver(operation, datasource=DS)
        assert 400 <= answer["status"] < 500, (operation, answer)
    assert count(fresh.database_url) == 10


def test_ts_sdk_ingests_and_queries(server, fresh, ts_sdk):
    events = sample(300, seed=7)
    answer = ts_sdk("ingestBatch", datasource=DS, events=events)
    assert answer == {"successful_rows": 300, "quarantined_rows": 0, "import_id": answer["import_id"]}
    assert ts_sdk("ingest", datasource=DS, event=events[1])["successful_rows"] == 1
    events.append(events[1])
    assert count(fresh.database_url) == 301

    top = ts_sdk("query", pipe="top_products", params={**WEEK, "limit": 7})
    assert top["rows"] == len(top["data"])
    assert expected.same(top["data"], expected.top_products(events, limit=7, **WEEK))
    revenue = ts_sdk("apiQuery", pipe="total_revenue", params={"interval": "1 day", "country": "Germany"})
    assert expected.same(revenue["data"], expected.total_revenue(events, interval="1 day", country="Germany"))
    bad = ts_sdk("query", pipe="top_products", params={"limit": 0})
    assert bad["raised"] == "TinybirdError" and bad["status"] == 400 and "limit" in bad["message"]


def test_ts_sdk_ingest_without_wait(server, fresh, ts_sdk):
    events = sample(15, seed=8)
    assert ts_sdk("ingestBatch", datasource=DS, events=events, wait=False)["successful_rows"] == 15
    assert_pipes_match(server, events)


def test_verdin_sends_events_and_reads_pipes_in_every_format(server, fresh, verdin):
    events = sample(250, seed=9)
    answer = verdin("send_events", datasource=DS, records=events[:200], wait=True)
    assert answer == {"successful_rows": 200, "quarantined_rows": 0}
    appended = verdin("append_ndjson", datasource=DS, records=events[200:])
    assert appended["status"] == 200 and appended["body"]["successful_rows"] == 50
    assert count(fresh.database_url) == 250

    top = verdin("pipe_query", pipe="top_products", params={"limit": "3", "country": "France"})
    assert top["meta"] == [["product_id", "String"], ["total_quantity", "Int64"], ["total_revenue", "Float64"]]
    assert expected.same(top["data"], expected.top_products(events, limit=3, country="France"))
    want = expected.events_by_country(events, **WEEK)
    for fmt in ("json", "csv", "ndjson"):
        got = verdin("pipe_query_format", pipe="events_by_country", params=WEEK, format=fmt)["data"]
        assert expected.same(got, want), fmt  # csv values are text: compared as text


def test_verdin_lists_tokens(server, verdin, settings):
    with psycopg.connect(settings.database_url) as conn:
        names = sorted(n for (n,) in conn.execute("select name from cartpulse.tokens"))
    assert sorted(t["name"] for t in verdin("list_tokens")) == names


def test_a_scoped_token_reads_its_pipe_only_through_each_client(server, fresh, tinybird_sdk, ts_sdk, verdin):
    status, made = server.request("POST", "/v0/tokens?name=clients-reader&scope=PIPES:READ:events_by_country")
    assert status == 200, made
    try:
        events = sample(30, seed=10)
        server.post_events(events)
        want = expected.events_by_country(events)
        assert expected.same(tinybird_sdk("query", token=made["token"], pipe="events_by_country", params={})["data"], want)
        assert expected.same(ts_sdk("query", token=made["token"], pipe="events_by_country", params={})["data"], want)
        assert tinybird_sdk("query", token=made["token"], pipe="top_products", params={})["status"] == 403
        assert ts_sdk("query", token=made["token"], pipe="top_products", params={})["status"] == 403
        assert verdin("send_events", token=made["token"], datasource=DS, records=events)["status"] == 403
        assert count(fresh.database_url) == 30
    finally:
        server.request("DELETE", "/v0/tokens/clients-reader")
