"""WAL positions: how an acknowledgement proves, to any server, what it covers.

Every ingest answer carries the primary's WAL flush position read after its commit
(``CartPulse-LSN``); a streaming replica that has replayed past it holds the write.
The positions are PostgreSQL's pg_lsn, kept as text on the wire and as integers here.
"""

from __future__ import annotations

import re

import psycopg

from cartpulse.errors import ApiError

LSN_HEADER = "CartPulse-LSN"
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
FLUSH_POSITION = "select pg_current_wal_flush_lsn()::text"
#: On a replica: the position it has replayed up to. Null when the server is not in
#: recovery: a promoted server keeps reporting the last position it replayed.
REPLAY_POSITION = "select case when pg_is_in_recovery() then pg_last_wal_replay_lsn()::text end"


def parse_lsn(text: str) -> int:
    """``0/1A2B3C8`` (PostgreSQL's pg_lsn text) as an integer; 400 naming the header otherwise."""
    match = _LSN.fullmatch(text.strip())
    if not match:
        raise ApiError(400, f"header {LSN_HEADER}: '{text[:40]}' is not a WAL position like 0/1A2B3C8"
                            " (send back the value an ingest acknowledgement gave)")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def commit_position(conn: psycopg.Connection) -> str:
    """Commit the caller's transaction now and return a WAL position covering it.

    With ``synchronous_commit`` on, the commit record is flushed before ``commit()``
    returns, so the primary's flush position read afterwards is at or past it; a replica
    that has replayed up to that position shows the commit."""
    conn.commit()
    return conn.execute(FLUSH_POSITION).fetchone()[0]


def current_position(db) -> str:
    """The primary's flush position now: covers every commit acknowledged before."""
    with db.psycopg() as conn:
        return conn.execute(FLUSH_POSITION).fetchone()[0]
