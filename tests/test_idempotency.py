"""Idempotency-Key: a retried batch is stored once and gets its first answer back; the key
commits with the rows; concurrent twins do not double-store; keys expire and are purged."""

from __future__ import annotations

import threading

import psycopg
import pytest

from cartpulse.ingest import idempotency
from support import EVENT, POST, count, ndjson, truncate_events

BODY = ndjson([EVENT, {**EVENT, "quantity": -1}, EVENT])  # 2 stored, 1 quarantined


@pytest.fixture(autouse=True)
def _empty(settings):
    truncate_events(settings.database_url)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("truncate cartpulse.idempotency_keys")


def post(client, auth, key, body=BODY, query=""):
    return client.post(POST + query, data=body, headers={**auth, "Idempotency-Key": key})


def stored(settings):
    return count(settings.database_url), count(settings.database_url, "raw.ecommerce_events_quarantine")


def test_retry_stores_nothing_new_and_gets_the_first_answer(client, auth, settings):
    first = post(client, auth, "batch-1", query="&wait=true")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = post(client, auth, "batch-1")  # wait differs: still the first answer
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert stored(settings) == (2, 1)
    assert count(settings.database_url, "raw.ecommerce_events_pending") == 2
    other = post(client, auth, "batch-2")
    assert other.status_code == 202 and other.get_json()["import_id"] != first.get_json()["import_id"]
    assert stored(settings) == (4, 2)


def test_same_key_different_body_is_422(client, auth, settings):
    assert post(client, auth, "k").status_code == 202
    r = post(client, auth, "k", body=ndjson([EVENT]))
    assert r.status_code == 422 and "different body" in r.get_json()["error"]
    assert stored(settings) == (2, 1)


def test_keys_are_scoped_to_the_token(client, auth, settings):
    r = client.post("/v0/tokens?name=appender-idem&scope=DATASOURCES:APPEND:ecommerce_events", headers=auth)
    other = {"Authorization": f"Bearer {r.get_json()['token']}"}
    try:
        assert post(client, auth, "shared").status_code == 202
        assert post(client, other, "shared").status_code == 202
        assert stored(settings) == (4, 2)
    finally:
        client.delete("/v0/tokens/appender-idem", headers=auth)


@pytest.mark.parametrize("key", ["", "x" * 256, "clé", "a\tb"])
def test_bad_keys_are_400(client, auth, settings, key):
    r = client.post(POST, data=BODY, headers={**auth, "Idempotency-Key": key})
    assert r.status_code == 400 and "Idempotency-Key" in r.get_json()["error"]
    assert stored(settings) == (0, 0)


def test_key_commits_with_the_rows_or_not_at_all(client, auth, settings, monkeypatch):
    """A failure after the key is claimed rolls back the key too: the retry then stores."""
    real = idempotency.claim

    def claim_then_fail(conn, *args):
        real(conn, *args)
        raise psycopg.errors.DiskFull("disk full, after the key was claimed")

    monkeypatch.setattr(idempotency, "claim", claim_then_fail)
    failed = post(client, auth, "atomic")
    assert failed.status_code == 507 and failed.headers["Retry-After"]  # the client will retry
    monkeypatch.setattr(idempotency, "claim", real)
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select count(*) from cartpulse.idempotency_keys").fetchone()[0] == 0
    assert stored(settings) == (0, 0)
    assert post(client, auth, "atomic").status_code == 202
    assert stored(settings) == (2, 1)


def test_concurrent_twins_store_once(app, auth, settings):
    answers, barrier = [], threading.Barrier(8)

    def twin():
        barrier.wait()
        r = app.test_client().post(POST, data=BODY, headers={**auth, "Idempotency-Key": "twins"})
        answers.append((r.status_code, r.get_json()))

    threads = [threading.Thread(target=twin) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {code for code, _ in answers} == {202}
    assert len({body["import_id"] for _, body in answers}) == 1
    assert stored(settings) == (2, 1)


def test_expired_keys_are_forgotten_and_purged(app, client, auth, settings):
    assert post(client, auth, "old").status_code == 202
    ttl = settings.idempotency_ttl_seconds
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("update cartpulse.idempotency_keys set created_at = now() - make_interval(secs => %s + 60)",
                     [ttl])
    assert post(client, auth, "old").headers.get("Idempotent-Replayed") is None  # a new batch now
    assert stored(settings) == (4, 2)
    assert post(client, auth, "old").headers["Idempotent-Replayed"] == "true"  # remembered anew
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("insert into cartpulse.idempotency_keys (token_name, data_source, key, body_sha256, status,"
                     " response, created_at) select 'x', 'ecommerce_events', 'k' || i, '', 202, '{}',"
                     " now() - make_interval(secs => %s + i) from generate_series(1, 50) i", [ttl])
    assert idempotency.purge(app.extensions["cartpulse"].db, ttl) == 50
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute("select key from cartpulse.idempotency_keys").fetchall() == [("old",)]
