"""The dashboard and the API reference in a real browser, against the real server.

Chromium is Debian's (``/usr/bin/chromium``; ``make test`` installs it when missing and
running as root), driven by Playwright: Playwright's own browser download is never used.
Every request the pages make is checked to go to the server under test: a page that
reached for a CDN would fail here. Screenshots go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cartpulse.cli.event_generator import EventGenerator
from support import truncate_events

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: How long the page may take to show a change (it refreshes every 3 s).
CHANGE_SECONDS = 20
PIPES = ("top_products", "events_by_country", "total_revenue")
START = datetime(2026, 10, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium when run as root"
                    " (apt-get install -y chromium); install it to run the browser tests")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency: pip install -e 'service[test]'")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Tab:
    """A page in its own browser context, with every off-server request refused and noted."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 1000):
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._guard)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        # A script, style or request the Content-Security-Policy refused (web/security.py).
        self.page.on("console", lambda msg: self.errors.append(msg.text)
                     if "Content Security Policy" in msg.text else None)

    def _guard(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self):
        self.context.close()
        assert not self.outside, f"the page reached outside the server: {self.outside}"
        assert not self.errors, f"JavaScript errors: {self.errors}"

    def refreshes(self) -> int:
        return int(self.page.evaluate("Number(document.body.dataset.refreshes)"))

    def wait_refresh(self, after: int) -> None:
        self.page.wait_for_function("n => Number(document.body.dataset.refreshes) > n", arg=after,
                                    timeout=CHANGE_SECONDS * 1000)

    def drawn(self, pipe: str) -> list[dict]:
        """The rows of the table drawn next to a chart, as the raw values the page kept."""
        return self.page.eval_on_selector_all(
            f'table[data-pipe="{pipe}"] tbody tr',
            "rows => rows.map(r => Object.fromEntries([...r.cells].map(c => [c.dataset.col, c.dataset.value])))")

    def asked(self) -> dict:
        """The parameters of the last drawn answers, per pipe."""
        return json.loads(self.page.evaluate("document.body.dataset.query"))


def same(drawn_rows: list[dict], api_rows: list[dict]) -> bool:
    if len(drawn_rows) != len(api_rows):
        return False
    for drawn, answered in zip(drawn_rows, api_rows):
        if set(drawn) != set(answered):
            return False
        for key, value in answered.items():
            if isinstance(value, (int, float)) and float(drawn[key]) != value:
                return False
            if not isinstance(value, (int, float)) and drawn[key] != str(value):
                return False
    return True


def assert_drawn_equals_api(tab: Tab, http) -> None:
    asked = tab.asked()
    for pipe in PIPES:
        answered = http.pipe(pipe, **asked[pipe])
        assert answered, f"{pipe} answered no rows: the test data should give some"
        assert same(tab.drawn(pipe), answered), (pipe, asked[pipe], tab.drawn(pipe)[:3], answered[:3])


def events(n: int, seed: int, days: int = 5, products: int = 60) -> list[dict]:
    return EventGenerator(seed=seed, products=products, start=START, span=timedelta(days=days)).events(n)


def test_dashboard_draws_the_api_answers_and_follows_new_events(browser, live_server, settings):
    truncate_events(settings.database_url)
    status, body = live_server.post_events(events(800, seed=5))
    assert status == 202 and body["successful_rows"] == 800

    tab = Tab(browser, live_server.base)
    try:
        tab.page.goto(f"{live_server.base}/?token={live_server.token}")
        tab.wait_refresh(0)
        # The token moved to localStorage and out of the URL (and so out of the history).
        assert "token=" not in tab.page.url
        assert tab.page.evaluate("localStorage.getItem('cartpulse.token')") == live_server.token
        assert tab.asked()["total_revenue"] == {"interval": "1 hour"}  # all time by default
        assert_drawn_equals_api(tab, live_server)
        assert tab.page.locator("#kpi-events").inner_text().replace(",", "") == "800"

        # A new event shows up by itself: the page keeps refreshing while events flow.
        top = {"event_time": "2026-10-02 12:00:00", "event_type": "purchase", "user_id": "u-live",
               "product_id": "p-live-best-seller", "category": "electronics", "price": 99999.5, "quantity": 3,
               "session_id": "s-live", "country": "Atlantis"}
        assert live_server.post_events([top])[0] == 202
        tab.page.wait_for_function(
            """() => {
                 const first = document.querySelector('table[data-pipe="top_products"] tbody td[data-col="product_id"]');
                 const countries = [...document.querySelectorAll('table[data-pipe="events_by_country"] td[data-col="country"]')];
                 return first && first.dataset.value === 'p-live-best-seller'
                     && countries.some(c => c.dataset.value === 'Atlantis');
               }""", timeout=CHANGE_SECONDS * 1000)
        assert_drawn_equals_api(tab, live_server)
        assert tab.drawn("top_products")[0]["total_revenue"] == str(99999.5 * 3)

        # The date range picker drives start_date/end_date (the end day is included).
        before = tab.refreshes()
        tab.page.fill("#start", "2026-10-02")
        tab.page.fill("#end", "2026-10-03")
        tab.page.dispatch_event("#end", "change")
        tab.page.wait_for_function(
            "() => (JSON.parse(document.body.dataset.query || '{}').top_products || {}).end_date === '2026-10-04 00:00:00'",
            timeout=CHANGE_SECONDS * 1000)
        assert tab.refreshes() > before
        assert tab.asked()["top_products"] == {"start_date": "2026-10-02 00:00:00", "end_date": "2026-10-04 00:00:00"}
        assert tab.asked()["total_revenue"]["interval"] == "15 minutes"  # two days: auto picks 15-minute bins
        assert_drawn_equals_api(tab, live_server)
        assert "start=2026-10-02" in tab.page.url  # the range is in the URL, to share the view

        ARTIFACTS.mkdir(exist_ok=True)
        tab.page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # A reload finds the token again in localStorage.
        count = tab.refreshes()
        tab.page.goto(f"{live_server.base}/")
        tab.wait_refresh(0)
        assert tab.page.locator("#token-form").is_hidden()
        assert count >= 1
    finally:
        tab.close()


