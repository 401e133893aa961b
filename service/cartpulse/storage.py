"""Data-source storage: creating the tables events land in, on either engine.

The service owns its data sources (as Tinybird does); dbt reads them as sources. The
DDL lives in ``sql/*.sql`` beside this module so it reads as SQL. Which engine we are
on is decided here once: TimescaleDB when the extension is installed in the database
or can be created there, plain PostgreSQL otherwise (``CARTPULSE_ENGINE`` forces one).
"""

from __future__ import annotations

import logging
import os
from importlib.resources import files

import psycopg

log = logging.getLogger(__name__)

POSTGRES = "postgres"
TIMESCALEDB = "timescaledb"


def _sql(name: str) -> str:
    return files("cartpulse").joinpath("sql", name).read_text()


def detect_engine(conn: psycopg.Connection) -> str:
    """TimescaleDB if it is (or can be) installed in this database, else PostgreSQL."""
    forced = os.environ.get("CARTPULSE_ENGINE", "auto")
    if forced in (POSTGRES, TIMESCALEDB):
        return forced
    if conn.execute("select 1 from pg_extension where extname = 'timescaledb'").fetchone():
        return TIMESCALEDB
    available = conn.execute(
        "select 1 from pg_available_extensions where name = 'timescaledb'").fetchone()
    preloaded = "timescaledb" in (conn.execute("show shared_preload_libraries").fetchone()[0] or "")
    return TIMESCALEDB if available and preloaded else POSTGRES


def create_storage(url: str) -> str:
    """Create (idempotently) every table CartPulse writes; return the engine in use."""
    with psycopg.connect(url, autocommit=True) as conn:
        # Serialize concurrent starts (several workers, a test and `make run`).
        conn.execute("select pg_advisory_lock(hashtext('cartpulse.create_storage'))")
        try:
            engine = detect_engine(conn)
            if engine == TIMESCALEDB:
                conn.execute("create extension if not exists timescaledb")
            conn.execute(_sql("storage.sql"))
            partitioning = "" if engine == TIMESCALEDB else "partition by range (event_time)"
            conn.execute(_sql("events.sql").format(partitioning=partitioning))
            if engine == TIMESCALEDB:
                conn.execute(
                    "select create_hypertable('raw.ecommerce_events', 'event_time',"
                    " chunk_time_interval => %s::interval, create_default_indexes => false,"
                    " if_not_exists => true)",
                    [os.environ.get("CHUNK_INTERVAL", "1 day")],
                )
            conn.execute(_sql("chunks.sql" if engine == TIMESCALEDB else "partitions.sql"))
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('cartpulse.create_storage'))")
    log.info("storage ready (engine: %s)", engine)
    return engine
