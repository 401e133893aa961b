"""A data source is declared once, in the dbt project's yml, and everything follows from it.

The fixture copies the project, adds a second data source (``page_views``) with a model
over it served as a pipe, and runs the lot in a non-default RAW_SCHEMA: storage, dbt,
the Events API, bulk import, the quarantine, scopes, metrics, OpenAPI and the scheduler.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
from collections import defaultdict
from dataclasses import replace

import psycopg
import pytest
import yaml
from psycopg.conninfo import make_conninfo

from cartpulse.access.auth import ensure_admin_token
from cartpulse.config import PROJECT_DIR
from cartpulse.ops.scheduler import Scheduler
from cartpulse.project import types
from cartpulse.project.datasources import declared
from cartpulse.storage.schema import TIMESCALEDB, create_storage
from support import EVENT, dbt_ok, metric_value, ndjson

RAW_SCHEMA = "web_raw"
DBT_SCHEMA = "web_analytics"

PAGE_VIEWS_YML = """
version: 2
sources:
  - name: web
    schema: "{{ env_var('RAW_SCHEMA', 'raw') }}"
    tables:
      - name: page_views
        description: One row per page a visitor viewed.
        config:
          meta:
            datasource:
              sorting_key: [event_time, path]
              partition_key: event_time
        columns:
          - name: event_time
            data_type: DateTime
            config: {meta: {min: "2000-01-01", max: "2099-12-31"}}
          - name: path
            data_type: String
            config: {meta: {max_length: 200}}
          - name: user_id
            description: Absent for visitors not signed in.
            data_type: String
            config: {meta: {max_length: 100, nullable: true}}
          - name: duration_ms
            data_type: Int
            config: {meta: {min: 0, max: 3600000}}
models:
  - name: views_by_path
    description: Views and time spent per path.
    config:
      meta:
        endpoint:
          params:
            min_duration: {type: Int, min: 0, description: Only views at least this long (ms).}
    columns:
      - name: path
        data_type: text
      - name: views
        data_type: bigint
      - name: total_duration_ms
        data_type: bigint
