"""CartPulse on a Citus cluster (a coordinator and at least two workers), docs/citus.md.

Runs when the tests' database is on a Citus coordinator: CARTPULSE_TEST_DATABASE_URL
pointing at one (README: "Testing on a Citus cluster"); skipped otherwise. The layout
is checked against the catalog, answers under concurrent ingest across the workers are
compared with Python, and a worker restarted during ingest loses nothing acknowledged.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import expected
from cartpulse.storage import citus
from support import truncate_events

BASE = datetime(2026, 11, 2, tzinfo=timezone.utc)
PIPES = {"top_products": expected.top_products, "events_by_country": expected.events_by_country,
         "total_revenue": expected.total_revenue}
#: A range with unaligned ends: its edges read the distributed events table, its middle
#: the rollups (macros/ranges.sql).
RANGE = {"start_date": "2026-11-02 07:31:00", "end_date": "2026-11-04 16:02:00"}


@pytest.fixture(scope="module", autouse=True)
def on_citus(engine):
    if engine != "citus":
        pytest.skip("needs a Citus coordinator: CARTPULSE_TEST_DATABASE_URL=<coordinator URL> (README)")


def batch(i: int, size: int) -> list[dict]:
    """Batch ``i``: its marker in user_id, products spread over every shard."""
    rng = random.Random(i)
    return [{"event_time": (BASE + timedelta(seconds=rng.randrange(4 * 86400))).strftime("%Y-%m-%d %H:%M:%S"),
             "event_type": rng.choice(["purchase", "purchase", "view"]), "user_id": f"b{i}",
             "product_id": f"p{rng.randrange(60)}", "category": "c", "price": round(rng.uniform(1, 100), 2),
             "quantity": rng.randint(1, 3), "session_id": f"s{i}", "country": rng.choice(["FR", "US", "DE", "JP"])}
            for _ in range(size)]


def assert_exact(http, events: list[dict]) -> None:
    for pipe, compute in PIPES.items():
        for params in ({}, RANGE):
            got = http.pipe(pipe, **params)
            assert expected.same(got, compute(events, **params)), (pipe, params, got[:5])


def stored_per_batch(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        citus.recover(conn)
        return dict(conn.execute("select user_id, count(*) from raw.ecommerce_events group by user_id").fetchall())


def test_layout_events_distributed_realtime_tables_on_the_coordinator(built):
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select cartpulse.engine()").fetchone()[0] == "citus"
        distributed = dict(conn.execute(
            "select logicalrelid::regclass::text, column_to_column_name(logicalrelid, partkey)"
            " from pg_dist_partition where partmethod = 'h'").fetchall())
        assert distributed.get("raw.ecommerce_events") == "product_id"
        # Everything one snapshot must see together stays a plain table of the coordinator.
        local = ["raw.ecommerce_events_pending", "cartpulse.rollup_state", "cartpulse.idempotency_keys",
                 "cartpulse.rate_limits", "cartpulse.tokens"]
        local += [r for (r,) in conn.execute("select rollup from cartpulse.rollup_state")]
        citus_tables = {t for (t,) in conn.execute("select logicalrelid::regclass::text from pg_dist_partition")}
        assert len(local) > 5 and not citus_tables & set(local)
        # Shards on every worker: products hash to both.
        nodes = {p for (p,) in conn.execute(
            "select distinct n.nodeport from pg_dist_shard s join pg_dist_placement p using (shardid)"
            " join pg_dist_node n using (groupid) where s.logicalrelid = 'raw.ecommerce_events'::regclass")}
        assert len(nodes) >= 2 and len(nodes) == len(citus.workers(conn))


def test_concurrent_ingest_across_workers_is_exact(live_server, built):
    """Writers on every worker's shards, the absorber and readers at once: each no-range
    answer counts whole batches, at least those acknowledged before it; after the last
    acknowledgement every endpoint (rollups, pending rows and the events at range edges)
    equals Python's computation."""
    truncate_events(built.database_url)
    writers, size = 4, 25
    sent = {i: batch(i, size) for i in range(32)}
    acked, started, problems = set(), set(), []
    lock, done = threading.Lock(), threading.Event()

    def send(i: int) -> None:
        with lock:
            started.add(i)
        status, body = live_server.post_events(sent[i])
        assert status == 202 and body["successful_rows"] == size, (i, status, body)
        with lock:
            acked.add(i)

    def absorber():
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            while not done.is_set():
                conn.execute("select cartpulse.absorb()")

    def reader():
        while not done.is_set():
            with lock:
                before = len(acked)
            total = sum(r["event_count"] for r in live_server.pipe("events_by_country"))
            with lock:
                after = len(started)
            if total % size or not before * size <= total <= after * size:
                problems.append(f"read {total} events with {before} batches acknowledged, {after} started")

    helpers = [threading.Thread(target=absorber), threading.Thread(target=reader)]
    for t in helpers:
        t.start()
    try:
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(send, sent))  # raises the first failed send
    finally:
        done.set()
        for t in helpers:
            t.join()
    assert not problems, problems[:5]
    events = [e for i in sorted(acked) for e in sent[i]]
    assert len(acked) == len(sent)
    assert stored_per_batch(built.database_url) == {f"b{i}": size for i in acked}
    assert_exact(live_server, events)
    with psycopg.connect(built.database_url) as conn:
        nodes = {conn.execute(
            "select n.nodeport from pg_dist_placement p join pg_dist_node n using (groupid)"
            " where p.shardid = get_shard_id_for_distribution_column('raw.ecommerce_events', %s::text)",
            [e["product_id"]]).fetchone()[0] for e in events}
        assert len(nodes) >= 2  # the batches really went to several workers


