"""Pipe endpoints: ``GET|POST /v0/pipes/<model>.<format>`` (json, csv, csvwithnames,
ndjson, parquet, prometheus: render.py); a POST carries its parameters in the body
(request_values.py). ``/v0/pipes`` and ``/v0/pipes/<model>`` describe the pipes
(pipe_metadata.py).

Which models are pipes comes from the catalog (the dbt project's declarations); the
relation queried is the one dbt built, quoted as an identifier, never text from the
request. ``statistics.rows_read`` is the number of table rows the query read
(``ReadCounters``); ``bytes_read`` is their size, each row counted at its table's
average row size (measured on a sample of the table's rows). Parallel workers keep their own counters, so the service's connections run
without them (``db.py``): the counts are then exact, and the models answer from small
tables.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from flask import Blueprint, request
from psycopg import sql
from psycopg.adapt import Loader

from cartpulse.access.auth import request_caller, require_scope
from cartpulse.context import request_state, service, timed
from cartpulse.errors import ApiError, first_line
from cartpulse.ops import metrics
from cartpulse.project.params import parse_request
from cartpulse.serving import pipe_query
from cartpulse.serving.pipe_metadata import pipe_metadata
from cartpulse.serving.render import PIPE_FORMATS, render, type_name
from cartpulse.serving.request_values import request_values
from cartpulse.serving.result_cache import VERSION, Answer, answer_key
from cartpulse.storage.db import PREPARED
from cartpulse.storage.wal import LSN_HEADER, REPLAY_POSITION, parse_lsn

bp = Blueprint("pipes", __name__)
log = logging.getLogger(__name__)

@dataclass
class Watched:
    """The schemas an endpoint may read, and the row sizes of their tables (by oid)."""

    at: float
    schemas: list[str]
    widths: dict[int, float | None]


class ReadCounters:
    """Rows read by one query, from PostgreSQL's per-backend table counters, and their size.

    The counters (``pg_stat_get_xact_tuples_returned``) are not reset between transactions
    (they are flushed when the backend goes idle), so a query's reads are the difference
    of two readings taken in its transaction, one just before and one just after it. Only
    the tables an endpoint can read are watched: those of the events' schema and of the
    models' schema. Each reading lists the tables of those schemas as they are at that
    moment, so a partition or a TimescaleDB chunk created a second ago is counted too (a
    list kept for a while missed it: a new day's chunk read as 0 rows).

    ``bytes_read`` counts each row read at its table's average row size: ``pg_column_size``
    of a row (its header and values as stored), over the table's first ``SAMPLE`` rows. Not
    the table's size on disk over its row count: a one-row table fills a whole 8 kB page,
    and its row would weigh 8,192 bytes. The sizes are re-measured every ``TTL`` seconds; a
    table that had none (no rows, or new) is measured when a query first reads rows of it.
    """

    TTL = 10.0
    SAMPLE = 1000
    #: Measuring never makes a request wait: a table locked (or dropped) by a rebuild at
    #: that moment is measured next time.
    LOCK_TIMEOUT_MS = 100
    _TABLES = """
        select c.oid, n.nspname, c.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'm') and (n.nspname = any(%s) or c.oid = any(%s::oid[]))
        order by c.oid
    """
    _WIDTH = "select avg(size)::float8 from (select pg_column_size(t.*) as size from {} t limit {}) s"
    #: Per table of the watched schemas (its oid, and its count): rows its sequential
    #: scans returned, plus the entries its indexes returned (index, bitmap and index-only
    #: scans alike; an index-only scan of an all-visible table fetches no row from the
    #: table, so the table's own fetch counter missed it).
    #: One pass over the tables and their indexes (an index lives in its table's schema),
    #: each counted under its table: a quarter cheaper than a subquery per table.
    READ = ("select array_agg(r order by r), array_agg(n order by r) from ("
            " select coalesce(x.indrelid, c.oid) as r, sum(pg_stat_get_xact_tuples_returned(c.oid))::int8 as n"
            " from pg_class c join pg_namespace ns on ns.oid = c.relnamespace"
            " left join pg_index x on x.indexrelid = c.oid"
            " where c.relkind in ('r', 'm', 'i') and ns.nspname = any(%s) group by 1) s")

    def __init__(self):
        self._tables: dict[tuple, Watched] = {}

    def tables(self, db, schemas: tuple[str, ...]) -> Watched:
        watched = self._tables.get(schemas)
        if watched is None or time.monotonic() - watched.at > self.TTL:
            watched = Watched(time.monotonic(), list(schemas), self._widths(db, list(schemas), []))
            self._tables[schemas] = watched
        return watched

    def _widths(self, db, schemas: list[str], oids: list[int]) -> dict[int, float | None]:
        """The average row size in bytes of each table of ``schemas`` and of ``oids``;
        None when it has no rows or could not be read without waiting."""
        widths: dict[int, float | None] = {}
        with db.psycopg() as conn:
            conn.execute(f"set local lock_timeout = {self.LOCK_TIMEOUT_MS}")
            for oid, schema, name in conn.execute(self._TABLES, [schemas, oids]).fetchall():
                try:
                    with conn.transaction():  # a savepoint: one table's failure spares the others
                        query = sql.SQL(self._WIDTH).format(sql.Identifier(schema, name), self.SAMPLE)
                        widths[oid] = conn.execute(query).fetchone()[0]
                except psycopg.Error:
                    widths[oid] = None
        return widths

    def counts(self, db, watched: Watched, before: tuple | None, after: tuple | None) -> tuple[int, int]:
        """(rows, bytes) read between two readings of ``READ``."""
        earlier = dict(zip(*before)) if before and before[0] else {}
        read = {oid: n - earlier.get(oid, 0) for oid, n in (zip(*after) if after and after[0] else ())}
        read = {oid: n for oid, n in read.items() if n}
        unknown = [oid for oid in read if watched.widths.get(oid) is None]
        if unknown:
            watched.widths.update(self._widths(db, [], unknown))
        return sum(read.values()), round(sum(n * (watched.widths.get(oid) or 0) for oid, n in read.items()))


class UtcDateTimeText(Loader):
    """timestamptz straight to Tinybird's ``YYYY-MM-DD HH:MM:SS``: the service's sessions
    run in UTC, so PostgreSQL's text already is that, followed by ``+00``; building
    datetime objects only to format them again costs more than the query for large
    answers (a month of 15-minute buckets)."""

    def load(self, data) -> str:
        return bytes(data[:19]).decode()


def _state():
    return service()


def endpoint_query(endpoint, values: dict) -> sql.Composed:
    """``select * from <schema>.<endpoint>(<param> => %(param)s, …)``: names from the
    declarations, values bound; absent parameters take the function's defaults. An array
    is cast to its declared type (``text[]``…): a Python list alone does not say which."""
    arrays = {p.name: p.kind.sql for p in endpoint.params if p.is_array}
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}{}").format(sql.Identifier(name), sql.Placeholder(name),
                                     sql.SQL("::" + arrays[name]) if name in arrays else sql.SQL(""))
        for name in values)
    return sql.SQL("select * from {}.{}({})").format(
        sql.Identifier(endpoint.schema), sql.Identifier(endpoint.function), args)


def run_endpoint(endpoint, values: dict, min_lsn: int | None = None) -> tuple[list[dict], list[tuple], dict]:
    """Query one endpoint with validated parameter values; return (meta, rows, statistics).

    Tried on each target the read router gives (replicas in rotation, then the primary;
    ``replicas.py``) until one answers. The counter readings, the query and, on a replica,
    its replay position travel in one pipeline: one round trip."""
    started = time.perf_counter()
    state = _state()
    for target in state.reads.targets(min_lsn):
        try:
            meta, rows, counts, replay = _query(state, target, endpoint, values)
        except Exception as err:
            if target.replica is None:
                raise
            state.reads.taken_out(target, err)
            metrics.REPLICA_FAILOVERS.labels(target.name).inc()
            log.warning("%s failed a query (%s); trying the next target", target.name, first_line(err))
            continue
        staleness = 0.0
        if target.replica is not None:
            staleness = state.reads.answered(target.replica, replay, min_lsn)
            if staleness is None:  # not usable after all: behind the token, past the bound, or promoted
                metrics.REPLICA_FAILOVERS.labels(target.name).inc()
                continue
        metrics.PIPE_READS.labels(target.name).inc()
        statistics = {"elapsed": round(time.perf_counter() - started, 6),
                      "rows_read": counts[0], "bytes_read": counts[1],
                      "source": target.name, "max_staleness": round(staleness, 3)}
        return meta, rows, statistics
    raise AssertionError("the primary is always the last target")  # pragma: no cover


def _query(state, target, endpoint, values: dict):
    """(meta, rows, (rows_read, bytes_read), replay position): the answer kept by the
    result cache when it was computed at the data version the target has now
    (result_cache.py), otherwise the endpoint's query, whose answer is then kept."""
    cache = state.results
    if cache is None:
        return _run(state, target, endpoint, values)[:4]
    key = answer_key(target.name, endpoint, values)
    request_state().cache = "miss"
    version = None
    # ``Cache-Control: no-cache`` asks for the query itself (its answer is kept all the
    # same): the version is then read in the query's own round trip, just before it.
    if "no-cache" not in request.headers.get("Cache-Control", ""):
        with timed("query"), target.db.psycopg() as conn:
            with conn.pipeline():
                position = conn.execute(REPLAY_POSITION, prepare=PREPARED) if target.replica is not None else None
                current = conn.execute(VERSION, [state.settings.raw_schema], prepare=PREPARED)
            version = current.fetchone()[0]
            replay = position.fetchone()[0] if position is not None else None
        kept = cache.get(key, version)
        if kept is not None:
            request_state().cache = "hit"
            return kept.meta, kept.rows, (0, 0), replay
    meta, rows, counts, replay, read_then = _run(state, target, endpoint, values, versioned=version is None)
    cache.put(key, Answer(version if version is not None else read_then, meta, rows))
    return meta, rows, counts, replay


