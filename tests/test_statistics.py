"""The ``statistics`` of a pipe answer: ``rows_read`` counts the table rows a query read,
and ``bytes_read`` their size as stored (each row at its table's average row size)."""

from __future__ import annotations

import psycopg
import pytest

from support import EVENT, POST, ndjson


def stored_sizes(url: str) -> list[int]:
    """What PostgreSQL says each pending row weighs (the tables the answers below read)."""
    with psycopg.connect(url) as conn:
        return [n for (n,) in conn.execute("select pg_column_size(p.*) from raw.ecommerce_events_pending p")]


def statistics(client, auth) -> dict:
    r = client.get("/v0/pipes/top_products.json", headers=auth)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["statistics"]


@pytest.fixture
def fresh_counters(app, empty_events):
    """No table measured yet in this process, as in a server just started."""
    app.extensions["cartpulse"].read_counters._tables.clear()
    return empty_events


def test_a_one_row_answer_reads_the_size_of_its_row_not_a_page(client, auth, fresh_counters):
    assert client.post(POST, data=ndjson([EVENT]), headers=auth).status_code == 202
    got = statistics(client, auth)
    assert (got["rows_read"], got["bytes_read"]) == (1, *stored_sizes(fresh_counters.database_url))
    assert got["bytes_read"] < 200  # a row, not a page (8,192)


def test_rows_of_a_table_empty_when_measured_are_counted(client, auth, fresh_counters):
    """Tables are measured once per TTL; one that was empty then is measured when read."""
    assert statistics(client, auth)["rows_read"] == 0
    events = [EVENT, {**EVENT, "country": "Côte d'Ivoire", "category": "a longer category name"}, EVENT]
    assert client.post(POST, data=ndjson(events), headers=auth).status_code == 202
    got = statistics(client, auth)
    sizes = stored_sizes(fresh_counters.database_url)
    assert len(sizes) == got["rows_read"] == 3
    assert got["bytes_read"] == round(sum(sizes)) and len(set(sizes)) == 2


def test_rows_an_index_only_scan_reads_are_counted(app, built):
    """A table vacuumed after it was written is all-visible: an index-only scan reads its
    index and fetches no row from the table. Those index entries are rows read all the
    same (a rollup read this way reported rows_read 0). The table is created after the
    counters listed the schema's tables, as a TimescaleDB chunk is: it counts at once."""
    from cartpulse.serving.pipes import ReadCounters

    db = app.extensions["cartpulse"].db
    counters = ReadCounters()
    watched = counters.tables(db, ("analytics",))  # before the table exists, as a new chunk is
    with psycopg.connect(built.database_url, autocommit=True) as conn:
        conn.execute("drop table if exists analytics.statistics_probe")
        conn.execute("create table analytics.statistics_probe (k int primary key)")
        conn.execute("insert into analytics.statistics_probe select generate_series(1, 5000)")
        conn.execute("vacuum analyze analytics.statistics_probe")
    try:
        with db.psycopg() as conn:
            conn.execute("set local enable_seqscan = off")
            conn.execute("set local enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in conn.execute("explain select k from analytics.statistics_probe where k <= 100"))
            before = conn.execute(ReadCounters.READ, [watched.schemas]).fetchone()
            assert len(conn.execute("select k from analytics.statistics_probe where k <= 100").fetchall()) == 100
            after = conn.execute(ReadCounters.READ, [watched.schemas]).fetchone()
        assert "Index Only Scan" in plan
        assert counters.counts(db, watched, before, after)[0] == 100
    finally:
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            conn.execute("drop table analytics.statistics_probe")


def test_server_timing_breaks_a_read_into_its_parts(client, auth):
    """Every answer says where its time went (W3C Server-Timing): token lookup, rate limit,
    query, statistics and rendering for a pipe read, and the whole as the app saw it; an
    answer the result cache kept has no statistics to count."""
    for cache, parts in (("miss", {"statistics"}), ("hit", set())):
        headers = {**auth, "Cache-Control": "no-cache"} if cache == "miss" else auth
        r = client.get("/v0/pipes/top_products.json", query_string={"limit": 7}, headers=headers)
        assert r.status_code == 200 and r.headers["CartPulse-Cache"] == cache
        phases = dict(part.split(";dur=") for part in r.headers["Server-Timing"].split(", "))
        assert set(phases) == {"auth", "ratelimit", "query", "render", "app"} | parts
        durations = {k: float(v) for k, v in phases.items()}
        assert all(v >= 0 for v in durations.values())
        assert sum(v for k, v in durations.items() if k != "app") <= durations["app"]
