"""Rate limits: requests per second per token, shared by every worker process.

Each token has a token bucket (``RATE_LIMIT_RPS`` refill, ``RATE_LIMIT_BURST`` size) kept
in the UNLOGGED table ``cartpulse.rate_limits`` and updated by one function
(``cartpulse.take_tokens``): PostgreSQL's row lock serializes the gunicorn workers of every
process and every host, so the limit holds however many workers serve the token — a
per-process counter would multiply it by the number of workers. The table writes no WAL.
A worker takes a few requests per round trip (``RateLimiter``: a lease of about 50 ms of
the rate) and spends them without asking again, so a busy token costs a round trip every
few requests instead of every request.

Every answer to an authenticated request carries ``X-RateLimit-Limit`` (the bucket size),
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the bucket is full
again); a request over the limit is answered 429 with ``Retry-After`` (seconds until one
request is allowed) and stores or reads nothing.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from cartpulse.errors import ApiError


@dataclass(frozen=True)
class Quota:
    """The state of one bucket after a request took (or failed to take) a token."""

    allowed: bool
    limit: int
    remaining: float
    rate: float

    def headers(self) -> dict[str, str]:
        reset = math.ceil((self.limit - self.remaining) / self.rate) if self.rate > 0 else 0
        headers = {"X-RateLimit-Limit": str(self.limit),
                   "X-RateLimit-Remaining": str(max(0, math.floor(self.remaining))),
                   "X-RateLimit-Reset": str(max(0, reset))}
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil((1 - self.remaining) / self.rate)))
        return headers


#: A lease's requests not spent within this many seconds are dropped, not given back: a
#: worker never sits on requests another worker's clients could have used.
LEASE_SECONDS = 1.0
#: Most requests one round trip takes.
LEASE_MAX = 64


def lease_size(rate: float, burst: int) -> int:
    """How many requests one round trip takes: about 50 ms of the rate, at most an eighth
    of the bucket and ``LEASE_MAX``. Small limits (under 40 requests/s or bursts under 16)
    take one at a time, so they stay exact to the request."""
    return max(1, min(LEASE_MAX, int(rate * 0.05), burst // 8))


@dataclass
class _Lease:
    left: int          # requests taken from the bucket and not spent yet
    level: float       # what the bucket held after they were taken
    taken_at: float    # RateLimiter.clock(): time.monotonic()


class RateLimiter:
    """Each worker process's view of the shared buckets: requests are taken from a bucket
    ``lease_size`` at a time and spent here without a round trip, so at most one request
    in ``lease_size`` waits for the database. Nothing is ever spent that the shared bucket
    did not grant, so the limit holds across processes as before; the price is that a
    lease left unspent for ``LEASE_SECONDS`` is dropped (fewer requests allowed, never more)."""

    def __init__(self, db, rate: float, burst: int, clock=time.monotonic):
        # A lease's age is a duration: a monotonic clock, which no time change moves
        # (``clock`` is injected by the tests to make it jump).
        self.db, self.rate, self.burst, self.clock = db, rate, burst, clock
        self.size = lease_size(rate, burst)
        self._leases: dict[bytes, _Lease] = {}
        self._lock = threading.Lock()

    def _spend(self, bucket: bytes) -> Quota | None:
        """A request from this worker's lease on ``bucket``, if it holds a fresh one."""
        with self._lock:
            lease = self._leases.get(bucket)
            if lease is None or lease.left < 1 or not 0 <= self.clock() - lease.taken_at <= LEASE_SECONDS:
                return None  # a clock that went back cannot make a lease last longer: it is dropped
            lease.left -= 1
            return Quota(allowed=True, limit=self.burst, remaining=lease.level + lease.left, rate=self.rate)

    def take(self, bucket: bytes) -> Quota:
        """Take one request from ``bucket``; the caller answers 429 when not ``allowed``."""
        quota = self._spend(bucket)
        if quota is not None:
            return quota
        with self.db.psycopg() as conn:
            granted, level = conn.execute("select * from cartpulse.take_tokens(%s, %s, %s, %s)",
                                          [bucket, float(self.rate), float(self.burst), float(self.size)]).fetchone()
        granted = int(granted)
        if granted > 1:
            with self._lock:
                self._leases[bucket] = _Lease(granted - 1, level, self.clock())
        return Quota(allowed=granted >= 1, limit=self.burst, remaining=level + max(0, granted - 1), rate=self.rate)

    def check(self, bucket: bytes) -> Quota | None:
        """None when rate limiting is off (``RATE_LIMIT_RPS=0``); raise 429 when over the limit."""
        if self.rate <= 0:
            return None
        quota = self.take(bucket)
        if not quota.allowed:
            raise ApiError(429, f"rate limit exceeded: {self.rate:g} requests per second per token"
                                f" (bursts of {self.burst}); retry after the Retry-After header's seconds",
                           headers=quota.headers())
        return quota
