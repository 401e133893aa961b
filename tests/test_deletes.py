"""Deleting and truncating: exact at once in every endpoint, whatever else is running.

Every test compares each endpoint with Python over the events sent minus the events
deleted (tests/expected.py), with events in three places at once: absorbed by `dbt run`,
absorbed by `cartpulse.absorb()` and still pending. Interleavings with absorption, `dbt
run`, ingest and a crash are forced with locks, never with sleeps; a full refresh must
then give the very same answers.
"""

from __future__ import annotations

import subprocess
import threading
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from test_absorb import (
    absorb,
    answers,
    assert_exact,
    assert_exact_absorbed_and_rebuilt,
    in_every_state,
    insert,
    killed_while_waiting,
    pending,
    post,
    wait_for_lock_wait,
)

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import CARTPULSE, EVENT, dbt_ok, truncate_events

POST = "/v0/events?name=ecommerce_events"
DELETE = "/v0/datasources/ecommerce_events/delete"
START = datetime(2026, 9, 1, tzinfo=timezone.utc)


def delete(client, auth, condition: str, path: str = DELETE, **extra) -> dict:
    r = client.post(path, data={"delete_condition": condition, **extra}, headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def without(history: list[dict], gone) -> list[dict]:
    """What is left of ``history`` once the events ``gone`` selects are deleted (in place)."""
    kept = [e for e in history if not gone(e)]
    history[:] = kept
    return kept


@pytest.fixture(scope="module")
def history(app, built, auth):
    """Events in every state: absorbed by `dbt run`, absorbed by `cartpulse.absorb()`,
    still pending (late events and events of already rolled-up buckets among them)."""
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=15, products=60, start=START, span=timedelta(days=3))
    late = [gen.event(when=START - timedelta(days=40, minutes=i)) for i in range(10)]
    return in_every_state(client, auth, built, gen.events(600), gen.events(300), gen.events(200) + late)


def test_a_delete_is_exact_at_once_then_absorbed_then_fully_refreshed(client, auth, history, built):
    url = built.database_url
    assert pending(url) > 0  # some of the deleted events are still pending
    gone = lambda e: e["country"] == "France" and e["event_type"] == "purchase"  # noqa: E731
    dry = delete(client, auth, "country = 'France' and event_type = 'purchase'", dry_run="true")
    assert dry == {"rows_to_be_deleted": sum(map(gone, history))} and dry["rows_to_be_deleted"] > 0
    assert_exact(client, auth, history)  # a dry run changes nothing
    answer = delete(client, auth, "country = 'France' and event_type = 'purchase'")
    assert answer["status"] == "done" and answer["rows_affected"] == dry["rows_to_be_deleted"]
    assert answer["job"]["id"] == answer["job_id"] == answer["id"] == answer["delete_id"]
    assert answer["kind"] == "delete_data" and answer["datasource"]["name"] == "ecommerce_events"
    without(history, gone)
    assert_exact(client, auth, history)  # the very next answer
    absorb(url)
    assert pending(url) == 0
    assert_exact(client, auth, history)
    before = answers(client, auth)
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    assert answers(client, auth) == before


def test_the_job_is_readable_and_listed(client, auth, history):
    answer = delete(client, auth, "user_id = 'nobody-at-all'")
    assert answer["rows_affected"] == 0  # a delete that matches nothing is a finished job too
    r = client.get(f"/v0/jobs/{answer['id']}", headers=auth)
    assert r.status_code == 200 and r.get_json() == answer["job"]
    assert r.get_json()["job_url"].endswith(f"/v0/jobs/{answer['id']}")
    listed = client.get("/v0/jobs", query_string={"kind": "delete_data"}, headers=auth).get_json()["jobs"]
    assert listed[0] == answer["job"]
    assert client.get("/v0/jobs/no-such-job", headers=auth).status_code == 404
    assert_exact(client, auth, history)