def _run(state, target, endpoint, values: dict, versioned: bool = False):
    """Run the endpoint's query on ``target``, with the read counters around it; with
    ``versioned``, the data version is read first in the same round trip (each statement
    takes its own snapshot, read committed: the query sees at least that version, so its
    answer may be kept under it). Returns (meta, rows, counts, replay position, version
    or None)."""
    with timed("statistics"):
        watched = state.read_counters.tables(target.db, (state.settings.raw_schema, endpoint.schema))
    with timed("query"), target.db.psycopg() as conn:
        cur = conn.cursor()
        cur.adapters.register_loader("timestamptz", UtcDateTimeText)
        with conn.pipeline():
            position = conn.execute(REPLAY_POSITION, prepare=PREPARED) if target.replica is not None else None
            current = conn.execute(VERSION, [state.settings.raw_schema], prepare=PREPARED) if versioned else None
            before = conn.execute(ReadCounters.READ, [watched.schemas], prepare=PREPARED)
            cur.execute(endpoint_query(endpoint, values), values)
            after = conn.execute(ReadCounters.READ, [watched.schemas], prepare=PREPARED)
        meta = [{"name": d.name, "type": type_name(d.type_code)} for d in cur.description]
        rows = cur.fetchall()
        readings = before.fetchone(), after.fetchone()
        replay = position.fetchone()[0] if position is not None else None
        version = current.fetchone()[0] if current is not None else None
    with timed("statistics"):
        counts = state.read_counters.counts(target.db, watched, *readings)
    return meta, rows, counts, replay, version


