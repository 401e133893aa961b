"""The refresh scheduler: `cartpulse run` refreshes by itself every REFRESH_SECONDS, each run is
recorded (and shown by GET /v0/refresh and /metrics), the advisory lock keeps runs one at a
time across processes, and a failing run is recorded as failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from cartpulse.ops.scheduler import LOCK_KEY, Scheduler
from support import Http, as_from_a_terminal, count, free_port, truncate_events, wait_http

CARTPULSE = str(Path(sys.executable).parent / "cartpulse")


def last_run(url: str) -> dict:
    with psycopg.connect(url) as conn:
        cur = conn.execute("select * from cartpulse.refresh_runs order by id desc limit 1")
        row = cur.fetchone()
        return dict(zip([d.name for d in cur.description], row)) if row else {"id": 0}


def scheduler_children(parent: int) -> list[int]:
    """Processes started by `cartpulse run` as its scheduler (`--parent <pid>`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"scheduler" in cmdline and str(parent).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_cartpulse_run_refreshes_by_itself(built, admin_token, tmp_path):
    """With REFRESH_SECONDS=1, events sent to `cartpulse run` are absorbed into the rollups
    (the pending table empties) without anyone running dbt; Ctrl-C stops the scheduler too."""
    url = built.database_url
    truncate_events(url)
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(port), "TB_ADMIN_TOKEN": admin_token,
           "DBT_TARGET_PATH": str(built.target_dir), "CARTPULSE_STATE_DIR": str(tmp_path), "REFRESH_SECONDS": "1",
           "WEB_WORKERS": "1"}
    with psycopg.connect(url) as conn:
        before = conn.execute("select coalesce(max(id), 0) from cartpulse.refresh_runs").fetchone()[0]
    proc = subprocess.Popen([CARTPULSE, "run"], preexec_fn=as_from_a_terminal, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        http = Http(f"http://127.0.0.1:{port}", admin_token)
        wait_http(f"{http.base}/healthz", proc)
        event = {"event_time": "2024-05-01 10:15:00", "event_type": "purchase", "user_id": "u1", "product_id": "p1",
                 "category": "shoes", "price": 10.0, "quantity": 3, "session_id": "s1", "country": "France"}
        assert http.post_events([event] * 5)[0] == 202
        # A refresh that began before the POST may end after it without the events: wait
        # for what is asked (the pending rows absorbed), then for that refresh's record
        # (written after its freshness check and VACUUM).
        deadline = time.monotonic() + 90
        while count(url, "raw.ecommerce_events_pending") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(url, "raw.ecommerce_events_pending") == 0, "no scheduled refresh absorbed the events"
        while last_run(url)["id"] <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.pipe("top_products") == [{"product_id": "p1", "total_quantity": 15, "total_revenue": 150.0}]
        status, body = http.request("GET", "/v0/refresh")
        assert status == 200 and body["refresh_seconds"] == 1
        mine = [r for r in body["runs"] if r["id"] > before]
        assert mine and mine[0]["status"] == "success" and mine[0]["duration_seconds"] > 0
        assert mine[0]["freshness"] in ("pass", "warn", "error")  # recorded, whatever the data's age
        assert scheduler_children(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=90)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "refresh succeeded" in out
    assert not scheduler_children(proc.pid), "the scheduler outlived `cartpulse run`"


def test_the_lock_keeps_refreshes_one_at_a_time(built):
    """While another session (another process or host) holds the refresh lock, a refresh
    is skipped and recorded as such; dbt is not run."""
    with psycopg.connect(built.database_url, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", [LOCK_KEY])
        started = time.monotonic()
        result = Scheduler(built, built.database_url).run_once()
        assert result.status == "skipped" and time.monotonic() - started < 2
        assert last_run(built.database_url)["status"] == "skipped"
        holder.execute("select pg_advisory_unlock(%s)", [LOCK_KEY])


def test_a_failing_refresh_is_recorded_as_failed(built, tmp_path, client, auth):
    """`cartpulse scheduler --once` (as cron runs it) when dbt fails (here: no project where it
    looks): exit status 1, the run recorded as failed with dbt's message, the lock released,
    and /metrics and /v0/refresh say so."""
    env = {**os.environ, "DATABASE_URL": built.database_url, "CARTPULSE_PROJECT_DIR": str(tmp_path),
           "DBT_TARGET_PATH": str(tmp_path / "target")}
    done = subprocess.run([CARTPULSE, "scheduler", "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "refresh failed" in done.stderr
    run = last_run(built.database_url)
    assert run["status"] == "failed" and "dbt run failed" in run["error"] and run["duration_seconds"] > 0
    with psycopg.connect(built.database_url) as conn:  # released: another session can take it
        assert conn.execute("select pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "cartpulse_refresh_last_success 0.0" in metrics
    assert "cartpulse_refresh_consecutive_failures" in metrics
    runs = client.get("/v0/refresh?limit=1", headers=auth).get_json()["runs"]
    assert runs[0]["status"] == "failed" and runs[0]["error"]
    assert client.get("/v0/refresh").status_code == 401
