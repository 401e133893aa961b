"""Running one checked statement of the Query API: read-only, as a restricted role, bounded.

``sql_dialect.compile_sql`` has already refused anything but a SELECT over the tables the
Query API exposes. Here, in one transaction on the primary:

1. the transaction is READ ONLY, and ``QUERY_TIMEOUT_MS`` bounds every statement in it;
2. each pipe the statement names runs as the service (its SQL function with its
   parameters: ``_`` with the request's, a pipe named in the SQL with its defaults or the
   values a signed token fixes); its rows come back and are handed to the statement as
   bound arrays (``"__pipe_<name>"`` CTEs), so the restricted role needs no access to the
   models it is built from;
3. ``SET LOCAL ROLE cartpulse_query`` (storage/query_role.py: SELECT on the data sources
   and Tinybird's service views, nothing else) and ``search_path`` = ``pg_catalog`` only;
4. the statement, wrapped as ``select * from (…) limit QUERY_MAX_ROWS + 1`` (on Citus
   as written: its ORDER BY would not survive the wrapper) and read through a
   server-side cursor in batches, stops as soon as the answer passes ``QUERY_MAX_ROWS``
   rows or about ``QUERY_MAX_BYTES``: an answer past a limit is an error naming it,
   never a cut-off result.

On Citus the role's connections to the workers are made by Citus with the login
storage/worker_logins.py sets up; a worker refusing it is a 503 saying what to run.

``statistics.rows_read``/``bytes_read`` are counted as pipe reads are (``ReadCounters``),
over everything the transaction read: the pipes' queries and the statement, TimescaleDB
chunks and the tables under the ``tinybird`` views included.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal

import psycopg
from psycopg import sql

from cartpulse.access.auth import ADMIN, allows
from cartpulse.errors import ApiError, database_unavailable, first_line
from cartpulse.project.params import parse_request
from cartpulse.serving.render import type_name
from cartpulse.serving.sql_dialect import Compiled, Ref, Tables
from cartpulse.storage import engine
from cartpulse.storage.query_role import QUERY_ROLE, SERVICE_VIEWS
from cartpulse.storage.worker_logins import OPERATOR

#: Rows fetched per round trip from the statement's cursor.
BATCH = 1000
NUMERIC = 1700  # the type OID of PostgreSQL's numeric
#: Schemas whose tables a statement may read besides the data sources' and the models':
#: the service's own (under the tinybird views) and TimescaleDB's chunks.
WATCHED = ("cartpulse", "_timescaledb_internal")
#: How a worker refuses the login Citus opened for the query role (docs/citus.md).
#: How sqlglot begins a statement with its own CTEs (the pipes' join them).
_WITH = re.compile(r"WITH (RECURSIVE )?")
_LOGIN_REFUSED = re.compile(r"not permitted to log in|password|does not exist|no pg_hba\.conf entry")


def tables(state, this: bool = False) -> Tables:
    """What a statement may name in this service."""
    return Tables(datasources={s.name: s.schema for s in state.datasources.values()},
                  quarantines={s.quarantine: s.schema for s in state.datasources.values()},
                  pipes=frozenset(state.catalog.all()), service=frozenset(SERVICE_VIEWS), this=this)


def scope_of(ref: Ref) -> str:
    """The token scope reading ``ref`` needs (ADMIN for quarantines and service views)."""
    if ref.kind == "datasource":
        return f"DATASOURCES:READ:{ref.name}"
    if ref.kind == "pipe":
        return f"PIPES:READ:{ref.name}"
    return ADMIN


def authorize(refs: set[Ref], scopes: list[str]) -> None:
    """403 naming the first table this token may not read."""
    for ref in sorted(refs, key=lambda r: (r.kind, r.name)):
        if ref.kind != "this" and not allows(scopes, scope_of(ref)):
            raise ApiError(403, f"this token lacks the scope {scope_of(ref)} (to read {ref.name})")


def pipe_values(endpoint, fixed: dict | None) -> dict:
    """A pipe named in the SQL runs with its defaults, or the values a signed token fixes."""
    if fixed:
        unknown = sorted(set(fixed) - {p.name for p in endpoint.params})
        if unknown:
            raise ApiError(403, f"this token fixes {', '.join(unknown)}, which pipe '{endpoint.name}' does not take")
    return parse_request(endpoint.params, {}, fixed=fixed)


def execute(state, compiled: Compiled, pipes: dict[str, tuple], pipe_sql: Callable) -> tuple[list[dict], list[tuple], dict]:
    """Run the statement; ``pipes``: CTE name → (endpoint, values) for each pipe it reads;
    ``pipe_sql(endpoint, values)``: the query of a pipe (serving/pipes.endpoint_query)."""
    settings = state.settings
    started = time.perf_counter()
    counters = state.read_counters
    watched = counters.tables(state.db, WATCHED + (settings.raw_schema, settings.dbt_schema))
    try:
        with state.db.psycopg() as conn:
            conn.rollback()  # SET TRANSACTION must come first in its transaction
            conn.execute("set transaction read only")
            conn.execute(f"set local statement_timeout = {int(settings.query_timeout_ms)}")
            citus = engine.current(conn) == engine.CITUS
            before = conn.execute(counters.READ, [watched.schemas]).fetchone()
            ctes, params = _pipe_ctes(conn, pipes, pipe_sql)
            conn.execute("set local search_path = pg_catalog")
            _become_reader(conn)
            statement = _statement(compiled.sql, ctes, settings.query_max_rows, citus)
            meta, rows = _fetch(conn, statement, params, settings)
            conn.execute("reset role")
            after = conn.execute(counters.READ, [watched.schemas]).fetchone()
    except psycopg.Error as err:
        raise _api_error(err, settings) from None
    read_rows, read_bytes = counters.counts(state.db, watched, before, after)
    return meta, rows, {"elapsed": round(time.perf_counter() - started, 6), "rows_read": read_rows,
                        "bytes_read": read_bytes}


def _pipe_ctes(conn, pipes: dict[str, tuple], pipe_sql: Callable) -> tuple[list[sql.Composable], dict]:
    """Run each pipe and define its rows as a CTE of typed arrays (one bound array per column)."""
    ctes, params = [], {}
    for n, (cte, (endpoint, values)) in enumerate(sorted(pipes.items())):
        cur = conn.execute(pipe_sql(endpoint, values), values)
        names = [d.name for d in cur.description]
        columns = list(zip(*cur.fetchall())) or [()] * len(names)
        declared = {c.name: c.data_type or "text" for c in endpoint.columns}
        arrays = []
        for i, (name, values_) in enumerate(zip(names, columns)):
            key = f"__p{n}_{i}"
            params[key] = list(values_)
            arrays.append(sql.SQL("{}::{}[]").format(sql.Placeholder(key), sql.SQL(declared.get(name, "text"))))
        ctes.append(sql.SQL("{} ({}) as (select * from unnest({}))").format(
            sql.Identifier(cte), sql.SQL(", ").join(map(sql.Identifier, names)), sql.SQL(", ").join(arrays)))
    return ctes, params


def _statement(user_sql: str, ctes: list, max_rows: int, citus: bool) -> sql.Composed:
    # The caller's SQL goes in as text already checked and written by sqlglot; `%` is
    # doubled because psycopg reads placeholders in it (the pipes' arrays are bound).
    user = sql.SQL(user_sql.replace("%", "%%"))
    if citus:
        # Citus pushes a subquery down to the shards and concatenates their rows: the
        # wrapper below would lose the statement's ORDER BY. It runs as written, bounded
        # by the cursor's checks alone; the pipes' CTEs join any it has.
        if not ctes:
            return user
        head = _WITH.match(user_sql)
        if head:
            return sql.SQL("{}{}, {}").format(sql.SQL(head.group(0)), sql.SQL(", ").join(ctes),
                                              sql.SQL(user_sql[head.end():].replace("%", "%%")))
        return sql.SQL("with {} {}").format(sql.SQL(", ").join(ctes), user)
    body = sql.SQL("select * from ({}) as \"__query\" limit {}").format(user, sql.Literal(max_rows + 1))
    if not ctes:
        return body
    return sql.SQL("with {} {}").format(sql.SQL(", ").join(ctes), body)


def _become_reader(conn) -> None:
    try:
        with conn.transaction():
            conn.execute(sql.SQL("set local role {}").format(sql.Identifier(QUERY_ROLE)))
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidParameterValue) as err:
        raise ApiError(503, f"the Query API is off: CartPulse cannot switch to the role {QUERY_ROLE}"
                            f" ({first_line(err)}); see docs/query-api.md") from None


def _fetch(conn, statement, params: dict, settings) -> tuple[list[dict], list[tuple]]:
    rows: list[tuple] = []
    size = 0
    with conn.cursor(name="cartpulse_sql") as cur:
        cur.execute(statement, params)
        meta = [{"name": d.name, "type": type_name(d.type_code)} for d in cur.description]
        numeric = [i for i, d in enumerate(cur.description) if d.type_code == NUMERIC]
        while True:
            batch = cur.fetchmany(BATCH)
            if not batch:
                break
            rows.extend(_numbers(batch, numeric) if numeric else batch)
            if len(rows) > settings.query_max_rows:
                raise ApiError(400, f"the answer has more than {settings.query_max_rows} rows (QUERY_MAX_ROWS):"
                                    " add a LIMIT, or aggregate", limit="QUERY_MAX_ROWS")
            size += sum(_size(v) for row in batch for v in row)
            if size > settings.query_max_bytes:
                raise ApiError(400, f"the answer is larger than {settings.query_max_bytes} bytes (QUERY_MAX_BYTES):"
                                    " select fewer columns or rows", limit="QUERY_MAX_BYTES")
    return meta, rows


def _numbers(rows: list[tuple], columns: list[int]) -> list[tuple]:
    """PostgreSQL's ``numeric`` (what ``sum`` of integers gives) as ClickHouse would write
    it: a whole number as an integer, else a float."""
    out = []
    for row in rows:
        row = list(row)
        for i in columns:
            if isinstance(row[i], Decimal) and row[i].is_finite():
                row[i] = int(row[i]) if row[i] == row[i].to_integral_value() else float(row[i])
        out.append(tuple(row))
    return out


def _size(value) -> int:
    """About how many bytes a value takes once written."""
    if value is None or isinstance(value, (bool, int, float)):
        return 8
    if isinstance(value, (datetime, date)):
        return 19
    if isinstance(value, (str, bytes)):
        return len(value)
    return len(str(value))


def _api_error(err: psycopg.Error, settings) -> Exception:
    """A failed statement as the API answers it (the database being away stays a 503)."""
    if f"remote node {QUERY_ROLE}@" in str(err) and _LOGIN_REFUSED.search(first_line(err)):
        # Citus reached the worker, which refused the role (an internal error or a
        # connection failure, as the refusal comes): set-up, not an outage.
        return ApiError(503, f"the Query API is off: Citus cannot log in to a worker as {QUERY_ROLE}"
                             f" ({first_line(err)}); {OPERATOR}")
    if database_unavailable(err):
        return err
    if isinstance(err, psycopg.errors.QueryCanceled):
        return ApiError(408, f"the query ran longer than {settings.query_timeout_ms} ms (QUERY_TIMEOUT_MS)",
                        limit="QUERY_TIMEOUT_MS")
    if isinstance(err, psycopg.errors.InsufficientPrivilege):
        return ApiError(403, f"not permitted: {first_line(err)}")
    return ApiError(400, f"the query failed: {first_line(err)}")
