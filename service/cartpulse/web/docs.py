"""The API reference page: ``GET /v0/docs`` (and ``/docs``) renders ``/v0/openapi.json``.

Swagger UI comes from the ``swagger-ui-py`` wheel (a Swagger UI 5 build, which reads
OpenAPI 3.1), served from the installed package at ``/v0/docs/assets/``: no CDN, so the
page works on a machine with no internet access and leaks nothing to a third party.
Only the two files the page uses are served, not the wheel's whole folder. Swagger UI's
default of asking an online validator for a badge is turned off in ``static/docs.js``.

Like the document it shows, the page needs no token; "Authorize" takes one for
"Try it out".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    redirect,
    render_template,
    send_from_directory,
    url_for,
)

bp = Blueprint("docs", __name__)

#: The Swagger UI files the page loads, from the swagger-ui-py package.
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js")


def swagger_ui_dir() -> Path:
    """Where the installed swagger-ui-py keeps Swagger UI's build (found without
    importing it: its ``__init__`` sets up web framework handlers we do not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed (pip install -e 'service')")
    return Path(list(spec.submodule_search_locations)[0]) / "static"


@bp.get("/v0/docs")
def docs_page():
    return render_template("docs.html")


@bp.get("/docs")
def docs_short():
    return redirect(url_for("docs.docs_page"))


@bp.get("/v0/docs/assets/<string:filename>")
def docs_asset(filename: str):
    if filename not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_dir(), filename, max_age=3600)
