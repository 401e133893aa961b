"""``GET /metrics``: Prometheus text format, correct under several worker processes.

Two kinds of figures, from two places:

* **Counted by the workers** — ingested and quarantined rows, request latency per route
  and per pipe. prometheus_client keeps them; under ``cartpulse serve`` it runs in
  multiprocess mode (``multiproc.py``), so a scrape answered by any worker shows the sum
  over all of them.
* **Read from the database at scrape time** — rollup lag (pending rows and the age of the
  oldest pending row of each data source, seconds since each rollup was refreshed) and
  the last scheduled refresh
  (``cartpulse.refresh_runs``). The scheduler is another process, possibly on another
  host; the database is the one place that knows, so no worker has to be told.

Label values come from declarations (route rules, the catalog's pipe names, data source
names), never from raw request text, so the number of series stays bounded.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import Blueprint, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from psycopg import sql

from cartpulse.context import request_state, service
from cartpulse.errors import ApiError, database_unavailable
from cartpulse.project.datasources import DataSource

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

INGESTED_ROWS = Counter("cartpulse_ingested_rows", "Event rows stored, by data source and path "
                        "(events: POST /v0/events; import: bulk imports).", ["data_source", "via"])
QUARANTINED_ROWS = Counter("cartpulse_quarantined_rows", "Rows sent to the quarantine, by data source and path.",
                           ["data_source", "via"])
REQUEST_SECONDS = Histogram("cartpulse_http_request_duration_seconds", "Time to answer a request, by route.",
                            ["route", "method", "status"])
PIPE_SECONDS = Histogram("cartpulse_pipe_request_duration_seconds", "Time to answer a pipe request, by pipe.",
                         ["pipe", "status"],
                         buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
PIPE_READS = Counter("cartpulse_pipe_reads", "Pipe answers by the server that gave them (primary, replica-<n>).",
                     ["source"])
REPLICA_FAILOVERS = Counter("cartpulse_replica_failovers",
                            "Pipe queries a replica could not answer (down, lock timeout, behind the"
                            " client's CartPulse-LSN or past the lag bound), moved to the next target.", ["replica"])
PIPE_STATS_DROPPED = Counter("cartpulse_pipe_stats_dropped_rows",
                             "pipe_stats rows not written (queue full or database unavailable).")


def count_rows(source: str, via: str, stored: int, quarantined: int) -> None:
    """Count a committed write to the data source ``source`` (called after the commit, so
    only stored rows count)."""
    if stored:
        INGESTED_ROWS.labels(source, via).inc(stored)
    if quarantined:
        QUARANTINED_ROWS.labels(source, via).inc(quarantined)


def init_app(app) -> None:
    """Time every request; register ``/metrics``."""

    @app.before_request
    def _start_clock():
        request_state().started = time.perf_counter()

    @app.after_request
    def _observe(response):
        known = request_state()
        started = known.started
        if started is not None:
            elapsed = time.perf_counter() - started
            route = request.url_rule.rule if request.url_rule else "unmatched"
            REQUEST_SECONDS.labels(route, request.method, str(response.status_code)).observe(elapsed)
            pipe = known.pipe
            if pipe is not None:
                PIPE_SECONDS.labels(pipe, str(response.status_code)).observe(elapsed)
            # Where the time went (W3C Server-Timing): each phase timed (context.timed), and
            # the whole request as the app saw it (the HTTP front's time is not in it).
            phases = [f"{name};dur={ms:.2f}" for name, ms in known.timings.items()]
            response.headers["Server-Timing"] = ", ".join([*phases, f"app;dur={elapsed * 1000:.2f}"])
        return response

    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics():
    state = service()
    expected = state.settings.metrics_token
    given = request.headers.get("Authorization", "").encode()
    if expected and not hmac.compare_digest(given, f"Bearer {expected}".encode()):
        raise ApiError(401, "GET /metrics needs 'Authorization: Bearer <METRICS_TOKEN>'")
    if state.settings.prometheus_multiproc_dir:  # set by multiproc.prepare under `cartpulse serve`
        from prometheus_client import multiprocess

        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted, path=str(state.settings.prometheus_multiproc_dir))
    else:
        counted = REGISTRY
    from_database = CollectorRegistry(auto_describe=False)
    from_database.register(DatabaseCollector(state.db, state.datasources))
    body = generate_latest(counted) + generate_latest(from_database)
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)



def _lag(source: DataSource) -> sql.Composed:
    """Pending rows of a data source, and the age of the oldest by its partition key."""
    return sql.SQL("select count(*), extract(epoch from now() - min({})) from {}").format(
        sql.Identifier(source.partition_key), source.table(source.pending))

# rollup_state names a rollup "db"."schema"."table"; the label is schema.table.
_ROLLUPS = ("select coalesce(to_regclass(rollup)::text, rollup), extract(epoch from now() - refreshed_at)"
            " from cartpulse.rollup_state")
_LAST_RUN = """
select status, duration_seconds, extract(epoch from finished_at), freshness,
       (select extract(epoch from max(finished_at)) from cartpulse.refresh_runs where status = 'success'),
       (select count(*) from cartpulse.refresh_runs r
         where r.status = 'failed'
           and r.finished_at > coalesce((select max(finished_at) from cartpulse.refresh_runs
                                         where status = 'success'), '-infinity'))
