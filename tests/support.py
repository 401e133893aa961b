"""Small helpers shared by the tests."""

from __future__ import annotations

import json

import psycopg


def truncate_events(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("truncate raw.ecommerce_events, raw.ecommerce_events_quarantine")


def ndjson(events) -> bytes:
    return ("\n".join(json.dumps(e, ensure_ascii=False) for e in events) + "\n").encode()


def count(url: str, table: str = "raw.ecommerce_events") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]
