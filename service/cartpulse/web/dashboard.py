"""The live dashboard: ``GET /`` draws the three seed endpoints and refreshes every 3 s.

The page is static (``templates/dashboard.html``, ``static/dashboard.js``): it holds no
data and needs no token to load, and the browser calls the ordinary pipe endpoints with
the read token the user gives (once, kept in ``localStorage``, or as ``?token=`` in the
page's URL). So the dashboard sees exactly what the API answers, and a token scoped to
some pipes shows only those. The chart library (Chart.js) is vendored from npm into
``static/vendor/`` by ``make vendor`` and committed, so serving the page needs neither
npm nor a CDN.
"""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("dashboard", __name__)

#: Seconds between refreshes while the page is visible.
REFRESH_SECONDS = 3


@bp.get("/")
def page():
    return render_template("dashboard.html", refresh_seconds=REFRESH_SECONDS)
