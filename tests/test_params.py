"""Endpoint parameters: declared in the dbt project, validated, always bound."""

from __future__ import annotations

import pytest

from support import EVENT, truncate_events


@pytest.mark.parametrize("pipe, params, name, words", [
    ("top_products", {"limit": "ten"}, "limit", "integer"),
    ("top_products", {"limit": "1001"}, "limit", "at most 1000"),
    ("top_products", {"limit": "0"}, "limit", "at least 1"),
    ("top_products", {"start_date": "yesterday"}, "start_date", "YYYY-MM-DD HH:MM:SS"),
    ("top_products", {"start_date": "2026-10-05 10:00:00", "end_date": "2026-10-05 09:00:00"}, "end_date",
     "later than start_date"),
    ("events_by_country", {"start_date": "2026-10-05 10:00:00", "end_date": "2026-10-05 10:00:00"}, "end_date",
     "later than start_date"),
    ("total_revenue", {"interval": "2 minutes"}, "interval", "one of"),
    ("total_revenue", {"end_date": "2026-02-30 00:00:00"}, "end_date", "DateTime"),
    ("top_products", {"country": "x" * 1001}, "country", "longer"),
])
def test_bad_values_are_400_naming_the_parameter(client, auth, pipe, params, name, words):
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
    assert r.status_code == 400
    assert r.get_json()["parameter"] == name
    assert name in r.get_json()["error"] and words in r.get_json()["error"]


def test_values_are_bound_never_pasted(client, auth, settings):
    truncate_events(settings.database_url)
    client.post("/v0/events?name=ecommerce_events", json=EVENT, headers=auth)
    hostile = "France' or '1'='1"
    r = client.get("/v0/pipes/top_products.json", query_string={"country": hostile}, headers=auth)
    assert r.status_code == 200 and r.get_json()["data"] == []
    r = client.get("/v0/pipes/top_products.json", query_string={"category": "x'); drop table raw.ecommerce_events; --"},
                   headers=auth)
    assert r.status_code == 200 and r.get_json()["data"] == []
    r = client.get("/v0/pipes/top_products.json", query_string={"country": "France"}, headers=auth)
    assert [row["product_id"] for row in r.get_json()["data"]] == ["p1"]


def test_defaults_and_unknown_params(client, auth, settings):
    truncate_events(settings.database_url)
    events = [{**EVENT, "product_id": f"p{i}", "price": float(i + 1)} for i in range(15)]
    client.post("/v0/events?name=ecommerce_events", data="\n".join(__import__("json").dumps(e) for e in events),
                headers=auth)
    assert len(client.get("/v0/pipes/top_products.json", headers=auth).get_json()["data"]) == 10
    assert len(client.get("/v0/pipes/top_products.json?limit=3&unknown=1", headers=auth).get_json()["data"]) == 3
    # An empty value counts as not given.
    assert len(client.get("/v0/pipes/top_products.json?limit=&country=", headers=auth).get_json()["data"]) == 10
    # A date alone means its midnight (what a date picker sends).
    r = client.get("/v0/pipes/events_by_country.json?start_date=2026-10-05&end_date=2026-10-06", headers=auth)
    assert r.get_json()["data"] == [{"country": "France", "event_count": 15}]


def test_params_are_listed_from_the_declarations(client, auth):
    pipes = {p["name"]: p for p in client.get("/v0/pipes", headers=auth).get_json()["pipes"]}
    assert [p["name"] for p in pipes["top_products"]["params"]] == ["start_date", "end_date", "limit", "category",
                                                                     "country"]
    assert [p["name"] for p in pipes["events_by_country"]["params"]] == ["start_date", "end_date", "event_type", "country"]
    interval = [p for p in pipes["total_revenue"]["params"] if p["name"] == "interval"][0]
    assert interval["default"] == "15 minutes"
