"""Idempotency keys for the Events API: a retried batch is stored once.

A client sends ``Idempotency-Key: <its own id for the batch>`` and, when it gets no answer
(a timeout, a dropped connection, a 503), sends the same batch with the same key again.
The key is claimed by an INSERT *inside the batch's own transaction*, with the answer the
batch gets: the rows and the key commit together or not at all, so even a process killed
right after the commit leaves a key that makes the retry a replay. A retry whose twin is
still writing waits on the key's unique index until that transaction ends, then replays
its answer (or, if it rolled back, stores the batch itself).

Keys are scoped to the token's name and the data source, remembered for
``IDEMPOTENCY_TTL_SECONDS`` (24 h by default) and then forgotten: old keys are deleted in
small steps, at most once a minute per process. The same key with a different body is
refused (422): it is a client bug that would otherwise silently drop the second batch.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from cartpulse.errors import ApiError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
PURGE_EVERY_SECONDS = 60.0
PURGE_BATCH = 10_000


@dataclass(frozen=True)
class Claim:
    """What a batch carrying a key will record if it commits."""

    token_name: str
    data_source: str
    key: str
    body_sha256: bytes
    ttl_seconds: int


@dataclass(frozen=True)
class Replay:
    status: int
    response: dict


class AlreadyStored(Exception):
    """The key was committed before: roll back and answer ``replay``."""

    def __init__(self, replay: Replay):
        super().__init__("idempotency key already used")
        self.replay = replay


def request_key(headers) -> str | None:
    """The request's key, or None; 400 for a key no client would send on purpose."""
    key = headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ApiError(400, f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return key


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def claim(conn: psycopg.Connection, claim: Claim, status: int, response: dict) -> None:
    """Record the key and its answer in the caller's transaction, or raise AlreadyStored.

    A key older than its time to live is taken over (the batch is then stored anew)."""
    row = conn.execute(
        "insert into cartpulse.idempotency_keys as k"
        " (token_name, data_source, key, body_sha256, status, response)"
        " values (%s, %s, %s, %s, %s, %s)"
        " on conflict (token_name, data_source, key) do update set"
        "   body_sha256 = excluded.body_sha256, status = excluded.status,"
        "   response = excluded.response, created_at = now()"
        "   where k.created_at < now() - make_interval(secs => %s)"
        " returning 1",
        [claim.token_name, claim.data_source, claim.key, claim.body_sha256, status, Jsonb(response),
         claim.ttl_seconds]).fetchone()
    if row is not None:
        return
    stored = conn.execute(
        "select body_sha256, status, response from cartpulse.idempotency_keys"
        " where token_name = %s and data_source = %s and key = %s",
        [claim.token_name, claim.data_source, claim.key]).fetchone()
    if bytes(stored[0]) != claim.body_sha256:
        raise ApiError(422, f"this {HEADER} was used for a different body: a key names one batch")
    raise AlreadyStored(Replay(status=stored[1], response=stored[2]))


def lookup(conn: psycopg.Connection, claim: Claim) -> Replay | None:
    """The remembered answer for a key, before doing any work (the common retry path)."""
    row = conn.execute(
        "select body_sha256, status, response from cartpulse.idempotency_keys"
        " where token_name = %s and data_source = %s and key = %s"
        " and created_at >= now() - make_interval(secs => %s)",
        [claim.token_name, claim.data_source, claim.key, claim.ttl_seconds]).fetchone()
    if row is None:
        return None
    if bytes(row[0]) != claim.body_sha256:
        raise ApiError(422, f"this {HEADER} was used for a different body: a key names one batch")
    return Replay(status=row[1], response=row[2])


class Purger:
    """Deletes expired keys now and then, a bounded number at a time (cheap, no long locks)."""

    def __init__(self):
        self._last = 0.0
        self._lock = threading.Lock()

    def maybe_purge(self, db, ttl_seconds: int) -> int:
        now = time.monotonic()
        with self._lock:
            if now - self._last < PURGE_EVERY_SECONDS:
                return 0
            self._last = now
        return purge(db, ttl_seconds)


def purge(db, ttl_seconds: int) -> int:
    """Delete up to PURGE_BATCH expired keys (oldest first, through the created_at index)."""
    with db.psycopg() as conn:
        cur = conn.execute(
            "delete from cartpulse.idempotency_keys where ctid = any(array("
            " select ctid from cartpulse.idempotency_keys"
            " where created_at < now() - make_interval(secs => %s)"
            " order by created_at limit %s for update skip locked))",
            [ttl_seconds, PURGE_BATCH])
        return cur.rowcount
