"""Trying to get out of the Query API: every attempt is refused with a 4xx, and nothing
is written, locked or read beyond what the Query API exposes. Two walls are tried: the
check of the parsed statement (sql_dialect.py) through HTTP, then, behind it, the read-only
transaction and the restricted role (sql_query.py, storage/query_role.py) with statements
the first wall would never let through."""

from __future__ import annotations

import psycopg
import pytest

from cartpulse.errors import ApiError
from cartpulse.storage.query_role import QUERY_ROLE
from support import EVENT, POST, app_with, count, ndjson


@pytest.fixture
def one_event(client, auth, empty_events):
    assert client.post(POST, data=ndjson([EVENT]), headers=auth).status_code in (200, 202)
    return empty_events


ESCAPES = [
    # stacking and comments
    "select 1; delete from ecommerce_events",
    "select 1; select pg_sleep(10)",
    "select 1 /* ; */ ; drop table ecommerce_events",
    "select 1 -- comment\n; truncate ecommerce_events",
    "delete from ecommerce_events",
    "insert into ecommerce_events select * from ecommerce_events",
    "update ecommerce_events set price = 0",
    "drop table ecommerce_events",
    "create table x as select 1",
    "set role postgres",
    "copy ecommerce_events to '/tmp/x'",
    # writes and locks hidden in a SELECT
    "with d as (delete from ecommerce_events returning *) select * from d",
    "with d as (insert into ecommerce_events select * from ecommerce_events returning 1) select 1",
    "select * into stolen from ecommerce_events",
    "select * from ecommerce_events for update",
    "select * from ecommerce_events for share",
    # functions with side effects or reaching outside
    "select pg_sleep(5)",
    "select set_config('role', 'postgres', false)",
    "select pg_read_file('/etc/passwd')",
    "select dblink('dbname=postgres', 'select 1')",
    "select nextval('x')",
    "select lo_import('/etc/passwd')",
    "select txid_current()",
    "select pg_terminate_backend(1)",
    "select current_setting('data_directory')",
    "select version()",
    "select query_to_xml('select 1', true, true, '')",
    "select * from generate_series(1, 10)",
    "select * from numbers(10)",
    "select * from url('http://example.com', CSV)",
    "select * from file('/etc/passwd')",
    # catalog tables, however named
    "select * from pg_class",
    "select * from pg_catalog.pg_roles",
    "select * from information_schema.tables",
    "select * from raw.ecommerce_events",
    "select * from cartpulse.tokens",
    "select * from analytics.top_products",
    "select * from \"pg_authid\"",
    "select * from `pg_shadow`",
    "select * from (with pg_class as (select 1 as x) select * from pg_class) a, pg_class",
    "with a as (select * from pg_user) select * from a",
    "select (select count() from pg_stat_activity)",
    "select * from ecommerce_events where exists (select 1 from pg_roles)",
    # whitelisted names in another schema, quoting tricks
    "select pg_catalog.count(*) from ecommerce_events",
    "select public.sum(price) from ecommerce_events",
    "select raw.ecommerce_events.price from ecommerce_events",
    "select * from \"ecommerce_events\"\"; drop table x; --\"",
    "select * from \"ECOMMERCE_EVENTS\"",
    "select cast(price as regclass) from ecommerce_events",
    "select price::regproc from ecommerce_events",
    "select $1",
    "select * from ecommerce_events settings max_execution_time = 1000",
    "select * from ecommerce_events final",
    "select * from ecommerce_events array join [1, 2] as x",
    "select * from ecommerce_events a any left join ecommerce_events b on a.user_id = b.user_id",
    "select * from ecommerce_events where price > {min_price: Float64}",
    "with __pipe_top_products as (select 1) select * from top_products",
]


@pytest.mark.parametrize("q", ESCAPES)
def test_escapes_are_refused_and_change_nothing(client, auth, one_event, q):
    r = client.get("/v0/sql", query_string={"q": q}, headers=auth)
    assert 400 <= r.status_code < 500, (q, r.status_code, r.get_data(as_text=True))
    assert r.is_json and r.get_json()["error"]
    r = client.post("/v0/sql", data=q, headers={**auth, "Content-Type": "text/plain"})
    assert 400 <= r.status_code < 500, (q, r.status_code)
    assert count(one_event.database_url) == 1
    with psycopg.connect(one_event.database_url) as conn:
        assert conn.execute("select to_regclass('stolen'), to_regclass('public.x')").fetchone() == (None, None)