from cartpulse.refresh_runs where status <> 'skipped' order by finished_at desc limit 1
"""


class DatabaseCollector:
    """Gauges read from the database at scrape time (see the module docstring)."""

    def __init__(self, db, datasources: dict[str, DataSource]):
        self.db = db
        self.datasources = datasources

    def collect(self):
        up = GaugeMetricFamily("cartpulse_database_up", "1 when the database answered this scrape.")
        try:
            families = self._read()
        except Exception as err:  # a scrape must answer even when the database is away
            if not database_unavailable(err):
                log.warning("metrics: reading the database failed: %s", err)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list:
        families = []
        with self.db.psycopg() as conn:
            # Each part guarded by to_regclass, so a database without storage or without
            # built models still answers (with the figures that exist).
            sources = list(self.datasources.values())
            present = conn.execute(
                "select to_regclass('cartpulse.rollup_state') is not null,"
                " to_regclass('cartpulse.refresh_runs') is not null,"
                " array(select name from unnest(%s::text[], %s::text[]) as t(name, pending)"
                "       where to_regclass(pending) is not null)",
                [[s.name for s in sources], [s.regclass(s.pending) for s in sources]]).fetchone()
            pending = GaugeMetricFamily(
                "cartpulse_pending_rows", "Rows not yet absorbed by every rollup (the data source's _pending"
                " table); endpoints aggregate them on the fly.", labels=["data_source"])
            oldest = GaugeMetricFamily(
                "cartpulse_pending_oldest_event_age_seconds", "now() minus the smallest partition key (event_time)"
                " among pending rows (0 when none; a late event makes it large until the next refresh).",
                labels=["data_source"])
            for name in present[2]:
                rows, age = conn.execute(_lag(self.datasources[name])).fetchone()
                pending.add_metric([name], rows)
                oldest.add_metric([name], float(age or 0))
            if present[2]:
                families += [pending, oldest]
            if present[0]:
                ages = GaugeMetricFamily("cartpulse_rollup_age_seconds",
                                         "Seconds since each rollup was last refreshed (rollup_state.refreshed_at).",
                                         labels=["rollup"])
                for rollup, age in conn.execute(_ROLLUPS).fetchall():
                    ages.add_metric([rollup], float(age))
                families.append(ages)
            if present[1]:
                families.extend(self._last_run(conn.execute(_LAST_RUN).fetchone()))
        return families

    @staticmethod
    def _last_run(row) -> list:
        if row is None:
            return []
        status, duration, finished, freshness, last_success, failures = row
        ok = GaugeMetricFamily("cartpulse_refresh_last_success", "1 when the last scheduled refresh succeeded.",
                               value=1 if status == "success" else 0)
        families = [
            ok,
            GaugeMetricFamily("cartpulse_refresh_last_duration_seconds", "Duration of the last scheduled refresh.",
                              value=duration),
            GaugeMetricFamily("cartpulse_refresh_last_run_timestamp_seconds",
                              "When the last scheduled refresh ended (Unix time).", value=float(finished)),
            GaugeMetricFamily("cartpulse_refresh_consecutive_failures",
                              "Failed refreshes since the last successful one.", value=failures),
        ]
        if last_success is not None:
            families.append(GaugeMetricFamily(
                "cartpulse_refresh_last_success_timestamp_seconds",
                "When the last successful refresh ended (Unix time).", value=float(last_success)))
        fresh = GaugeMetricFamily("cartpulse_source_freshness", "1 for the worst `dbt source freshness` status "
                                  "of the last refresh (pass, warn, error, runtime error).", labels=["status"])
        if freshness:
            fresh.add_metric([freshness], 1)
        families.append(fresh)
        return families
