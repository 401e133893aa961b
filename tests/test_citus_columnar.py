"""COMPRESS_AFTER on Citus: old monthly partitions in columnar storage (docs/citus.md).

Runs when the tests' database is on a Citus coordinator; skipped otherwise. Events span
five months up to the current one; COMPRESS_AFTER is chosen so that the three oldest
months are past it. The catalog is read on the coordinator and on the workers' shards,
every endpoint (with ranges across the heap/columnar boundary) is compared with Python
before and after the conversion, and late events, deletes, replaces, erasures and
truncates of rows in columnar months are checked exact, with nothing else lost.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from test_absorb import in_every_state, post
from test_erase import _env

import expected
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.ops.scheduler import Scheduler
from cartpulse.project.datasources import for_settings
from cartpulse.storage import columnar
from cartpulse.storage.schema import create_storage
from support import CARTPULSE, dbt_ok, ndjson, truncate_events

PERSON = "u-columnar-erased"
NOW = datetime.now(timezone.utc)
CURRENT = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month(back: int) -> datetime:
    """The first instant of the month ``back`` months before the current one."""
    y, m = divmod(CURRENT.year * 12 + CURRENT.month - 1 - back, 12)
    return datetime(y, m + 1, 1, tzinfo=timezone.utc)


def name(back: int) -> str:
    return f"ecommerce_events_{month(back):%Y}m{month(back):%m}"


#: Past it: the months 4, 3 and 2 back (the one 2 back ended when the one 1 back began).
COMPRESS_AFTER = f"{(NOW - month(1)).days} days"
OLD, NEW = [name(b) for b in (4, 3, 2)], [name(b) for b in (1, 0)]
FMT = "%Y-%m-%d %H:%M:%S"
#: Ranges with unaligned ends, across the boundary between columnar and heap months.
RANGES = [{}, {"start_date": (month(2) + timedelta(days=20, minutes=7)).strftime(FMT),
               "end_date": (month(1) + timedelta(days=3, minutes=31)).strftime(FMT)},
          {"start_date": (month(4) + timedelta(hours=5, minutes=3)).strftime(FMT),
           "end_date": (month(3) + timedelta(days=9, hours=2)).strftime(FMT)}]
PIPES = {"top_products": expected.top_products, "events_by_country": expected.events_by_country,
         "total_revenue": expected.total_revenue}


@pytest.fixture(scope="module", autouse=True)
def on_citus(engine):
    if engine != "citus":
        pytest.skip("needs a Citus coordinator: CARTPULSE_TEST_DATABASE_URL=<coordinator URL> (README)")


def methods(url: str) -> dict[str, str]:
    """Each monthly partition of the events table and its access method, on the coordinator."""
    with psycopg.connect(url) as conn:
        return dict(conn.execute(
            "select c.relname, a.amname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
            " join pg_am a on a.oid = c.relam where i.inhparent = 'raw.ecommerce_events'::regclass").fetchall())


def shard_methods(url: str) -> dict[str, set[str]]:
    """Each partition's shards' access methods, read on the workers that hold them."""
    with psycopg.connect(url) as conn:
        shards = conn.execute(
            "select s.table_name::text, s.shardid, s.nodename, s.nodeport from citus_shards s"
            " join pg_inherits i on i.inhrelid = s.table_name where i.inhparent = 'raw.ecommerce_events'::regclass"
        ).fetchall()
    found: dict[str, set[str]] = {}
    by_node: dict[tuple, list] = {}
    for table, shard, host, port in shards:
        by_node.setdefault((host, port), []).append((table.split(".")[-1], f"{table.split('.')[-1]}_{shard}"))
    assert len(by_node) >= 2, by_node  # shards on at least two workers
    for (host, port), wanted in by_node.items():
        with psycopg.connect(make_conninfo(url, host=host, port=port)) as conn:
            conn.execute("set citus.override_table_visibility = off")  # shards are hidden from pg_class
            got = dict(conn.execute("select c.relname, a.amname from pg_class c join pg_am a on a.oid = c.relam"
                                    " where c.relname = any(%s)", [[s for _, s in wanted]]).fetchall())
        for table, shard in wanted:
            found.setdefault(table, set()).add(got[shard])  # every shard is there
    return found


def assert_exact(client, auth, events):
    for pipe, compute in PIPES.items():
        for params in RANGES:
            r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
            assert r.status_code == 200, r.get_json()
            assert expected.same(r.get_json()["data"], compute(events, **params)), (pipe, params)


def version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("select cartpulse.data_version('raw')").fetchone()[0]


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]


@pytest.fixture(scope="module")
def compress(settings):
    """compress(interval or None): create_storage with COMPRESS_AFTER so; at the end,
    every partition back to heap and no events, as the other modules expect."""
    def apply(after):
        create_storage(settings.database_url, replace(settings, compress_after=after))

    yield apply
    apply(None)
    truncate_events(settings.database_url)
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for part, method in methods(settings.database_url).items():
            if method == "columnar":
                conn.execute("select alter_table_set_access_method(%s::regclass, 'heap')", [f"raw.{part}"])


@pytest.fixture(scope="module")
def history(app, built, auth, compress):
    """Events in the five months, some absorbed by `dbt run`, some by absorb(), some pending;
    then the three oldest months converted to columnar."""
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=17, products=40, start=month(4), span=NOW - month(4))
    events = gen.events(1500)
    for e in events[::50]:  # the person erased below, in every month
        e["user_id"] = PERSON
    in_every_state(client, auth, built, events[:700], events[700:1200], events[1200:])
    assert {name(b) for b in range(5)} <= set(methods(built.database_url))
    assert_exact(client, auth, events)
    before = version(built.database_url)
    compress(COMPRESS_AFTER)
    assert version(built.database_url) != before  # cached answers are recomputed (and equal)
    return events


def test_old_partitions_become_columnar_and_newer_ones_stay_heap(client, auth, history, built, compress):
    url = built.database_url
    got = methods(url)
    assert {p: got[p] for p in OLD + NEW} == {**dict.fromkeys(OLD, "columnar"), **dict.fromkeys(NEW, "heap")}
    shards = shard_methods(url)
    assert {p: shards[p] for p in OLD + NEW} == {**{p: {"columnar"} for p in OLD}, **{p: {"heap"} for p in NEW}}
    assert stored(url) == len(history)
    assert_exact(client, auth, history)
    # A second pass (each refresh runs one) finds nothing to do; unset, nothing changes back.
    with psycopg.connect(url, autocommit=True) as conn:
        source = for_settings(built)["ecommerce_events"]
        assert columnar.compress_old_partitions(conn, source, COMPRESS_AFTER) == []
    compress(None)
    assert methods(url) == got
    compress(COMPRESS_AFTER)


def test_the_scheduled_refresh_converts_a_month_that_aged_past_it(client, auth, history, built):
    """The refresh converts too (ops/scheduler.py), not only a start."""
    url = built.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select alter_table_set_access_method(%s::regclass, 'heap')", [f"raw.{name(4)}"])
    assert methods(url)[name(4)] == "heap"
    result = Scheduler(replace(built, compress_after=COMPRESS_AFTER), url).run_once()
    assert result.status == "success", result.error
    assert all(methods(url)[p] == "columnar" for p in OLD) and methods(url)[name(1)] == "heap"
    assert_exact(client, auth, history)


def test_a_late_event_into_a_columnar_month_is_stored_and_counted(client, auth, history, built):
    gen = EventGenerator(seed=18, products=40, start=month(3), span=timedelta(days=20))
    late = gen.events(25)
    post(client, auth, late)
    history += late
    assert_exact(client, auth, history)
    assert methods(built.database_url)[name(3)] == "columnar"
    assert stored(built.database_url) == len(history)


def test_deletes_replaces_and_erasures_in_columnar_months_are_exact(client, auth, history, built, compress):
    url = built.database_url
    # A delete whose rows are in one columnar month (and a heap one): only that month
    # goes back to heap; the other columnar months are untouched, and nothing else is lost.
    target = month(3) + timedelta(days=2)
    within = [e for e in history if target <= expected._time(e["event_time"]) < target + timedelta(days=5)]
    country = max({e["country"] for e in within}, key=lambda c: sum(e["country"] == c for e in within))
    gone = lambda e: e in within and e["country"] == country  # noqa: E731
    condition = (f"country = '{country}' and event_time >= '{target:{FMT}}'"
                 f" and event_time < '{target + timedelta(days=5):{FMT}}'")
    r = client.post("/v0/datasources/ecommerce_events/delete", data={"delete_condition": condition}, headers=auth)
    assert r.status_code == 200, r.get_json()
    history[:] = [e for e in history if not gone(e)]
    assert stored(url) == len(history)
    assert_exact(client, auth, history)
    got = methods(url)
    assert (got[name(4)], got[name(3)], got[name(2)]) == ("columnar", "heap", "columnar")
    compress(COMPRESS_AFTER)  # the next pass converts it again
    assert methods(url)[name(3)] == "columnar"

    # A delete matching nothing in columnar months (a product absent from them) touches none.
    r = client.post("/v0/datasources/ecommerce_events/delete", data={"delete_condition": "product_id = 'nowhere'"},
                    headers=auth)
    assert r.status_code == 200, r.get_json()
    assert all(methods(url)[p] == "columnar" for p in OLD)

    # A replace with a condition on a columnar month.
    start, end = month(4) + timedelta(days=10), month(4) + timedelta(days=12)
    inside = lambda e: start <= expected._time(e["event_time"]) < end  # noqa: E731
    fresh = [e for e in EventGenerator(seed=19, products=40, start=start, span=end - start).events(40)]
    condition = f"event_time >= '{start:{FMT}}' and event_time < '{end:{FMT}}'"
    r = client.post("/v0/datasources", query_string={"name": "ecommerce_events", "mode": "replace",
                                                     "format": "ndjson", "replace_condition": condition},
                    data=ndjson(fresh), headers=auth)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["replaced_rows"] == sum(map(inside, history))
    history[:] = [e for e in history if not inside(e)] + fresh
    assert stored(url) == len(history)
    assert_exact(client, auth, history)
    compress(COMPRESS_AFTER)

    # An erasure of a person whose events are in every month.
    person = PERSON
    assert {expected._time(e["event_time"]) >= month(1) for e in history if e["user_id"] == person} == {True, False}
    done = subprocess.run([CARTPULSE, "erase", "--user", person], env=_env(built), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"] == sum(e["user_id"] == person for e in history)
    history[:] = [e for e in history if e["user_id"] != person]
    assert stored(url) == len(history)
    assert_exact(client, auth, history)
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    assert_exact(client, auth, history)
    compress(COMPRESS_AFTER)
    assert all(methods(url)[p] == "columnar" for p in OLD)


def test_a_conversion_waits_for_a_batch_into_its_month(client, auth, history, built, compress):
    """A batch in flight into a month being converted is not lost: the conversion waits
    for the month's lock the batch holds (storage/columnar.py), then copies its rows too."""
    url = built.database_url
    source = for_settings(built)["ecommerce_events"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select alter_table_set_access_method(%s::regclass, 'heap')", [f"raw.{name(2)}"])
    row = EventGenerator(seed=20, products=40, start=month(2), span=timedelta(days=3)).event()
    when = datetime.strptime(row["event_time"], FMT).replace(tzinfo=timezone.utc)
    converted = threading.Event()
    with psycopg.connect(url) as writer:  # the writer's transaction, as writer.copy_batch runs it
        with writer.cursor() as cur:
            columnar.lock_months(cur, source, {(when.year, when.month)})
        thread = threading.Thread(target=lambda: (compress(COMPRESS_AFTER), converted.set()))
        thread.start()
        with psycopg.connect(url) as watcher:  # until the conversion waits for that lock
            for _ in range(1200):
                waiting = watcher.execute("select count(*) from pg_locks where locktype = 'advisory'"
                                          " and not granted").fetchone()[0]
                if waiting:
                    break
                watcher.execute("select pg_sleep(0.05)")
        assert waiting and not converted.is_set()
        columns = ", ".join(row)
        for table in ("raw.ecommerce_events", "raw.ecommerce_events_pending"):
            writer.execute(f"insert into {table} ({columns}) values ({', '.join(['%s'] * len(row))})",
                           list(row.values()))
        writer.commit()
    thread.join(300)
    assert converted.is_set() and methods(url)[name(2)] == "columnar"
    history.append(row)
    assert stored(url) == len(history)
    assert_exact(client, auth, history)


def test_a_delete_that_cannot_take_a_columnar_month_back_in_time_is_a_503(client, auth, history, built):
    """A read holding the table keeps the month from going back to heap: after the
    conversion's lock timeout, a 503 that names columnar storage, and nothing deleted."""
    url = built.database_url
    condition = f"event_time >= '{month(3):{FMT}}' and event_time < '{month(3) + timedelta(days=3):{FMT}}'"
    with psycopg.connect(url) as reader:  # its transaction holds the table until it ends
        reader.execute("select count(*) from raw.ecommerce_events where event_time < %s", [month(1)])
        r = client.post("/v0/datasources/ecommerce_events/delete", data={"delete_condition": condition}, headers=auth)
    assert r.status_code == 503 and "columnar" in r.get_json()["error"], r.get_json()
    assert r.headers["Retry-After"] == "5"
    assert stored(url) == len(history) and methods(url)[name(3)] == "columnar"
    assert_exact(client, auth, history)


def test_truncate_empties_columnar_months_too(client, auth, history, built):
    r = client.post("/v0/datasources/ecommerce_events/truncate", headers=auth)
    assert r.status_code == 200, r.get_json()
    assert stored(built.database_url) == 0
    assert_exact(client, auth, [])
    assert all(methods(built.database_url)[p] == "columnar" for p in OLD)
    post(client, auth, history[:50])  # and ingest goes on, into columnar months too
    assert_exact(client, auth, history[:50])
