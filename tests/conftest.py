"""Fixtures mirroring the app factory: a real PostgreSQL, a built dbt project, ``app``, ``client``.

The database is a throwaway one, created for the session and dropped after it, on
``CARTPULSE_TEST_DATABASE_URL`` when given (``make test`` points it at TimescaleDB when
``TIMESCALE_URL`` is set) or else on an embedded server started in a temporary folder.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from cartpulse.auth import ensure_admin_token
from cartpulse.config import Settings
from cartpulse.dbt_cli import run_dbt
from cartpulse.embedded import EmbeddedPostgres
from cartpulse.storage import create_storage

from support import truncate_events

GIVEN_SERVER = os.environ.get("CARTPULSE_TEST_DATABASE_URL")


def with_database(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def server_url():
    """A PostgreSQL server URL (maintenance database)."""
    if GIVEN_SERVER:
        yield GIVEN_SERVER
        return
    folder = Path(tempfile.mkdtemp(prefix="cartpulse-test-"))
    server = EmbeddedPostgres(folder / "pgdata")
    server.start()
    try:
        yield server.admin_url()
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(server_url):
    """A fresh database for this session, dropped at the end."""
    name = f"cartpulse_test_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def engine(database_url):
    return create_storage(database_url)


@pytest.fixture(scope="session")
def settings(database_url, engine, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    return Settings.from_env(
        database_url=database_url, state_dir=state, target_dir=state / "target",
        admin_token="test-admin-" + secrets.token_hex(8),
    )


@pytest.fixture(scope="session")
def admin_token(settings):
    return ensure_admin_token(settings.database_url, settings.state_dir, settings.admin_token)


@pytest.fixture(scope="session")
def built(settings, admin_token):
    """The dbt models, built once for the session."""
    run_dbt(settings, settings.database_url, "run", "--quiet")
    return settings


@pytest.fixture(scope="session")
def app(built):
    from cartpulse.app import create_app

    application = create_app(built)
    application.config["TESTING"] = True
    yield application
    application.extensions["cartpulse"].db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def auth(admin_token):
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def empty_events(settings):
    """Start the test with no events (and no quarantined rows)."""
    truncate_events(settings.database_url)
    return settings



@pytest.fixture(scope="module")
def live_server(built, admin_token, tmp_path_factory):
    """The production server (`cartpulse serve`: gunicorn, 2 workers) on a free port."""
    import subprocess
    import sys

    from support import Http, free_port, wait_http

    port = free_port()
    env = {**os.environ, "DATABASE_URL": built.database_url, "PORT": str(port), "TB_ADMIN_TOKEN": admin_token,
           "DBT_TARGET_PATH": str(built.target_dir), "CARTPULSE_STATE_DIR": str(tmp_path_factory.mktemp("serve")),
           "WEB_WORKERS": "2", "WEB_THREADS": "8"}
    log = open(Path(env["CARTPULSE_STATE_DIR"]) / "serve.log", "w")  # read it when a test fails
    proc = subprocess.Popen([str(Path(sys.executable).parent / "cartpulse"), "serve"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        yield Http(f"http://127.0.0.1:{port}", admin_token)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
