"""Rate limits per token: 429 with Retry-After and X-RateLimit-*, one bucket per token
shared by every worker process of the production server."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace

import psycopg
import pytest

from cartpulse.access import tokens
from cartpulse.app import create_app
from support import (
    EVENT,
    ApiServer,
    count,
    datasources,
    ndjson,
    request_burst,
    truncate_events,
)

RATE = 0.5


@pytest.fixture
def limited(built):
    """An app limited to a request every 2 s (0.5/s) in bursts of 3, and two fresh tokens
    (fresh buckets). The slow refill gives each test 2 s to see a bucket empty: with a
    fast one, a request delayed on a busy machine would find a token come back. The tokens
    are made and deleted in the database, not over this app: the admin token's own
    bucket, shared by every test, would run dry."""
    names = [f"rl-{secrets.token_hex(4)}" for _ in range(2)]
    with psycopg.connect(built.database_url) as conn:
        issued = [tokens.create(conn, name, ["ADMIN"], datasources()) for name in names]
    app = create_app(replace(built, rate_limit_rps=RATE, rate_limit_burst=3))
    try:
        yield app.test_client(), *({"Authorization": f"Bearer {secret}"} for secret in issued)
    finally:
        # The stats writer's thread would otherwise flush these requests later, through a
        # new pool on the disposed database that nothing closes (a ResourceWarning wherever
        # the garbage collector then runs).
        app.extensions["cartpulse_stats"].flush()
        app.extensions["cartpulse"].db.dispose()
        with psycopg.connect(built.database_url) as conn:
            for name in names:
                tokens.delete(conn, name)


def test_burst_then_429_with_headers_then_refill(limited, settings):
    truncate_events(settings.database_url)
    client, auth, _ = limited
    remaining = []
    for _ in range(3):
        r = client.get("/v0/pipes/top_products.json", headers=auth)
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "3" and int(r.headers["X-RateLimit-Reset"]) >= 1
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]
    refused = client.post("/v0/events?name=ecommerce_events", data=ndjson([EVENT]), headers=auth)
    assert refused.status_code == 429 and "rate limit" in refused.get_json()["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 1 / RATE  # until a whole request's worth is back
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert count(settings.database_url) == 0  # a refused request stores nothing
    deadline = time.monotonic() + 10  # one request's worth comes back in 2 s; refusals take none
    while (back := client.get("/v0/pipes/top_products.json", headers=auth)).status_code == 429:
        assert time.monotonic() < deadline, "the bucket did not refill"
        time.sleep(0.1)
    assert back.status_code == 200
    assert client.get("/v0/pipes/top_products.json", headers=auth).status_code == 429


def test_tokens_have_separate_buckets_and_unknown_tokens_are_401_not_429(limited):
    client, auth, other = limited
    for _ in range(3):
        client.get("/v0/pipes", headers=auth)
    assert client.get("/v0/pipes", headers=auth).status_code == 429
    assert client.get("/v0/pipes", headers=other).status_code == 200
    assert client.get("/v0/pipes", headers={"Authorization": "Bearer cp_unknown"}).status_code == 401


def test_limit_is_shared_across_worker_processes(built, admin_token, tmp_path):
    """2 workers × 8 threads, 8 clients at once: a per-process limit would let through
    about twice the bucket; the shared one lets through burst + rate × elapsed."""
    rate, burst = 5, 10
    server = ApiServer(built, admin_token, tmp_path, RATE_LIMIT_RPS=str(rate), RATE_LIMIT_BURST=str(burst))
    server.start()
    try:
        name = f"rl-{secrets.token_hex(4)}"
        status, body = server.http.request("POST", f"/v0/tokens?name={name}&scope=ADMIN")
        assert status == 200, body
        token = body["token"]
        answers, elapsed = request_burst(server.http, token, clients=8)
        codes = [(code, headers.get("Retry-After")) for code, headers in answers]
        allowed = sum(1 for code, _ in codes if code == 200)
        assert {code for code, _ in codes} <= {200, 429}
        assert all(retry for code, retry in codes if code == 429)
        assert burst <= allowed <= burst + rate * elapsed + 1, (allowed, elapsed)
        assert len(codes) - allowed >= 80 - (burst + rate * elapsed + 1)
    finally:
        server.stop()


def _asked(url: str, bucket: bytes):
    """When the bucket was last taken from (each round trip moves it; a local spend does not)."""
    with psycopg.connect(url) as conn:
        return conn.execute("select updated_at from cartpulse.rate_limits where bucket = %s", [bucket]).fetchone()[0]


def test_lease_sizes():
    """Small limits go one request at a time (exact); large ones lease ~50 ms of the rate,
    at most an eighth of the burst and LEASE_MAX."""
    from cartpulse.access.ratelimit import LEASE_MAX, lease_size

    assert lease_size(0.5, 3) == 1 and lease_size(5, 10) == 1 and lease_size(100, 8) == 1
    assert lease_size(100, 200) == 5
    assert lease_size(1000, 40) == 5
    assert lease_size(1e6, 10**6) == LEASE_MAX


def test_a_worker_spends_its_lease_without_asking_the_database(built):
    """Requests from a lease cost no round trip: the shared bucket moves once per lease."""
    from cartpulse.access.ratelimit import RateLimiter
    from cartpulse.storage.db import Database

    db = Database(built.database_url, pool_size=2)
    try:
        limiter = RateLimiter(db, rate=1000, burst=800)
        size = limiter.size
        assert size == 50
        bucket = secrets.token_bytes(16)
        first = limiter.check(bucket)
        assert first.allowed and first.remaining == 800 - 1  # a new bucket is full: 50 taken, 1 spent
        asked = _asked(built.database_url, bucket)
        for _ in range(size - 1):
            limiter.check(bucket)
        assert _asked(built.database_url, bucket) == asked  # spent locally
        limiter.check(bucket)  # the lease is spent: the next request asks again
        assert _asked(built.database_url, bucket) > asked
        # A lease unspent for LEASE_SECONDS is dropped: the next request asks again.
        bucket2 = secrets.token_bytes(16)
        limiter.check(bucket2)
        asked = _asked(built.database_url, bucket2)
        limiter._leases[bucket2].taken_at -= 10
        limiter.check(bucket2)
        assert _asked(built.database_url, bucket2) > asked
    finally:
        db.dispose()


def test_leases_never_let_more_through_than_the_shared_bucket(built):
    """Two workers (two limiters) leasing from one bucket: together they allow at most the
    burst plus the refill over the time taken, however the requests interleave."""
    from cartpulse.access.ratelimit import RateLimiter
    from cartpulse.storage.db import Database

    db = Database(built.database_url, pool_size=2)
    try:
        rate, burst = 400.0, 160  # leases of 20
        workers = [RateLimiter(db, rate, burst) for _ in range(2)]
        assert workers[0].size == 20
        bucket = secrets.token_bytes(16)
        started = time.monotonic()
        allowed = sum(workers[i % 2].take(bucket).allowed for i in range(1000))
        elapsed = time.monotonic() - started
        assert allowed <= burst + rate * elapsed + 1, (allowed, elapsed)
        assert allowed >= burst - 2 * workers[0].size  # at most two leases' worth left unspent
    finally:
        db.dispose()
