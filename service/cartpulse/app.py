"""The Flask application factory.

``create_app`` follows Flask's tutorial: defaults, then the environment (``Settings``),
then explicit overrides from tests; one blueprint per feature. Nothing here touches the
database at import or creation time, so gunicorn can fork workers safely.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flask import Flask, jsonify

from . import embedded, errors
from .auth import TokenStore
from .catalog import Catalog
from .config import Settings
from .db import Database
from .ingest import PartitionCache


@dataclass
class State:
    """Per-process service state, reached as ``current_app.extensions['cartpulse']``."""

    settings: Settings
    db: Database
    tokens: TokenStore
    catalog: Catalog
    partitions: PartitionCache


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
    )
    errors.init_app(app)

    from . import ingest, pipes

    app.register_blueprint(ingest.bp)
    app.register_blueprint(pipes.bp)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    return app
