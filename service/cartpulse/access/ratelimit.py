"""Rate limits: requests per second per token, shared by every worker process.

Each token has a token bucket (``RATE_LIMIT_RPS`` refill, ``RATE_LIMIT_BURST`` size) kept
in the UNLOGGED table ``cartpulse.rate_limits`` and updated by one statement
(``cartpulse.take_token``): PostgreSQL's row lock serializes the gunicorn workers of every
process and every host, so the limit holds however many workers serve the token — a
per-process counter would multiply it by the number of workers. The table writes no WAL,
so a check costs one round trip and no disk flush.

Every answer to an authenticated request carries ``X-RateLimit-Limit`` (the bucket size),
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the bucket is full
again); a request over the limit is answered 429 with ``Retry-After`` (seconds until one
request is allowed) and stores or reads nothing.
"""

from __future__ import annotations

import math
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


def take(db, bucket: bytes, rate: float, burst: int) -> Quota:
    """Take one request from ``bucket``; the caller answers 429 when not ``allowed``."""
    with db.psycopg() as conn:
        allowed, tokens = conn.execute("select * from cartpulse.take_token(%s, %s, %s)",
                                       [bucket, float(rate), float(burst)]).fetchone()
    return Quota(allowed=allowed, limit=burst, remaining=tokens, rate=rate)


def check(db, bucket: bytes, rate: float, burst: int) -> Quota | None:
    """None when rate limiting is off (``RATE_LIMIT_RPS=0``); raise 429 when over the limit."""
    if rate <= 0:
        return None
    quota = take(db, bucket, rate, burst)
    if not quota.allowed:
        raise ApiError(429, f"rate limit exceeded: {rate:g} requests per second per token"
                            f" (bursts of {burst}); retry after the Retry-After header's seconds",
                       headers=quota.headers())
    return quota