def test_the_synchronous_v1_delete(client, auth, history):
    target = history[-1]["product_id"]
    removed = sum(e["product_id"] == target for e in history)
    answer = delete(client, auth, f"product_id = '{target}'", path="/v1/datasources/ecommerce_events/delete")
    assert answer["status"] == "done" and answer["rows_affected"] == removed and "job" not in answer
    without(history, lambda e: e["product_id"] == target)
    assert_exact(client, auth, history)


def test_deleting_needs_an_admin_token(client, auth, history):
    r = client.post(DELETE, data={"delete_condition": "true"})
    assert r.status_code == 401
    token = client.post("/v0/tokens", query_string={"name": "deletes-appender",
                                                    "scope": "DATASOURCES:APPEND:ecommerce_events"}, headers=auth)
    assert token.status_code == 200, token.get_json()
    appender = {"Authorization": f"Bearer {token.get_json()['token']}"}
    for path in (DELETE, "/v0/datasources/ecommerce_events/truncate", "/v0/jobs"):
        r = client.post(path, data={"delete_condition": "true"}, headers=appender) if "jobs" not in path \
            else client.get(path, headers=appender)
        assert r.status_code == 403, (path, r.get_json())
    client.delete("/v0/tokens/deletes-appender", headers=auth)
    assert_exact(client, auth, history)


@pytest.mark.parametrize("condition, named", [
    ("country = 'x' and (select 1) = 1", "SUBQUERY"),
    ("user_id in (select user_id from ecommerce_events)", "IN takes a list of values"),
    ("password = 'x'", "'password' (COLUMN) is not a column"),
    ("ecommerce_events.country = 'x'", "is not a column"),
    ("sleep(3) = 0", "'sleep(3)'"),
    ("quantity + 1 = 2", "(ADD)"),
    ("country = 'x'; drop table raw.ecommerce_events", "not 2 statements"),
    ("country", "must be a condition"),
    ("country = ", "not a valid expression"),
    ("", "delete_condition is required"),
    ("quantity = 'many'", "cannot be applied"),
    ("country is 'France'", "only IS NULL"),
])
def test_a_bad_condition_is_a_400_naming_it(client, auth, history, condition, named):
    r = client.post(DELETE, data={"delete_condition": condition}, headers=auth)
    assert r.status_code == 400, r.get_json()
    assert named in r.get_json()["error"], r.get_json()
    assert_exact(client, auth, history)  # nothing was deleted


def test_a_delete_is_refused_while_a_rollup_predates_signs(client, auth, history, built):
    """A rollup built by models from before deletes would add retractions: 409 until a
    `dbt run` rebuilds it, and nothing is deleted."""
    with psycopg.connect(built.database_url) as conn:
        rollup, prune = conn.execute("select rollup, prune_sql from cartpulse.rollup_state order by rollup").fetchone()
        conn.execute("update cartpulse.rollup_state set prune_sql = null where rollup = %s", [rollup])
    try:
        r = client.post(DELETE, data={"delete_condition": "true"}, headers=auth)
        assert r.status_code == 409 and "cartpulse build" in r.get_json()["error"], r.get_json()
    finally:
        with psycopg.connect(built.database_url) as conn:
            conn.execute("update cartpulse.rollup_state set prune_sql = %s where rollup = %s", [prune, rollup])
    assert_exact(client, auth, history)