@bp.route("/v0/pipes/<string:filename>", methods=["GET", "POST"])
def get_pipe(filename: str):
    if "." not in filename and request.method == "GET":
        return pipe_metadata(filename)
    name, _, fmt = filename.rpartition(".")
    if not name or fmt not in PIPE_FORMATS:
        raise ApiError(404, f"unknown format in '{filename}': use {', '.join('.' + f for f in PIPE_FORMATS)}")
    catalog = _state().catalog
    if not catalog.built:
        raise ApiError(503, "the dbt models are not built yet: run `cartpulse build`", headers={"Retry-After": "5"})
    endpoint = catalog.get(name)
    if endpoint is None:
        raise ApiError(404, f"pipe '{name}' not found")
    request_state().pipe = name  # for the latency histogram (metrics) and pipe_stats
    require_scope(f"PIPES:READ:{name}")
    fixed = request_caller().fixed_params.get(name)
    if fixed:
        # A signed token's filter must bind: one the pipe does not declare would be
        # silently ignored and show everything, so it is refused instead.
        unknown = sorted(set(fixed) - {p.name for p in endpoint.params})
        if unknown:
            raise ApiError(403, f"this token fixes {', '.join(unknown)}, which pipe '{name}' does not take")
    given = request_values()
    # For pipe_stats: every value, repeated keys and a POST's body included.
    request_state().pipe_params = {k: ",".join(v) for k, v in given.lists() if k != "token"}
    values = parse_request(endpoint.params, given, fixed=fixed)
    if "q" in given:  # SQL over the pipe's result, the table `_` (pipe_query.py)
        return pipe_query.answer_over_pipe(endpoint, values, fmt, given["q"], endpoint_query)
    position = request.headers.get(LSN_HEADER)
    meta, rows, statistics = run_endpoint(endpoint, values, parse_lsn(position) if position else None)
    request_state().pipe_result = (len(rows), statistics)
    with timed("render"):
        response = render(fmt, meta, rows, statistics)
    response.headers["CartPulse-Read-From"] = statistics["source"]
    response.headers["CartPulse-Max-Staleness"] = f"{statistics['max_staleness']:.3f}"
    if request_state().cache:
        response.headers["CartPulse-Cache"] = request_state().cache
    return response
