"""cartpulse.absorb(): pending events folded into the rollups without dbt, exactly once.

The function runs the statement each rollup's materialization stored (the one an
incremental `dbt run` runs), for every rollup under one snapshot (macros/realtime/absorb.sql).
Each test checks every endpoint against Python over all the events sent, after the
absorption, so an event counted twice or missed fails it; and a full refresh must give
the very same answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import CARTPULSE, EVENT, dbt_ok, ndjson, truncate_events

POST = "/v0/events?name=ecommerce_events"
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
CALLS = [("top_products", {"limit": 1000}), ("top_products", {"country": "France", "limit": 1000}),
         ("events_by_country", {}), ("events_by_country", {"event_type": "purchase"}),
         ("total_revenue", {}), ("total_revenue", {"interval": "1 day", "country": "Germany"}),
         ("total_revenue", {"start_date": "2026-06-01", "end_date": "2026-07-01"})]
COLUMNS = list(EVENT)


def post(client, auth, events):
    r = client.post(POST, data=ndjson(events), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == len(events), r.get_json()


def in_every_state(client, auth, built, first: list[dict], second: list[dict], third: list[dict]) -> list[dict]:
    """Events in every state a read merges: ``first`` absorbed by `dbt run`, ``second``
    by `cartpulse.absorb()`, ``third`` left pending. All of them, in that order."""
    post(client, auth, first)
    dbt_ok(built, "run", "--select", "rollups")
    post(client, auth, second)
    absorb(built.database_url)
    post(client, auth, third)
    return first + second + third


def answers(client, auth) -> list[list[dict]]:
    out = []
    for pipe, params in CALLS:
        r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
        assert r.status_code == 200, r.get_json()
        out.append(r.get_json()["data"])
    return out


def assert_exact(client, auth, history):
    for (pipe, params), got in zip(CALLS, answers(client, auth)):
        want = getattr(expected, pipe)(history, **params)
        assert expected.same(got, want), (pipe, params, got[:3], want[:3])


def assert_exact_absorbed_and_rebuilt(client, auth, built, history) -> None:
    """Every answer equals Python's over ``history`` at once and again once everything
    pending is absorbed, and a full rebuild of the rollups changes none of them."""
    assert_exact(client, auth, history)
    absorb(built.database_url)
    assert_exact(client, auth, history)
    before = answers(client, auth)
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    assert answers(client, auth) == before


def pending(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]


def absorb(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("select cartpulse.absorb()").fetchone()[0]


@pytest.fixture
def no_autovacuum(built):
    """No autovacuum of the pending table meanwhile: CartPulse's own VACUUM skips a table
    another VACUUM holds (SKIP_LOCKED), and these tests count the VACUUMs it ran."""
    alter = "alter table raw.ecommerce_events_pending set (autovacuum_enabled = {})"
    with psycopg.connect(built.database_url, autocommit=True) as conn:
        conn.execute(alter.format("false"))
    yield
    with psycopg.connect(built.database_url, autocommit=True) as conn:
        conn.execute(alter.format("true"))


def insert(conn, events: list[dict]) -> None:
    """What the writer does for a batch: into the table and its pending twin."""
    names, marks = ", ".join(COLUMNS), ", ".join(["%s"] * len(COLUMNS))
    with conn.cursor() as cur:
        for table in ("raw.ecommerce_events", "raw.ecommerce_events_pending"):
            cur.executemany(f"insert into {table} ({names}) values ({marks})", [[e[c] for c in COLUMNS] for e in events])


@pytest.fixture(scope="module")
def history(app, built, auth):
    """A first batch absorbed by `dbt run`, then a second (late events and events for
    buckets already rolled up among them) left pending."""
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=21, products=100, start=START, span=timedelta(days=4))
    first = gen.events(800)
    post(client, auth, first)
    dbt_ok(built, "run", "--select", "rollups")
    late = [gen.event(when=START - timedelta(days=110, minutes=i)) for i in range(20)]
    second = gen.events(300) + late + [{**e, "user_id": "again"} for e in first[:100]]
    post(client, auth, second)
    return first + second


def test_absorb_folds_every_pending_event_in_once(client, auth, history, built):
    url = built.database_url
    before = answers(client, auth)
    waiting = pending(url)
    assert waiting == 420
    assert absorb(url) == waiting and pending(url) == 0
    assert answers(client, auth) == before  # the same answers, now from the rollups alone
    assert_exact(client, auth, history)
    assert absorb(url) == 0 and answers(client, auth) == before  # nothing absorbed twice


def test_a_transaction_open_during_absorption_is_counted_once(client, auth, history, built):
    """A batch whose transaction began before the absorption's snapshot and committed
    after it is not absorbed by it: it is read as pending, then absorbed by the next."""
    url = built.database_url
    late_commit = [{**EVENT, "user_id": f"open-{i}", "product_id": "p-open", "price": 7.25} for i in range(3)]
    with psycopg.connect(url) as writer:
        insert(writer, late_commit)
        absorb(url)  # the writer's transaction is still open
        writer.commit()
    history.extend(late_commit)
    assert pending(url) == 3
    assert_exact(client, auth, history)
    assert absorb(url) == 3 and pending(url) == 0
    assert_exact(client, auth, history)


@pytest.mark.parametrize("ending", ["terminated", "left to finish"])
def test_an_absorber_killed_mid_way_loses_and_doubles_nothing(client, auth, history, built, ending):
    """The absorbing process is SIGKILLed while its transaction waits (for the pending
    table, which the test holds). Its backend is then terminated (it rolls back), or left
    to go on alone (it commits, or rolls back when it notices its client is gone). Either
    way every answer stays exact, and the next absorption takes what is left."""
    url = built.database_url
    extra = [{**EVENT, "user_id": f"kill-{ending}-{i}", "country": "Kenya"} for i in range(5)]
    post(client, auth, extra)
    history.extend(extra)
    killed_while_waiting(url, [sys.executable, "-c", "import psycopg, sys;"
                               " psycopg.connect(sys.argv[1], autocommit=True, application_name='doomed-absorber')"
                               ".execute('select cartpulse.absorb()')", url],
                         "doomed-absorber", terminate=ending == "terminated")
    assert_exact(client, auth, history)
    absorb(url)
    assert pending(url) == 0
    assert_exact(client, auth, history)


def killed_while_waiting(url: str, argv: list[str], application: str, terminate: bool, env=None) -> None:
    """Run ``argv`` while the test holds the pending table, SIGKILL it once its backend
    (``application``) waits for that lock, terminate the backend too when ``terminate``
    (else it goes on alone), release the table and wait until the backend is gone."""
    with psycopg.connect(url) as holder:
        holder.execute("lock table raw.ecommerce_events_pending in share mode")
        process = subprocess.Popen(argv, env=env)
        backend = wait_for_lock_wait(url, application)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if terminate:
            holder.execute("select pg_terminate_backend(%s::int)", [backend])
        holder.commit()  # releases the pending table
    wait_until_gone(url, backend)


def wait_for_lock_wait(url: str, application: str) -> int:
    """The backend pid of ``application`` once it waits for a lock (polled: the wait is
    what the test needs before it kills, and PostgreSQL reports nothing to wait on)."""
    with psycopg.connect(url, autocommit=True) as conn:  # each poll its own statistics snapshot
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute("select pid from pg_stat_activity where application_name = %s"
                               " and wait_event_type = 'Lock'", [application]).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"{application} never waited for the lock")


def wait_until_gone(url: str, backend: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while conn.execute("select 1 from pg_stat_activity where pid = %s", [backend]).fetchone():
            assert time.monotonic() < deadline, "the absorber's backend did not end"
            time.sleep(0.05)


def test_full_refresh_equals_absorbed(client, auth, history, built):
    absorb(built.database_url)
    before = answers(client, auth)
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    assert answers(client, auth) == before


def test_a_large_batch_is_absorbed_before_its_answer(built, auth, history, no_autovacuum):
    """With ABSORB_AFTER_ROWS, the request that writes a large batch absorbs it before it
    answers: the reads that follow aggregate no pending rows, and scan none of the dead
    ones it left (it vacuums the pending table: the benchmark's slow reads right after a
    bulk load scanned a million of them)."""
    from cartpulse.app import create_app

    app = create_app(replace(built, absorb_after_rows=50))
    vacuums = "select vacuum_count from pg_stat_user_tables where relid = 'raw.ecommerce_events_pending'::regclass"
    try:
        client = app.test_client()
        small, large = ([{**EVENT, "user_id": f"{kind}-{i}"} for i in range(n)] for kind, n in (("small", 49), ("large", 50)))
        post(client, auth, small)
        assert pending(built.database_url) >= 49  # under the threshold: left to the absorber
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            before = conn.execute(vacuums).fetchone()[0]
        post(client, auth, large)
        assert pending(built.database_url) == 0
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            assert conn.execute(vacuums).fetchone()[0] > before
        history.extend(small + large)
        assert_exact(client, auth, history)
    finally:
        app.extensions["cartpulse_stats"].flush()
        app.extensions["cartpulse"].db.dispose()


def test_the_scheduler_absorbs_between_dbt_runs(client, auth, history, built):
    """`cartpulse scheduler` absorbs every ABSORB_SECONDS with no dbt run in between."""
    extra = [{**EVENT, "user_id": f"scheduled-{i}", "country": "Chile"} for i in range(7)]
    post(client, auth, extra)
    history.extend(extra)
    env = {**os.environ, "DATABASE_URL": built.database_url, "REFRESH_SECONDS": "3600", "ABSORB_SECONDS": "0.2",
           "DBT_TARGET_PATH": str(built.target_dir), "CARTPULSE_STATE_DIR": str(built.state_dir)}
    scheduler = subprocess.Popen([CARTPULSE, "scheduler", "--skip-first"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while pending(built.database_url):
            assert time.monotonic() < deadline and scheduler.poll() is None, "the scheduler did not absorb"
            time.sleep(0.1)
    finally:
        scheduler.terminate()
        output = scheduler.communicate(timeout=60)[0]
    assert "refresh succeeded" not in output  # absorbed without dbt
    assert_exact(client, auth, history)


def test_the_absorber_vacuums_what_an_absorption_left_dead(client, auth, history, built, no_autovacuum):
    """A bulk load absorbed by its own request leaves its pending rows dead, which every
    read then scanned (the benchmark's slow reads after a 1M-row import). The absorber
    vacuums a pending table or rollup holding many dead rows, whoever absorbed them."""
    import threading

    from cartpulse.ops.absorber import Absorber
    from cartpulse.storage.absorb import DEAD_ROWS

    url = built.database_url
    extra = [{**EVENT, "user_id": f"dead-{i}", "country": "Peru"} for i in range(DEAD_ROWS + 200)]
    with psycopg.connect(url) as conn:
        insert(conn, extra)
    history.extend(extra)
    vacuums = "select vacuum_count from pg_stat_user_tables where relid = 'raw.ecommerce_events_pending'::regclass"
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute(vacuums).fetchone()[0]
        assert conn.execute("select cartpulse.absorb()").fetchone()[0] >= len(extra)  # as a bulk load's request does
        conn.execute("select pg_stat_force_next_flush()")  # its dead rows in the statistics when it ends
    absorber = Absorber(url, 1.0, threading.Event())
    try:
        assert absorber.once() == 0  # nothing left to absorb, and the VACUUM is due
    finally:
        if absorber.conn is not None:
            absorber.conn.close()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(vacuums).fetchone()[0] > before
    assert_exact(client, auth, history)
