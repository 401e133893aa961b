"""Citus: which tables are distributed, and a database made on every node of a cluster.

On a Citus coordinator's database (``engine.CITUS``) only a data source's table is
distributed, hash-distributed by its declared ``distribute_by`` column: it is the
storage that outgrows one machine. Everything the real-time path reads in one snapshot
stays a plain table of the coordinator: the ``_pending`` twin, the rollups,
``cartpulse.rollup_state``, and with them tokens, idempotency keys and rate limits.
docs/citus.md gives the argument: Citus has no global snapshot, and these tables are
exact only because one PostgreSQL's MVCC sees them together.

A Citus database is made on every node (the extension and the node list are per
database), so the tests' throwaway databases are made by ``create_cluster_database``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cartpulse.project.datasources import DataSource

log = logging.getLogger(__name__)


def distribute(conn: psycopg.Connection, source: DataSource) -> None:
    """Hash-distribute the data source's table by its ``distribute_by`` column, unless it
    is distributed already (or declares none: it then stays the coordinator's)."""
    if source.distribute_by is None:
        return
    done = conn.execute("select 1 from pg_dist_partition where logicalrelid = %s::regclass",
                        [source.regclass()]).fetchone()
    if done is None:
        conn.execute("select create_distributed_table(%s::regclass, %s)", [source.regclass(), source.distribute_by])
    advise_cached_connections(conn, source)


def advise_cached_connections(conn: psycopg.Connection, source: DataSource) -> str | None:
    """Say (a logged warning, also returned) when sessions keep fewer connections to each
    worker than the data source has shards there: every batch then opens the others and
    closes them at its commit, a backend started on the worker per shard per batch, which
    cost the workers 6× more CPU per event (docs/citus.md, "Set-up"). Left to the operator,
    since keeping them multiplies the connections a worker holds by the coordinator's
    sessions; None when nothing needs saying."""
    kept, shards = conn.execute(
        "select current_setting('citus.max_cached_conns_per_worker')::int,"
        " (select max(n) from (select count(*) as n from pg_dist_shard s"
        " join pg_dist_placement p using (shardid) where s.logicalrelid = %s::regclass group by p.groupid) w)",
        [source.regclass()]).fetchone()
    if shards is None or kept >= shards:
        return None
    database = conn.info.dbname
    advice = (f"each ingest batch into {source.name} opens up to {shards} connections per worker and keeps"
              f" {kept} (citus.max_cached_conns_per_worker): to keep them, run on the coordinator"
              f" `alter database \"{database}\" set citus.max_cached_conns_per_worker = {shards}` and restart"
              " the API, with the workers' max_connections sized for it (docs/citus.md, \"Set-up\")")
    log.warning("%s", advice)
    return advice


def recover(conn: psycopg.Connection) -> None:
    """Finish the two-phase commits a worker left prepared (it was down at the commit):
    their rows are committed on the coordinator, and readers of the distributed table
    must see them before anything is built from it."""
    conn.execute("select recover_prepared_transactions()")


#: Citus's warnings when a worker did not take the second phase of a commit (the commit
#: itself stands: the coordinator's record decided it; transaction recovery finishes it),
#: and when recovery could not reach a worker.
_UNCONFIRMED = "failed to commit transaction on "
_UNREACHED = "transaction recovery cannot connect to "
#: How long a writer waits for such a worker before answering 503.
CONFIRM_SECONDS = 10.0


class WorkerUnconfirmed(Exception):
    """The batch is committed, but a worker has not applied its part yet: its rows are
    missing from reads of the distributed table until the worker is back."""


@contextmanager
def confirmed_commit(conn: psycopg.Connection):
    """Around a commit on ``conn`` (autocommit off): when a worker missed the commit's
    second phase, finish it (``recover_prepared_transactions``) before the caller
    acknowledges, retrying for up to CONFIRM_SECONDS, then raise WorkerUnconfirmed. On
    any other server the warning never comes and this costs nothing."""
    warnings: list[str] = []

    def watch(notice) -> None:
        message = notice.message_primary or ""
        if message.startswith((_UNCONFIRMED, _UNREACHED)):
            warnings.append(message)

    conn.add_notice_handler(watch)
    try:
        yield
        if not warnings:
            return
        deadline = time.monotonic() + CONFIRM_SECONDS
        while True:
            seen = len(warnings)
            try:
                recover(conn)
                conn.commit()
                if len(warnings) == seen:
                    return
            except psycopg.OperationalError:
                conn.rollback()
            if time.monotonic() > deadline:
                raise WorkerUnconfirmed("; ".join(warnings))
            time.sleep(0.2)
    finally:
        conn.remove_notice_handler(watch)


def workers(conn: psycopg.Connection) -> list[tuple[str, int]]:
    """The active primary workers of this database's cluster (host, port)."""
    return conn.execute("select nodename, nodeport from pg_dist_node where noderole = 'primary' and isactive"
                        " and groupid <> 0 order by nodeid").fetchall()


def is_citus_server(admin_url: str) -> bool:
    """Whether ``admin_url``'s database is a Citus coordinator with workers."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("select 1 from pg_extension where extname = 'citus'").fetchone() is None:
            return False
        return bool(workers(conn))


def create_cluster_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on every node of the cluster whose coordinator database
    ``admin_url`` is (CREATE DATABASE propagated by Citus), with the extension on each
    node and the same workers; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        nodes = workers(conn)
        conn.execute("set citus.enable_create_database_propagation = on")
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    for host, port in nodes:
        with psycopg.connect(make_conninfo(admin_url, host=host, port=port, dbname=name), autocommit=True) as conn:
            conn.execute("create extension if not exists citus")
    params = conninfo_to_dict(admin_url)
    url = make_conninfo(admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists citus")
        conn.execute("select citus_set_coordinator_host(%s, %s)",
                     [params.get("host") or "localhost", int(params.get("port") or 5432)])
        for host, port in nodes:
            conn.execute("select citus_add_node(%s, %s)", [host, port])
    return url


def drop_cluster_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` on every node: on the coordinator, then on each worker.

    Not Citus's propagated DROP: a worker session that the coordinator's sessions opened
    (terminated by the drop) may not have ended yet; the propagated drop then failed on
    that worker alone and left the database on the others. A local ``WITH (FORCE)`` on
    each worker ends such a session."""
    drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        nodes = workers(conn)
        conn.execute(drop)
    for host, port in nodes:
        with psycopg.connect(make_conninfo(admin_url, host=host, port=port), autocommit=True) as conn:
            conn.execute(drop)
