"""Exactly once under faults: SIGKILL the API, restart PostgreSQL, during sustained ingest.

Four clients send batches, each with its own Idempotency-Key, and resend a batch with the
same key until it is acknowledged (a dropped connection, a 503). Meanwhile the test kills
the API process group (master and workers, SIGKILL) and restarts it, or stops PostgreSQL
the hard way (``immediate``: crash recovery at restart) and starts it again. Afterwards
every batch is stored exactly once (its rows and its quarantined row), a resend replays the
acknowledged answer, and the endpoints equal the Python computation over all batches.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import expected
from support import ApiServer, ndjson, truncate_events

pytestmark = pytest.mark.faults

CLIENTS, BATCHES, SIZE = 4, 30, 20
BASE = datetime(2026, 12, 1, tzinfo=timezone.utc)
COUNTRIES = ("France", "Spain", "Italy", "Japan", "Brazil")


def batch(i: int) -> list[dict]:
    """SIZE valid events marked user_id b<i>, then one that the quarantine must keep."""
    rng = random.Random(i)
    events = [{"event_time": (BASE + timedelta(minutes=i, seconds=rng.randrange(60))).strftime("%Y-%m-%d %H:%M:%S"),
               "event_type": rng.choice(("purchase", "purchase", "view", "add_to_cart")), "user_id": f"b{i}",
               "product_id": f"p{rng.randrange(12)}", "category": "c", "price": round(rng.uniform(1, 500), 2),
               "quantity": rng.randint(1, 4), "session_id": f"s{i}", "country": rng.choice(COUNTRIES)}
              for _ in range(SIZE)]
    return events + [{**events[0], "quantity": -1}]


class Clients:
    """CLIENTS threads, each sending its share of the batches until every one is acked."""

    def __init__(self, server: ApiServer, run: str):
        self.server, self.run = server, run
        self.batches = {i: batch(i) for i in range(CLIENTS * BATCHES)}
        self.acks: dict[int, dict] = {}
        self.statuses: list[int] = []
        self.problems: list[str] = []
        self.resends = 0  # requests that got no answer at all (the fault was felt)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(c,)) for c in range(CLIENTS)]

    def key(self, i: int) -> dict:
        return {"Idempotency-Key": f"{self.run}-{i}"}

    def _client(self, c: int) -> None:
        deadline = time.monotonic() + 120
        for i in range(c * BATCHES, (c + 1) * BATCHES):
            while time.monotonic() < deadline:
                try:
                    status, body = self.server.http.request("POST", "/v0/events?name=ecommerce_events",
                                                            ndjson(self.batches[i]), self.key(i), timeout=15)
                except (OSError, http.client.HTTPException):
                    with self.lock:
                        self.resends += 1
                    time.sleep(0.1)  # no answer: the batch may or may not be stored; resend it
                    continue
                with self.lock:
                    self.statuses.append(status)
                if status == 202:
                    with self.lock:
                        self.acks[i] = body
                    break
                if status != 503:
                    with self.lock:
                        self.problems.append(f"batch {i}: {status} {body}")
                    break
                time.sleep(0.1)
            time.sleep(0.01)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def done(self) -> int:
        with self.lock:
            return len(self.acks)

    def check(self, url: str) -> None:
        """Every batch acknowledged, stored once, replayed on resend; endpoints exact."""
        assert not self.problems, self.problems[:5]
        assert 500 not in self.statuses
        assert sorted(self.acks) == sorted(self.batches), "some batches were never acknowledged"
        with psycopg.connect(url) as conn:
            stored = dict(conn.execute("select user_id, count(*) from raw.ecommerce_events group by 1").fetchall())
            pending = dict(conn.execute("select user_id, count(*) from raw.ecommerce_events_pending"
                                        " group by 1").fetchall())
            quarantined = dict(conn.execute("select c__import_id, count(*) from raw.ecommerce_events_quarantine"
                                            " group by 1").fetchall())
        for i, ack in self.acks.items():
            assert ack["successful_rows"] == SIZE and ack["quarantined_rows"] == 1
            assert stored.get(f"b{i}") == SIZE, f"batch {i} stored {stored.get(f'b{i}')} times its size"
            assert pending.get(f"b{i}") == SIZE
            assert quarantined.get(ack["import_id"]) == 1
        assert len(stored) == len(self.batches) and sum(quarantined.values()) == len(self.batches)
        for i in random.Random(0).sample(sorted(self.batches), 10):
            status, body = self.server.http.request("POST", "/v0/events?name=ecommerce_events",
                                                    ndjson(self.batches[i]), self.key(i))
            assert (status, body) == (202, self.acks[i])
        with psycopg.connect(url) as conn:
            assert conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0] == SIZE * len(self.batches)
        events = [e for b in self.batches.values() for e in b[:SIZE]]
        http_ = self.server.http
        assert expected.same(http_.pipe("events_by_country"), expected.events_by_country(events))
        assert expected.same(http_.pipe("top_products", limit=1000), expected.top_products(events, limit=1000))
        assert expected.same(http_.pipe("total_revenue", interval="1 minute"),
                             expected.total_revenue(events, interval="1 minute"))


def wait_until(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_the_api_during_ingest(built, admin_token, tmp_path):
    truncate_events(built.database_url)
    server = ApiServer(built, admin_token, tmp_path, RATE_LIMIT_RPS="0")
    server.start()
    clients = Clients(server, f"kill-{time.time_ns()}")
    try:
        clients.start()
        for at in (BATCHES * CLIENTS // 4, BATCHES * CLIENTS // 2):
            wait_until(lambda: clients.done() >= at)
            felt = clients.resends
            server.kill()  # master and workers, mid-request: no graceful anything
            assert clients.done() < len(clients.batches), "the kill must happen during ingest"
            wait_until(lambda: clients.resends > felt)  # down until a client has lost a request to it
            server.start()
        clients.join()
        clients.check(built.database_url)
    finally:
        server.stop()


def test_restart_postgres_during_ingest(own_server, built, admin_token, tmp_path):
    truncate_events(built.database_url)
    server = ApiServer(built, admin_token, tmp_path, RATE_LIMIT_RPS="0")
    server.start()
    clients = Clients(server, f"pg-{time.time_ns()}")
    try:
        clients.start()
        for at in (BATCHES * CLIENTS // 4, BATCHES * CLIENTS // 2):
            wait_until(lambda: clients.done() >= at)
            refused = clients.statuses.count(503)
            own_server.stop("immediate")  # like a crash: recovery replays the WAL at start
            assert clients.done() < len(clients.batches), "the restart must happen during ingest"
            wait_until(lambda: clients.statuses.count(503) > refused)  # down until a client was told so
            own_server.start()
        clients.join()
        clients.check(built.database_url)
    finally:
        server.stop()
