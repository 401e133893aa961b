"""The result cache (serving/result_cache.py): a worker keeps pipe answers until the data
version moves, and the version moves in the transaction of every change to what the
endpoints answer. Each test checks answers against Python over the events sent, so an
answer kept one write too long fails it."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pytest

import expected
from cartpulse.serving.result_cache import Answer, ResultCache
from support import EVENT, POST, dbt_ok, ndjson

NO_CACHE = {"Cache-Control": "no-cache"}


def read(client, auth, pipe, headers=None, **params):
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers={**auth, **(headers or {})})
    assert r.status_code == 200, r.get_json()
    return r.headers.get("CartPulse-Cache"), r.get_json()


def post(client, auth, events):
    r = client.post(POST, data=ndjson(events), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == len(events), r.get_json()


def version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select cartpulse.data_version('raw')").fetchone()[0]


def events(n: int, start: int = 0) -> list[dict]:
    return [{**EVENT, "product_id": f"p{(start + i) % 7}", "country": ["France", "Spain"][(start + i) % 2],
             "quantity": 1 + (start + i) % 3, "session_id": f"s{start + i}"} for i in range(n)]


def test_a_repeated_read_is_kept_until_an_event_is_acknowledged(client, auth, empty_events):
    """Read, read again (kept: no table read), write, read: the new event is in the very
    next answer, every time."""
    sent = []
    for round_ in range(6):
        batch = events(1 + round_, start=len(sent))
        post(client, auth, batch)
        sent += batch
        for pipe, params in (("top_products", {"limit": 100}), ("events_by_country", {})):
            want = getattr(expected, pipe)(sent, **params)
            cache, first = read(client, auth, pipe, **params)
            assert cache == "miss" and expected.same(first["data"], want), (round_, pipe)
            assert first["statistics"]["rows_read"] > 0
            cache, again = read(client, auth, pipe, **params)
            assert cache == "hit" and again["data"] == first["data"]
            assert again["statistics"]["rows_read"] == 0 and again["statistics"]["bytes_read"] == 0


def test_no_cache_runs_the_query(client, auth, empty_events):
    post(client, auth, events(5))
    read(client, auth, "events_by_country")
    cache, body = read(client, auth, "events_by_country", headers=NO_CACHE)
    assert cache == "miss" and body["statistics"]["rows_read"] > 0
    assert expected.same(body["data"], expected.events_by_country(events(5)))


def test_absorbing_changes_neither_the_version_nor_the_answers(client, auth, empty_events, settings):
    """The absorber moves pending events into the rollups: the answers stay the same, so the
    kept ones stay valid (otherwise the cache would empty every second under ingest)."""
    post(client, auth, events(40))
    kept = [read(client, auth, pipe)[1]["data"] for pipe in ("top_products", "events_by_country", "total_revenue")]
    before = version(settings.database_url)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select cartpulse.absorb()").fetchone()[0] > 0
        assert conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0] == 0
    assert version(settings.database_url) == before
    for pipe, data in zip(("top_products", "events_by_country", "total_revenue"), kept):
        cache, body = read(client, auth, pipe)
        assert cache == "hit" and body["data"] == data  # still kept
        assert read(client, auth, pipe, headers=NO_CACHE)[1]["data"] == data  # and the query agrees


def test_changes_outside_the_api_move_the_version_at_their_commit(settings, empty_events, engine):
    """A statement on a data source's table moves the version (a trigger), even one made in
    psql; not before its commit (a reader cannot see the change yet), and not if it rolls back.
    On Citus the trigger is on the pending table, which every ingest and delete writes (Citus
    will not distribute a table with triggers)."""
    url = settings.database_url
    table = "raw.ecommerce_events_pending" if engine == "citus" else "raw.ecommerce_events"
    for statement in (f"insert into {table} select * from {table} where false",
                      f"update {table} set quantity = quantity where false",
                      *([] if engine == "citus" else [f"delete from {table} where false"]),
                      f"truncate {table}"):
        before = version(url)
        with psycopg.connect(url) as writer:
            writer.execute(statement)
            assert version(url) == before, statement  # uncommitted: not yet
            writer.rollback()
        assert version(url) == before, statement
        with psycopg.connect(url) as writer:
            writer.execute(statement)
        assert version(url) != before, statement


def test_concurrent_writers_do_not_queue_on_the_version(settings):
    """Each writer bumps a row no other transaction holds: a second writer commits while
    the first is still open (with a lock timeout, waiting would be an error here)."""
    url = settings.database_url
    with psycopg.connect(url) as first, psycopg.connect(url) as second:
        first.execute("select cartpulse.touch_data()")
        second.execute("set lock_timeout = '5s'")
        second.execute("select cartpulse.touch_data()")
        second.commit()
        first.commit()


def test_a_dbt_run_moves_the_version(settings):
    """A model's SQL may have changed: dbt's on-run-end hook moves the version."""
    before = version(settings.database_url)
    dbt_ok(settings, "run", "--quiet", "--select", "stg_raw__ecommerce_events_pending")
    assert version(settings.database_url) != before


def test_dropping_a_partition_moves_the_version(client, auth, settings, empty_events, engine):
    """Retention drops old partitions (TimescaleDB: chunks), which no trigger sees."""
    post(client, auth, [{**EVENT, "event_time": "2021-03-04 05:06:07"}])
    before = version(settings.database_url)
    with psycopg.connect(settings.database_url) as conn:
        if engine == "timescaledb":
            conn.execute("select drop_chunks('raw.ecommerce_events', older_than => timestamptz '2022-01-01')")
        else:
            conn.execute("select cartpulse.drop_expired_partitions('raw.ecommerce_events'::regclass,"
                         " now() - timestamptz '2022-01-01')")
        assert conn.execute("select count(*) from raw.ecommerce_events where event_time < '2022-01-01'").fetchone()[0] == 0
    assert version(settings.database_url) != before


def test_the_cache_can_be_turned_off(built, auth):
    from cartpulse.app import create_app

    app = create_app(replace(built, result_cache_entries=0))
    try:
        client = app.test_client()
        for _ in range(2):
            cache, _ = read(client, auth, "events_by_country")
            assert cache is None
    finally:
        app.extensions["cartpulse_stats"].flush()
        app.extensions["cartpulse"].db.dispose()


def test_the_cache_keeps_the_latest_answers_within_its_bounds():
    cache = ResultCache(entries=2, max_rows=3)
    for key in "abc":
        cache.put(key, Answer("v1", [], [(1,)]))
    assert cache.get("a", "v1") is None and cache.get("c", "v1") is not None  # the oldest went
    assert cache.get("c", "v2") is None  # another version: not this answer
    cache.put("big", Answer("v1", [], [(1,)] * 4))
    assert cache.get("big", "v1") is None  # over max_rows: never kept


@pytest.mark.parametrize("pipe", ["top_products", "total_revenue"])
def test_parameters_are_part_of_the_key(client, auth, empty_events, pipe):
    post(client, auth, events(12))
    read(client, auth, pipe)
    params = {"limit": 2} if pipe == "top_products" else {"interval": "1 day"}
    cache, body = read(client, auth, pipe, **params)
    assert cache == "miss"
    cache, again = read(client, auth, pipe, **params)
    assert cache == "hit" and again["data"] == body["data"]
    if pipe == "top_products":
        assert expected.same(body["data"], expected.top_products(events(12), limit=2))
