"""The Query API (/v0/sql): Tinybird's SQL over data sources and pipes, each answer
checked against the same question asked another way (Python over the inserted events,
or the pipe endpoint itself)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest

from support import POST, ndjson

BASE = datetime(2026, 10, 5, 9, 0, 0)
COUNTRIES = ["France", "Spain", "US"]
TYPES = ["purchase", "view", "cart"]


def _events():
    """40 events over ten hours, three countries, three types, eight users."""
    return [{"event_time": (BASE + timedelta(minutes=17 * i)).strftime("%Y-%m-%d %H:%M:%S"),
             "event_type": TYPES[i % 3], "user_id": f"u{i % 8}", "product_id": f"p{i % 5}",
             "category": "shoes" if i % 2 else "hats", "price": round(3.25 * (i % 7) + 1, 2), "quantity": 1 + i % 4,
             "session_id": f"s{i}", "country": COUNTRIES[i % 3]} for i in range(40)]


@pytest.fixture
def events(client, auth, empty_events):
    rows = _events()
    r = client.post(POST, data=ndjson(rows), headers=auth)
    assert r.status_code in (200, 202) and r.get_json()["successful_rows"] == len(rows)
    return rows


def sql(client, auth, q, **params):
    r = client.get("/v0/sql", query_string={"q": q, **params}, headers=auth)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def data(client, auth, q, **params):
    return sql(client, auth, q, **params).get_json()["data"]


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S")


def by_bucket(events, minutes: int) -> dict[datetime, list[dict]]:
    """The events by the start of their ``minutes``-wide bucket (within the hour), in order."""
    buckets = defaultdict(list)
    for e in events:
        at = _time(e["event_time"])
        buckets[at.replace(minute=at.minute // minutes * minutes, second=0)].append(e)
    return dict(sorted(buckets.items()))


def test_count_in_tinybirds_json_shape(client, auth, events, engine):
    body = sql(client, auth, "select count() from ecommerce_events FORMAT JSON").get_json()
    assert body["meta"] == [{"name": "count()", "type": "Int64"}]
    assert body["data"] == [{"count()": len(events)}] and body["rows"] == 1
    assert set(body["statistics"]) >= {"elapsed", "rows_read", "bytes_read"}
    if engine != "citus":  # there they count the coordinator's tables only, not the workers' (docs/citus.md)
        assert body["statistics"]["rows_read"] >= len(events) and body["statistics"]["bytes_read"] > 0


def test_get_post_text_and_post_form_answer_alike(client, auth, events):
    q = "select country, count() c from ecommerce_events group by country order by country"
    expected = [{"country": c, "c": n} for c, n in sorted(Counter(e["country"] for e in events).items())]
    assert data(client, auth, q) == expected
    text = client.post("/v0/sql?from=python-sdk", data=q, headers={**auth, "Content-Type": "text/plain"})
    form = client.post("/v0/sql", data={"q": q + " FORMAT JSON", "from": "ts-sdk"}, headers=auth)
    assert text.status_code == form.status_code == 200, (text.get_data(), form.get_data())
    assert text.get_json()["data"] == form.get_json()["data"] == expected


def test_fifteen_minute_buckets_with_conditional_aggregates(client, auth, events):
    q = ("SELECT toStartOfFifteenMinutes(event_time) AS t, count() AS n, countIf(event_type = 'purchase') AS buys,"
         " sumIf(price * quantity, event_type = 'purchase') AS revenue, uniq(user_id) AS users"
         " FROM ecommerce_events GROUP BY t ORDER BY t")
    expected = []
    for t, group in by_bucket(events, 15).items():
        buys = [e for e in group if e["event_type"] == "purchase"]
        expected.append((t, len(group), len(buys), sum(e["price"] * e["quantity"] for e in buys) if buys else None,
                         len({e["user_id"] for e in group})))
    got = [(_time(r["t"]), r["n"], r["buys"], r["revenue"], r["users"]) for r in data(client, auth, q)]
    assert [g[:3] + g[4:] for g in got] == [x[:3] + x[4:] for x in expected]
    assert [g[3] for g in got] == pytest.approx([x[3] for x in expected])


def test_hours_days_and_limit_offset(client, auth, events):
    q = ("select toStartOfHour(event_time) h, toDate(event_time) d, sum(quantity) q, min(price) lo, max(price) hi,"
         " avg(price) mean from ecommerce_events group by h, d order by h limit 2, 3")
    hours = by_bucket(events, 60)
    expected = [(h, h.date().isoformat(), sum(e["quantity"] for e in g), min(e["price"] for e in g),
                 max(e["price"] for e in g), sum(e["price"] for e in g) / len(g)) for h, g in sorted(hours.items())][2:5]
    got = [(_time(r["h"]), r["d"], r["q"], r["lo"], r["hi"], r["mean"]) for r in data(client, auth, q)]
    assert [g[:5] for g in got] == [x[:5] for x in expected]
    assert [g[5] for g in got] == pytest.approx([x[5] for x in expected])


def test_where_like_in_multiif_and_today(client, auth, events):
    q = ("select product_id, multiIf(quantity > 2, 'big', quantity > 1, 'mid', 'small') size, today() = toDate(now()) same"
         " from ecommerce_events where country in ('France', 'US') and session_id like 's1%' order by session_id")
    chosen = sorted((e for e in events if e["country"] in ("France", "US") and e["session_id"].startswith("s1")),
                    key=lambda e: e["session_id"])
    size = lambda n: "big" if n > 2 else "mid" if n > 1 else "small"  # noqa: E731
    assert data(client, auth, q) == [{"product_id": e["product_id"], "size": size(e["quantity"]), "same": True}
                                     for e in chosen]


@pytest.mark.parametrize("fmt, mimetype", [("CSV", "text/csv"), ("CSVWithNames", "text/csv"),
                                           ("TSV", "text/tab-separated-values"),
                                           ("TSVWithNames", "text/tab-separated-values"),
                                           ("JSONEachRow", "application/x-ndjson")])
def test_formats(client, auth, events, fmt, mimetype):
    q = "select product_id, sum(quantity) q from ecommerce_events group by product_id order by product_id"
    totals = Counter()
    for e in events:
        totals[e["product_id"]] += e["quantity"]
    expected = [[p, str(n)] for p, n in sorted(totals.items())]
    r = sql(client, auth, f"{q} FORMAT {fmt}")
    assert r.mimetype == mimetype
    text = r.get_data(as_text=True)
    if fmt == "JSONEachRow":
        assert [json.loads(line) for line in text.splitlines()] == [{"product_id": p, "q": int(n)} for p, n in expected]
        return
    rows = list(csv.reader(io.StringIO(text), delimiter="\t" if fmt.startswith("TSV") else ","))
    if fmt.endswith("WithNames"):
        assert rows.pop(0) == ["product_id", "q"]
    assert rows == expected


def test_tsv_escapes_and_writes_null_as_backslash_n(client, auth, events):
    r = sql(client, auth, "select 'a\\tb\\nc' as s, NULL as n, 1 as one FORMAT TSV")
    assert r.get_data(as_text=True) == "a\\tb\\nc\t\\N\t1\n"


def test_a_pipe_is_a_table_with_its_default_parameters(client, auth, events):
    pipe = client.get("/v0/pipes/top_products.json", headers=auth).get_json()["data"]
    assert pipe, "the fixture has purchases"
    assert data(client, auth, "select * from top_products") == pipe
    joined = data(client, auth, "select t.product_id, t.total_quantity, count() n from top_products t"
                                " join ecommerce_events e on e.product_id = t.product_id"
                                " group by t.product_id, t.total_quantity order by t.product_id")
    per_product = Counter(e["product_id"] for e in events)
    assert joined == [{"product_id": p["product_id"], "total_quantity": p["total_quantity"],
                       "n": per_product[p["product_id"]]} for p in sorted(pipe, key=lambda p: p["product_id"])]


def test_pipeline_parameter_makes_underscore_that_pipe_with_its_parameters(client, auth, events):
    pipe = client.get("/v0/pipes/top_products.json?country=Spain&limit=2", headers=auth).get_json()["data"]
    got = data(client, auth, "select product_id, total_revenue from _ order by total_revenue desc, product_id",
               pipeline="top_products", country="Spain", limit="2")
    assert got == [{"product_id": p["product_id"], "total_revenue": p["total_revenue"]} for p in pipe]
    r = client.get("/v0/sql", query_string={"q": "select * from _", "pipeline": "top_products", "limit": "0"},
                   headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "limit"


def test_unknown_parameters_functions_and_formats_are_named(client, auth, events):
    r = client.get("/v0/sql", query_string={"q": "select 1", "country": "US"}, headers=auth)
    assert r.status_code == 400 and "country" in r.get_json()["error"]
    r = client.get("/v0/sql", query_string={"q": "select argMax(price, quantity) from ecommerce_events"}, headers=auth)
    assert r.status_code == 400 and "ARG_MAX" in r.get_json()["error"].upper()
    r = client.get("/v0/sql", query_string={"q": "select 1 FORMAT Parquet"}, headers=auth)
    assert r.status_code == 400 and "Parquet" in r.get_json()["error"]
    r = client.get("/v0/sql", query_string={"q": "select * from no_such_table"}, headers=auth)
    assert r.status_code == 404 and r.get_json()["table"] == "no_such_table"
    r = client.get("/v0/sql", headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "q"


def test_json_settings_quote_64bit_integers_and_denormals(client, auth, events):
    q = "select count() c, cast('NaN' as Float64) x, cast('-inf' as Float64) y from ecommerce_events"
    plain = data(client, auth, q)
    assert plain == [{"c": len(events), "x": None, "y": None}]
    quoted = data(client, auth, q, output_format_json_quote_64bit_integers="1", output_format_json_quote_denormals="1")
    assert quoted == [{"c": str(len(events)), "x": "nan", "y": "-inf"}]


def test_scopes_apply_to_each_table_the_query_reads(client, auth, events):
    from test_tokens import create

    _, pipe_only = create(client, auth, "PIPES:READ:top_products")
    _, both = create(client, auth, "PIPES:READ:top_products", "DATASOURCES:READ:ecommerce_events")
    as_ = lambda headers: headers  # noqa: E731
    q = "select count() n from top_products"
    assert client.get("/v0/sql", query_string={"q": q}, headers=as_(pipe_only)).status_code == 200
    for q in ("select count() from ecommerce_events", "select * from top_products, ecommerce_events limit 1",
              "select count() from ecommerce_events_quarantine", "select count() from tinybird.pipe_stats_rt",
              "select * from events_by_country"):
        r = client.get("/v0/sql", query_string={"q": q}, headers=as_(pipe_only))
        assert r.status_code == 403, (q, r.get_json())
    r = client.get("/v0/sql", query_string={"q": "select count() n from ecommerce_events"}, headers=as_(both))
    assert r.status_code == 200 and r.get_json()["data"] == [{"n": len(events)}]
    assert client.get("/v0/sql", query_string={"q": "select 1"}).status_code == 401


def test_a_signed_tokens_fixed_parameters_bind_in_sql(client, auth, admin_token, events):
    from cartpulse.access import jwt

    token = jwt.sign({"name": "shop", "exp": int(datetime.now().timestamp()) + 600,
                      "scopes": [{"type": "PIPES:READ", "resource": "top_products",
                                  "fixed_params": {"country": "France"}}]}, admin_token)
    france = client.get("/v0/pipes/top_products.json?country=France", headers=auth).get_json()["data"]
    r = client.get("/v0/sql", query_string={"q": "select * from top_products"},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.get_json()["data"] == france


def test_date_parts_and_statistics(client, auth, events):
    import statistics

    q = ("select toYear(event_time) y, toMonth(event_time) m, toDayOfMonth(event_time) d, toHour(event_time) h,"
         " toDayOfWeek(event_time) w, stddevPop(price) sd, varSamp(price) vs, toString(toDate(event_time)) day"
         " from ecommerce_events group by y, m, d, h, w, day order by h")
    hours = {h: [e["price"] for e in group] for h, group in by_bucket(events, 60).items()}
    got = data(client, auth, q)
    assert [(r["y"], r["m"], r["d"], r["h"], r["w"], r["day"]) for r in got] == [
        (h.year, h.month, h.day, h.hour, h.isoweekday(), h.date().isoformat()) for h in sorted(hours)]
    assert [r["sd"] for r in got] == pytest.approx([statistics.pstdev(p) for _, p in sorted(hours.items())])
    assert [r["vs"] for r in got] == pytest.approx([statistics.variance(p) if len(p) > 1 else None
                                                    for _, p in sorted(hours.items())])