def test_a_delete_waiting_behind_an_absorption_and_a_dbt_run(client, auth, history, built):
    """The delete has removed its rows but waits (the test holds the pending table) while
    an absorption runs and a `dbt run` starts: until it commits every answer is the
    state before it, after it every answer is the state without its rows."""
    url = built.database_url
    extra = [{**EVENT, "user_id": f"dbt-{i}", "country": "Kenya", "quantity": i + 1} for i in range(6)]
    post(client, auth, extra)
    history.extend(extra)
    with psycopg.connect(url) as holder:
        holder.execute("lock table raw.ecommerce_events_pending in share mode")
        holder.execute("select cartpulse.absorb()")  # the holder's own absorption: its lock is its own
        result = {}
        deleter = threading.Thread(target=lambda: result.update(
            answer=delete(client, auth, "country = 'Kenya' and quantity > 2")))
        deleter.start()
        wait_for_lock_wait(url, "cartpulse")
        dbt = subprocess.Popen([CARTPULSE, "dbt", "run", "--select", "rollups"], env=_env(built),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert_exact(client, auth, history)  # the delete has not committed
        holder.commit()
    deleter.join(timeout=120)
    assert result["answer"]["rows_affected"] == 4
    without(history, lambda e: e["country"] == "Kenya" and e["quantity"] > 2)
    assert_exact(client, auth, history)
    output = dbt.communicate(timeout=600)[0]
    assert dbt.returncode == 0, output[-3000:]
    assert_exact(client, auth, history)
    absorb(url)
    assert_exact(client, auth, history)


def _env(settings) -> dict:
    import os

    return {**os.environ, "DATABASE_URL": settings.database_url, "DBT_TARGET_PATH": str(settings.target_dir),
            "CARTPULSE_STATE_DIR": str(settings.state_dir)}


def test_ingest_committing_around_a_delete(client, auth, history, built):
    """A writer's transaction open before the delete and committed after it: its rows
    were not visible to the delete, so they stay, and its matching rows are counted."""
    url = built.database_url
    before = [{**EVENT, "user_id": f"around-{i}", "country": "Nepal"} for i in range(3)]
    during = [{**EVENT, "user_id": f"around-late-{i}", "country": "Nepal"} for i in range(2)]
    post(client, auth, before)
    with psycopg.connect(url) as writer:
        insert(writer, during)
        assert delete(client, auth, "country = 'Nepal'")["rows_affected"] == 3
        writer.commit()
    history.extend(during)
    assert_exact(client, auth, history)
    absorb(url)
    assert_exact(client, auth, history)


@pytest.mark.parametrize("fate", ["backend terminated", "client killed"])
def test_a_delete_killed_mid_way_changes_nothing(client, auth, history, built, fate):
    """`cartpulse delete` is SIGKILLed while its one transaction waits (after deleting its
    rows, before writing their retractions); its backend is terminated, or left to notice
    its client is gone. Either way nothing of it stays: no row gone, no job."""
    url = built.database_url
    victims = [{**EVENT, "user_id": f"crash-{fate}-{i}", "country": "Laos"} for i in range(4)]
    post(client, auth, victims)
    history.extend(victims)
    killed_while_waiting(url, [CARTPULSE, "delete", "ecommerce_events", "--condition", "country = 'Laos'"],
                         "cartpulse", terminate=fate == "backend terminated", env=_env(built))
    assert_exact(client, auth, history)
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from cartpulse.jobs where delete_condition = %s",
                            ["country = 'Laos'"]).fetchone()[0] == 0
    absorb(url)
    assert_exact(client, auth, history)