def test_revenue_line_runs_along_zero_across_empty_buckets(browser, live_server, settings):
    """Two sales seven months apart, drawn per hour (5,000 buckets, of which 2 hold sales):
    the line must drop to zero after the first and rise from zero before the second, never
    slope across the empty months; within an asked range, it runs to the range's edges."""
    truncate_events(settings.database_url)
    sale = {"event_type": "purchase", "user_id": "u", "product_id": "p", "category": "c", "price": 10.0,
            "quantity": 1, "session_id": "s", "country": "France"}
    assert live_server.post_events([{**sale, "event_time": "2026-03-02 10:20:00"},
                                    {**sale, "event_time": "2026-10-05 15:40:00", "price": 30.0}])[0] == 202
    hour = 3600_000
    tab = Tab(browser, live_server.base)
    try:
        for query, edges in (("interval=1%20hour", None),
                             ("start=2026-03-01&end=2026-10-06&interval=1%20hour",
                              (datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 10, 6, 23, tzinfo=timezone.utc)))):
            tab.page.goto(f"{live_server.base}/?{query}&token={live_server.token}")
            tab.wait_refresh(0)  # a new page counts its refreshes from 0
            points = json.loads(tab.page.evaluate("document.getElementById('chart-total_revenue').dataset.points"))
            xs = [p["x"] for p in points]
            assert xs == sorted(xs)
            assert [p["y"] for p in points if p["y"]] == [10.0, 30.0]
            for a, b in zip(points, points[1:]):
                if b["x"] - a["x"] > hour:  # a straight segment over empty buckets must lie on zero
                    assert a["y"] == 0 and b["y"] == 0, (query, a, b)
            if edges:  # the whole asked range is drawn, at zero where nothing sold
                assert (xs[0], xs[-1]) == (edges[0].timestamp() * 1000, edges[1].timestamp() * 1000)
    finally:
        tab.close()


def test_dashboard_asks_for_a_token_once(browser, live_server, settings):
    tab = Tab(browser, live_server.base)
    try:
        tab.page.goto(f"{live_server.base}/")
        assert tab.page.locator("#token-form").is_visible()
        # A refused token brings the form back, saying so.
        tab.page.fill("#token", "not-a-token")
        tab.page.click("#token-form button[type=submit]")
        tab.page.wait_for_function("() => !document.getElementById('token-form').hidden"
                                   " && document.getElementById('status').textContent.includes('refused')",
                                   timeout=CHANGE_SECONDS * 1000)
        tab.page.fill("#token", live_server.token)
        tab.page.click("#token-form button[type=submit]")
        tab.wait_refresh(0)
        assert tab.page.locator("#token-form").is_hidden()
        assert tab.page.evaluate("localStorage.getItem('cartpulse.token')") == live_server.token
        tab.page.click("#forget")
        assert tab.page.locator("#token-form").is_visible()
        assert tab.page.evaluate("localStorage.getItem('cartpulse.token')") is None
    finally:
        tab.close()


def test_api_reference_renders_every_pipe_from_local_assets(browser, live_server, app):
    tab = Tab(browser, live_server.base)
    try:
        tab.page.goto(f"{live_server.base}/v0/docs")
        tab.page.wait_for_selector(".opblock", timeout=CHANGE_SECONDS * 1000)
        text = tab.page.locator("#swagger-ui").inner_text()
        assert "Unable to render" not in text
        for name in app.extensions["cartpulse"].catalog.all():
            for fmt in ("json", "csv", "ndjson"):
                assert f"/v0/pipes/{name}.{fmt}" in text, f"{name}.{fmt} is not on the docs page"
        assert "/v0/events" in text
        ARTIFACTS.mkdir(exist_ok=True)
        tab.page.screenshot(path=str(ARTIFACTS / "docs.png"))
    finally:
        tab.close()


@pytest.mark.skipif(not os.environ.get("CARTPULSE_README_SCREENSHOT"),
                    reason="writes docs/dashboard.png for the README: run `make screenshot`")
def test_readme_screenshot(browser, live_server, settings):
    """A week of generated shop traffic, drawn as a reader of the README will see it."""
    truncate_events(settings.database_url)
    batch = events(30_000, seed=2026, days=7, products=400)
    for i in range(0, len(batch), 10_000):
        assert live_server.post_events(batch[i:i + 10_000])[0] == 202
    tab = Tab(browser, live_server.base, width=1280, height=900)
    try:
        tab.page.goto(f"{live_server.base}/?start=2026-10-01&end=2026-10-07&token={live_server.token}")
        tab.wait_refresh(0)
        assert_drawn_equals_api(tab, live_server)
        target = ROOT / "docs" / "dashboard.png"
        tab.page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size < 300_000, f"{target} is {target.stat().st_size} bytes: keep it under 300 KB"
    finally:
        tab.close()
