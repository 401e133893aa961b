"""Exact in real time: rollups + pending events answer for every acknowledged event.

State used here: a first batch absorbed by `dbt run`, then a second batch (with late
events and events for already rolled-up buckets) left pending. Every endpoint, with any
parameters, must equal the Python computation over both batches.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import dbt_ok, ndjson, truncate_events

POST = "/v0/events?name=ecommerce_events"
START = datetime(2026, 10, 1, tzinfo=timezone.utc)

RANGES = [
    {},
    {"start_date": "2026-10-02 00:00:00", "end_date": "2026-10-04 00:00:00"},   # whole days
    {"start_date": "2026-10-02 13:17:45", "end_date": "2026-10-04 08:00:01"},   # partial days at both ends
    {"start_date": "2026-10-03 01:00:00", "end_date": "2026-10-03 05:30:00"},   # inside one day
    {"start_date": "2026-10-02 22:00:00", "end_date": "2026-10-03 02:00:00"},   # across midnight, no whole day
    {"start_date": "2026-10-03 10:15:30"},                                      # open end
    {"end_date": "2026-10-02 06:07:08"},                                        # open start
    {"start_date": "2026-06-01", "end_date": "2026-07-01"},                     # only the late events
]


def post(client, auth, events):
    r = client.post(POST, data=ndjson(events), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == len(events), r.get_json()


def answer(client, auth, pipe, **params):
    # The query itself, not an answer the result cache kept: these tests read its statistics.
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers={**auth, "Cache-Control": "no-cache"})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


@pytest.fixture(scope="module")
def history(app, built, auth):
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=11, products=200, start=START, span=timedelta(days=5))
    first = gen.events(2000)
    post(client, auth, first)
    dbt_ok(built, "run")
    late = [gen.event(when=START - timedelta(days=120, minutes=i)) for i in range(30)]
    same_buckets = [{**e, "user_id": "again"} for e in first[:200]]  # buckets already rolled up
    second = gen.events(800) + late + same_buckets
    post(client, auth, second)
    return first + second


def cases():
    rng = random.Random(5)
    for params in RANGES:
        yield "top_products", params
        yield "top_products", {**params, "limit": rng.choice([1, 3, 1000])}
        yield "top_products", {**params, "country": "France", "limit": 1000}
        yield "top_products", {**params, "category": "toys", "country": "日本"}
        yield "events_by_country", params
        yield "events_by_country", {**params, "event_type": "purchase"}
        yield "total_revenue", params
        yield "total_revenue", {**params, "interval": rng.choice(["1 minute", "1 hour", "1 day"])}
        yield "total_revenue", {**params, "country": "Germany", "interval": "1 hour"}


@pytest.mark.parametrize("pipe, params", list(cases()), ids=lambda v: json.dumps(v, ensure_ascii=False))
def test_every_parameter_combination_is_exact(client, auth, history, pipe, params):
    got = answer(client, auth, pipe, **params)["data"]
    want = getattr(expected, pipe)(history, **params)
    assert expected.same(got, want), (got[:3], want[:3])


def random_windows(count: int = 40, seed: int = 12):
    """Windows with arbitrary second bounds: from one second to six days long, over the
    data's days and the late events', some on an hour or a day at one end only."""
    rng = random.Random(seed)
    for i in range(count):
        origin = START if i % 4 else START - timedelta(days=121)
        start = origin - timedelta(hours=6) + timedelta(seconds=rng.randrange(int(timedelta(days=5).total_seconds())))
        if i % 5 == 1:
            start = start.replace(minute=0, second=0)
        if i % 7 == 2:
            start = start.replace(hour=0, minute=0, second=0)
        end = start + timedelta(seconds=rng.choice([1, 59, 3599, 3601, 86399, 86401, 6 * 86400])
                                + rng.randrange(2 * 86400))
        if i % 6 == 3:
            end = end.replace(minute=0, second=0)
        if end <= start:
            end = start + timedelta(seconds=1)
        yield {"start_date": f"{start:%Y-%m-%d %H:%M:%S}", "end_date": f"{end:%Y-%m-%d %H:%M:%S}"}


def test_random_windows_are_exact(client, auth, history):
    """Days, hours and seconds pieced together (day rollups, hour rollups, events) equal
    Python over every event, absorbed, pending and late alike, whatever the bounds."""
    for window in random_windows():
        for pipe, params in [("top_products", {"limit": 1000}), ("top_products", {"country": ["France", "Japan"]}),
                             ("events_by_country", {}), ("events_by_country", {"event_type": "view"}),
                             ("total_revenue", {}), ("total_revenue", {"interval": "1 minute", "country": "Germany"})]:
            params = {**window, **params}
            got = answer(client, auth, pipe, **params)["data"]
            assert expected.same(got, getattr(expected, pipe)(history, **params)), (pipe, params)


def test_pending_events_are_counted_and_absorbed_ones_are_not_read_again(client, auth, history, built):
    with psycopg.connect(built.database_url) as conn:
        pending = conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]
    assert pending == 1030  # the second batch only: the first was absorbed and deleted
    stats = answer(client, auth, "events_by_country")["statistics"]
    # Read: the pending rows and the daily rollup (at most 6 days x 40 countries x 4 types),
    # not the 3,030 events.
    assert pending <= stats["rows_read"] < pending + 6 * 40 * 4 + 50


def test_late_event_shows_at_once(client, auth, history, built):
    """An event far older than all stored, and one in a rolled-up bucket, with no dbt run."""
    old = {"event_time": "2025-01-15 03:04:05", "event_type": "purchase", "user_id": "u", "product_id": "p-late",
           "category": "toys", "price": 1e7, "quantity": 1, "session_id": "s", "country": "Ísland"}
    rolled = {**old, "event_time": history[0]["event_time"], "product_id": history[0]["product_id"],
              "country": history[0]["country"], "category": history[0]["category"], "price": 3.5}
    post(client, auth, [old, rolled])
    history.extend([old, rolled])
    assert answer(client, auth, "top_products")["data"][0]["product_id"] == "p-late"
    for pipe, params in [("top_products", {"limit": 1000}), ("events_by_country", {}), ("total_revenue", {}),
                         ("total_revenue", {"start_date": "2025-01-01 00:00:00", "end_date": "2025-02-01 00:00:00"})]:
        assert expected.same(answer(client, auth, pipe, **params)["data"], getattr(expected, pipe)(history, **params))


def test_events_committed_during_a_dbt_run(client, auth, history, built, app):
    """Batches acknowledged while `dbt run` works are neither lost nor counted twice."""
    gen = EventGenerator(seed=12, products=200, start=START, span=timedelta(days=5))
    sent, stop = [], threading.Event()

    def writer():
        local = app.test_client()
        while not stop.is_set():
            batch = gen.events(25)
            r = local.post(POST, data=ndjson(batch), headers=auth)
            assert r.status_code == 202
            sent.extend(batch)
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        dbt_ok(built, "run", "--select", "rollups")
    finally:
        stop.set()
        thread.join()
    assert len(sent) > 0
    history.extend(sent)
    for pipe in ("top_products", "events_by_country", "total_revenue"):
        params = {"limit": 1000} if pipe == "top_products" else {}
        assert expected.same(answer(client, auth, pipe, **params)["data"], getattr(expected, pipe)(history, **params))


def test_full_refresh_gives_the_same_answers(client, auth, history, built):
    calls = [(pipe, params) for pipe, params in cases()][::3] + [
        (pipe, {**window, **params}) for window in random_windows(8, seed=3)
        for pipe, params in [("top_products", {"limit": 1000}), ("events_by_country", {}), ("total_revenue", {})]]
    before = [answer(client, auth, pipe, **params)["data"] for pipe, params in calls]
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    after = [answer(client, auth, pipe, **params)["data"] for pipe, params in calls]
    assert after == before  # exactly: revenue is summed as numeric, whatever the order
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0] == 0


def test_incremental_run_reads_only_what_changed(client, auth, history, built):
    """After a run, the next one absorbs just the new pending rows (its cost follows them)."""
    dbt_ok(built, "run", "--select", "rollups")
    state = "select rollup, absorbed::text, rebuilt_at from cartpulse.rollup_state"
    with psycopg.connect(built.database_url) as conn:
        before = {k: (absorbed, rebuilt) for k, absorbed, rebuilt in conn.execute(state).fetchall()}
    post(client, auth, [{**history[1], "user_id": "one-more"}])
    history.append({**history[1], "user_id": "one-more"})
    dbt_ok(built, "run", "--select", "derived_ecommerce_events__country__1d")
    with psycopg.connect(built.database_url) as conn:
        after = {k: (absorbed, rebuilt) for k, absorbed, rebuilt in conn.execute(state).fetchall()}
        pending = conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]
    changed = [k for k in after if after[k] != before.get(k)]
    assert len(changed) == 1 and changed[0].endswith('"derived_ecommerce_events__country__1d"')
    assert after[changed[0]][1] == before[changed[0]][1]  # absorbed, not rebuilt
    assert pending == 1  # still needed by the rollups that did not run
    assert expected.same(answer(client, auth, "events_by_country")["data"], expected.events_by_country(history))
