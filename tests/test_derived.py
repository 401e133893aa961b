"""Derived endpoints answer exactly what their plain SQL answers (docs/realtime.md, "Derived endpoints").

A copy of the project gains endpoints written the README's way, a plain GROUP BY over
the staging model, covering the derivable class: the README's own example, a time bucket
whose width is an enum parameter with an optional range and an Array parameter, a
required range with HAVING, ORDER BY and a LIMIT parameter, min, max, avg and count of a
column, an aggregate with no GROUP BY, and hours by date_trunc; and the seed's Tinybird
datafiles, imported. ``cartpulse``'s derivation writes their
rollups and answers (ops/derive.py), dbt builds them, and for random parameters each
derived answer (``<endpoint>__derived``, what the service calls) is compared with the
endpoint's own function, its SQL over the raw events: with events absorbed by `dbt run`,
by `cartpulse.absorb()`, pending, late, deleted, replaced, after a full refresh, and
after a truncate. Floats are compared to 1e-9 relative (the plain SQL sums doubles in
scan order; the rollups sum them as numeric), everything else exactly.
"""

from __future__ import annotations

import json
import math
import random
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml
from test_absorb import absorb, post
from test_deletes import delete
from test_replace import replace as replace_rows

from cartpulse.cli import tinybird_import
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.derive import derive
from support import copy_project, dbt_ok, project_database

#: The seed's own Tinybird datafiles, imported as tb_*: endpoints over another data source,
#: top_products through its intermediate node (a WITH query).
DATAFILES = Path(__file__).parent / "fixtures" / "tinybird" / "seed"
IMPORTED = "tb_ecommerce_events"
START = datetime(2026, 9, 1, tzinfo=timezone.utc)
SPAN = timedelta(days=3)
README = (PROJECT_DIR / "README.md").read_text()
COUNTRIES = ["Spain", "France", "Germany", "Italy", "Nowhere"]


def readme_file(path: str) -> str:
    """A file the README's "Adding an endpoint" has you write, as it shows it."""
    block = re.search(rf"<!-- readme-test: file {re.escape(path)} -->\n```\w+\n(.*?)```", README, re.S)
    return block.group(1)


def endpoint_yml(name: str, description: str, params: dict, columns: list[tuple[str, str]]) -> str:
    """An endpoint's yml, as the README's "Adding an endpoint" writes one."""
    model = {"name": name, "description": description, "config": {"meta": {"endpoint": {"params": params}}},
             "columns": [{"name": column, "data_type": kind} for column, kind in columns]}
    return yaml.safe_dump({"version": 2, "models": [model]}, sort_keys=False)


#: The WHERE of total_revenue: purchases, an optional range and optional countries.
PURCHASES_IN_RANGE = """where event_type = 'purchase'
  and ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
  and ({{ param('country') }} is null or country = any({{ param('country') }}))"""

