"""The dbt project builds and its tests pass, on an empty table and on loaded data."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from cartpulse.cli.event_generator import EventGenerator
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.project.endpoints import Catalog, endpoints_from_manifest
from support import EVENT, dbt_ok, ndjson, truncate_events


def test_build_on_an_empty_table(built):
    truncate_events(built.database_url)
    out = dbt_ok(built, "build")
    assert "ERROR=0" in out and "PASS=" in out


def test_build_and_test_on_loaded_data(built, client, auth):
    truncate_events(built.database_url)
    r = client.post("/v0/events?name=ecommerce_events", data=ndjson(EventGenerator(seed=3).events(2000)), headers=auth)
    assert r.status_code == 202
    out = dbt_ok(built, "build")
    assert "ERROR=0" in out
    out = dbt_ok(built, "test")
    assert "ERROR=0" in out and "PASS=0 " not in out


def test_a_failing_data_test_fails_the_build(built, client, auth):
    """The schema tests are real: a NULL-free column cannot hide a broken model."""
    truncate_events(built.database_url)
    import psycopg

    with psycopg.connect(built.database_url) as conn:
        conn.execute("select cartpulse.ensure_partitions('raw.ecommerce_events', array[timestamptz '2026-10-01'])")
        # A purchase without a price cannot come through the API; write one directly.
        for table in ("raw.ecommerce_events", "raw.ecommerce_events_pending"):
            conn.execute(f"alter table {table} alter column price drop not null")
            conn.execute(f"insert into {table} (event_time, event_type, user_id, product_id, category, price,"
                         " quantity, session_id, country) values"
                         " ('2026-10-01', 'purchase', 'u', 'p', 'c', null, 1, 's', 'X')")
    try:
        result = run_dbt(built, built.database_url, "test", "--select", "top_products", check=False, capture=True)
        assert result.returncode != 0
        assert "not_null_top_products_total_revenue" in result.stdout
    finally:
        truncate_events(built.database_url)
        with psycopg.connect(built.database_url) as conn:
            for table in ("raw.ecommerce_events", "raw.ecommerce_events_pending"):
                conn.execute(f"alter table {table} alter column price set not null")


def test_manifest_declares_the_three_endpoints(built):
    manifest = json.loads((built.target_dir / "manifest.json").read_text())
    assert set(endpoints_from_manifest(manifest)) == {"top_products", "events_by_country", "total_revenue"}


def test_exposures_name_what_really_consumes_the_endpoints(built):
    """dbt docs shows who reads each endpoint: the dashboard reads the pipes its page asks
    for, the HTTP API every endpoint model. Both are checked against the source of truth,
    so an endpoint added without its exposure, or a chart added to the page, fails here."""
    import re

    manifest = json.loads((built.target_dir / "manifest.json").read_text())
    exposures = {e["name"]: e for e in manifest["exposures"].values()}
    depends = {name: {n.rpartition(".")[2] for n in e["depends_on"]["nodes"]} for name, e in exposures.items()}
    page = (PROJECT_DIR / "service" / "cartpulse" / "web" / "static" / "dashboard.js").read_text()
    drawn = set(re.findall(r'"(\w+)"', re.search(r"var PIPES = \[([^\]]*)\]", page).group(1)))
    assert depends["dashboard"] == drawn == {"top_products", "events_by_country", "total_revenue"}
    assert depends["pipes_api"] == set(endpoints_from_manifest(manifest))
    assert exposures["dashboard"]["type"] == "dashboard" and exposures["pipes_api"]["type"] == "application"


def test_a_fourth_endpoint_is_one_model_and_its_yml(built, tmp_path, auth):
    """Copy the project, add a model and its yml entry, build: the service serves it."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "*.pyc"))
    (project / "models" / "marts" / "events_by_type.sql").write_text(
        "select event_type, count(*)::bigint as event_count\n"
        "from {{ ref('stg_raw__ecommerce_events') }}\ngroup by event_type\norder by event_type\n")
    (project / "models" / "marts" / "events_by_type.yml").write_text(
        "version: 2\nmodels:\n  - name: events_by_type\n    description: One row per event type.\n"
        "    config:\n      meta:\n        endpoint: true\n"
        "    columns:\n      - name: event_type\n        data_type: text\n"
        "      - name: event_count\n        data_type: bigint\n")
    settings = replace(built, project_dir=project, target_dir=tmp_path / "target", dbt_schema="fourth")
    dbt_ok(settings, "run")

    from cartpulse.app import create_app

    app = create_app(settings)
    try:
        client = app.test_client()
        client.post("/v0/events?name=ecommerce_events", data=ndjson(EventGenerator(seed=4).events(50)), headers=auth)
        body = client.get("/v0/pipes/events_by_type.json", headers=auth).get_json()
        assert sum(row["event_count"] for row in body["data"]) >= 50
        listed = {p["name"] for p in client.get("/v0/pipes", headers=auth).get_json()["pipes"]}
        assert listed == {"top_products", "events_by_country", "total_revenue", "events_by_type"}
    finally:
        app.extensions["cartpulse"].db.dispose()
        import psycopg

        with psycopg.connect(built.database_url) as conn:
            conn.execute("drop schema fourth cascade")
            conn.execute("drop schema if exists fourth_analyst cascade")


