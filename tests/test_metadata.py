"""Metadata as Tinybird describes it: ``/v0/pipes``, ``/v0/pipes/<name>``,
``/v0/datasources`` and ``/v0/datasources/<name>``. Statistics are checked against the
database read directly; keys against what Tinybird's clients read (compat notes)."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from support import EVENT, load_events


@pytest.fixture(scope="module")
def loaded(app, settings, admin_token):
    events = [{**EVENT, "product_id": f"p{i}", "country": "Spain"} for i in range(7)]
    return load_events(app, settings, admin_token, events + [{**EVENT, "price": "free"}], quarantined=1)


def token(client, auth, *scopes) -> str:
    name = "meta-" + secrets.token_hex(4)
    r = client.post(f"/v0/tokens?name={name}&" + "&".join(f"scope={s}" for s in scopes), headers=auth)
    assert r.status_code == 200
    return r.get_json()["token"]


def bearer(value: str) -> dict:
    return {"Authorization": f"Bearer {value}"}


def test_a_pipe_is_described_as_tinybird_does(client, auth, app):
    r = client.get("/v0/pipes/top_products", headers=auth)
    assert r.status_code == 200
    pipe = r.get_json()
    assert pipe["name"] == "top_products" and pipe["type"] == "endpoint" and pipe["id"].startswith("t_")
    [node] = pipe["nodes"]
    assert pipe["endpoint"] == node["id"] and node["name"] == "top_products"
    # The node's SQL is the model's file as written.
    source = (app.extensions["cartpulse"].settings.project_dir / "models" / "marts" / "top_products.sql").read_text()
    assert node["sql"].strip() == source.strip()
    assert {p["name"]: p["type"] for p in node["params"]} == {
        "start_date": "DateTime", "end_date": "DateTime", "limit": "Int64", "category": "String",
        "country": "Array(String)"}
    assert all(p["required"] is False for p in node["params"])
    assert {p["name"]: p["default"] for p in node["params"]}["limit"] == 10
    assert node["columns"] == [{"name": "product_id", "type": "String"}, {"name": "total_quantity", "type": "Int64"},
                               {"name": "total_revenue", "type": "Float64"}]
    assert "stg_raw__ecommerce_events" in node["dependencies"]
    # The same answer again (ids derive from names), and the listing holds it, with CartPulse's keys.
    assert client.get("/v0/pipes/top_products", headers=auth).get_json()["id"] == pipe["id"]
    listed = {p["name"]: p for p in client.get("/v0/pipes/", headers=auth).get_json()["pipes"]}
    assert listed["top_products"]["nodes"] == pipe["nodes"]
    assert "/v0/pipes/top_products.parquet" in listed["top_products"]["endpoints"]
    assert [p["type"] for p in listed["top_products"]["params"]][:3] == ["DateTime", "DateTime", "Int"]


def test_a_pipe_says_whether_its_sql_is_derivable_and_why_not(client, auth):
    # The seed's endpoints are plain SQL: answered from the rollups derived from it.
    derivation = client.get("/v0/pipes/events_by_country", headers=auth).get_json()["derivation"]
    assert derivation["derivable"] is True and derivation["answered_from"] == "derived"
    assert {r["name"] for r in derivation["rollups"]} >= {"derived_ecommerce_events__country__all",
                                                         "derived_ecommerce_events__country_event_type__1d"}


def test_the_listing_takes_tinybirds_attrs(client, auth):
    r = client.get("/v0/pipes?attrs=name,nodes&node_attrs=name,sql,dependencies&dependencies=false", headers=auth)
    pipes = r.get_json()["pipes"]
    assert [set(p) for p in pipes] == [{"name", "nodes"}] * 3
    assert all(set(n) == {"name", "sql"} for p in pipes for n in p["nodes"])
    assert client.get("/v0/pipes?dependencies=maybe", headers=auth).status_code == 400


def test_pipe_metadata_needs_the_pipe_scope(client, auth):
    reader = token(client, auth, "PIPES:READ:events_by_country")
    assert client.get("/v0/pipes/events_by_country", headers=bearer(reader)).status_code == 200
    assert client.get("/v0/pipes/top_products", headers=bearer(reader)).status_code == 403
    assert client.get("/v0/pipes/nope", headers=auth).status_code == 404
    assert [p["name"] for p in client.get("/v0/pipes", headers=bearer(reader)).get_json()["pipes"]] == [
        "events_by_country"]
    assert client.get("/v0/pipes/top_products").status_code == 401


def _direct(settings) -> tuple[int, int, int]:
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
        bad = conn.execute("select count(*) from raw.ecommerce_events_quarantine").fetchone()[0]
        size = conn.execute("select sum(pg_total_relation_size(relid)) from pg_partition_tree('raw.ecommerce_events')"
                            ).fetchone()[0]
    return rows, bad, size  # None on TimescaleDB: a hypertable is not a partitioned table


def test_a_data_source_is_described_with_its_statistics(client, auth, loaded, settings):
    r = client.get("/v0/datasources/ecommerce_events", headers=auth)
    assert r.status_code == 200
    source = r.get_json()
    rows, bad, size = _direct(settings)
    assert source["statistics"]["row_count"] == rows == len(loaded)
    assert source["quarantine_rows"] == bad == 1
    if source["engine"]["engine"] == "PostgreSQL":  # the table and its monthly partitions
        assert source["statistics"]["bytes"] == size
    elif source["engine"]["engine"] == "Citus":  # the partitions' shards, on the workers
        with psycopg.connect(settings.database_url) as conn:
            assert source["statistics"]["bytes"] == conn.execute(
                "select sum(citus_total_relation_size(relid)) from pg_partition_tree('raw.ecommerce_events')"
                " where isleaf").fetchone()[0] > 0
    else:  # a hypertable: TimescaleDB's own measure counts the chunks (compressed ones too)
        with psycopg.connect(settings.database_url) as conn:
            assert 0 < source["statistics"]["bytes"] <= conn.execute(
                "select hypertable_size('raw.ecommerce_events')").fetchone()[0]
    columns = {c["name"]: c for c in source["columns"]}
    assert columns["event_time"]["type"] == "DateTime" and columns["quantity"]["type"] == "Int64"
    assert columns["price"]["type"] == "Float64"
    assert columns["country"]["type"] == "String" and not any(c["nullable"] for c in source["columns"])
    assert source["engine"]["engine"] in ("PostgreSQL", "TimescaleDB", "Citus")
    assert source["engine"]["sorting_key"] == source["sorting_key"] == "event_time, product_id"
    assert source["engine"]["partition_key"] == "event_time"
    assert "schema" not in source  # tinybird-sdk reads schema.columns when schema is present


def test_the_data_source_listing_follows_the_scopes(client, auth, loaded):
    listed = client.get("/v0/datasources/", headers=auth).get_json()["datasources"]
    assert [s["name"] for s in listed] == ["ecommerce_events"]
    assert listed[0] == client.get("/v0/datasources/ecommerce_events", headers=auth).get_json()
    pipe_reader = token(client, auth, "PIPES:READ:top_products")
    assert client.get("/v0/datasources", headers=bearer(pipe_reader)).get_json() == {"datasources": []}
    assert client.get("/v0/datasources/ecommerce_events", headers=bearer(pipe_reader)).status_code == 403
    reader = token(client, auth, "DATASOURCES:READ:ecommerce_events")
    assert client.get("/v0/datasources/ecommerce_events", headers=bearer(reader)).status_code == 200
    assert client.get("/v0/datasources/nope", headers=auth).status_code == 404


def test_reading_rows_still_works_beside_the_metadata(client, auth, loaded):
    r = client.get("/v0/datasources/ecommerce_events.json?limit=2", headers=auth)
    assert r.status_code == 200 and len(r.get_json()["data"]) == 2


def test_a_nullable_column_is_named_as_tinybird_names_it():
    from dataclasses import replace

    from cartpulse.serving.datasource_metadata import describe
    from support import datasources

    source = datasources()["ecommerce_events"]
    source = replace(source, columns=tuple(replace(c, nullable=c.name == "country") for c in source.columns))
    columns = {c["name"]: c for c in describe(source, "postgres", {})["columns"]}
    assert columns["country"]["type"] == "Nullable(String)" and columns["country"]["nullable"] is True
    assert columns["quantity"]["type"] == "Int64" and columns["quantity"]["nullable"] is False
