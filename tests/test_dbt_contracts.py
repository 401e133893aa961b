"""dbt's own guarantees on the project: unit tests of every rollup and endpoint model, and
enforced contracts on our three materializations (macros/unit_testing.sql, macros/contracts.sql)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import psycopg
import pytest

from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.project.endpoints import endpoints_from_manifest
from support import dbt_ok


def _manifest(settings) -> dict:
    return json.loads((settings.target_dir / "manifest.json").read_text())


def _copy(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "bench", "*.pyc"))
    return project


def test_every_rollup_and_endpoint_has_unit_tests_that_dbt_test_runs(built):
    """Each rollup and endpoint model is unit tested, `dbt test` runs them all, and each
    endpoint test's parameter declarations are the model's own (a YAML alias, not a copy
    that could drift from what the service validates)."""
    dbt_ok(built, "parse")
    manifest = _manifest(built)
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    # The generated rollups and answers (models/*/derived/) are CartPulse's, tested by test_derived.py.
    wanted = {name for name, n in models.items() if n["fqn"][1] in ("rollups", "marts") and "derived" not in n["fqn"]}
    tests = list(manifest["unit_tests"].values())
    tested = {t["depends_on"]["nodes"][0].rpartition(".")[2] for t in tests}
    assert wanted <= tested and len(wanted) == 4
    endpoints = endpoints_from_manifest(manifest)
    for t in tests:
        model = t["depends_on"]["nodes"][0].rpartition(".")[2]
        assert t["overrides"]["macros"]["cartpulse_engine"] == "postgres", t["name"]
        if model in endpoints:
            declared = models[model]["config"]["meta"]["endpoint"]["params"]
            assert t["overrides"]["macros"]["endpoint_params"] == declared, t["name"]

    out = dbt_ok(built, "test", "--select", "test_type:unit")
    passed = set(re.findall(r"PASS (\w+)::(\w+)", out))
    assert {model for model, _ in passed} == tested
    assert len(passed) == len(tests) and "ERROR=0" in out


def test_a_wrong_expectation_fails_the_unit_test(built, tmp_path):
    """The unit tests compare exact rows: one revenue off by one fails `dbt build`."""
    project = _copy(tmp_path)
    marts = project / "models" / "marts" / "_marts.yml"
    text = marts.read_text()
    assert text.count("total_revenue: 3.5}") == 1
    marts.write_text(text.replace('- {time_bin: "2024-05-01 10:00:00+00", total_revenue: 3.5}',
                                  '- {time_bin: "2024-05-01 10:00:00+00", total_revenue: 4.5}'))
    settings = replace(built, project_dir=project, target_dir=tmp_path / "target")
    result = run_dbt(settings, built.database_url, "test", "--select", "test_type:unit", check=False, capture=True)
    assert result.returncode != 0
    assert "FAIL 1 total_revenue::total_revenue_by_the_requested_interval" in result.stdout
    assert re.search(r"Done\. PASS=\d+ WARN=0 ERROR=1 ", result.stdout), result.stdout[-2000:]


# One column changed per materialization: a type (staging view), a type (rollup table), a
# name (endpoint function, whose RETURNS TABLE would otherwise rename it silently).
BROKEN = {
    "models/staging/stg_raw__ecommerce_events.sql": (
        "{{ stage_events(source('raw', 'ecommerce_events')) }}",
        "select event_time, event_type, user_id, product_id, category, price, quantity::int as quantity,"
        " session_id, country, revenue from ({{ stage_events(source('raw', 'ecommerce_events')) }}) s"),
    "models/rollups/rollup_purchases_daily_by_country.sql": (
        "{{ purchase_measures() }}",
        "sum(sign * quantity)::bigint as quantity, sum(sign * revenue) as revenue, {{ events_measure() }}"),
    "models/marts/events_by_country.sql": ("    country,\n", "    country as place,\n"),
}


@pytest.fixture
def contracts(built, tmp_path):
    """A copy of the project built in a schema of its own, then dropped."""
    project = _copy(tmp_path)
    settings = replace(built, project_dir=project, target_dir=tmp_path / "target", dbt_schema="contracts")
    dbt_ok(settings, "run")
    try:
        yield settings
    finally:
        with psycopg.connect(built.database_url) as conn:
            conn.execute("drop schema contracts cascade")
            conn.execute("drop schema if exists contracts_analyst cascade")


@pytest.mark.parametrize("path", sorted(BROKEN))
def test_a_model_that_breaks_its_contract_fails_and_replaces_nothing(contracts, path):
    model = path.rpartition("/")[2].removesuffix(".sql")
    with psycopg.connect(contracts.database_url) as conn:
        before = conn.execute("select to_regclass(%s)::oid::int", [f"contracts.{model}"]).fetchone()[0]
    assert before is not None
    source = contracts.project_dir / path
    old, new = BROKEN[path]
    assert old in source.read_text()
    source.write_text(source.read_text().replace(old, new))
    result = run_dbt(contracts, contracts.database_url, "run", "--select", model, "--full-refresh",
                     check=False, capture=True)
    assert result.returncode != 0
    assert "This model has an enforced contract that failed" in result.stdout, result.stdout[-3000:]
    with psycopg.connect(contracts.database_url) as conn:
        assert conn.execute("select to_regclass(%s)::oid::int", [f"contracts.{model}"]).fetchone()[0] == before


def test_the_declared_column_order_wins(contracts):
    """An endpoint whose SQL lists its columns in another order answers in the declared
    order: a SQL function returns by position, so without the contract's reordering
    PostgreSQL would refuse the function, or swap two columns of one type silently."""
    path = contracts.project_dir / "models" / "marts" / "top_products.sql"
    written = "    product_id,\n    sum(quantity)::bigint as total_quantity,\n    sum(revenue) as total_revenue\n"
    assert written in path.read_text()
    path.write_text(path.read_text().replace(written, "    sum(revenue) as total_revenue,\n"
                                             "    sum(quantity)::bigint as total_quantity,\n    product_id\n"))
    dbt_ok(contracts, "run", "--select", "top_products")
    with psycopg.connect(contracts.database_url) as conn:
        conn.execute("select cartpulse.ensure_partitions('raw.ecommerce_events', array[timestamptz '2026-10-01'])")
        conn.execute("insert into raw.ecommerce_events (event_time, event_type, user_id, product_id, category,"
                     " price, quantity, session_id, country) values"
                     " ('2026-10-01 06:00', 'purchase', 'u', 'p-order', 'c-order', 2.5, 2, 's', 'X')")
        try:
            # Ends mid-hour: the row, in no rollup, is read from the events table.
            row = conn.execute("select * from contracts.top_products(category => 'c-order', start_date => '2026-10-01',"
                               " end_date => '2026-10-01 06:30')").fetchone()
        finally:
            conn.rollback()
    assert row == ("p-order", 2, 5.0)


def test_a_unit_test_fixes_the_engine(built, engine, tmp_path):
    """The engine is a macro a unit test overrides (the rollups' tests fix `postgres`:
    date_bin, which both engines have). Fixed to `timescaledb`, the same test runs
    time_bucket: it passes where the extension is, and fails on plain PostgreSQL."""
    project = _copy(tmp_path)
    tests = project / "models" / "rollups" / "_rollups_unit_tests.yml"
    tests.write_text(tests.read_text().replace("overrides: &engine {macros: {cartpulse_engine: postgres}}",
                                               "overrides: &engine {macros: {cartpulse_engine: timescaledb}}"))
    settings = replace(built, project_dir=project, target_dir=tmp_path / "target")
    result = run_dbt(settings, built.database_url, "test", "--select", "rollup_purchases_daily_by_country,test_type:unit",
                     check=False, capture=True)
    if engine == "timescaledb":
        assert result.returncode == 0, result.stdout[-3000:]
    else:
        assert result.returncode != 0 and "function time_bucket(" in result.stdout