def test_time_bin_follows_the_engine(built, engine):
    """time_bucket on TimescaleDB, date_bin on plain PostgreSQL, decided at run time."""
    compiled = (built.target_dir / "run" / "cartpulse" / "models" / "rollups" / "rollup_purchases_daily_by_country.sql").read_text()
    if engine == "timescaledb":
        assert "time_bucket('1 day'::interval, event_time)" in compiled
    else:
        assert "date_bin('1 day'::interval, event_time" in compiled


def test_the_models_and_the_service_ask_the_same_engine(built, engine):
    """One engine detection: dbt's macro (what a plain `dbt run` from cron uses, with no
    flag) and the service both ask the database's cartpulse.engine()."""
    import psycopg

    from cartpulse.storage import engine as engines

    macro = dbt_ok(built, "compile", "--quiet", "--inline", "{{ cartpulse_engine() }}").strip()
    with psycopg.connect(built.database_url) as conn:
        assert macro == engines.current(conn) == engine


def test_each_folder_declares_its_materialization_once(built):
    """dbt_project.yml names each folder's materialization; no model or yml repeats it,
    and the build makes what each one makes: views (staging, the semantic layer's time
    spine, the analysts' masked views), tables with `_live` views (rollups), functions
    with views of their defaults (marts)."""
    import psycopg
    import yaml

    folders = {folder: conf["+materialized"] for folder, conf in
               yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())["models"]["cartpulse"].items()
               if not folder.startswith("+")}
    assert folders == {"staging": "stable_view", "rollups": "rollup", "marts": "endpoint", "semantic": "stable_view",
                       "analyst": "stable_view"}
    repeated = [str(p.relative_to(PROJECT_DIR)) for p in (PROJECT_DIR / "models").rglob("*")
                if p.suffix in (".sql", ".yml") and "materialized" in p.read_text()]
    assert repeated == []
    manifest = json.loads((built.target_dir / "manifest.json").read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    with psycopg.connect(built.database_url) as conn:
        # The analyst folder's views are in a schema of their own (<DBT_SCHEMA>_analyst).
        kinds = dict(conn.execute("select c.relname, c.relkind from pg_class c join pg_namespace n"
                                  " on n.oid = c.relnamespace where n.nspname in (%s, %s)",
                                  [built.dbt_schema, f"{built.dbt_schema}_analyst"]).fetchall())
        functions = {r[0] for r in conn.execute("select p.proname from pg_proc p join pg_namespace n"
                                                " on n.oid = p.pronamespace where n.nspname = %s", [built.dbt_schema])}
    for name, node in models.items():
        folder = node["fqn"][1]
        assert node["config"]["materialized"] == folders[folder], name
        made = {"staging": kinds.get(name) == "v", "semantic": kinds.get(name) == "v", "analyst": kinds.get(name) == "v",
                "rollups": kinds.get(name) == "r" and kinds.get(f"{name}_live") == "v",
                "marts": kinds.get(name) == "v" and name in functions}[folder]
        assert made, name


def _reader_objects(url: str) -> dict[str, int]:
    """OIDs of what readers use: the staging and `_live` views, the endpoint functions."""
    import psycopg

    with psycopg.connect(url) as conn:
        views = conn.execute("select c.relname, c.oid::int from pg_class c join pg_namespace n on n.oid = c.relnamespace"
                             " where n.nspname = 'analytics' and c.relkind = 'v'").fetchall()
        functions = conn.execute("select p.proname, p.oid::int from pg_proc p join pg_namespace n"
                                 " on n.oid = p.pronamespace where n.nspname = 'analytics'").fetchall()
    return {**{f"view {name}": oid for name, oid in views}, **{f"function {name}": oid for name, oid in functions}}


def test_a_refresh_leaves_unchanged_views_and_functions_alone(built, client, auth):
    """A scheduled `dbt run` must not replace what readers are using (a replaced view is
    an exclusive lock on it; dbt's own view swap dropped the `_live` views with CASCADE):
    unchanged definitions keep their OIDs, and the refresh still absorbs new events."""
    truncate_events(built.database_url)
    dbt_ok(built, "run")
    before = _reader_objects(built.database_url)
    assert any(k.endswith("_live") for k in before) and any(k.startswith("view stg_") for k in before)
    assert any(k.startswith("function ") for k in before)
    r = client.post("/v0/events?name=ecommerce_events", data=ndjson(EventGenerator(seed=8).events(300)), headers=auth)
    assert r.status_code == 202
    dbt_ok(built, "run")
    assert _reader_objects(built.database_url) == before
    import psycopg

    with psycopg.connect(built.database_url) as conn:
        assert conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0] == 0  # absorbed
    answer = client.get("/v0/pipes/events_by_country.json", headers=auth).get_json()["data"]

    # --full-refresh rebuilds everything, the staging views with their dependents first.
    dbt_ok(built, "run", "--full-refresh")
    rebuilt = _reader_objects(built.database_url)
    assert rebuilt.keys() == before.keys() and rebuilt != before
    assert client.get("/v0/pipes/events_by_country.json", headers=auth).get_json()["data"] == answer