"""
VIEWS_BY_PATH_SQL = """
select path, count(*)::bigint as views, sum(duration_ms)::bigint as total_duration_ms
from {{ source('web', 'page_views') }}
where {{ param('min_duration') }} is null or duration_ms >= {{ param('min_duration') }}
group by path
order by path
"""
VIEWS = [{"event_time": "2026-10-05 10:00:00", "path": "/", "user_id": "u1", "duration_ms": 1200},
         {"event_time": "2026-10-05 10:00:05", "path": "/cart", "duration_ms": 300},  # signed out: no user_id
         {"event_time": "2026-11-01 08:30:00", "path": "/", "user_id": None, "duration_ms": 4500}]


def views_by_path(views, min_duration=None) -> list[dict]:
    """What the pipe must answer, computed here."""
    totals = defaultdict(lambda: [0, 0])
    for v in views:
        if min_duration is None or v["duration_ms"] >= min_duration:
            totals[v["path"]][0] += 1
            totals[v["path"]][1] += v["duration_ms"]
    return [{"path": p, "views": n, "total_duration_ms": d} for p, (n, d) in sorted(totals.items())]


@pytest.fixture(scope="module")
def web(built, server_url, tmp_path_factory):
    """The project with page_views, built in RAW_SCHEMA=web_raw of a database of its own
    (rollups of two projects in one database would wait for each other's refreshes to
    clean pending rows); its settings and app."""
    folder = tmp_path_factory.mktemp("web")
    project = folder / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns(
        ".venv", ".cartpulse", "target", "logs", ".git", "service", "tests", "bench", "*.pyc"))
    (project / "models" / "marts" / "views_by_path.yml").write_text(PAGE_VIEWS_YML)
    (project / "models" / "marts" / "views_by_path.sql").write_text(VIEWS_BY_PATH_SQL)
    name = f"cartpulse_web_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    settings = replace(built, database_url=make_conninfo(server_url, dbname=name), project_dir=project,
                       target_dir=folder / "target", raw_schema=RAW_SCHEMA, dbt_schema=DBT_SCHEMA)
    from cartpulse.app import create_app

    try:
        create_storage(settings.database_url, settings)
        ensure_admin_token(settings.database_url, settings.state_dir, settings.admin_token)
        dbt_ok(settings, "run")
        app = create_app(settings)
        yield settings, app
        app.extensions["cartpulse"].db.dispose()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def _token(client, auth, *scopes) -> dict:
    name = f"web-{secrets.token_hex(4)}"
    r = client.post(f"/v0/tokens?name={name}&" + "&".join(f"scope={s}" for s in scopes), headers=auth)
    assert r.status_code == 200, r.get_json()
    return {"Authorization": f"Bearer {r.get_json()['token']}"}


def _yml_declarations(project) -> dict[str, list[dict]]:
    """The data sources' columns as the yml files say, read here without the service's loader."""
    found = {}
    for path in (project / "models").rglob("*.yml"):
        for source in (yaml.safe_load(path.read_text()) or {}).get("sources") or []:
            for table in source["tables"]:
                if "datasource" in ((table.get("config") or {}).get("meta") or {}):
                    found[table["name"]] = table["columns"]
    return found


def _columns(conn, table: str) -> list[tuple[str, str, bool]]:
    return conn.execute(
        "select a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull from pg_attribute a"
        " where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped order by a.attnum",
        [f"{RAW_SCHEMA}.{table}"]).fetchall()


def test_the_tables_are_what_the_yml_declares(web, engine):
    settings, _ = web
    declarations = _yml_declarations(settings.project_dir)
    assert set(declarations) == {"ecommerce_events", "page_views"}
    with psycopg.connect(settings.database_url) as conn:
        def canonical(sql_type):
            return conn.execute("select %s::regtype::text", [sql_type]).fetchone()[0]

        for name, columns in declarations.items():
            nullable = {c["name"]: ((c.get("config") or {}).get("meta") or {}).get("nullable", False) for c in columns}
            table = [(c["name"], canonical(types.DECLARED[c["data_type"]].sql), not nullable[c["name"]])
                     for c in columns]
            assert _columns(conn, name) == table
            assert _columns(conn, f"{name}_pending") == table + [("ingest_xid", "xid8", True), ("sign", "smallint", True)]
            assert _columns(conn, f"{name}_quarantine") == [(c["name"], "text", False) for c in columns] + [
                ("c__error_column", "text[]", True), ("c__error", "text[]", True), ("c__import_id", "text", True),
                ("c__line", "bigint", True), ("c__raw", "text", False),
                ("insertion_date", "timestamp with time zone", True)]
        indexes = [d for (d,) in conn.execute("select indexdef from pg_indexes where schemaname = %s"
                                              " and tablename = 'page_views'", [RAW_SCHEMA])]
        assert [d for d in indexes if d.endswith("(event_time, path)")], indexes
        if engine == TIMESCALEDB:
            dims = conn.execute("select column_name from timescaledb_information.dimensions"
                                " where hypertable_schema = %s and hypertable_name = 'page_views'", [RAW_SCHEMA])
            assert [d for (d,) in dims] == ["event_time"]
        else:
            key = conn.execute("select pg_get_partkeydef(%s::regclass)", [f"{RAW_SCHEMA}.page_views"]).fetchone()[0]
            assert key == "RANGE (event_time)"


def test_a_non_default_raw_schema_runs_end_to_end(web, auth):
    """RAW_SCHEMA=web_raw: storage, dbt, an ingest and a pipe read there; no schema raw."""
    settings, app = web
    web_client = app.test_client()
    purchase = {**EVENT, "product_id": "p-web", "price": 7.5, "quantity": 2}
    r = web_client.post("/v0/events?name=ecommerce_events", data=ndjson([purchase]), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == 1
    rows = web_client.get("/v0/pipes/top_products.json", headers=auth).get_json()["data"]
    assert rows == [{"product_id": "p-web", "total_quantity": 2, "total_revenue": 15.0}]
    with psycopg.connect(settings.database_url) as conn:
        assert conn.execute(f"select count(*) from {RAW_SCHEMA}.ecommerce_events").fetchone()[0] == 1
        assert conn.execute("select count(*) from pg_namespace where nspname = 'raw'").fetchone()[0] == 0
        staged = conn.execute("select pg_get_viewdef(%s::regclass)", [f"{DBT_SCHEMA}.stg_raw__ecommerce_events"])
        assert f"{RAW_SCHEMA}.ecommerce_events" in staged.fetchone()[0]


def test_a_second_data_source_works_end_to_end(web, auth, client):
    settings, app = web
    web_client = app.test_client()
    appender = _token(web_client, auth, "DATASOURCES:APPEND:page_views")
    reader = _token(web_client, auth, "PIPES:READ:views_by_path")

    # Events API: valid rows stored (a nullable column may be absent or null), bad ones quarantined.
    bad = [{**VIEWS[0], "duration_ms": 3600001}, {**VIEWS[0], "event_time": "1999-12-31 23:59:59"},
           {**VIEWS[0], "path": "/" * 201}]
    r = web_client.post("/v0/events?name=page_views", data=ndjson(VIEWS[:2] + bad), headers=appender)
    assert r.status_code == 202, r.get_json()
    answer = r.get_json()
    assert (answer["successful_rows"], answer["quarantined_rows"]) == (2, 3)
    assert web_client.post("/v0/events?name=ecommerce_events", data=ndjson([EVENT]),
                           headers=appender).status_code == 403

    # The quarantine: the admin reads it, the append token may not.
    quarantine = f"/v0/datasources/page_views_quarantine.json?import_id={answer['import_id']}"
    assert web_client.get(quarantine, headers=appender).status_code == 403
    body = web_client.get(quarantine, headers=auth).get_json()
    found = {tuple(row["c__error_column"]): row["c__error"][0] for row in body["data"]}
    assert found == {("duration_ms",): "must be at most 3600000",
                     ("event_time",): "out of range (accepted: 2000-01-01 to 2099-12-31)",
                     ("path",): "longer than 200 characters"}
    assert {row["duration_ms"] for row in body["data"]} == {"3600001", "1200"}

    # Bulk import (CSV) with the same rules: an empty field of a nullable column is null.
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["event_time", "path", "user_id", "duration_ms"])
    writer.writeheader()
    writer.writerows([{**VIEWS[2], "user_id": ""}, {**VIEWS[2], "duration_ms": -5}])
    r = web_client.post("/v0/datasources?name=page_views&mode=append&format=csv", data=out.getvalue().encode(),
                        headers=appender)
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["successful_rows"], r.get_json()["quarantined_rows"]) == (1, 1)

    # The model over it, served as a pipe, to a token scoped to that pipe.
    for params in ({}, {"min_duration": 1000}):
        r = web_client.get("/v0/pipes/views_by_path.json", query_string=params, headers=reader)
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["data"] == views_by_path(VIEWS, **params)
    assert web_client.get("/v0/pipes/top_products.json", headers=reader).status_code == 403
    rows = web_client.get("/v0/datasources/page_views.json", headers=auth).get_json()["data"]
    assert [(r["path"], r["user_id"]) for r in rows] == [("/", None), ("/cart", None), ("/", "u1")]  # newest first

    # Metrics, OpenAPI and the scheduler know it too.
    metrics = web_client.get("/metrics").get_data(as_text=True)
    assert metric_value(metrics, 'cartpulse_pending_rows{data_source="page_views"}') == 3
    spec = web_client.get("/v0/openapi.json").get_json()
    event = spec["components"]["schemas"]["page_views_event"]
    assert event["required"] == ["event_time", "path", "duration_ms"]
    assert event["properties"]["duration_ms"] == {**event["properties"]["duration_ms"], "minimum": 0,
                                                  "maximum": 3600000}
    assert "page_views" in spec["paths"]["/v0/events"]["post"]["parameters"][0]["schema"]["enum"]
    assert Scheduler(settings, settings.database_url).run_once().status == "success"
    with psycopg.connect(settings.database_url) as conn:  # dbt's clean_pending covers every data source
        assert conn.execute(f"select count(*) from {RAW_SCHEMA}.page_views_pending").fetchone()[0] == 0

    # The default project declares no page_views: its scopes cannot name it.
    r = client.post("/v0/tokens?name=nope&scope=DATASOURCES:APPEND:page_views", headers=auth)
    assert r.status_code == 400 and "does not accept appends" in r.get_json()["error"]


def test_the_compiled_fast_path_agrees_with_validation(web):
    """page_views' fast path (a nullable column, bounds on a DateTime and an Int) accepts
    exactly what validate() accepts, with the same row, or hands the row over (None)."""
    from cartpulse.ingest.fastpath import fast_row_for
    from cartpulse.ingest.rows import RowErrors, validate

    source = declared(web[0].project_dir.resolve(), RAW_SCHEMA)["page_views"]
    fast_row = fast_row_for(source)
    rows = VIEWS + [{**VIEWS[0], "duration_ms": 3600000}, {**VIEWS[0], "duration_ms": 3600001},
                    {**VIEWS[0], "event_time": "1999-12-31 23:59:59"}, {**VIEWS[0], "event_time": "2099-12-31 23:59:59"},
                    {**VIEWS[0], "user_id": 7}, {**VIEWS[0], "path": "/" * 201}, {"path": "/"}]
    accepted = 0
    for row in rows:
        try:
            valid = validate(row, source)
        except RowErrors:
            valid = None
        fast = fast_row(row)
        assert fast is None or fast == valid, row
        accepted += fast is not None
    assert accepted == 5  # the three VIEWS and the two rows at a bound


def test_cartpulse_import_into_a_named_data_source(web, tmp_path, monkeypatch, capsys):
    """`cartpulse import FILE --name page_views` validates against that data source."""
    from cartpulse.cli.main import main

    settings, _ = web
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CARTPULSE_PROJECT_DIR", str(settings.project_dir))
    monkeypatch.setenv("RAW_SCHEMA", RAW_SCHEMA)
    (tmp_path / "views.ndjson").write_bytes(ndjson([VIEWS[0], {**VIEWS[0], "duration_ms": -1}]))
    assert main(["import", str(tmp_path / "views.ndjson"), "--name", "page_views"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["datasource"], summary["successful_rows"], summary["quarantined_rows"]) == ("page_views", 1, 1)
    assert main(["import", str(tmp_path / "views.ndjson"), "--name", "clicks"]) == 2
    assert "'clicks' not found" in capsys.readouterr().err


@pytest.mark.parametrize("meta, words", [
    ({"sorting_key": ["event_time"]}, "partition_key"),
    ({"sorting_key": ["nope"], "partition_key": "event_time"}, "unknown columns"),
    ({"sorting_key": ["event_time"], "partition_key": "event_time", "engine": "x"}, "takes"),
])
def test_a_bad_declaration_is_refused_naming_it(tmp_path, meta, words):
    (tmp_path / "dbt_project.yml").write_text("name: x\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "s.yml").write_text(yaml.safe_dump({"version": 2, "sources": [{
        "name": "s", "schema": "{{ env_var('RAW_SCHEMA', 'raw') }}", "tables": [{
            "name": "clicks", "config": {"meta": {"datasource": meta}},
            "columns": [{"name": "event_time", "data_type": "DateTime"}]}]}]}))
    with pytest.raises(ValueError, match=words) as err:
        declared(tmp_path.resolve(), "raw")
    assert "clicks" in str(err.value)
