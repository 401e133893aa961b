"""The Flask application factory.

``create_app`` follows Flask's tutorial: defaults, then the environment (``Settings``),
then explicit overrides from tests; one blueprint per feature. Nothing here touches the
database at import or creation time, so gunicorn can fork workers safely, and the service
starts (and answers ``/healthz``, and 503 elsewhere) while the database is not up yet.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flask import Flask

from cartpulse import errors
from cartpulse.access.auth import TokenStore, add_rate_limit_headers
from cartpulse.access.ratelimit import RateLimiter
from cartpulse.config import Settings
from cartpulse.context import Service, install
from cartpulse.ingest.idempotency import Purger
from cartpulse.ingest.writer import PartitionCache
from cartpulse.project.datasources import for_settings
from cartpulse.project.endpoints import Catalog
from cartpulse.serving import result_cache
from cartpulse.serving.pipes import ReadCounters
from cartpulse.serving.replicas import ReadRouter
from cartpulse.storage import embedded
from cartpulse.storage.db import Database

#: The dashboard's and the API reference's pages and assets.
WEB = Path(__file__).parent / "web"


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    if not settings.database_url:
        settings = replace(settings, database_url=embedded.for_settings(settings).url)
    app = Flask(__name__, template_folder=str(WEB / "templates"), static_folder=str(WEB / "static"))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    pool_size = max(2, settings.threads + 1)
    db = Database(settings.database_url, pool_size=pool_size, statement_timeout_ms=settings.statement_timeout_ms)
    install(app, Service(
        settings=settings,
        db=db,
        tokens=TokenStore(db),
        catalog=Catalog(settings.target_dir / "manifest.json"),
        datasources=for_settings(settings),
        partitions=PartitionCache(),
        purger=Purger(),
        reads=ReadRouter(db, settings.read_database_urls, max_lag=settings.replica_max_lag_seconds,
                         check_seconds=settings.replica_check_seconds, wait_seconds=settings.replica_wait_ms / 1000,
                         statement_timeout_ms=settings.statement_timeout_ms, pool_size=pool_size),
        read_counters=ReadCounters(),
        limiter=RateLimiter(db, settings.rate_limit_rps, settings.rate_limit_burst),
        results=result_cache.for_settings(settings),
    ))
    errors.init_app(app)
    app.after_request(add_rate_limit_headers)

    from cartpulse.access import tokens
    from cartpulse.ingest import events_api
    from cartpulse.ops import metrics, pipe_stats, status
    from cartpulse.serving import (
        data_operations,
        datasource_metadata,
        datasources,
        pipe_metadata,
        pipes,
        query_api,
    )
    from cartpulse.web import dashboard, docs, openapi, security

    # Ingest and serving: the Tinybird-shaped API.
    app.register_blueprint(events_api.bp)
    app.register_blueprint(datasources.bp)
    app.register_blueprint(data_operations.bp)
    app.register_blueprint(pipes.bp)
    app.register_blueprint(query_api.bp)
    app.register_blueprint(pipe_metadata.bp)
    app.register_blueprint(datasource_metadata.bp)
    app.register_blueprint(tokens.bp)
    # Operations: health, refresh runs, /metrics and request timing, pipe_stats rows.
    app.register_blueprint(status.bp)
    metrics.init_app(app)
    pipe_stats.init_app(app, db)
    # Pages for people: the dashboard and the API reference.
    app.register_blueprint(openapi.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(dashboard.bp)
    security.init_app(app)
    return app