def test_a_just_built_endpoint_is_found_at_once(tmp_path):
    """The catalog looks at the manifest at most once a second, but a name it does not know
    makes it look again at once: `dbt run` then `curl` gets the new endpoint, not a 404."""
    path = tmp_path / "manifest.json"
    catalog = Catalog(path, check_every=3600)

    def manifest(*names: str) -> None:
        path.write_text(json.dumps({"nodes": {f"model.cartpulse.{n}": {
            "resource_type": "model", "name": n, "schema": "analytics", "config": {"meta": {"endpoint": {}}}}
            for n in names}}))
        os.utime(path, (time.time() + len(names), time.time() + len(names)))  # a new mtime, whatever the clock's grain

    manifest("top_products")
    assert catalog.get("top_products") and catalog.get("events_by_type") is None
    manifest("top_products", "events_by_type")
    assert catalog.get("events_by_type").relation == "events_by_type"


def test_plain_dbt_from_the_project_root_as_cron_runs_it(built, client, auth, tmp_path):
    """A crontab line: a bare environment (no PG*, no DBT_*), the project root, the
    exports `cartpulse env` prints, then plain `dbt run`, `dbt test` and
    `dbt source freshness`. All three must succeed against CartPulse's database."""
    import subprocess
    import sys
    from datetime import datetime, timezone

    fresh = {**EVENT, "event_time": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}
    assert client.post("/v0/events?name=ecommerce_events", data=ndjson([fresh]), headers=auth).status_code == 202
    bin_dir = Path(sys.executable).parent
    crontab_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATABASE_URL": built.database_url,
                   "DBT_TARGET_PATH": str(tmp_path / "target"), "CARTPULSE_STATE_DIR": str(built.state_dir)}
    line = (f'cd {PROJECT_DIR} && eval "$({bin_dir}/cartpulse env)" && {bin_dir}/dbt run --quiet'
            f' && {bin_dir}/dbt test --quiet && {bin_dir}/dbt source freshness --quiet')
    done = subprocess.run(["sh", "-c", line], env=crontab_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exported = subprocess.run([str(bin_dir / "cartpulse"), "env"], env=crontab_env, capture_output=True,
                              text=True, check=True).stdout
    assert "export PGDATABASE=" in exported and f"export DBT_PROFILES_DIR={PROJECT_DIR / 'profiles'}" in exported
    assert (tmp_path / "target" / "manifest.json").exists()  # dbt wrote where the exports said
