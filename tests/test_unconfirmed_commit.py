"""A commit a Citus worker did not confirm: the writer finishes it before acknowledging,
or answers 503 saying the batch is stored and may be resent only with its Idempotency-Key
(docs/citus.md, "Exact without a global snapshot", point 1).

Losing a worker between the two phases of a commit cannot be timed from a test: the
worker would have to vanish after it prepared and before the coordinator's second phase.
So these tests play Citus's side on any engine, deterministically: the warning Citus
raises at such a commit is raised in the writer's transaction, and transaction recovery
warns that the worker cannot be reached until the test lets it "come back". What runs
is the service's own path: the writer, ``citus.confirmed_commit``, the idempotency claim
committed with the rows, and the replay of a resent batch.
"""

from __future__ import annotations

import psycopg
import pytest

from cartpulse.ingest import writer
from cartpulse.storage import citus, wal
from support import EVENT, POST, count, ndjson, truncate_events

BODY = ndjson([EVENT, {**EVENT, "product_id": "p2"}])


def warn(conn: psycopg.Connection, message: str) -> None:
    conn.execute(f"do $$ begin raise warning '{message}'; end $$")


class AwayWorker:
    """Citus's side of a worker lost at the second commit phase: the commit warns, and
    each recovery warns that the worker cannot be reached while ``away`` recoveries remain."""

    def __init__(self, monkeypatch, away: int):
        self.away, self.recoveries = away, 0
        real_commit = wal.commit_position

        def commit_position(conn):
            warn(conn, citus._UNCONFIRMED + "127.0.0.1:1")
            return real_commit(conn)

        def recover(conn):
            self.recoveries += 1
            if self.recoveries <= self.away:
                warn(conn, citus._UNREACHED + "127.0.0.1:1")

        monkeypatch.setattr(writer, "commit_position", commit_position)
        monkeypatch.setattr(citus, "recover", recover)
        monkeypatch.setattr(citus, "CONFIRM_SECONDS", 0.5)


@pytest.fixture(autouse=True)
def _empty(settings):
    truncate_events(settings.database_url)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("truncate cartpulse.idempotency_keys")


def post(client, auth, key: str):
    return client.post(POST, data=BODY, headers={**auth, "Idempotency-Key": key})


def test_a_worker_back_within_the_wait_gets_the_batch_acknowledged(client, auth, settings, monkeypatch):
    worker = AwayWorker(monkeypatch, away=2)
    r = post(client, auth, "back-soon")
    assert r.status_code == 202, r.get_json()
    assert worker.recoveries == 3  # two while away, the third finished the commit
    assert count(settings.database_url) == 2


def test_a_worker_still_away_is_a_503_and_the_resend_with_its_key_stores_nothing_twice(
        client, auth, settings, monkeypatch):
    with monkeypatch.context() as patch:
        worker = AwayWorker(patch, away=10**6)
        r = post(client, auth, "stays-away")
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        error = r.get_json()["error"]
        assert "committed" in error and "Idempotency-Key" in error and "127.0.0.1:1" in error
        assert worker.recoveries >= 2
    # The batch is committed (the coordinator's record decided it), key and rows together.
    assert count(settings.database_url) == 2
    again = post(client, auth, "stays-away")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert count(settings.database_url) == 2
    assert post(client, auth, "another-batch").status_code == 202
    assert count(settings.database_url) == 4


def test_without_the_warning_nothing_is_recovered(client, auth, settings, monkeypatch):
    calls = []
    monkeypatch.setattr(citus, "recover", lambda conn: calls.append(conn))
    assert post(client, auth, "plain").status_code == 202
    assert calls == [] and count(settings.database_url) == 2