ENDPOINTS = {
    "revenue_by_bucket": ("""
select {{ time_bin(param('interval'), 'event_time') }} as time_bin,
       sum(revenue) as total_revenue,
       count(*)::bigint as purchases,
       avg(price) as avg_price,
       max(quantity) as max_quantity
from {{ ref('stg_raw__ecommerce_events') }}
""" + PURCHASES_IN_RANGE + """
group by 1
order by 1
""", endpoint_yml(
        "revenue_by_bucket", "One row per bucket of purchases.",
        {"start_date": {"type": "DateTime"}, "end_date": {"type": "DateTime"}, "country": {"type": "Array(String)"},
         "interval": {"type": "String", "default": "15 minutes", "enum": ["1 minute", "15 minutes", "1 hour", "1 day"]}},
        [("time_bin", "timestamptz"), ("total_revenue", "double precision"), ("purchases", "bigint"),
         ("avg_price", "double precision"), ("max_quantity", "bigint")])),
    "top_categories": ("""
select category, sum(quantity)::bigint as units, min(price) as cheapest, count(user_id)::bigint as with_user,
       avg(quantity) as avg_quantity
from {{ ref('stg_raw__ecommerce_events') }}
where event_time >= {{ param('start_date') }} and event_time < {{ param('end_date') }}
  and ({{ param('country') }} is null or country = {{ param('country') }})
  and event_type in ('purchase', 'add_to_cart')
group by category
having sum(quantity) > {{ param('min_units') }}
order by units desc, category collate "C"
limit {{ param('limit') }}
""", endpoint_yml(
        "top_categories", "One row per category, most units first.",
        {"start_date": {"type": "DateTime"}, "end_date": {"type": "DateTime"}, "country": {"type": "String"},
         "min_units": {"type": "Int", "default": 0}, "limit": {"type": "Int", "default": 5}},
        [("category", "text"), ("units", "bigint"), ("cheapest", "double precision"), ("with_user", "bigint"),
         ("avg_quantity", "numeric")])),
    "hourly_views": ("""
select date_trunc('hour', event_time) as hour, count(*)::bigint as views
from {{ ref('stg_raw__ecommerce_events') }}
where event_type = 'view'
  and ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
group by 1
order by 1
""", endpoint_yml("hourly_views", "Views per UTC hour (date_trunc).", {"start_date": {"type": "DateTime"},
                                                                      "end_date": {"type": "DateTime"}},
                 [("hour", "timestamptz"), ("views", "bigint")])),
    # Answered row for row from its all-time rollup when no range is given (the fast path,
    # project/merged_answers.py), with a HAVING.
    "units_by_category": ("""
select category, count(*)::bigint as events, sum(quantity)::bigint as units, avg(quantity) as avg_quantity
from {{ ref('stg_raw__ecommerce_events') }}
where ({{ param('start_date') }} is null or event_time >= {{ param('start_date') }})
  and ({{ param('end_date') }} is null or event_time < {{ param('end_date') }})
  and ({{ param('event_type') }} is null or event_type = {{ param('event_type') }})
group by category
having count(*) > {{ param('min_events') }}
order by units desc nulls first, category collate "C" nulls first
""", endpoint_yml(
        "units_by_category", "One row per category.",
        {"start_date": {"type": "DateTime"}, "end_date": {"type": "DateTime"}, "event_type": {"type": "String"},
         "min_events": {"type": "Int", "default": 0}},
        [("category", "text"), ("events", "bigint"), ("units", "bigint"), ("avg_quantity", "numeric")])),
    "totals": ("""
select count(*)::bigint as events, sum(price) as price_sum, min(event_time) as first_event
from {{ ref('stg_raw__ecommerce_events') }}
where {{ param('event_type') }} is null or event_type = {{ param('event_type') }}
""", endpoint_yml("totals", "One row, all events.", {"event_type": {"type": "String"}},
                 [("events", "bigint"), ("price_sum", "double precision"), ("first_event", "timestamptz")])),
}


@pytest.fixture(scope="module")
def derived(built, server_url, tmp_path_factory):
    """The project copy with the endpoints above and the README's, derived and built in a
    database of its own; its settings."""
    folder = tmp_path_factory.mktemp("derived")
    project = copy_project(folder)
    lines: list[str] = []
    assert tinybird_import.run(project, DATAFILES, prefix="tb_", out=lines.append) == 0, lines
    with project_database(built, server_url, project, folder, "cartpulse_derived") as settings:
        marts = settings.project_dir / "models" / "marts"
        for path in ("models/marts/events_by_type.sql", "models/marts/events_by_type.yml"):
            (settings.project_dir / path).write_text(readme_file(path))
        for name, (sql, yml) in ENDPOINTS.items():
            (marts / f"{name}.sql").write_text(sql)
            (marts / f"{name}.yml").write_text(yml)
        assert derive(settings, settings.database_url) == {}
        dbt_ok(settings, "run")
        yield settings


@pytest.fixture(scope="module")
def client(derived):
    from cartpulse.app import create_app

    app = create_app(derived)
    app.config["TESTING"] = True
    yield app.test_client()
    app.extensions["cartpulse_stats"].flush()
    app.extensions["cartpulse"].db.dispose()


