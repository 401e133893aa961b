"""PostgreSQL at ``max_connections``: a clear 503 with Retry-After (never a 500), nothing
acknowledged that is not stored, and the service recovers as soon as connections free up."""

from __future__ import annotations

import psycopg
from support import EVENT, POST, app_with, count, ndjson, truncate_events


def _fill(url: str) -> list[psycopg.Connection]:
    """Every connection slot of the server taken (as superuser, so the reserved ones too)."""
    held = []
    while len(held) < 1000:
        try:
            held.append(psycopg.connect(url, connect_timeout=5))
        except psycopg.OperationalError as err:
            assert "too many clients" in str(err) or "reserved" in str(err), err
            return held
    raise AssertionError("the server took 1000 connections: max_connections not reached")


def test_at_max_connections_ingest_is_503_then_recovers(own_server, built, admin_token):
    truncate_events(built.database_url)
    auth = {"Authorization": f"Bearer {admin_token}"}
    with app_with(built) as app:  # its own pool: empty, so every request must connect
        client = app.test_client()
        held = _fill(built.database_url)
        try:
            answers = [client.post(POST, data=ndjson([{**EVENT, "user_id": f"u{i}"}]),
                                   headers={**auth, "Idempotency-Key": f"full-{i}"}) for i in range(3)]
            for r in answers:
                assert r.status_code == 503, r.get_data(as_text=True)
                assert "max_connections" in r.get_json()["error"]
                assert int(r.headers["Retry-After"]) >= 1
        finally:
            for conn in held:
                conn.close()
        assert count(built.database_url) == 0  # nothing acknowledged, nothing stored
        # Connections free: the same app (no restart), the same batches, stored once each.
        for i in range(3):
            r = client.post(POST, data=ndjson([{**EVENT, "user_id": f"u{i}"}]), headers={**auth, "Idempotency-Key": f"full-{i}"})
            assert r.status_code in (200, 202), r.get_data(as_text=True)
        assert count(built.database_url) == 3
