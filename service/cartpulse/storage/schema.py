"""Storage: creating the tables events land in, and the service's own, on either engine.

The service owns its data sources (as Tinybird does); dbt reads them as sources. Their
tables follow from their declarations in the dbt project (``ddl.py``); the service's
own tables and functions are SQL in ``sql/*.sql`` beside this module. The engine is
provisioned and then asked in ``engine.py`` (TimescaleDB when the extension is installed
in the database); each table's layout follows it.

Time-based storage settings are applied here too, at every start, so that the settings
own them (Citus, docs/citus.md: laid out as on PostgreSQL, the data sources' tables then
distributed, ``storage/citus.py``): ``CHUNK_INTERVAL`` (TimescaleDB), ``COMPRESS_AFTER``
(TimescaleDB compression; on Citus, columnar storage for old partitions, ``storage/columnar.py``)
and ``RETENTION`` (TimescaleDB retention policy; on PostgreSQL, dropping old monthly
partitions). Unset, the last two are off, and a policy set before is removed.
"""

from __future__ import annotations

import logging
from importlib.resources import files

import psycopg
from psycopg import sql

from cartpulse.config import Settings
from cartpulse.project.datasources import DataSource, for_settings
from cartpulse.storage import citus, columnar, roles, worker_logins
from cartpulse.storage import engine as engines
from cartpulse.storage.ddl import create_tables, ensure_touch_trigger
from cartpulse.storage.engine import CITUS, POSTGRES, TIMESCALEDB  # noqa: F401 (callers' names)
from cartpulse.storage.query_role import QUERY_ROLE, provision_query_role

log = logging.getLogger(__name__)


def _sql(name: str) -> str:
    return files("cartpulse.storage").joinpath("sql", name).read_text()