def _when(rng: random.Random) -> datetime:
    """A time in the span, often on a bucket boundary (where pieces meet)."""
    t = START + timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))
    roll = rng.random()
    if roll < 0.15:
        return t.replace(minute=0, second=0)
    if roll < 0.25:
        return t.replace(hour=0, minute=0, second=0)
    if roll < 0.35:
        return t.replace(minute=t.minute - t.minute % 15, second=0)
    return t


def events(rng: random.Random, count: int) -> list[dict]:
    gen = EventGenerator(seed=rng.randrange(10**6), products=30, start=START, span=SPAN)
    out = []
    for _ in range(count):
        event = gen.event(_when(rng))
        event["country"] = rng.choice(COUNTRIES)
        out.append(event)
    return out


def _bound(rng: random.Random) -> datetime | None:
    return None if rng.random() < 0.2 else _when(rng)


def calls(rng: random.Random) -> list[tuple[str, dict]]:
    """Random parameters for every derived endpoint (None: left out)."""
    out = []
    for _ in range(6):
        start, end = _bound(rng), _bound(rng)
        if start and end and end < start:
            start, end = end, start
        countries = rng.sample(COUNTRIES, rng.randrange(1, 3)) if rng.random() < 0.5 else None
        out += [
            ("events_by_type", {"country": rng.choice([None, *COUNTRIES])}),
            ("revenue_by_bucket", {"start_date": start, "end_date": end, "country": countries,
                                   "interval": rng.choice([None, "1 minute", "15 minutes", "1 hour", "1 day"])}),
            ("top_categories", {"start_date": start, "end_date": end, "country": rng.choice([None, "Spain"]),
                                "min_units": rng.choice([None, 0, 3]), "limit": rng.choice([None, 2, 10])}),
            ("totals", {"event_type": rng.choice([None, "purchase", "view"])}),
            ("hourly_views", {"start_date": start, "end_date": end}),
            ("units_by_category", {"start_date": rng.choice([None, start]), "end_date": rng.choice([None, end]),
                                   "event_type": rng.choice([None, None, "purchase"]),
                                   "min_events": rng.choice([None, 2])}),
        ]
    return out


def _call(conn, function: str, params: dict) -> list[tuple]:
    given = {k: v for k, v in params.items() if v is not None}
    args = ", ".join(f'"{k}" => %({k})s' for k in given)
    return conn.execute(f'select * from analytics."{function}"({args})', given).fetchall()


def _same(got: list[tuple], want: list[tuple], ordered: bool) -> bool:
    if not ordered:
        got, want = sorted(got, key=repr), sorted(want, key=repr)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            floats = isinstance(x, float) and isinstance(y, float)
            if not (x == y or floats and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)):
                return False
    return True


def assert_derived_equal_plain(settings, rng: random.Random) -> int:
    """Every random call answers the same through the derived answer and the plain SQL;
    returns how many calls answered rows (so a test knows it compared something)."""
    answered = 0
    with psycopg.connect(settings.database_url) as conn:
        for endpoint, params in calls(rng):
            plain, derived_rows = _call(conn, endpoint, params), _call(conn, f"{endpoint}__derived", params)
            assert _same(derived_rows, plain, ordered=endpoint != "events_by_type"), (endpoint, params, derived_rows[:4],
                                                                                       plain[:4])
            answered += bool(plain)
    return answered


def test_the_readmes_endpoint_and_the_others_are_served_from_their_rollups(derived, client, auth):
    for name in ("events_by_type", *ENDPOINTS, *SEED):
        said = client.get(f"/v0/pipes/{name}", headers=auth).get_json()["derivation"]
        assert said["derivable"] is True and said["answered_from"] == "derived", (name, said)
        assert said["rollups"] and all(r["name"].startswith("derived_ecommerce_events__") for r in said["rollups"])
    # The README's endpoint and revenue_by_bucket share no grain; top_categories' filter is its own.
    generated = sorted(p.name for p in (Path(derived.project_dir) / "models" / "rollups" / "derived").glob("derived_*.sql"))
    assert "derived_ecommerce_events__country_event_type__all.sql" in generated
    # The endpoints answered row for row from one rollup when no range is given (one fast
    # path per bucket width); min/max (top_categories, revenue_by_bucket), no GROUP BY
    # (totals) and a required range have none.
    answers = Path(derived.project_dir) / "models" / "marts" / "derived"
    fast = {p.stem.split("__derived_merged")[0] for p in answers.glob("*__derived_merged*.sql")}
    assert {"events_by_type", "units_by_category", "hourly_views", "top_products", "total_revenue",
            "events_by_country"} <= fast
    assert not fast & {"top_categories", "revenue_by_bucket", "totals"}


