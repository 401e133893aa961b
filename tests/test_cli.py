"""The commands a user runs: `cartpulse serve` with the seed's curl commands, `cartpulse run` twice."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cartpulse.storage.embedded import EmbeddedPostgres
from support import as_from_a_terminal, free_port, truncate_events, wait_http

SEED_POST = """curl -X POST "$HOST/v0/events?name=ecommerce_events" -H "Authorization: Bearer $TB_ADMIN_TOKEN" -d '{"event_time":"2024-05-01 10:15:00","event_type":"purchase","user_id":"u123","product_id":"p456","category":"electronics","price":199.99,"quantity":2,"session_id":"s789","country":"US"}'"""
SEED_GET = """curl "$HOST/v0/pipes/top_products.json?token=$TB_ADMIN_TOKEN\""""
CARTPULSE = str(Path(sys.executable).parent / "cartpulse")


def shell(command: str, env: dict) -> str:
    return subprocess.run(["bash", "-c", command], env=env, check=True, capture_output=True, text=True).stdout


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> str:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return out


def test_seed_curl_commands_verbatim(built, admin_token, tmp_path):
    """The tutorial's two commands, with only the host changed, against the real server
    started in a shell that has already exported the tour's HOST (a URL, not read by CartPulse)."""
    truncate_events(built.database_url)
    port = free_port()
    host = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": built.database_url, "PORT": str(port), "TB_ADMIN_TOKEN": admin_token,
           "DBT_TARGET_PATH": str(built.target_dir), "CARTPULSE_STATE_DIR": str(tmp_path), "HOST": host}
    proc = subprocess.Popen([CARTPULSE, "serve"], preexec_fn=as_from_a_terminal, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"{host}/healthz", proc)
        assert '"successful_rows":1' in shell(SEED_POST, env).replace(" ", "")
        body = __import__("json").loads(shell(SEED_GET, env))
        assert body["data"] == [{"product_id": "p456", "total_quantity": 2, "total_revenue": 399.98}]
    finally:
        stop(proc, signal.SIGTERM)


@pytest.mark.embedded
def test_make_run_lifecycle(server_tmp):
    """`cartpulse run` (what `make run` calls): serves, prints token and curls, stops cleanly, keeps data."""
    if os.environ.get("CARTPULSE_TEST_DATABASE_URL"):
        pytest.skip("engine-independent: exercised in the embedded-PostgreSQL pass")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TB_ADMIN_TOKEN")}
    env.update(PORT=str(port), CARTPULSE_STATE_DIR=str(server_tmp / "state"), DBT_TARGET_PATH=str(server_tmp / "target"))
    host = f"http://127.0.0.1:{port}"
    server = EmbeddedPostgres(server_tmp / "state" / "pgdata")

    def run_once(extra_env=None):
        proc = subprocess.Popen([CARTPULSE, "run"], preexec_fn=as_from_a_terminal, env={**env, **(extra_env or {})},
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            wait_http(f"{host}/healthz", proc)
        except AssertionError:
            proc.kill()
            raise AssertionError(proc.communicate()[0][-3000:])
        return proc

    proc = run_once()
    try:
        token = (server_tmp / "state" / "admin_token").read_text().strip()
        shell(SEED_POST, {**env, "HOST": host, "TB_ADMIN_TOKEN": token})
    finally:
        out = stop(proc, signal.SIGINT)
    assert proc.returncode == 0, out[-2000:]
    assert f"Admin token: {token}" in out and "shown this once" in out  # created by this run
    assert len(re.findall(r"^\s*curl ", out, re.M)) == 2
    assert not server.running(), "Ctrl-C must stop the embedded database"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{host}/healthz", timeout=1)

    proc = run_once({"TB_ADMIN_TOKEN": "chosen-admin-token"})
    try:
        body = __import__("json").loads(shell(SEED_GET, {**env, "HOST": host, "TB_ADMIN_TOKEN": "chosen-admin-token"}))
        assert body["data"][0]["product_id"] == "p456", "the second run finds the data stored before"
    finally:
        out = stop(proc, signal.SIGTERM)
    assert "chosen-admin-token" not in out, "a token the user gave is never printed"
    assert "Admin token: TB_ADMIN_TOKEN, from your environment" in out
    assert not server.running()


@pytest.mark.embedded
def test_replica_command_makes_a_streaming_replica_of_the_embedded_server(server_tmp):
    """`cartpulse replica start` (README: Scaling out): a hot standby that follows the
    embedded server; `url` gives what READ_DATABASE_URLS takes."""
    if os.environ.get("CARTPULSE_TEST_DATABASE_URL"):
        pytest.skip("engine-independent: exercised in the embedded-PostgreSQL pass")
    import psycopg

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "READ_DATABASE_URLS")}
    env["CARTPULSE_STATE_DIR"] = str(server_tmp / "state")

    def cartpulse(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([CARTPULSE, *args], env=env, capture_output=True, text=True, check=check, timeout=300)

    try:
        started = cartpulse("replica", "start").stdout.strip().splitlines()[-1]
        assert started == cartpulse("replica", "url").stdout.strip()
        assert cartpulse("replica", "status").stdout.strip() == "running"
        primary = cartpulse("db", "url").stdout.strip()
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("create table replicated (x int)")
            conn.execute("insert into replicated values (42)")
            position = conn.execute("select pg_current_wal_flush_lsn()").fetchone()[0]
        with psycopg.connect(started, autocommit=True) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone()[0]
            for _ in range(200):
                if conn.execute("select pg_last_wal_replay_lsn() >= %s", [position]).fetchone()[0]:
                    break
                time.sleep(0.05)
            assert conn.execute("select x from replicated").fetchone()[0] == 42
        cartpulse("replica", "stop")
        assert cartpulse("replica", "status", check=False).returncode == 3
    finally:
        cartpulse("replica", "stop", check=False)
        cartpulse("db", "stop", check=False)
