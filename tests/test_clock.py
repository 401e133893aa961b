"""The clock jumping backwards: rate limits and JWT checks, with the clock injected (the
system clock is never changed). A duration is measured on a monotonic clock, and a
timestamp (a JWT's ``exp``) against the wall clock."""

from __future__ import annotations

import secrets

import psycopg
from cartpulse.access import jwt
from cartpulse.access.ratelimit import LEASE_SECONDS, RateLimiter
from cartpulse.storage.db import Database


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _asked(url: str, bucket: bytes):
    with psycopg.connect(url) as conn:
        return conn.execute("select tokens, updated_at from cartpulse.rate_limits where bucket = %s", [bucket]).fetchone()


def test_a_lease_does_not_outlive_its_second_when_the_clock_goes_back(built):
    """A clock set back must not make a lease look fresh for longer: it is dropped, and
    the next request asks the shared bucket (which grants nothing it does not hold)."""
    clock = Clock()
    db = Database(built.database_url, pool_size=2)
    try:
        limiter = RateLimiter(db, rate=1000, burst=800, clock=clock)
        bucket = secrets.token_bytes(16)
        limiter.check(bucket)
        asked = _asked(built.database_url, bucket)
        limiter.check(bucket)  # within the lease: no round trip
        assert _asked(built.database_url, bucket) == asked
        clock.now -= 3600  # an hour back
        limiter.check(bucket)
        assert _asked(built.database_url, bucket) != asked  # the lease was dropped: asked again
        asked = _asked(built.database_url, bucket)
        clock.now += LEASE_SECONDS / 2  # the new lease, taken at the new time, is fresh
        limiter.check(bucket)
        assert _asked(built.database_url, bucket) == asked
    finally:
        db.dispose()


def test_the_shared_bucket_re_bases_on_a_server_clock_set_back(built):
    """The bucket's last update an hour ahead of the server's clock is what the clock
    going back an hour looks like to ``take_tokens``: no refill for the jump (nothing
    granted that is not held), and the bucket re-based on the new time, so it refills
    from now on instead of staying frozen for an hour."""
    bucket = secrets.token_bytes(16)
    with psycopg.connect(built.database_url, autocommit=True) as conn:
        conn.execute("insert into cartpulse.rate_limits (bucket, tokens, allowed, updated_at)"
                     " values (%s, 2, true, clock_timestamp() + interval '1 hour')", [bucket])
        granted, left = conn.execute("select * from cartpulse.take_tokens(%s, 10, 100, 5)", [bucket]).fetchone()
        assert (granted, left) == (2, 0)  # what the bucket held, and no refill for the jump
        ahead = conn.execute("select updated_at > clock_timestamp() from cartpulse.rate_limits where bucket = %s",
                             [bucket]).fetchone()[0]
        assert ahead is False  # re-based: refills count from the server's new time
        # A call that waited for the lock carries a time a little earlier than the bucket's:
        # that is not a clock set back, and the bucket keeps its (later) time.
        conn.execute("update cartpulse.rate_limits set updated_at = clock_timestamp() + interval '200 milliseconds'"
                     " where bucket = %s", [bucket])
        conn.execute("select * from cartpulse.take_tokens(%s, 10, 100, 5)", [bucket])
        kept = conn.execute("select updated_at > clock_timestamp() from cartpulse.rate_limits where bucket = %s",
                            [bucket]).fetchone()[0]
        assert kept is True


def test_a_jwt_expires_by_the_wall_clock_read_at_each_check():
    """``exp`` is a timestamp: checked against the wall clock at every request. Decided:
    a clock set back gives an expired token the same seconds again (its issuer's clock
    is what ``exp`` means); nothing is cached past the moment the clock says it ended."""
    secret = "s3cret"
    token = jwt.sign({"exp": 2_000_000_000, "name": "n", "scopes": []}, secret)
    assert jwt.verify(token, secret, now=1_999_999_999).expires == 2_000_000_000
    for now in (2_000_000_000, 2_000_000_100):
        try:
            jwt.verify(token, secret, now=now)
            raise AssertionError("an expired JWT was accepted")
        except jwt.InvalidToken as err:
            assert str(err) == "expired"
    assert jwt.verify(token, secret, now=1_999_999_000).name == "n"  # clock set back before exp