def test_derived_answers_equal_the_plain_sql_in_every_state(derived, client, auth):
    rng = random.Random(2024)
    post(client, auth, events(rng, 600))
    dbt_ok(derived, "run", "--select", "rollups")  # absorbed by dbt
    post(client, auth, events(rng, 400))
    absorb(derived.database_url)  # absorbed by the absorber
    post(client, auth, events(rng, 300))  # pending
    assert assert_derived_equal_plain(derived, rng) > 10
    # Late events, for buckets and days rolled up long ago.
    late = events(rng, 50)
    for event in late:
        event["event_time"] = (START - timedelta(hours=rng.randrange(1, 40))).strftime("%Y-%m-%d %H:%M:%S")
    post(client, auth, late)
    assert assert_derived_equal_plain(derived, rng) > 10
    # Deletes, some of their events absorbed and some still pending.
    assert delete(client, auth, "country = 'France' and event_type = 'purchase'")["rows_affected"] > 0
    assert assert_derived_equal_plain(derived, rng) > 10
    absorb(derived.database_url)
    assert assert_derived_equal_plain(derived, rng) > 10
    # A replace of one country's events, then a full rebuild of every rollup.
    replace_rows(client, auth, events(rng, 80), condition="country = 'Spain'")
    assert assert_derived_equal_plain(derived, rng) > 10
    dbt_ok(derived, "run", "--full-refresh", "--select", "rollups")
    assert assert_derived_equal_plain(derived, rng) > 10


def test_answers_over_http_are_the_derived_ones_and_exact_after_a_truncate(derived, client, auth):
    rng = random.Random(7)
    post(client, auth, events(rng, 200))
    r = client.get("/v0/pipes/events_by_type.json", headers=auth)
    assert r.status_code == 200
    with psycopg.connect(derived.database_url) as conn:
        assert sorted(tuple(row.values()) for row in r.get_json()["data"]) == sorted(_call(conn, "events_by_type", {}))
    assert client.post("/v0/datasources/ecommerce_events/truncate", headers=auth).status_code == 200
    assert client.get("/v0/pipes/totals.json", headers=auth).get_json()["data"] == [
        {"events": 0, "price_sum": None, "first_event": None}]
    post(client, auth, events(rng, 100))
    assert assert_derived_equal_plain(derived, rng) > 5


def test_an_endpoint_changed_since_its_derivation_is_served_as_written(derived, client, auth):
    """A stale answer is never used: plain `dbt run` rebuilds the endpoint, not its derivation."""
    sql = derived.project_dir / "models" / "marts" / "totals.sql"
    before = sql.read_text()
    try:
        sql.write_text(before.replace("count(*)::bigint as events", "(count(*) + 1)::bigint as events"))
        dbt_ok(derived, "run", "--select", "totals")
        said = client.get("/v0/pipes/totals", headers=auth).get_json()["derivation"]
        assert said["answered_from"] == "sql"
        with psycopg.connect(derived.database_url) as conn:
            want = _call(conn, "totals", {})[0][0]
        assert client.get("/v0/pipes/totals.json", headers=auth).get_json()["data"][0]["events"] == want
    finally:
        sql.write_text(before)
        dbt_ok(derived, "run", "--select", "totals")


SEED = ("top_products", "events_by_country", "total_revenue")


