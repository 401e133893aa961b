"""The semantic layer: `mf query` (MetricFlow) answers the project's metrics, and its
numbers are the ones plain SQL computes over the same events (models/semantic/)."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import dbt_env
from support import dbt_ok, ndjson, truncate_events

MF = str(Path(dbt_env.__globals__["sys"].executable).parent / "mf")

# The same numbers, by hand: purchases per country over the events table.
BY_COUNTRY = """
select country,
       sum(price * quantity) filter (where event_type = 'purchase') as revenue,
       count(*) filter (where event_type = 'purchase') as purchases,
       sum(quantity) filter (where event_type = 'purchase') as units,
       count(*) as events,
       count(*) filter (where event_type = 'view') as views
from raw.ecommerce_events group by country
"""


def mf_query(settings, tmp_path, *args) -> list[dict]:
    """`mf query … --csv`, run as an analyst would from the project root with
    `cartpulse env`'s exports; the rows it wrote."""
    out = tmp_path / f"mf-{len(list(tmp_path.iterdir()))}.csv"
    result = subprocess.run([MF, "query", *args, "--csv", str(out), "--quiet"], cwd=settings.project_dir,
                            env=dbt_env(settings, settings.database_url), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    with out.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def project(built, tmp_path_factory):
    """The project, parsed against the test database in a copy whose target folder is
    `target/` under its root: where `mf` reads the semantic manifest (it does not follow
    DBT_TARGET_PATH), as in a checkout."""
    root = tmp_path_factory.mktemp("semantic") / "project"
    shutil.copytree(PROJECT_DIR, root, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "bench", "*.pyc"))
    settings = replace(built, project_dir=root, target_dir=root / "target")
    dbt_ok(settings, "parse")
    return settings


@pytest.fixture
def loaded(project, built, client, auth):
    truncate_events(built.database_url)
    events = list(EventGenerator(seed=16).events(1500))
    assert client.post("/v0/events?name=ecommerce_events", data=ndjson(events), headers=auth).status_code == 202
    dbt_ok(built, "run")  # the refresh: the daily rollup absorbs the events
    with psycopg.connect(built.database_url) as conn:
        rows = conn.execute(BY_COUNTRY).fetchall()
    yield project, {r[0]: r[1:] for r in rows}
    truncate_events(built.database_url)


def test_mf_query_answers_the_metrics_as_sql_does(loaded, tmp_path):
    settings, expected = loaded
    rows = mf_query(settings, tmp_path, "--metrics",
                    "revenue,purchases,units,events,view_to_purchase_rate,average_order_value",
                    "--group-by", "event__country")
    assert {r["event__country"] for r in rows} == set(expected) and len(expected) > 3
    for r in rows:
        revenue, purchases, units, events, views = expected[r["event__country"]]
        # Counts are whole numbers, written as floats when a column has NULLs.
        assert float(r["events"]) == events
        assert float(r["purchases"] or 0) == purchases
        assert float(r["units"] or 0) == (units or 0)
        assert Decimal(r["revenue"]) == pytest.approx(Decimal(str(revenue or 0)), abs=Decimal("1e-6"))
        if views:
            assert float(r["view_to_purchase_rate"]) == pytest.approx(purchases / views)
        if purchases:
            assert float(r["average_order_value"]) == pytest.approx(float(revenue) / purchases)


def test_mf_query_reads_the_daily_rollup_by_utc_day(loaded, tmp_path):
    settings, _ = loaded
    rows = mf_query(settings, tmp_path, "--metrics", "daily_revenue,revenue,daily_units,units",
                    "--group-by", "metric_time__day")
    with psycopg.connect(settings.database_url) as conn:
        days = dict(conn.execute("select date_trunc('day', event_time at time zone 'UTC')::date,"
                                 " sum(price * quantity) from raw.ecommerce_events"
                                 " where event_type = 'purchase' group by 1").fetchall())
    got = {r["metric_time__day"][:10]: r for r in rows if r["daily_revenue"]}
    assert {str(d) for d in days} == set(got) and days
    for day, total in days.items():
        r = got[str(day)]
        assert float(r["daily_revenue"]) == pytest.approx(total) == pytest.approx(float(r["revenue"]))
        assert float(r["daily_units"]) == float(r["units"]) > 0
