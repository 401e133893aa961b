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

from cartpulse.access.auth import ensure_admin_token
from cartpulse.config import Settings
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.ops.derive import derive
from cartpulse.storage import citus
from cartpulse.storage.embedded import EmbeddedPostgres
from cartpulse.storage.schema import create_storage
from support import server_folder, truncate_events

GIVEN_SERVER = os.environ.get("CARTPULSE_TEST_DATABASE_URL")


def with_database(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def embedded_server():
    """The tests' own embedded PostgreSQL, or None on CARTPULSE_TEST_DATABASE_URL
    (fault tests stop and restart it; a given server is not ours to restart)."""
    if GIVEN_SERVER:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="cartpulse-test-"))
    server = EmbeddedPostgres(folder / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def own_server(embedded_server):
    """The embedded server, for a test that stops it; skips on a given server."""
    if embedded_server is None:
        pytest.skip("needs to stop and restart PostgreSQL: only done on the tests' own embedded server,"
                    " not on CARTPULSE_TEST_DATABASE_URL")
    yield embedded_server
    embedded_server.start()  # whatever the test did, the next test finds it up


@pytest.fixture
def server_tmp():
    """``tmp_path`` for a test that starts an embedded PostgreSQL of its own (see
    support.server_folder: why not under pytest's own temporary folder)."""
    with server_folder() as folder:
        yield folder


@pytest.fixture(scope="session")
def server_url(embedded_server):
    """A PostgreSQL server URL (maintenance database)."""
    return GIVEN_SERVER or embedded_server.admin_url()


@pytest.fixture(scope="session")
def citus_cluster(server_url):
    """Whether the given server is a Citus coordinator with workers (a database on it is
    then made on every node, storage/citus.py)."""
    return bool(GIVEN_SERVER) and citus.is_citus_server(server_url)


@pytest.fixture(scope="session")
def database_url(server_url, citus_cluster):
    """A fresh database for this session, dropped at the end."""
    name = f"cartpulse_test_{secrets.token_hex(4)}"
    if citus_cluster:
        url = citus.create_cluster_database(server_url, name)
        try:
            yield url
        finally:
            citus.drop_cluster_database(server_url, name)
        return
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def engine(database_url):
    return create_storage(database_url, Settings.from_env(database_url=database_url))


@pytest.fixture(scope="session")
def settings(database_url, engine, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    # Rate limits off for the shared app: unrelated tests must not depend on how fast the
    # machine is. test_ratelimit.py builds its own app and server with limits on.
    return Settings.from_env(
        database_url=database_url, state_dir=state, target_dir=state / "target",
        admin_token="test-admin-" + secrets.token_hex(8), rate_limit_rps=0,
    )


@pytest.fixture(scope="session")
def admin_token(settings):
    return ensure_admin_token(settings.database_url, settings.state_dir, settings.admin_token)


@pytest.fixture(scope="session")
def built(settings, admin_token):
    """The dbt models, derived and built once for the session, as `cartpulse build` does."""
    derive(settings, settings.database_url)
    run_dbt(settings, settings.database_url, "run", "--quiet")
    return settings


@pytest.fixture(scope="session")
def app(built):
    from cartpulse.app import create_app

    application = create_app(built)
    application.config["TESTING"] = True
    yield application
    # Its pipe_stats rows now, while the database is up: left to the flush at exit, they
    # met a stopped server ("pipe_stats: 1 rows not written" after the summary).
    application.extensions["cartpulse_stats"].flush()
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
    from support import ApiServer

    server = ApiServer(built, admin_token, tmp_path_factory.mktemp("serve"), RATE_LIMIT_RPS="0")
    server.start()
    try:
        yield server.http
    finally:
        server.stop()