def test_quoted_literals_stay_literals(client, auth, one_event):
    q = "select 'x''; delete from ecommerce_events; --' as s, count() n from ecommerce_events"
    r = client.get("/v0/sql", query_string={"q": q}, headers=auth)
    assert r.status_code == 200 and r.get_json()["data"] == [{"s": "x'; delete from ecommerce_events; --", "n": 1}]
    assert count(one_event.database_url) == 1


def test_row_and_byte_limits_refuse_rather_than_cut(built, auth, empty_events, client):
    events = [{**EVENT, "session_id": f"s{i}"} for i in range(30)]
    assert client.post(POST, data=ndjson(events), headers=auth).status_code in (200, 202)
    with app_with(built, query_max_rows=20, query_max_bytes=1000) as limited, limited.test_client() as c:
        r = c.get("/v0/sql", query_string={"q": "select session_id from ecommerce_events"}, headers=auth)
        assert r.status_code == 400 and r.get_json()["limit"] == "QUERY_MAX_ROWS"
        ok = c.get("/v0/sql", query_string={"q": "select session_id from ecommerce_events limit 20"}, headers=auth)
        assert ok.status_code == 200 and ok.get_json()["rows"] == 20
        wide = "select repeat(session_id, 50) from ecommerce_events limit 20"
        r = c.get("/v0/sql", query_string={"q": wide}, headers=auth)
        assert r.status_code == 400, r.get_json()  # repeat is no function of the Query API either
        long = "select concat(user_id, product_id, category, country, session_id, event_type) a, * from ecommerce_events limit 20"
        r = c.get("/v0/sql", query_string={"q": long}, headers=auth)
        assert r.status_code == 400 and r.get_json()["limit"] == "QUERY_MAX_BYTES"


def test_a_statement_past_the_time_limit_is_408(built, auth, client, empty_events):
    events = [{**EVENT, "session_id": f"s{i}"} for i in range(50)]
    assert client.post(POST, data=ndjson(events), headers=auth).status_code in (200, 202)
    # 50^6 rows: hours, were it not stopped. Subqueries, which Citus reads into the
    # coordinator and joins there (it refuses a cross join of the distributed table itself).
    q = "select count() from " + ", ".join(f"(select * from ecommerce_events) {t}" for t in "abcdef")
    with app_with(built, query_timeout_ms=200) as slow, slow.test_client() as c:
        r = c.get("/v0/sql", query_string={"q": q}, headers=auth)
    assert r.status_code == 408 and r.get_json()["limit"] == "QUERY_TIMEOUT_MS"


# The second wall: statements the parser check would refuse, run as the Query API runs them.

@pytest.mark.parametrize("statement, status", [
    ('select * from "cartpulse"."tokens"', 403),
    ('select * from "analytics"."rollup_purchases_daily"', 403),
    ("select pg_read_file('/etc/passwd')", 403),
    ("select nextval('cartpulse.refresh_runs_id_seq')", 403),
    ("select set_config('transaction_read_only', 'off', true)", 400),
])
def test_the_role_and_the_read_only_transaction_hold_behind_the_parser(app, one_event, statement, status):
    from cartpulse.context import service
    from cartpulse.serving.pipes import endpoint_query
    from cartpulse.serving.sql_dialect import Compiled
    from cartpulse.serving.sql_query import execute

    with app.app_context():
        with pytest.raises(ApiError) as raised:
            execute(service(), Compiled(sql=statement, format=None), {}, endpoint_query)
    assert raised.value.status == status, raised.value.message


def test_the_role_reads_only_what_the_query_api_exposes(one_event, engine):
    with psycopg.connect(one_event.database_url) as conn:
        roles = conn.execute("select rolcanlogin from pg_roles where rolname = %s", [QUERY_ROLE]).fetchone()
        # On Citus a login on every node, with a password only pg_dist_authinfo holds
        # (test_citus.py checks it): Citus logs in to the workers as the current role.
        assert roles == (engine == "citus",)
        readable = {r[0] for r in conn.execute(
            "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where c.relkind in ('r', 'p', 'v', 'm') and n.nspname not in ('pg_catalog', 'information_schema')"
            " and n.nspname not like '\\_timescaledb%%' and n.nspname not like 'timescaledb%%'"
            # An extension's own views granted to everyone (Citus's public.citus_tables) are not ours.
            " and not exists (select from pg_depend d where d.objid = c.oid and d.deptype = 'e')"
            " and has_table_privilege(%s, c.oid, 'select')", [QUERY_ROLE])}
    assert readable == {"raw.ecommerce_events", "raw.ecommerce_events_quarantine", "tinybird.pipe_stats_rt",
                        "tinybird.datasources_ops_log"}
