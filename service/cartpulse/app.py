"""The Flask application factory.

``create_app`` follows Flask's tutorial: defaults, then the environment (``Settings``),
then explicit overrides from tests; one blueprint per feature. Nothing here touches the
database at import or creation time, so gunicorn can fork workers safely, and the service
starts (and answers ``/healthz``, and 503 elsewhere) while the database is not up yet.

``/healthz`` says the process is up; ``/readyz`` says it can serve: the database answers,
storage exists and the dbt models are built. It also lists the read replicas and whether
each is in this process's rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from flask import Flask, jsonify

from . import embedded, errors
from .auth import TokenStore, add_rate_limit_headers
from .catalog import Catalog
from .config import Settings
from .db import Database
from .idempotency import Purger
from .ingest import PartitionCache
from .pipes import ReadCounters
from .replicas import ReadRouter


@dataclass
class State:
    """Per-process service state, reached as ``current_app.extensions['cartpulse']``."""

    settings: Settings
    db: Database
    tokens: TokenStore
    catalog: Catalog
    partitions: PartitionCache
    purger: Purger
    reads: ReadRouter
    read_counters: ReadCounters = field(default_factory=ReadCounters)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.database_url:
        settings = replace(settings, database_url=embedded.for_settings(settings).url)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    db = Database(settings.database_url, pool_size=max(2, settings.threads + 1),
                  statement_timeout_ms=settings.statement_timeout_ms)
    app.extensions["cartpulse"] = State(
        settings=settings,
        db=db,
        tokens=TokenStore(db),
        catalog=Catalog(settings.target_dir / "manifest.json"),
        partitions=PartitionCache(),
        purger=Purger(),
        reads=ReadRouter(db, settings.read_database_urls, max_lag=settings.replica_max_lag_seconds,
                         check_seconds=settings.replica_check_seconds, wait_seconds=settings.replica_wait_ms / 1000,
                         statement_timeout_ms=settings.statement_timeout_ms,
                         pool_size=max(2, settings.threads + 1)),
    )
    errors.init_app(app)
    app.after_request(add_rate_limit_headers)

    from . import datasources, ingest, pipes, tokens

    app.register_blueprint(ingest.bp)
    app.register_blueprint(pipes.bp)
    app.register_blueprint(tokens.bp)
    app.register_blueprint(datasources.bp)

    # Operations: /metrics and request timing, pipe_stats rows, bulk import, refresh runs.
    from . import bulk, metrics, refresh_runs, stats

    metrics.init_app(app)
    stats.init_app(app, db)
    app.register_blueprint(bulk.bp)
    app.register_blueprint(refresh_runs.bp)

    from . import dashboard, docs, openapi

    app.register_blueprint(openapi.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(dashboard.bp)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        """200 when requests can be served; else 503 naming what is missing."""
        state = app.extensions["cartpulse"]
        try:
            with state.db.psycopg() as conn:
                storage = conn.execute("select to_regclass('cartpulse.tokens') is not null").fetchone()[0]
        except Exception as err:  # any failure to reach the database means "not ready"
            if not errors.database_unavailable(err):
                raise
            return errors.error_response(503, "database unreachable", {"Retry-After": str(errors.UNAVAILABLE_RETRY_AFTER)},
                                         database=False, storage=None, models=None)
        models = state.catalog.built
        if not (storage and models):
            missing = "storage (run `cartpulse init`)" if not storage else "dbt models (run `cartpulse build`)"
            return errors.error_response(503, f"not ready: {missing}", {"Retry-After": "5"},
                                         database=True, storage=storage, models=models)
        # Replicas are reported, never required: reads fall back to the primary.
        state.reads.watch()
        replicas = [replica.status() for replica in state.reads.replicas]
        return jsonify(status="ready", database=True, storage=True, models=True, replicas=replicas)

    return app