def seed_calls(rng: random.Random) -> list[tuple[str, dict]]:
    out = []
    for _ in range(8):
        start, end = _bound(rng), _bound(rng)
        if start and end and end <= start:
            start, end = end, start + timedelta(seconds=1)
        countries = rng.sample(COUNTRIES, rng.randrange(1, 3)) if rng.random() < 0.5 else None
        out += [("top_products", {"start_date": start, "end_date": end, "country": countries,
                                  "limit": rng.choice([None, 3, 50]),
                                  "category": rng.choice([None, "electronics", "books"])}),
                ("events_by_country", {"start_date": start, "end_date": end, "country": countries,
                                       "event_type": rng.choice([None, "purchase", "view"])}),
                ("total_revenue", {"start_date": start, "end_date": end, "country": countries,
                                   "interval": rng.choice([None, "1 minute", "15 minutes", "1 hour", "1 day"])})]
    return out


def test_the_seed_endpoints_answer_what_their_sql_answers(derived, client, auth):
    """The seed's three endpoints, plain SQL in models/marts/, are served from derived
    rollups, and answer what the same SQL answers scanning the events."""
    rng = random.Random(99)
    post(client, auth, events(rng, 400))
    absorb(derived.database_url)
    post(client, auth, events(rng, 200))
    assert derived_equal_scanning(derived, seed_calls(rng)) > 10


def derived_equal_scanning(settings, calls: list[tuple[str, dict]]) -> int:
    """Each call answers the same through the derived answer and the endpoint's SQL
    scanning the events (top products in any order: revenues are floats, and equal ones
    may sort either way); returns how many calls answered rows."""
    compared = 0
    with psycopg.connect(settings.database_url) as conn:
        for endpoint, params in calls:
            scanning = _call(conn, endpoint, params)
            assert _same(_call(conn, f"{endpoint}__derived", params), scanning,
                         ordered=not endpoint.endswith("top_products")), (endpoint, params)
            compared += bool(scanning)
    return compared


def imported_calls(rng: random.Random) -> list[tuple[str, dict]]:
    """The seed's pipes as imported (tb_*), with the seed's own endpoints' parameters."""
    return [("tb_" + endpoint, {k: v for k, v in params.items() if k != "interval"}) for endpoint, params in seed_calls(rng)]


def test_an_imported_tinybird_project_answers_what_its_sql_answers(derived, client, auth):
    """The seed's datafiles imported (tb_*: another data source, top_products through its
    intermediate node) are derived, and answer what their SQL answers scanning the
    events: absorbed, pending, late, deleted and replaced."""
    def post_imported(rows):
        r = client.post(f"/v0/events?name={IMPORTED}", data="".join(json.dumps(e) + "\n" for e in rows), headers=auth)
        assert r.status_code == 202 and r.get_json()["successful_rows"] == len(rows), r.get_json()

    def compare() -> int:
        return derived_equal_scanning(derived, imported_calls(rng))

    for name in ("tb_top_products", "tb_events_by_country", "tb_total_revenue"):
        said = client.get(f"/v0/pipes/{name}", headers=auth).get_json()["derivation"]
        assert said["answered_from"] == "derived", said
    rng = random.Random(5)
    post_imported(events(rng, 500))
    absorb(derived.database_url)
    post_imported(events(rng, 300))
    late = events(rng, 40)
    for event in late:
        event["event_time"] = (START - timedelta(hours=rng.randrange(1, 40))).strftime("%Y-%m-%d %H:%M:%S")
    post_imported(late)
    assert compare() > 10
    gone = delete(client, auth, "country = 'France' and event_type = 'purchase'", path=f"/v0/datasources/{IMPORTED}/delete")
    assert gone["rows_affected"] > 0
    assert compare() > 10
    r = client.post("/v0/datasources", query_string={"name": IMPORTED, "mode": "replace", "format": "ndjson",
                                                      "replace_condition": "country = 'Spain'"},
                    data="".join(json.dumps(e) + "\n" for e in events(rng, 60)), headers=auth)
    assert r.status_code == 200, r.get_json()
    absorb(derived.database_url)
    assert compare() > 10
