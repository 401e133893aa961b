"""GDPR erasure (`cartpulse erase`): one person's data out of every place CartPulse keeps it.

The person's events are spread over every state (absorbed by `dbt run`, absorbed by
`cartpulse.absorb()`, pending), plus a quarantined line, an idempotency key, a pipe
statistics row and a delete job that name them. After the erasure: none of it is left
anywhere, every endpoint equals Python over the other people's events (at once and after
a full refresh), and the other people's traces are untouched.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from test_absorb import absorb, assert_exact, assert_exact_absorbed_and_rebuilt
from test_policies import jobs, policies, timescaledb  # noqa: F401 (fixtures)

from cartpulse.cli.event_generator import EventGenerator
from support import CARTPULSE, EVENT, dbt_ok, ndjson, truncate_events

POST = "/v0/events?name=ecommerce_events"
START = datetime(2026, 7, 1, tzinfo=timezone.utc)
PERSON = "u-erase-7f3a"


def post(client, auth, events, **headers):
    r = client.post(POST, data=ndjson(events), headers={**auth, **headers})
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def traces(url: str, value: str) -> dict:
    """Where ``value`` still appears: each place CartPulse keeps data, counted."""
    with psycopg.connect(url) as conn:
        one = lambda query: conn.execute(query, [value]).fetchone()[0]  # noqa: E731
        return {"events": one("select count(*) from raw.ecommerce_events where user_id = %s"),
                "pending": one("select count(*) from raw.ecommerce_events_pending where user_id = %s"),
                "quarantine": one("select count(*) from raw.ecommerce_events_quarantine where strpos(c__raw, %s) > 0"),
                "idempotency": one("select count(*) from cartpulse.idempotency_keys where strpos(key, %s) > 0"),
                "pipe_stats": one("select count(*) from cartpulse.pipe_stats where strpos(params::text, %s) > 0"),
                "jobs": one("select count(*) from cartpulse.jobs where strpos(delete_condition, %s) > 0")}


@pytest.fixture
def scattered(app, built, auth):
    """Everyone's events, the person's among them in every state, and their traces."""
    truncate_events(built.database_url)
    client = app.test_client()
    gen = EventGenerator(seed=44, products=30, start=START, span=timedelta(days=2))
    mine = lambda n: [{**e, "user_id": PERSON} for e in gen.events(n)]  # noqa: E731
    others = []
    for step in ("dbt", "absorb", "pending"):
        batch = gen.events(150)
        others += batch
        post(client, auth, batch + mine(5 if step != "pending" else 6))
        if step == "dbt":
            dbt_ok(built, "run", "--select", "rollups")
        elif step == "absorb":
            absorb(built.database_url)
    post(client, auth, [{**EVENT, "user_id": PERSON, "quantity": -1}], **{"Idempotency-Key": f"order-{PERSON}"})
    post(client, auth, [{**EVENT, "user_id": "someone-else", "quantity": -1}], **{"Idempotency-Key": "order-other"})
    # An endpoint filtered by the person (pipe_stats keeps its parameters), and a delete
    # that named them through the API, before the request to be forgotten.
    with psycopg.connect(built.database_url) as conn:
        conn.execute("insert into cartpulse.pipe_stats (at, pipe, params, status, duration, rows_read, bytes_read,"
                     " result_rows) values (now(), 'orders_of', %s, 200, 0.01, 1, 1, 1),"
                     " (now(), 'orders_of', %s, 200, 0.01, 1, 1, 1)",
                     [json.dumps({"user": [PERSON, "x"]}), json.dumps({"user": "someone-else"})])
    r = client.post("/v0/datasources/ecommerce_events/delete", headers=auth,
                    data={"delete_condition": f"user_id = '{PERSON}' and country = 'nowhere'"})
    assert r.status_code == 200
    return others


def test_erase_leaves_no_trace_and_every_endpoint_exact(client, auth, built, scattered):
    url = built.database_url
    before = traces(url, PERSON)
    assert all(before.values()), before  # the person is in every place
    others_before = traces(url, "someone-else")
    done = subprocess.run([CARTPULSE, "erase", "--user", PERSON], env=_env(built), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["events"] == 16 and report["quarantine_lines"] == 1 and report["idempotency_keys"] == 1
    assert report["pipe_stats_rows"] == 1 and report["jobs"] == 1 and report["pending_rows"] >= 6 * 2
    assert traces(url, PERSON) == dict.fromkeys(before, 0)
    assert traces(url, "someone-else") == others_before  # nobody else's
    assert_exact_absorbed_and_rebuilt(client, auth, built, scattered)


def test_erase_reaches_compressed_chunks(timescaledb, app, auth, built, policies):  # noqa: F811 (fixtures)
    """On TimescaleDB with compression: the person's rows in compressed chunks are
    deleted too (and counted), and every endpoint stays exact."""
    url = built.database_url
    truncate_events(url)
    client = app.test_client()
    gen = EventGenerator(seed=45, products=20, start=START, span=timedelta(days=2))
    others, mine = gen.events(200), [{**e, "user_id": PERSON} for e in gen.events(7)]
    post(client, auth, others + mine)
    absorb(url)
    policies(compress_after="1 day")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("call run_job(%s)", [jobs(url)["policy_compression"][0]])
    done = subprocess.run([CARTPULSE, "erase", "--user", PERSON], env=_env(built), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["events"] == 7 and report["compressed_chunks"] >= 1, report
    assert traces(url, PERSON)["events"] == 0
    assert_exact(client, auth, others)


def test_erase_by_a_column_that_is_not_personal_is_refused(built):
    done = subprocess.run([CARTPULSE, "erase", "--user", "France", "--column", "country"], env=_env(built),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "'country' is not a personal column" in done.stderr, done.stderr


def _env(settings) -> dict:
    import os

    return {**os.environ, "DATABASE_URL": settings.database_url, "DBT_TARGET_PATH": str(settings.target_dir),
            "CARTPULSE_STATE_DIR": str(settings.state_dir)}
