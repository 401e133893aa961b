"""Data-source storage: creating the tables events land in, on either engine.

The service owns its data sources (as Tinybird does); dbt reads them as sources. The
DDL lives in ``sql/*.sql`` beside this module so it reads as SQL. The engine is
provisioned and then asked in ``engine.py`` (TimescaleDB when the extension is installed
in the database); the events table's layout follows it.

Time-based storage settings are applied here too, at every start, so that the settings
own them: ``CHUNK_INTERVAL`` (TimescaleDB), ``COMPRESS_AFTER`` (TimescaleDB compression)
and ``RETENTION`` (TimescaleDB retention policy; on PostgreSQL, dropping old monthly
partitions). Unset, the last two are off, and a policy set before is removed.
"""

from __future__ import annotations

import logging
from importlib.resources import files

import psycopg

from cartpulse.config import Settings
from cartpulse.storage import engine as engines
from cartpulse.storage.engine import POSTGRES, TIMESCALEDB  # noqa: F401 (callers' names)

log = logging.getLogger(__name__)


def _sql(name: str) -> str:
    return files("cartpulse.storage").joinpath("sql", name).read_text()


def create_storage(url: str, settings: Settings) -> str:
    """Create (idempotently) every table CartPulse writes, for the engine ``settings``
    provision (engine.py); apply the time-based settings; return the engine in use."""
    with psycopg.connect(url, autocommit=True) as conn:
        # Serialize concurrent starts (several workers, a test and `make run`).
        conn.execute("select pg_advisory_lock(hashtext('cartpulse.create_storage'))")
        try:
            engine = engines.provision(conn, settings.engine)
            conn.execute(_sql("storage.sql"))
            partitioning = "" if engine == TIMESCALEDB else "partition by range (event_time)"
            conn.execute(_sql("events.sql").format(partitioning=partitioning))
            if engine == TIMESCALEDB:
                chunk_interval = settings.chunk_interval
                conn.execute(
                    "select create_hypertable('raw.ecommerce_events', 'event_time',"
                    " chunk_time_interval => %s::interval, create_default_indexes => false,"
                    " if_not_exists => true)",
                    [chunk_interval],
                )
                # An existing hypertable keeps its interval unless told: a changed
                # CHUNK_INTERVAL applies to chunks created from now on.
                conn.execute(
                    "select set_chunk_time_interval('raw.ecommerce_events', %s::interval)"
                    " from timescaledb_information.dimensions"
                    " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'"
                    " and column_name = 'event_time' and time_interval <> %s::interval",
                    [chunk_interval, chunk_interval],
                )
            conn.execute(_sql("chunks.sql" if engine == TIMESCALEDB else "partitions.sql"))
            apply_policies(conn, engine, settings)
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('cartpulse.create_storage'))")
    log.info("storage ready (engine: %s)", engine)
    return engine


# TimescaleDB policies, keyed by the setting that drives each: (job proc, config key,
# add function, remove function). Names are ours, never input.
_POLICIES = {
    "COMPRESS_AFTER": ("policy_compression", "compress_after",
                       "add_compression_policy", "remove_compression_policy"),
    "RETENTION": ("policy_retention", "drop_after", "add_retention_policy", "remove_retention_policy"),
}
# Compressed batches grouped by event type (every endpoint filters on it: purchases, or
# the `event_type` parameter; a handful of values, so batches stay full) and ordered by
# time within a batch, whose min/max let the range-edge scans skip batches.
_COMPRESSION = ("alter table raw.ecommerce_events set (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'event_type', timescaledb.compress_orderby = 'event_time')")


def apply_policies(conn: psycopg.Connection, engine: str, settings: Settings) -> None:
    """Make compression and retention match the ``COMPRESS_AFTER`` and ``RETENTION`` settings.

    Idempotent, and the settings own the policies: an unchanged setting leaves its job
    alone, a changed one replaces it, an unset one removes it. Chunks compressed
    earlier stay compressed when COMPRESS_AFTER is unset (they still take inserts and
    answer queries; decompressing a whole table on a restart would be a surprise).
    On plain PostgreSQL there is no compression; RETENTION drops whole monthly
    partitions older than it, here at each start (a scheduler may call the same SQL
    function, cartpulse.drop_expired_event_partitions).
    """
    wanted = {"COMPRESS_AFTER": settings.compress_after, "RETENTION": settings.retention}
    if engine != TIMESCALEDB:
        if wanted["COMPRESS_AFTER"]:
            log.warning("COMPRESS_AFTER is ignored: compression needs TimescaleDB")
        if wanted["RETENTION"]:
            dropped = [r[0] for r in conn.execute(
                "select cartpulse.drop_expired_event_partitions(%s::interval)", [wanted["RETENTION"]])]
            if dropped:
                log.info("retention %s: dropped partitions %s", wanted["RETENTION"], ", ".join(dropped))
        return
    license_ = conn.execute("select current_setting('timescaledb.license', true)").fetchone()[0]
    if license_ == "apache" and any(wanted.values()):
        raise RuntimeError("COMPRESS_AFTER and RETENTION need TimescaleDB's community edition"
                           " (timescaledb.license = 'timescale'); this server runs the Apache-2 edition")
    if wanted["COMPRESS_AFTER"]:
        enabled = conn.execute(
            "select compression_enabled from timescaledb_information.hypertables"
            " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'").fetchone()[0]
        if not enabled:
            conn.execute(_COMPRESSION)
    for name, (proc, key, add, remove) in _POLICIES.items():
        current = conn.execute(
            "select config ->> %s from timescaledb_information.jobs where proc_name = %s"
            " and hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'", [key, proc]).fetchone()
        if current and wanted[name] and conn.execute(
                "select %s::interval = %s::interval", [current[0], wanted[name]]).fetchone()[0]:
            continue
        if current:
            conn.execute(f"select {remove}('raw.ecommerce_events', if_exists => true)")
        if wanted[name]:
            conn.execute(f"select {add}('raw.ecommerce_events', %s::interval)", [wanted[name]])
            log.info("%s=%s: %s added", name, wanted[name], add)
