"""Compression and retention follow COMPRESS_AFTER and RETENTION (storage.apply_policies).

Retention drops raw events; the rollups keep what they absorbed, so all-time answers
and whole days stay, while the partial days of an old range (read from the events
table) go. On TimescaleDB an event may land in a compressed chunk and must be in the
very next answer, like any other (docs/realtime.md).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.storage.schema import TIMESCALEDB, create_storage
from support import dbt_ok, ndjson, truncate_events


@pytest.fixture
def timescaledb(engine):
    """Skip on plain PostgreSQL; listed before ``policies`` so nothing is set up first."""
    if engine != TIMESCALEDB:
        pytest.skip("TimescaleDB only (CARTPULSE_TEST_DATABASE_URL at a TimescaleDB server)")


@pytest.fixture
def policies(settings, engine):
    """apply(compress_after=…, retention=…): run create_storage with those settings
    (absent: unset). Afterwards: no policies, no events, no compression, as the other
    tests expect."""

    def apply(compress_after=None, retention=None):
        return create_storage(settings.database_url,
                              replace(settings, compress_after=compress_after, retention=retention))

    yield apply
    apply()
    truncate_events(settings.database_url)
    if engine == TIMESCALEDB:
        with psycopg.connect(settings.database_url) as conn:
            conn.execute("alter table raw.ecommerce_events set (timescaledb.compress = false)")


def jobs(url) -> dict[str, tuple[int, dict]]:
    with psycopg.connect(url) as conn:
        return {proc: (job, config) for job, proc, config in conn.execute(
            "select job_id, proc_name, config from timescaledb_information.jobs"
            " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'").fetchall()}


def post(client, auth, events):
    r = client.post("/v0/events?name=ecommerce_events", data=ndjson(events), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == len(events), r.get_json()


def answer(client, auth, pipe, **params):
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_policies_follow_the_settings(timescaledb, settings, policies):
    """Set, unchanged (same jobs), changed (replaced), unset (removed). (A typo stops
    the start in config.py: tests/test_settings.py.)"""
    url = settings.database_url
    policies(compress_after="7 days", retention="400 days")
    first = jobs(url)
    assert first["policy_compression"][1]["compress_after"] == "7 days"
    assert first["policy_retention"][1]["drop_after"] == "400 days"
    with psycopg.connect(url) as conn:
        assert conn.execute("select segmentby, orderby from timescaledb_information.hypertable_compression_settings"
                            " where hypertable = 'raw.ecommerce_events'::regclass").fetchone() == ("event_type",
                                                                                                  "event_time")
    policies(compress_after="7 days", retention="400 days")
    assert jobs(url) == first
    policies(compress_after="3 days")
    now = jobs(url)
    assert set(now) == {"policy_compression"} and now["policy_compression"][1]["compress_after"] == "3 days"
    policies()
    assert jobs(url) == {}


def test_retention_drops_raw_events_and_rollups_keep_them(client, auth, settings, engine, policies):
    """Events older than RETENTION leave the events table (TimescaleDB: the policy's
    job; PostgreSQL: create_storage drops their months); what the rollups absorbed stays."""
    truncate_events(settings.database_url)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    old_day = (now - timedelta(days=400)).replace(hour=0, minute=0, second=0)
    gen = EventGenerator(seed=21, products=20)
    old = [gen.event(when=old_day + timedelta(hours=6 + i % 12, minutes=i)) for i in range(60)]
    recent = [gen.event(when=now - timedelta(days=1, minutes=i)) for i in range(40)]
    post(client, auth, old + recent)
    # The rollups these answers use absorb both.
    dbt_ok(settings, "run", "--select", "rollup_purchases_by_product", "rollup_events_daily")

    policies(retention="180 days")
    if engine == TIMESCALEDB:
        job = jobs(settings.database_url)["policy_retention"][0]
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("call run_job(%s)", [job])
    # (on PostgreSQL create_storage itself dropped the old months)
    with psycopg.connect(settings.database_url) as conn:
        kept = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
    assert kept == len(recent)

    everything = old + recent
    whole_day = {"start_date": old_day.strftime("%Y-%m-%d"),
                 "end_date": (old_day + timedelta(days=1)).strftime("%Y-%m-%d")}
    for pipe, params in [("top_products", {"limit": 1000}), ("events_by_country", {}),
                         ("events_by_country", whole_day)]:
        assert expected.same(answer(client, auth, pipe, **params), getattr(expected, pipe)(everything, **params))
    # A range whose edges fall in the dropped days keeps their whole hours (hourly
    # rollups) and lost their partial hours, read from the events (documented).
    stamp = "%Y-%m-%d %H:%M:%S"
    partial = {"start_date": (old_day + timedelta(hours=6, minutes=30)).strftime(stamp),
               "end_date": (old_day + timedelta(hours=17, minutes=30)).strftime(stamp)}
    whole_hours = {"start_date": (old_day + timedelta(hours=7)).strftime(stamp),
                   "end_date": (old_day + timedelta(hours=17)).strftime(stamp)}
    kept_part = expected.events_by_country(everything, **whole_hours)
    assert kept_part and kept_part != expected.events_by_country(everything, **partial)
    assert answer(client, auth, "events_by_country", **partial) == kept_part

    # A late event older than the retention is still stored (its month or chunk comes
    # back; on PostgreSQL the API's cache of existing months is stale) and counted.
    late = {**old[0], "user_id": "late"}
    post(client, auth, [late])
    everything.append(late)
    assert expected.same(answer(client, auth, "events_by_country"), expected.events_by_country(everything))


def test_a_late_event_into_a_compressed_chunk_shows_at_once(timescaledb, client, auth, settings, policies):
    """Compressed chunks take late inserts; the edges read them from the chunk's
    uncompressed part, so the event is in the very next answer, with no dbt run."""
    url = settings.database_url
    truncate_events(url)
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    history = EventGenerator(seed=22, products=30, start=start, span=timedelta(days=3)).events(600)
    post(client, auth, history)
    policies(compress_after="1 day")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("call run_job(%s)", [jobs(url)["policy_compression"][0]])
        compressed = conn.execute(
            "select bool_and(is_compressed) from timescaledb_information.chunks"
            " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'").fetchone()
    assert compressed == (True,)

    late = {"event_time": "2026-10-02 13:30:00", "event_type": "purchase", "user_id": "late", "product_id": "p-late",
            "category": "toys", "price": 1e6, "quantity": 1, "session_id": "s", "country": "France"}
    post(client, auth, [late])
    history.append(late)
    edges = {"start_date": "2026-10-02 13:17:45", "end_date": "2026-10-03 08:00:01"}
    calls = [("top_products", {}), ("top_products", {**edges, "country": "France"}), ("events_by_country", edges),
             ("total_revenue", {**edges, "interval": "1 hour"}), ("total_revenue", {"interval": "1 day"})]

    def exact():
        for pipe, params in calls:
            assert expected.same(answer(client, auth, pipe, **params), getattr(expected, pipe)(history, **params)), pipe

    exact()
    assert answer(client, auth, "top_products")[0]["product_id"] == "p-late"
    with psycopg.connect(url) as conn:  # the chunk took the row and stays compressed
        assert conn.execute("select is_compressed from timescaledb_information.chunks where hypertable_name ="
                            " 'ecommerce_events' and range_start <= '2026-10-02 13:30+00'"
                            " and range_end > '2026-10-02 13:30+00'").fetchone() == (True,)
