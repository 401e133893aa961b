"""Reading data sources over the API: the quarantine for the admin only, with the
original values and reasons; plus the Events API's compatibility promises."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import pytest

from support import EVENT, POST, count, ndjson, truncate_events


@pytest.fixture(autouse=True)
def _empty(settings):
    truncate_events(settings.database_url)


def test_admin_reads_the_quarantine_of_an_import(client, auth):
    first = client.post(POST, data=ndjson([EVENT, {**EVENT, "quantity": -3}]), headers=auth).get_json()
    second = client.post(POST, data=b'{"price": NaN}\nnot json\n' + ndjson([EVENT]), headers=auth).get_json()
    assert first["quarantined_rows"] == 1 and second["quarantined_rows"] == 2
    r = client.get(f"/v0/datasources/ecommerce_events_quarantine.json?import_id={first['import_id']}",
                   headers=auth)
    assert r.status_code == 200
    body = r.get_json()
    assert body["rows"] == 1
    row = body["data"][0]
    assert row["quantity"] == "-3" and row["c__error_column"] == ["quantity"]
    assert "negative" in row["c__error"][0] and row["c__import_id"] == first["import_id"]
    assert row["insertion_date"] and json.loads(row["c__raw"])["quantity"] == -3
    everything = client.get("/v0/datasources/ecommerce_events_quarantine.json?limit=10", headers=auth).get_json()
    assert everything["rows"] == 3
    assert client.get("/v0/datasources/ecommerce_events_quarantine.json?limit=2", headers=auth).get_json()["rows"] == 2
    csv = client.get("/v0/datasources/ecommerce_events_quarantine.csv", headers=auth).get_data(as_text=True)
    assert csv.splitlines()[0].startswith("event_time,") and "not valid JSON" in csv


def test_quarantine_is_admin_only_and_events_need_read_scope(client, auth):
    client.post(POST, data=ndjson([EVENT]), headers=auth)
    r = client.post("/v0/tokens?name=reader-ds&scope=DATASOURCES:READ:ecommerce_events", headers=auth)
    reader = {"Authorization": f"Bearer {r.get_json()['token']}"}
    try:
        events = client.get("/v0/datasources/ecommerce_events.json", headers=reader)
        assert events.status_code == 200 and events.get_json()["data"][0]["country"] == "France"
        assert client.get("/v0/datasources/ecommerce_events_quarantine.json", headers=reader).status_code == 403
        assert client.get("/v0/datasources/ecommerce_events_quarantine.json").status_code == 401
        assert client.get("/v0/pipes/top_products.json", headers=reader).status_code == 403
    finally:
        client.delete("/v0/tokens/reader-ds", headers=auth)


@pytest.mark.parametrize("query", ["limit=0", "limit=10001", "limit=x", "offset=-1", "import_id=" + "x" * 101])
def test_bad_read_parameters_are_400(client, auth, query):
    r = client.get(f"/v0/datasources/ecommerce_events_quarantine.json?{query}", headers=auth)
    assert r.status_code == 400 and "parameter" in r.get_json()["error"]


def test_unknown_data_source_or_format(client, auth):
    assert client.get("/v0/datasources/tokens.json", headers=auth).status_code == 404
    assert client.get("/v0/datasources/ecommerce_events.xml", headers=auth).status_code == 404


def test_unknown_fields_are_ignored_over_http(client, auth, settings):
    r = client.post(POST, data=ndjson([{**EVENT, "coupon": "X", "nested": {"a": [1]}}]), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == 1 and r.get_json()["quarantined_rows"] == 0


@pytest.mark.parametrize("wait, code", [("true", 200), ("false", 202), (None, 202)])
def test_wait_is_accepted_and_the_answer_follows_the_commit(client, auth, settings, wait, code):
    query = POST + (f"&wait={wait}" if wait else "")
    r = client.post(query, data=ndjson([EVENT]), headers=auth)
    assert r.status_code == code
    assert count(settings.database_url) == 1  # committed before the answer, either way


def test_gzip_bomb_is_413_and_stores_nothing(built, admin_token, settings):
    from cartpulse.app import create_app

    small = create_app(replace(built, max_body_bytes=10_000))
    bomb = gzip.compress(ndjson([EVENT]) * 1000)  # ~180 kB inflated, ~1 kB sent
    try:
        r = small.test_client().post(POST, data=bomb, headers={"Authorization": f"Bearer {admin_token}",
                                                               "Content-Encoding": "gzip"})
    finally:
        small.extensions["cartpulse"].db.dispose()
    assert r.status_code == 413 and "limit" in r.get_json()["error"]
    assert count(settings.database_url) == 0