def test_the_cli_deletes_and_dry_runs(built, client, auth, history):
    target = next(e["category"] for e in history if e["category"])
    removed = sum(e["category"] == target for e in history)
    dry = subprocess.run([CARTPULSE, "delete", "ecommerce_events", "--condition", f"category = '{target}'",
                          "--dry-run"], env=_env(built), capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and f'"rows_to_be_deleted": {removed}' in dry.stdout, dry.stderr
    bad = subprocess.run([CARTPULSE, "delete", "ecommerce_events", "--condition", "nope = 1"],
                         env=_env(built), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "'nope' (COLUMN) is not a column" in bad.stderr
    done = subprocess.run([CARTPULSE, "delete", "ecommerce_events", "--condition", f"category = '{target}'"],
                          env=_env(built), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f'"rows_affected": {removed}' in done.stdout, done.stderr
    without(history, lambda e: e["category"] == target)
    assert_exact(client, auth, history)


def test_truncate_empties_every_endpoint_and_ingest_goes_on(client, auth, history, built):
    r = client.post("/v0/datasources/ecommerce_events/truncate", headers=auth)
    assert r.status_code == 200 and r.get_json()["rows_affected"] == len(history), r.get_json()
    assert r.get_json()["kind"] == "truncate_data"
    history.clear()
    assert all(data == [] for data in answers(client, auth))
    fresh = [{**EVENT, "user_id": f"after-{i}", "quantity": i + 1} for i in range(5)]
    post(client, auth, fresh)
    history.extend(fresh)
    assert_exact_absorbed_and_rebuilt(client, auth, built, history)


def test_truncating_the_quarantine(client, auth, history, built):
    r = client.post(POST, data=b'{"event_time": "not a time"}\n', headers=auth)
    assert r.get_json()["quarantined_rows"] == 1
    r = client.post("/v0/datasources/ecommerce_events_quarantine/truncate", headers=auth)
    assert r.status_code == 200 and r.get_json()["rows_affected"] >= 1
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select count(*) from raw.ecommerce_events_quarantine").fetchone()[0] == 0
    assert_exact(client, auth, history)


def test_deletes_under_concurrent_ingest_and_reads(app, auth, built):
    """Writers keep sending, readers keep reading, while events of one country are sent
    and deleted over and over: a reader sees that country's events all or not at all,
    and at the end every endpoint equals Python over what was sent minus what was deleted."""
    truncate_events(built.database_url)
    gen = EventGenerator(seed=99, products=30, start=START, span=timedelta(days=2))
    sent, lock, stop, problems = [], threading.Lock(), threading.Event(), []
    victims = [{**EVENT, "user_id": f"wave-{i}", "country": "Atlantis"} for i in range(7)]

    def writer(seed: int):
        client = app.test_client()
        local = EventGenerator(seed=seed, products=30, start=START, span=timedelta(days=2))
        while not stop.is_set():
            batch = local.events(25)
            post(client, auth, batch)
            with lock:
                sent.extend(batch)

    def reader():
        client = app.test_client()
        while not stop.is_set():
            r = client.get("/v0/pipes/events_by_country.json", headers=auth)
            counts = {row["country"]: row["event_count"] for row in r.get_json()["data"]}
            if counts.get("Atlantis", len(victims)) != len(victims):
                problems.append(counts.get("Atlantis"))

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        client = app.test_client()
        first = gen.events(50)
        post(client, auth, first)
        for _ in range(6):
            post(client, auth, victims)
            assert delete(client, auth, "country = 'Atlantis'")["rows_affected"] == len(victims)
            absorb(built.database_url)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert problems == []
    assert_exact(client, auth, first + sent)
    absorb(built.database_url)
    assert_exact(client, auth, first + sent)


def test_full_refresh_after_every_operation_equals_incremental(client, auth, built):
    """After sends, deletes (absorbed and pending), a truncate and more sends, a full
    refresh gives the very answers the rollups gave."""
    truncate_events(built.database_url)
    gen = EventGenerator(seed=7, products=40, start=START, span=timedelta(days=5))
    events = gen.events(400)
    post(client, auth, events)
    absorb(built.database_url)
    delete(client, auth, "event_type = 'view' or quantity >= 3")
    events = [e for e in events if not (e["event_type"] == "view" or e["quantity"] >= 3)]
    more = gen.events(100)
    post(client, auth, more)
    delete(client, auth, "toDate(event_time) = '2026-09-02'")
    events = [e for e in events + more if not expected._time(e["event_time"]).date().isoformat() == "2026-09-02"]
    assert_exact(client, auth, events)
    before = answers(client, auth)
    dbt_ok(built, "run", "--full-refresh", "--select", "rollups")
    assert answers(client, auth) == before
