"""The events table: partitioned by month (a hypertable on TimescaleDB), any month accepted."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest

from cartpulse.config import SettingError
from cartpulse.storage.schema import POSTGRES, TIMESCALEDB, create_storage
from support import ndjson, truncate_events

EVENT = {"event_type": "view", "user_id": "u1", "product_id": "p1", "category": "shoes", "price": 1.0,
         "quantity": 1, "session_id": "s1", "country": "France"}


def test_any_month_gets_stored(client, auth, settings):
    truncate_events(settings.database_url)
    times = ["2019-03-10 08:00:00", "2031-12-31 23:59:59", "1999-12-31 23:59:59", "2026-02-01 00:00:00"]
    r = client.post("/v0/events?name=ecommerce_events", data=ndjson([{**EVENT, "event_time": t} for t in times]),
                    headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == 4
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute("select to_char(event_time at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
                              " from raw.ecommerce_events order by 1").fetchall()
    assert [s[0] for s in stored] == sorted(times)


def test_layout_matches_the_engine(settings, engine):
    with psycopg.connect(settings.database_url) as conn:
        if engine == TIMESCALEDB:
            dims = conn.execute("select column_name, time_interval from timescaledb_information.dimensions"
                                " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'").fetchall()
            assert [d[0] for d in dims] == ["event_time"]
            assert dims[0][1] == timedelta(days=1)  # CHUNK_INTERVAL's default
        else:
            kind, key = conn.execute(
                "select p.partstrat, pg_get_partkeydef(c.oid) from pg_partitioned_table p"
                " join pg_class c on c.oid = p.partrelid where c.oid = 'raw.ecommerce_events'::regclass").fetchone()
            assert kind == "r" and key == "RANGE (event_time)"
            bounds = conn.execute(
                "select pg_get_expr(c.relpartbound, c.oid) from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = 'raw.ecommerce_events'::regclass and c.relname = 'ecommerce_events_2019m03'"
            ).fetchone()
            assert bounds and "2019-03-01" in bounds[0] and "2019-04-01" in bounds[0]
        indexdefs = [d for (d,) in conn.execute("select indexdef from pg_indexes where schemaname = 'raw'"
                                                " and tablename = 'ecommerce_events'")]
        assert [d for d in indexdefs if d.endswith("(event_time, product_id)")], indexdefs  # the sorting key


def test_create_storage_is_idempotent(settings, engine):
    assert create_storage(settings.database_url, settings) == engine


def test_forcing_the_other_engine_is_refused_naming_the_setting(settings, engine):
    """CARTPULSE_ENGINE applies when storage is provisioned; it cannot make the service
    and the models disagree: postgres where the extension is installed (the models would
    still see TimescaleDB), or timescaledb where it cannot be created, stops the start."""
    other = POSTGRES if engine == TIMESCALEDB else TIMESCALEDB
    with pytest.raises(SettingError, match=f"^CARTPULSE_ENGINE={other}: "):
        create_storage(settings.database_url, replace(settings, engine=other))
    assert create_storage(settings.database_url, replace(settings, engine=engine)) == engine


def test_a_changed_chunk_interval_applies_to_new_chunks(settings, engine):
    """CHUNK_INTERVAL is applied at every start, not only when the hypertable is created."""
    if engine != TIMESCALEDB:
        pytest.skip("chunks are TimescaleDB's; PostgreSQL partitions by month")
    query = ("select time_interval from timescaledb_information.dimensions"
             " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'")
    create_storage(settings.database_url, replace(settings, chunk_interval="6 hours"))
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute(query).fetchone()[0] == timedelta(hours=6)
    create_storage(settings.database_url, settings)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute(query).fetchone()[0] == timedelta(days=1)


@pytest.mark.parametrize("month", ["2024-02-01", "2024-02-15"])
def test_partition_creation_is_idempotent(settings, month):
    with psycopg.connect(settings.database_url) as conn:
        for _ in range(2):
            conn.execute("select cartpulse.ensure_partitions('raw.ecommerce_events', array[%s::timestamptz])", [month])
