"""Schema evolution: a column declared in the sources yml reaches a live data source.

A copy of the project, built in a database of its own with events in every state
(absorbed, pending), gains a column at the end of ecommerce_events (`coupon`, with a
default) and of the staging models' contracts. `POST /v0/datasources/<name>/alter`
adds it (no rewrite, no restart of the API needed for the rows stored so far, which take
the default); a plain incremental `dbt run` (no --full-refresh, no view dropped) brings it
to the staging views; an app started on the new declaration accepts it and fills the
default for rows without it; every endpoint stays exact throughout.
"""

from __future__ import annotations

import psycopg
import pytest
import yaml
from test_absorb import absorb, assert_exact

from support import EVENT, built_copy, copy_project, dbt_ok, ndjson

POST = "/v0/events?name=ecommerce_events"
ALTER = "/v0/datasources/ecommerce_events/alter"


@pytest.fixture(scope="module")
def evolving(built, server_url, tmp_path_factory):
    """The project copy built in a database of its own; its settings."""
    folder = tmp_path_factory.mktemp("evolve")
    with built_copy(built, server_url, copy_project(folder), folder, "cartpulse_evolve") as settings:
        yield settings


def _declare(project, column: dict, staged: dict) -> None:
    """Add ``column`` at the end of ecommerce_events' declaration and ``staged`` at the
    end of both staging models' contracts."""
    sources = project / "models" / "staging" / "__sources.yml"
    doc = yaml.safe_load(sources.read_text())
    table = next(t for t in doc["sources"][0]["tables"] if t["name"] == "ecommerce_events")
    table["columns"].append(column)
    sources.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    staging = project / "models" / "staging" / "stg_raw__ecommerce_events.yml"
    doc = yaml.safe_load(staging.read_text())
    for model in doc["models"]:
        model["columns"].append(staged)
    staging.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def _app(settings):
    from cartpulse.app import create_app

    return create_app(settings)


def test_a_declared_column_is_added_live(evolving, auth):
    before = [{**EVENT, "user_id": f"old-{i}", "quantity": i + 1} for i in range(8)]
    old_app = _app(evolving)
    try:
        client = old_app.test_client()
        assert client.post(POST, data=ndjson(before[:5]), headers=auth).status_code == 202
        absorb(evolving.database_url)
        assert client.post(POST, data=ndjson(before[5:]), headers=auth).status_code == 202  # left pending
        _declare(evolving.project_dir, {"name": "coupon", "data_type": "String", "description": "A code.",
                                        "config": {"meta": {"max_length": 40, "default": "none"}}},
                 {"name": "coupon", "data_type": "text"})
        dry = client.post(ALTER, data={"dry": "true"}, headers=auth)
        assert dry.status_code == 200 and len(dry.get_json()["operations"]) == 1, dry.get_json()
        assert "coupon" in dry.get_json()["operations"][0] and "default 'none'" in dry.get_json()["operations"][0]
        refused = client.post(ALTER, data={"schema": "coupon String"}, headers=auth)
        assert refused.status_code == 400 and refused.get_json()["parameter"] == "schema"
        applied = client.post(ALTER, headers=auth)
        assert applied.status_code == 200 and applied.get_json()["operations"] == dry.get_json()["operations"]
        assert client.post(ALTER, headers=auth).get_json()["operations"] == []  # nothing left to add
        # The running app (the old declaration) goes on storing rows: they take the default.
        assert client.post(POST, data=ndjson([{**EVENT, "user_id": "old-app", "coupon": "ignored"}]),
                           headers=auth).status_code == 202
        before.append({**EVENT, "user_id": "old-app"})
        assert_exact(client, auth, before)
    finally:
        old_app.extensions["cartpulse"].db.dispose()
    with psycopg.connect(evolving.database_url) as conn:
        assert conn.execute("select count(*), count(*) filter (where coupon = 'none')"
                            " from raw.ecommerce_events").fetchone() == (9, 9)
    dbt_ok(evolving, "run")  # incremental: the staging views gain the column in place
    with psycopg.connect(evolving.database_url) as conn:
        assert conn.execute("select count(*) from analytics.stg_raw__ecommerce_events"
                            " where coupon = 'none'").fetchone()[0] == 9
    from cartpulse.project.datasources import declared

    declared.cache_clear()  # a restarted worker reads the yml again
    new_app = _app(evolving)
    try:
        client = new_app.test_client()
        new = [{**EVENT, "user_id": "new-1", "coupon": "SPRING"}, {**EVENT, "user_id": "new-2"}]
        assert client.post(POST, data=ndjson(new), headers=auth).get_json()["successful_rows"] == 2
        long = client.post(POST, data=ndjson([{**EVENT, "coupon": "x" * 41}]), headers=auth).get_json()
        assert long["quarantined_rows"] == 1  # the new column's bounds apply
        assert_exact(client, auth, before + new)
    finally:
        new_app.extensions["cartpulse"].db.dispose()
    with psycopg.connect(evolving.database_url) as conn:
        coupons = dict(conn.execute("select user_id, coupon from raw.ecommerce_events where user_id like 'new-%'"))
    assert coupons == {"new-1": "SPRING", "new-2": "none"}
    dbt_ok(evolving, "run", "--full-refresh", "--select", "rollups")


def test_a_column_without_default_cannot_be_added(evolving, auth):
    _declare(evolving.project_dir, {"name": "required_late", "data_type": "Int"},
             {"name": "required_late", "data_type": "bigint"})
    app = _app(evolving)
    try:
        r = app.test_client().post(ALTER, headers=auth)
        assert r.status_code == 400 and "'required_late'" in r.get_json()["error"] and "default" in r.get_json()["error"]
    finally:
        app.extensions["cartpulse"].db.dispose()
