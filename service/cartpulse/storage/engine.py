"""Which engine CartPulse runs on, PostgreSQL, TimescaleDB or Citus, answered in one place.

The engine is whether the ``timescaledb`` extension (or ``citus``: a Citus coordinator's
database) is installed in CartPulse's database.
The SQL function ``cartpulse.engine()`` (``sql/engine.sql``) says so, and everything
that depends on the engine asks it: storage creation (``schema.create_storage``) through
``current`` here, and the dbt models through ``macros/engine.sql``. A plain ``dbt run``
(from cron, say) therefore picks the same engine as the service, with no flag.

Installing the extension is provisioning, done by ``cartpulse init`` (``provision``),
where the ``CARTPULSE_ENGINE`` setting applies: ``auto`` installs it when the server can
create it (available and in ``shared_preload_libraries``); ``timescaledb`` installs it or
fails saying why; ``postgres`` never installs it, and fails when it is installed already
(the models would run on TimescaleDB whatever the storage layout).

Citus is never installed by ``provision``: a cluster is the operator's (the extension on
every node, the workers added with ``citus_add_node``: docs/citus.md), and CartPulse
runs on it when it finds the extension in its database, under ``auto``.
"""

from __future__ import annotations

from importlib.resources import files

import psycopg

from cartpulse.config import SettingError

POSTGRES = "postgres"
TIMESCALEDB = "timescaledb"
CITUS = "citus"


def current(conn: psycopg.Connection) -> str:
    """The engine of this database (``cartpulse.engine()``; ``provision`` creates it)."""
    return conn.execute("select cartpulse.engine()").fetchone()[0]


def provision(conn: psycopg.Connection, wanted: str) -> str:
    """Create ``cartpulse.engine()``, install the extension if ``wanted`` (auto,
    postgres or timescaledb: the ``engine`` setting) asks for it; return the engine."""
    conn.execute(files("cartpulse.storage").joinpath("sql", "engine.sql").read_text())
    engine = current(conn)
    if wanted == POSTGRES and engine != POSTGRES:
        raise SettingError(f"CARTPULSE_ENGINE=postgres: the {engine} extension is installed in this database,"
                           f" so CartPulse and its models run on {engine} here; unset CARTPULSE_ENGINE,"
                           " or use a database without the extension")
    if wanted == TIMESCALEDB and engine == CITUS:
        raise SettingError("CARTPULSE_ENGINE=timescaledb: this is a Citus database (the citus extension is"
                           " installed), and TimescaleDB does not run on Citus; unset CARTPULSE_ENGINE")
    if wanted == POSTGRES or engine != POSTGRES:
        return engine
    available = conn.execute("select 1 from pg_available_extensions where name = 'timescaledb'").fetchone()
    preloaded = "timescaledb" in (conn.execute("show shared_preload_libraries").fetchone()[0] or "")
    if available and preloaded:
        conn.execute("create extension if not exists timescaledb")
    elif wanted == TIMESCALEDB:
        raise SettingError("CARTPULSE_ENGINE=timescaledb: this server cannot create the timescaledb extension"
                           f" ({'not in shared_preload_libraries' if available else 'not installed'})")
    return current(conn)
