"""storage/worker_logins.py on any engine: what is checked before Citus is asked anything.
On a cluster, tests/test_citus.py checks the logins themselves (docs/citus.md)."""

from __future__ import annotations

import psycopg
import pytest

from cartpulse.errors import ApiError
from cartpulse.serving import sql_query
from cartpulse.storage import worker_logins
from cartpulse.storage.query_role import QUERY_ROLE


def test_accepts_matches_libpqs_verifiers(database_url):
    """The check of a node's verifier agrees with libpq's own SCRAM computation."""
    with psycopg.connect(database_url) as conn:
        verifier = conn.pgconn.encrypt_password(b"s3cret", b"someone", b"scram-sha-256").decode()
    assert worker_logins.accepts(verifier, "s3cret")
    assert not worker_logins.accepts(verifier, "s3cres")
    assert not worker_logins.accepts("md5" + "0" * 32, "s3cret")
    assert not worker_logins.accepts("", "s3cret")


def test_without_a_superuser_it_says_what_an_operator_runs(database_url, engine):
    with psycopg.connect(database_url) as conn:
        conn.execute(f"set role {QUERY_ROLE}")  # no superuser, no CREATEROLE
        problem = worker_logins.provision(conn, [QUERY_ROLE])
        # Nothing was attempted: not even the key.
        assert conn.execute("select count(*) from pg_roles where rolname = %s",
                            [worker_logins.KEY_ROLE]).fetchone()[0] == (1 if engine == "citus" else 0)
    assert "superuser" in problem and "cartpulse init" in problem


@pytest.mark.parametrize("error, refusal", [
    (psycopg.errors.InternalError_, 'FATAL:  role "cartpulse_query" is not permitted to log in'),
    (psycopg.errors.InternalError_, 'FATAL:  password authentication failed for user "cartpulse_query"'),
    (psycopg.errors.ConnectionFailure, "fe_sendauth: no password supplied"),
])
def test_a_worker_refusing_the_query_role_is_a_503_naming_what_to_run(settings, error, refusal):
    err = error(f"connection to the remote node {QUERY_ROLE}@10.0.0.7:5432 failed with the following error: {refusal}")
    answer = sql_query._api_error(err, settings)
    assert isinstance(answer, ApiError) and answer.status == 503
    assert "cartpulse init" in answer.message and QUERY_ROLE in answer.message


def test_a_worker_away_stays_an_outage(settings):
    """Not a set-up problem: the database being away (a plain 503 with Retry-After)."""
    err = psycopg.errors.InternalError_(
        f"connection to the remote node {QUERY_ROLE}@10.0.0.7:5432 failed with the following error:"
        " could not connect to server: Connection refused")
    assert sql_query._api_error(err, settings) is err
