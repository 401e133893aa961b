"""Events in over HTTP, endpoints out in every format, compared with Python's own sums."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import ndjson, truncate_events

PIPES = {
    "top_products": expected.top_products,
    "events_by_country": expected.events_by_country,
    "total_revenue": expected.total_revenue,
}


def edge_events(gen: EventGenerator) -> list[dict]:
    """Bucket edges, month and year edges, far past and future, non-ASCII countries, other time formats."""
    times = ["2026-10-05 10:15:00", "2026-10-05 10:29:59", "2026-10-05 10:30:00", "2026-10-05 10:14:59",
             "2026-01-31 23:59:59", "2026-02-01 00:00:00", "2019-03-10 08:00:00", "2031-12-31 23:59:59",
             "2026-10-05T10:20:00Z", "2026-10-05T12:20:00+02:00"]
    out = []
    for i, t in enumerate(times):
        for event_type in ("purchase", "view"):
            e = gen.event()
            e.update(event_time=t, event_type=event_type, country=["日本", "Côte d'Ivoire", "Ελλάδα"][i % 3])
            out.append(e)
    epoch = gen.event()
    epoch.update(event_type="purchase", event_time=int(datetime(2026, 10, 5, 10, 44, 59, tzinfo=timezone.utc).timestamp()))
    out.append(epoch)
    integer_price = gen.event()
    integer_price.update(event_type="purchase", price=12)  # an integer where the schema says Float64
    out.append(integer_price)
    return out


@pytest.fixture(scope="module")
def loaded(app, settings, auth):
    truncate_events(settings.database_url)
    gen = EventGenerator(seed=7, products=300, span=timedelta(days=3))
    events = gen.events(3000) + edge_events(gen)
    client = app.test_client()
    # Most as NDJSON batches (curl -d sends a form content type: it must not matter) ...
    batched, single = events[:2900], events[2900:]
    for start in range(0, len(batched), 500):
        chunk = batched[start:start + 500]
        r = client.post("/v0/events?name=ecommerce_events", data=ndjson(chunk), headers=auth,
                        content_type="application/x-www-form-urlencoded")
        assert r.status_code == 202, r.get_json()
        assert r.get_json()["successful_rows"] == len(chunk)
        assert r.get_json()["quarantined_rows"] == 0
    # ... the rest one JSON object per request.
    for e in single:
        r = client.post("/v0/events?name=ecommerce_events", json=e, headers=auth)
        assert r.status_code == 202, r.get_json()
        assert r.get_json() == {**r.get_json(), "successful_rows": 1, "quarantined_rows": 0}
    return events


@pytest.mark.parametrize("pipe", PIPES)
def test_json_matches_python(client, loaded, auth, pipe):
    r = client.get(f"/v0/pipes/{pipe}.json", headers=auth)
    assert r.status_code == 200
    body = r.get_json()
    assert list(body) == ["meta", "data", "rows", "statistics"]
    want = PIPES[pipe](loaded)
    assert expected.same(body["data"], want), (body["data"][:5], want[:5])
    assert body["rows"] == len(want)
    assert [m["name"] for m in body["meta"]] == list(want[0])
    assert body["statistics"]["rows_read"] >= len(loaded)
    assert body["statistics"]["bytes_read"] > 0
    assert body["statistics"]["elapsed"] > 0


def test_meta_types(client, loaded, auth):
    types = {p: {m["name"]: m["type"] for m in client.get(f"/v0/pipes/{p}.json", headers=auth).get_json()["meta"]}
             for p in PIPES}
    assert types == {
        "top_products": {"product_id": "String", "total_quantity": "Int64", "total_revenue": "Float64"},
        "events_by_country": {"country": "String", "event_count": "Int64"},
        "total_revenue": {"time_bin": "DateTime", "total_revenue": "Float64"},
    }


@pytest.mark.parametrize("pipe", PIPES)
def test_csv_matches_python(client, loaded, admin_token, pipe):
    r = client.get(f"/v0/pipes/{pipe}.csv?token={admin_token}")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    want = PIPES[pipe](loaded)
    assert expected.same(rows, want)


@pytest.mark.parametrize("pipe", PIPES)
def test_ndjson_matches_python(client, loaded, admin_token, pipe):
    r = client.get(f"/v0/pipes/{pipe}.ndjson?token={admin_token}")
    assert r.status_code == 200
    rows = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert expected.same(rows, PIPES[pipe](loaded))


def test_bucket_edges(client, loaded, auth):
    """10:15:00 and 10:29:59 share a bucket; 10:14:59 and 10:30:00 do not."""
    bins = {row["time_bin"]: row["total_revenue"]
            for row in client.get("/v0/pipes/total_revenue.json", headers=auth).get_json()["data"]}
    edge = [e for e in loaded if e["event_type"] == "purchase" and str(e["event_time"]).startswith("2026-10-05 10:")]
    in_1015 = sum(e["price"] * e["quantity"] for e in loaded if e["event_type"] == "purchase"
                  and expected.bucket(e["event_time"]) == datetime(2026, 10, 5, 10, 15, tzinfo=timezone.utc))
    assert edge and abs(bins["2026-10-05 10:15:00"] - in_1015) < 1e-6
    assert "2019-03-10 08:00:00" in bins and "2031-12-31 23:45:00" in bins


def test_realtime_every_endpoint(client, loaded, auth):
    """An acknowledged event is in the very next answer of every endpoint."""
    before = {p: client.get(f"/v0/pipes/{p}.json", headers=auth).get_json()["data"] for p in PIPES}
    new = {"event_time": "2026-10-06 09:00:00", "event_type": "purchase", "user_id": "u-rt",
           "product_id": "p-realtime", "category": "toys", "price": 1e6, "quantity": 3,
           "session_id": "s-rt", "country": "Ísland"}
    assert client.post("/v0/events?name=ecommerce_events", json=new, headers=auth).status_code == 202
    after = {p: client.get(f"/v0/pipes/{p}.json", headers=auth).get_json()["data"] for p in PIPES}
    loaded.append(new)
    for pipe, fn in PIPES.items():
        assert after[pipe] != before[pipe]
        assert expected.same(after[pipe], fn(loaded)), pipe
    assert after["top_products"][0]["product_id"] == "p-realtime"
