"""/metrics under `cartpulse serve` with 2 workers sums both workers' counters; pipe requests
land in cartpulse.pipe_stats (without the token) and are purged after the retention."""

from __future__ import annotations

import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from cartpulse.cli.event_generator import EventGenerator
from cartpulse.ops import pipe_stats as stats
from support import EVENT, POST, ApiServer, metric_value, ndjson, truncate_events


@pytest.fixture(scope="module")
def served(built, admin_token, tmp_path_factory):
    """`cartpulse serve` with 2 workers and a PROMETHEUS_MULTIPROC_DIR the test can look into:
    a folder that does not exist yet (it once crashed `make run`), created at start."""
    folder = tmp_path_factory.mktemp("metrics")
    assert not (folder / "prom").exists()
    server = ApiServer(built, admin_token, folder, RATE_LIMIT_RPS="0", PROMETHEUS_MULTIPROC_DIR=str(folder / "prom"))
    server.start()
    try:
        yield server.http, folder / "prom"
    finally:
        server.stop()


def scrape(http) -> str:
    import urllib.request

    with urllib.request.urlopen(http.base + "/metrics", timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def test_metrics_sum_over_workers(served, built):
    http, prom = served
    truncate_events(built.database_url)
    base = scrape(http)
    rows = 'cartpulse_ingested_rows_total{data_source="ecommerce_events",via="events"}'
    bad = 'cartpulse_quarantined_rows_total{data_source="ecommerce_events",via="events"}'
    before_rows, before_bad = metric_value(base, rows), metric_value(base, bad)
    generator = EventGenerator(seed=3, products=20)

    def post(_):
        body = ndjson(generator.events(3)) + b'{"event_time": "never"}\n'
        assert http.request("POST", "/v0/events?name=ecommerce_events", body)[0] == 202

    sent = 0
    with ThreadPoolExecutor(8) as pool:  # until both workers have served some (their own files)
        while sent < 400 and len({p.name.split("_")[-1] for p in prom.glob("counter_*.db")}) < 2:
            list(pool.map(post, range(16)))
            sent += 16
    assert len({p.name.split("_")[-1] for p in prom.glob("counter_*.db")}) >= 2, "one worker served everything"
    for _ in range(6):  # whichever worker answers the scrape, it reports the total of both
        text = scrape(http)
        assert metric_value(text, rows) - before_rows == 3 * sent
        assert metric_value(text, bad) - before_bad == sent
    assert metric_value(text, "cartpulse_database_up") == 1
    with psycopg.connect(built.database_url) as conn:
        pending = conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]
    assert metric_value(text, 'cartpulse_pending_rows{data_source="ecommerce_events"}') == pending == 3 * sent
    assert 'cartpulse_pending_oldest_event_age_seconds{data_source="ecommerce_events"}' in text
    assert re.search(r'^cartpulse_rollup_age_seconds\{rollup="[^"]+"\} \S+$', text, re.M)


def test_pipe_requests_in_metrics_and_pipe_stats(served, built):
    http, _ = served
    with psycopg.connect(built.database_url) as conn:
        since = conn.execute("select now()").fetchone()[0]
    count = 'cartpulse_pipe_request_duration_seconds_count{pipe="top_products",status="200"}'
    before = metric_value(scrape(http), count)
    for limit in (1, 2, 3):
        status, _ = http.request("GET", f"/v0/pipes/top_products.json?limit={limit}&country=France&token={http.token}")
        assert status == 200
    assert http.request("GET", "/v0/pipes/top_products.json?limit=zero")[0] == 400
    assert metric_value(scrape(http), count) - before == 3
    deadline = time.monotonic() + 10  # each worker flushes its queue about once a second
    while time.monotonic() < deadline:
        with psycopg.connect(built.database_url) as conn:
            rows = conn.execute("select params, status, rows_read, result_rows, token_name, error, duration"
                                " from cartpulse.pipe_stats where pipe = 'top_products' and at >= %s"
                                " order by at", [since]).fetchall()
        if len(rows) == 4:
            break
        time.sleep(0.3)
    assert [(r[0], r[1]) for r in rows] == [
        ({"limit": "1", "country": "France"}, 200), ({"limit": "2", "country": "France"}, 200),
        ({"limit": "3", "country": "France"}, 200), ({"limit": "zero"}, 400)]  # never the token
    assert all(r[2] >= 0 and r[6] > 0 and r[4] == "admin token" for r in rows)
    assert rows[0][3] <= 1 and rows[3][5].startswith("invalid value for parameter 'limit'")


def test_pipe_stats_retention_and_metrics_token(built, app):
    from cartpulse.app import create_app

    with psycopg.connect(built.database_url) as conn:
        conn.execute("insert into cartpulse.pipe_stats (at, pipe, params, status, duration, rows_read, bytes_read,"
                     " result_rows) values (now() - interval '8 days', 'old', '{}', 200, 0.1, 0, 0, 0),"
                     " (now() - interval '6 days', 'recent', '{}', 200, 0.1, 0, 0, 0)")
        assert stats.purge(conn, 7) >= 1
        left = {p for (p,) in conn.execute("select pipe from cartpulse.pipe_stats where pipe in ('old', 'recent')")}
    assert left == {"recent"}
    guarded = create_app(replace(built, metrics_token="scrape-me"))
    try:
        client = guarded.test_client()
        assert client.get("/metrics").status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and b"cartpulse_database_up 1.0" in r.data
    finally:
        guarded.extensions["cartpulse"].db.dispose()


def children(pid: int) -> set[int]:
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_restarted_worker_leaves_the_metrics_of_the_others(built, admin_token, tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR (as `make run` and `cartpulse serve` start), the
    metric files live in a temporary folder the master removes when it exits. A worker
    that exits and is replaced must not remove it (workers inherit the master's atexit
    handlers): ingest keeps answering 202 and /metrics keeps every worker's counts."""
    server = ApiServer(built, admin_token, tmp_path, RATE_LIMIT_RPS="0")
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server.start()
    try:
        def ingested() -> float:
            return metric_value(scrape(server.http), 'cartpulse_ingested_rows_total{data_source="ecommerce_events",'
                                                      'via="events"}')

        sent = 0
        for _ in range(4):
            assert server.http.request("POST", POST, ndjson([EVENT]))[0] == 202
            sent += 1
        # /healthz answered from one worker; gunicorn forks the other a moment later.
        deadline = time.monotonic() + 60
        while len(workers := children(server.proc.pid)) != 2:
            assert time.monotonic() < deadline, f"gunicorn runs {len(workers)} workers, not 2"
            time.sleep(0.05)
        os.kill(min(workers), signal.SIGTERM)  # the master starts another in its place
        deadline = time.monotonic() + 60
        while len(now := children(server.proc.pid)) != 2 or now == workers:
            assert time.monotonic() < deadline, "no worker replaced the one stopped"
            time.sleep(0.05)
        for _ in range(4):
            assert server.http.request("POST", POST, ndjson([EVENT]))[0] == 202
            sent += 1
        assert [ingested() for _ in range(4)] == [sent] * 4  # whichever worker answers
    finally:
        server.stop()
