"""Analysts' logins (`cartpulse analyst create`): they read the models and the data
sources, user_id and session_id only as pseudonyms, and can write or create nothing."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from cartpulse.cli.analyst import login_url
from cartpulse.config import PROJECT_DIR
from cartpulse.storage import roles
from support import EVENT, ndjson, truncate_events

CARTPULSE = str(Path(sys.executable).parent / "cartpulse")


def cartpulse(settings, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "CARTPULSE_STATE_DIR": str(settings.state_dir)}
    return subprocess.run([CARTPULSE, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def analyst(built, client, auth):
    """A fresh analyst login over two known events; its connection URL. Dropped after."""
    truncate_events(built.database_url)
    events = [{**EVENT, "user_id": "u-alice", "session_id": "s-1", "country": "FR"},
              {**EVENT, "user_id": "u-bob", "session_id": "s-2", "event_type": "view", "country": "FR"}]
    assert client.post("/v0/events?name=ecommerce_events", data=ndjson(events), headers=auth).status_code == 202
    name = f"analyst_{secrets.token_hex(4)}"
    made = cartpulse(built, "analyst", "create", name)
    assert made.returncode == 0, made.stderr
    url = made.stdout.strip()
    assert "shown this once" in made.stderr and url.startswith("postgresql://")
    try:
        yield name, url
    finally:
        truncate_events(built.database_url)
        with psycopg.connect(built.database_url, autocommit=True) as conn:
            conn.execute(f'drop role if exists "{name}"')


def test_the_analyst_reads_models_and_pseudonyms(analyst, built):
    name, url = analyst
    with psycopg.connect(built.database_url) as admin:
        key = admin.execute("select key from cartpulse.pseudonym_key").fetchone()[0]
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == name
        assert conn.execute("select country, event_count from analytics.events_by_country").fetchall() == [("FR", 2)]
        rows = conn.execute("select product_id, total_quantity from analytics.top_products(\"limit\" => 5)").fetchall()
        assert rows == [("p1", 2)]  # EVENT is a purchase
        assert conn.execute("select count(*) from analytics.derived_ecommerce_events__country__1d_live").fetchone()[0] >= 1
        masked = conn.execute("select user_key, session_key from analytics_analyst.events order by event_type").fetchall()
        # Data sources too, without the personal columns.
        assert conn.execute("select count(*), min(country) from raw.ecommerce_events").fetchone() == (2, "FR")

    def pseudonym(value: str) -> str:  # the same definition, computed here
        return hashlib.sha256((key + value).encode()).hexdigest()

    assert masked == [(pseudonym("u-alice"), pseudonym("s-1")), (pseudonym("u-bob"), pseudonym("s-2"))]
    assert all("u-alice" not in str(v) for row in masked for v in row)


@pytest.mark.parametrize("statement", [
    "select user_id from raw.ecommerce_events",
    "select session_id from raw.ecommerce_events",
    "select * from raw.ecommerce_events",
    "select user_id from analytics.stg_raw__ecommerce_events",
    "select * from raw.ecommerce_events_quarantine",
    "select * from raw.ecommerce_events_pending",
    "select * from cartpulse.pseudonym_key",
    "select * from cartpulse.tokens",
])
def test_the_analyst_cannot_read_personal_or_private_data(analyst, statement):
    with psycopg.connect(analyst[1], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


@pytest.mark.parametrize("statement", [
    "insert into raw.ecommerce_events (event_time, event_type, product_id, country) values (now(), 'x', 'p', 'c')",
    "delete from analytics.rollup_purchases_daily_by_country",
    "update analytics.derived_ecommerce_events__country__1d set events = 0",
    "create table analytics.mine (a int)",
    "create table public.mine (a int)",
    "create view analytics_analyst.mine as select 1",
    "create schema mine",
])
def test_the_analyst_cannot_write_or_create(analyst, statement):
    """Refused by privileges, not only by the login's read-only default (which the
    analyst can turn off)."""
    with psycopg.connect(analyst[1], autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(statement)
        conn.execute("set default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


def test_delete_drops_only_analyst_logins(analyst, built):
    name, _ = analyst
    assert name in cartpulse(built, "analyst", "list").stdout.split()
    refused = cartpulse(built, "analyst", "delete", "postgres")
    assert refused.returncode == 2 and "not an analyst login" in refused.stderr
    assert cartpulse(built, "analyst", "delete", name).returncode == 0
    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select count(*) from pg_roles where rolname = %s", [name]).fetchone()[0] == 0


def test_bad_names_are_refused(built):
    bad = cartpulse(built, "analyst", "create", "Robert'); drop table x;--")
    assert bad.returncode == 2 and "not a valid login name" in bad.stderr


def test_the_role_name_is_one(built):
    """dbt grants the role the service creates."""
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["vars"]["analyst_role"] == roles.ANALYSTS


def test_login_url_keeps_the_server_and_database():
    assert login_url("host=/tmp/pg dbname=shop user=postgres", "ann", "p/w") == \
        "postgresql://ann:p%2Fw@/shop?host=%2Ftmp%2Fpg"
    assert login_url("postgresql://postgres:x@db.example:6543/shop?sslmode=require", "ann", "pw") == \
        "postgresql://ann:pw@db.example:6543/shop?sslmode=require"
