"""The database role the Query API runs its SQL as: it can read only what it exposes.

``cartpulse_query`` is a NOLOGIN role (nobody connects as it); the service switches to it
with ``SET LOCAL ROLE`` for the one statement a caller wrote (serving/sql_query.py). It is
granted SELECT on each data source's table and quarantine and on Tinybird's service views
(``tinybird.pipe_stats_rt``, ``tinybird.datasources_ops_log``) and nothing else: not the
models, the rollups, the tokens or the service's own tables. Pipes are not read through
it: the service runs a pipe's function itself and hands its rows to the statement as
bound values. This is the second wall; the first is the check of the statement's parsed
form (serving/sql_dialect.py), which refuses any other table, schema or function.

On Citus the role is also a login on every node, with a password only Citus holds:
Citus reads the workers' shards over connections made as the current role
(storage/worker_logins.py). Its grants on a distributed table reach the shards.

Roles belong to the server, not to one database: every CartPulse database on a server
shares the role, each granting it its own tables. Creating it needs CREATEROLE (or a
superuser); without it, ``create_storage`` logs a warning and the Query API answers 503
saying what to run.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from cartpulse.project.datasources import DataSource
from cartpulse.storage import roles

log = logging.getLogger(__name__)

QUERY_ROLE = "cartpulse_query"
#: Tinybird's service data sources, as views in the ``tinybird`` schema.
SERVICE_VIEWS = ("pipe_stats_rt", "datasources_ops_log")
SERVICE_SCHEMA = "tinybird"


def provision_query_role(conn: psycopg.Connection, datasources: dict[str, DataSource]) -> bool:
    """Create the role if missing, let the service's user switch to it, and grant it
    exactly the relations the Query API exposes; False when the server refused."""
    role = sql.Identifier(QUERY_ROLE)
    if not roles.ensure_group(conn, QUERY_ROLE, without=f"the Query API is off (then: grant {QUERY_ROLE} to <CartPulse's user>)"):
        return False
    try:
        with conn.transaction():
            superuser = conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone()[0]
            if not superuser:
                conn.execute(sql.SQL("grant {} to current_user").format(role))
            schemas = {source.schema for source in datasources.values()} | {SERVICE_SCHEMA}
            for schema in sorted(schemas):
                conn.execute(sql.SQL("grant usage on schema {} to {}").format(sql.Identifier(schema), role))
            for source in datasources.values():
                for table in (source.name, source.quarantine):
                    conn.execute(sql.SQL("grant select on {} to {}").format(source.table(table), role))
            for view in SERVICE_VIEWS:
                conn.execute(sql.SQL("grant select on {} to {}").format(sql.Identifier(SERVICE_SCHEMA, view), role))
    except psycopg.errors.InsufficientPrivilege as err:
        log.warning("the Query API is off: cannot grant the role %s its tables: %s", QUERY_ROLE, str(err).strip())
        return False
    return True
