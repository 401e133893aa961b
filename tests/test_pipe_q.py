"""``q=`` on a pipe: SQL over the pipe's own answer (with its parameters) as the table ``_``,
compared with that answer fetched without ``q``."""

from __future__ import annotations

import csv
import io
import json

import pytest

from support import EVENT, POST, ndjson


@pytest.fixture
def purchases(client, auth, empty_events):
    rows = [{**EVENT, "product_id": f"p{i % 7}", "country": ["France", "Spain"][i % 2], "quantity": 1 + i % 3,
             "price": 2.5 + i, "session_id": f"s{i}"} for i in range(30)]
    assert client.post(POST, data=ndjson(rows), headers=auth).status_code in (200, 202)
    return rows


def pipe(client, auth, query: str, fmt: str = "json"):
    r = client.get(f"/v0/pipes/top_products.{fmt}?{query}", headers=auth)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def test_q_counts_and_pages_the_pipes_answer_with_its_parameters(client, auth, purchases):
    full = pipe(client, auth, "country=Spain&limit=100").get_json()["data"]
    assert len(full) > 3
    counted = pipe(client, auth, "country=Spain&limit=100&q=select count() n from _").get_json()
    assert counted["data"] == [{"n": len(full)}] and counted["meta"] == [{"name": "n", "type": "Int64"}]
    pages = []
    for offset in range(0, len(full), 2):  # as verdin's pipe.pages() asks
        page = pipe(client, auth, f"country=Spain&limit=100&q=SELECT * FROM _ LIMIT 2 OFFSET {offset}")
        pages.extend(page.get_json()["data"])
    assert pages == full
    filtered = pipe(client, auth, "limit=100&q=select product_id from _ where total_quantity > 5 order by product_id")
    everyone = pipe(client, auth, "limit=100").get_json()["data"]
    assert filtered.get_json()["data"] == [{"product_id": p["product_id"]} for p in
                                           sorted(everyone, key=lambda p: p["product_id"]) if p["total_quantity"] > 5]


def test_q_answers_in_the_urls_format(client, auth, purchases):
    full = pipe(client, auth, "limit=3").get_json()["data"]
    text = pipe(client, auth, "limit=3&q=select product_id, total_quantity from _", "csv").get_data(as_text=True)
    assert list(csv.reader(io.StringIO(text))) == [["product_id", "total_quantity"]] + [
        [p["product_id"], str(p["total_quantity"])] for p in full]
    lines = pipe(client, auth, "limit=3&q=select product_id from _", "ndjson").get_data(as_text=True).splitlines()
    assert [json.loads(line) for line in lines] == [{"product_id": p["product_id"]} for p in full]
    r = client.get("/v0/pipes/top_products.json?q=select * from _ FORMAT CSV", headers=auth)
    assert r.status_code == 400 and r.get_json()["construct"] == "FORMAT"


def test_q_is_checked_like_the_query_api(client, auth, purchases):
    for q, status in (("delete from _", 400), ("select * from pg_class", 404), ("select pg_sleep(1) from _", 400),
                      ("select * from _; select 1", 400)):
        r = client.get("/v0/pipes/top_products.json", query_string={"q": q}, headers=auth)
        assert r.status_code == status, (q, r.get_json())
    r = client.get("/v0/pipes/top_products.json", query_string={"q": "select * from _", "limit": "0"}, headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "limit"


def test_q_reads_only_what_the_token_may(client, auth, purchases):
    from test_tokens import create

    _, reader = create(client, auth, "PIPES:READ:top_products")
    ok = client.get("/v0/pipes/top_products.json", query_string={"q": "select count() n from _"}, headers=reader)
    assert ok.status_code == 200 and ok.get_json()["data"][0]["n"] > 0
    for q in ("select count() from ecommerce_events", "select * from _ join events_by_country on 1 = 1"):
        r = client.get("/v0/pipes/top_products.json", query_string={"q": q}, headers=reader)
        assert r.status_code == 403, (q, r.get_json())
    _, other = create(client, auth, "PIPES:READ:events_by_country")
    r = client.get("/v0/pipes/top_products.json", query_string={"q": "select count() from _"}, headers=other)
    assert r.status_code == 403