def create_storage(url: str, settings: Settings, datasources: dict[str, DataSource] | None = None) -> str:
    """Create (idempotently) every table CartPulse writes, for the engine ``settings``
    provision (engine.py), and apply the time-based settings; return the engine in use.

    ``datasources``: the declared data sources (default: those of the settings' project)."""
    if datasources is None:
        datasources = for_settings(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        # Serialize concurrent starts (several workers, a test and `make run`).
        conn.execute("select pg_advisory_lock(hashtext('cartpulse.create_storage'))")
        try:
            engine = engines.provision(conn, settings.engine)
            conn.execute(_sql("storage.sql"))
            conn.execute(_sql("chunks.sql" if engine == TIMESCALEDB else "partitions.sql"))
            for source in datasources.values():
                create_tables(conn, source, partitioned=engine != TIMESCALEDB)
                if engine == TIMESCALEDB:
                    _hypertable(conn, source, settings.chunk_interval)
                if engine == CITUS:
                    citus.distribute(conn, source)
                distributed = engine == CITUS and source.distribute_by is not None
                ensure_touch_trigger(conn, source, source.pending if distributed else source.name)
                apply_policies(conn, engine, settings, source)
            conn.execute(_sql("service_datasources.sql"))
            queries = provision_query_role(conn, datasources)
            analysts = roles.ensure_group(conn, roles.ANALYSTS)  # dbt grants it read access (storage/roles.py)
            if engine == CITUS and queries:
                _worker_logins(conn, [QUERY_ROLE] + (roles.members(conn, roles.ANALYSTS) if analysts else []))
        finally:
            conn.execute("select pg_advisory_unlock(hashtext('cartpulse.create_storage'))")
    log.info("storage ready (engine: %s; data sources: %s)", engine, ", ".join(datasources) or "none")
    return engine


def _worker_logins(conn: psycopg.Connection, names: list[str]) -> None:
    """On Citus, the logins the coordinator opens on the workers for the Query API's role
    and the analysts (storage/worker_logins.py); a warning saying what to run when not allowed."""
    problem = worker_logins.provision(conn, names, own=(QUERY_ROLE,))
    if problem:
        log.warning("the Query API and analyst logins cannot read the distributed tables: %s", problem)


def _hypertable(conn: psycopg.Connection, source: DataSource, chunk_interval: str) -> None:
    """Make the data source's table a hypertable on its partition key, chunked by
    ``chunk_interval`` (CHUNK_INTERVAL)."""
    conn.execute(
        "select create_hypertable(%s::regclass, %s::name, chunk_time_interval => %s::interval,"
        " create_default_indexes => false, if_not_exists => true)",
        [source.regclass(), source.partition_key, chunk_interval])
    # An existing hypertable keeps its interval unless told: a changed CHUNK_INTERVAL
    # applies to chunks created from now on.
    conn.execute(
        "select set_chunk_time_interval(%s::regclass, %s::interval) from timescaledb_information.dimensions"
        " where hypertable_schema = %s and hypertable_name = %s and column_name = %s and time_interval <> %s::interval",
        [source.regclass(), chunk_interval, source.schema, source.name, source.partition_key, chunk_interval])


# TimescaleDB policies, keyed by the setting that drives each: (job proc, config key,
# add function, remove function). Names are ours, never input.
_POLICIES = {
    "COMPRESS_AFTER": ("policy_compression", "compress_after",
                       "add_compression_policy", "remove_compression_policy"),
    "RETENTION": ("policy_retention", "drop_after", "add_retention_policy", "remove_retention_policy"),
}


def _compression(source: DataSource) -> sql.Composed:
    """Compression settings: batches grouped by the declared ``segment_by`` columns
    (ecommerce_events: the event type, which every endpoint filters on; a handful of
    values, so batches stay full) and ordered by the partition key within a batch, whose
    min/max let range scans skip batches."""
    settings = [sql.SQL("timescaledb.compress")]
    if source.segment_by:
        settings.append(sql.SQL("timescaledb.compress_segmentby = {}").format(sql.Literal(",".join(source.segment_by))))
    settings.append(sql.SQL("timescaledb.compress_orderby = {}").format(sql.Literal(source.partition_key)))
    return sql.SQL("alter table {} set ({})").format(source.table(), sql.SQL(", ").join(settings))


def apply_policies(conn: psycopg.Connection, engine: str, settings: Settings, source: DataSource) -> None:
    """Make compression and retention of ``source`` match the ``COMPRESS_AFTER`` and
    ``RETENTION`` settings.

    Idempotent, and the settings own the policies: an unchanged setting leaves its job
    alone, a changed one replaces it, an unset one removes it. Chunks compressed
    earlier stay compressed when COMPRESS_AFTER is unset (they still take inserts and
    answer queries; decompressing a whole table on a restart would be a surprise).
    On plain PostgreSQL there is no compression; RETENTION drops whole monthly
    partitions older than it, here at each start (a scheduler may call the same SQL
    function, cartpulse.drop_expired_partitions). On Citus, COMPRESS_AFTER converts the
    distributed data sources' old monthly partitions to columnar storage, here and at
    each refresh (storage/columnar.py); unset, converted partitions stay columnar.
    """
    wanted = {"COMPRESS_AFTER": settings.compress_after, "RETENTION": settings.retention}
    if engine != TIMESCALEDB:
        if wanted["COMPRESS_AFTER"] and engine == CITUS and source.distribute_by is not None:
            columnar.compress_old_partitions(conn, source, wanted["COMPRESS_AFTER"])
        elif wanted["COMPRESS_AFTER"]:
            log.warning("COMPRESS_AFTER is ignored for %s: compression needs TimescaleDB, or Citus with the"
                        " data source distributed", source.name)
        if wanted["RETENTION"]:
            dropped = [r[0] for r in conn.execute(
                "select cartpulse.drop_expired_partitions(%s::regclass, %s::interval)",
                [source.regclass(), wanted["RETENTION"]])]
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
            " where hypertable_schema = %s and hypertable_name = %s", [source.schema, source.name]).fetchone()[0]
        if not enabled:
            conn.execute(_compression(source))
    for name, (proc, key, add, remove) in _POLICIES.items():
        current = conn.execute(
            "select config ->> %s from timescaledb_information.jobs where proc_name = %s"
            " and hypertable_schema = %s and hypertable_name = %s", [key, proc, source.schema, source.name]).fetchone()
        if current and wanted[name] and conn.execute(
                "select %s::interval = %s::interval", [current[0], wanted[name]]).fetchone()[0]:
            continue
        if current:
            conn.execute(sql.SQL("select {}(%s::regclass, if_exists => true)").format(sql.Identifier(remove)),
                         [source.regclass()])
        if wanted[name]:
            conn.execute(sql.SQL("select {}(%s::regclass, %s::interval)").format(sql.Identifier(add)),
                         [source.regclass(), wanted[name]])
            log.info("%s=%s: %s added on %s", name, wanted[name], add, source.name)