def worker_restarter(url: str):
    """A function restarting (immediate mode: a crash) the first worker of ``url``'s
    cluster, when that worker runs on this machine and this user may run its pg_ctl."""
    with psycopg.connect(url) as conn:
        host, port = citus.workers(conn)[0]
    with psycopg.connect(make_conninfo(url, host=host, port=port), autocommit=True) as conn:
        data = Path(conn.execute("show data_directory").fetchone()[0])
        bindir = conn.execute("select setting from pg_config where name = 'BINDIR'").fetchone()[0]
        pid = int(conn.execute("select split_part(pg_read_file('postmaster.pid'), chr(10), 1)").fetchone()[0])
    try:
        log = os.readlink(f"/proc/{pid}/fd/1")  # where its server log goes, kept after the restart
        owner = data.stat().st_uid
    except OSError:
        pytest.skip(f"worker {host}:{port} does not run on this machine: cannot restart it")
    if os.geteuid() not in (0, owner):
        pytest.skip(f"restarting worker {host}:{port} needs root or its owner")
    command = [f"{bindir}/pg_ctl", "-D", str(data), "-l", log, "-m", "immediate", "-w", "restart"]
    if os.geteuid() != owner:
        import pwd
        command = ["su", pwd.getpwuid(owner).pw_name, "-c", " ".join(command)]

    def restart() -> None:
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    return restart


def test_a_worker_restarted_during_ingest_loses_nothing_acknowledged(live_server, built, app):
    """Writers keep sending while a worker crashes and comes back. A request may fail
    meanwhile; its client resends it with the same Idempotency-Key until acknowledged.
    Every batch is then stored exactly once, and every endpoint is exact."""
    restart = worker_restarter(built.database_url)
    truncate_events(built.database_url)
    writers, batches, size = 3, 12, 10
    sent = {i: batch(1000 + i, size) for i in range(writers * batches)}
    failures, problems = [], []
    halfway = threading.Event()

    def writer(w: int):
        for n, i in enumerate(range(w * batches, (w + 1) * batches)):
            key, deadline = str(uuid.uuid4()), time.monotonic() + 120
            while True:
                status, body = live_server.post_events(sent[i], headers={"Idempotency-Key": key})
                if status in (200, 202):
                    if body.get("successful_rows") != size:
                        problems.append(f"batch {i}: {body}")
                    break
                failures.append(status)
                if time.monotonic() > deadline:
                    problems.append(f"batch {i}: never acknowledged, last {status} {body}")
                    break
                time.sleep(0.2)
            if n == batches // 3:
                halfway.set()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    assert halfway.wait(120)
    restart()
    # The session's in-process app pools coordinator sessions whose cached links to the
    # worker broke: each would fail one statement (a 503; writes retry). Fresh ones for
    # the tests that follow.
    app.extensions["cartpulse"].db.dispose()
    for t in threads:
        t.join()
    assert not problems, problems[:5]
    assert all(status >= 500 for status in failures), failures  # only the outage: no 4xx
    assert stored_per_batch(built.database_url) == {f"b{1000 + i}": size for i in sent}
    assert_exact(live_server, [e for i in sorted(sent) for e in sent[i]])


def test_the_query_api_is_refused_naming_citus(client, auth):
    """Not supported on Citus (docs/citus.md): a 400 that says so, not a 503 that invites
    a retry, nor an answer without the workers' rows."""
    r = client.get("/v0/sql", query_string={"q": "select count() as n from ecommerce_events"}, headers=auth)
    assert r.status_code == 400 and "not supported on Citus" in r.get_json()["error"]
