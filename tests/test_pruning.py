"""A date range reads only the chunks (TimescaleDB) or monthly partitions (PostgreSQL) of its edges.

An endpoint answers the whole days of a range from a rollup, the whole hours of its
partial days from an hourly one, and its partial hours at either end from the events
table (macros/ranges.sql). A derived answer's function calls a PL/pgSQL twin planned
once per connection, generically (macros/endpoint.sql): chunk exclusion, or partition
pruning, at executor start-up must leave only the chunks/partitions holding those edges.
The plans are taken exactly as the service runs the query (pipes.endpoint_query, values
bound), the twin's as auto_explain logs it, ANALYZEd, on its first call and on a later
one that reuses its cached plan; and once more under a prepared statement's generic plan.

On Citus the endpoint runs a PL/pgSQL twin (docs/citus.md), and each worker plans its
shards' part: the plans checked are the workers' own, as auto_explain logs the twin's
statement with every task's remote plan.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import psycopg
import pytest
from psycopg import sql

import expected
from cartpulse.serving.pipes import endpoint_query
from cartpulse.storage.schema import TIMESCALEDB
from support import ndjson, truncate_events

# Neither edge is a whole day, minute or hour: the leading edge lies in 2026-10-02,
# the trailing edge in 2026-10-04.
START, END = "2026-10-02 13:17:45", "2026-10-04 08:00:01"
DAYS = ["2026-08-20", "2026-09-30", "2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05",
        "2026-11-10"]
CALLS = [("events_by_country", {}), ("top_products", {"country": ["France"], "limit": 5}),
         ("total_revenue", {"interval": "1 hour"})]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def events(app, built, auth):
    """Events on eight days over four months, some inside each edge."""
    truncate_events(built.database_url)
    sent = [{"event_time": f"{day} {hour}", "event_type": kind, "user_id": "u", "product_id": f"p{i % 3}",
             "category": "toys", "price": 2.5, "quantity": 1 + i % 2, "session_id": "s", "country": country}
            for day in DAYS
            for i, (hour, kind, country) in enumerate([("03:00:00", "purchase", "France"),
                                                      ("13:30:00", "view", "Germany"),
                                                      ("13:17:59", "purchase", "France"),
                                                      ("20:00:00", "purchase", "Germany")])]
    r = app.test_client().post("/v0/events?name=ecommerce_events", data=ndjson(sent), headers=auth)
    assert r.status_code == 202 and r.get_json()["successful_rows"] == len(sent)
    return sent


def edge_storage(conn, engine) -> tuple[set[str], set[str]]:
    """(every chunk or partition of the events table, those overlapping an edge)."""
    if engine == TIMESCALEDB:
        rows = conn.execute(
            "select chunk_name, (range_start < %(s_end)s and range_end > %(start)s)"
            " or (range_start < %(end)s and range_end > %(e_start)s)"
            " from timescaledb_information.chunks"
            " where hypertable_schema = 'raw' and hypertable_name = 'ecommerce_events'",
            {"start": utc(START), "s_end": utc("2026-10-03 00:00:00"),
             "e_start": utc("2026-10-04 00:00:00"), "end": utc(END)}).fetchall()
    else:
        rows = conn.execute(
            "select c.relname, c.relname = 'ecommerce_events_2026m10' from pg_inherits i"
            " join pg_class c on c.oid = i.inhrelid where i.inhparent = 'raw.ecommerce_events'::regclass").fetchall()
    return {name for name, _ in rows}, {name for name, hit in rows if hit}


#: A scan in a task's remote plan (text): the shard's name is its partition's name
#: followed by the shard id.
REMOTE_SCAN = re.compile(r"Scan on (\w+?)_\d+\b")


#: auto_explain logging every statement, nested ones (the endpoint's twin) included, to the client.
AUTO_EXPLAIN = ["auto_explain.log_min_duration = 0", "auto_explain.log_nested_statements = on",
                "client_min_messages = log"]


def explained_calls(url: str, query, values: dict | None, settings: list[str], calls: int,
                    prepare=None) -> list[list[str]]:
    """What auto_explain logged for each of ``calls`` runs of ``query`` in one session with
    ``settings`` (after ``prepare``, a PREPARE statement, when given). Each statement is its
    own transaction: a second auto_explained call in one transaction finds Citus's
    connection to the coordinator aborted (an auto_explain and Citus interaction; the
    service's own calls are unaffected)."""
    logs: list[str] = []
    runs = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: logs.append(notice.message_primary or ""))
        conn.execute("load 'auto_explain'")
        for setting in AUTO_EXPLAIN + settings:
            conn.execute(f"set {setting}")
        if prepare is not None:
            conn.execute(prepare)
        for _ in range(calls):
            logs.clear()
            conn.execute(query.as_string(conn), values).fetchall()
            runs.append(list(logs))
    return runs


def scanned_by_workers(url: str, query, values: dict, storage: set[str], generic: bool = False) -> set[str]:
    """The partitions of the events table whose shards Citus's workers plan to scan for
    the endpoint: the twin's statement is nested in the endpoint's function, so
    auto_explain logs its plan, with every task's remote plan. Plans, not runs: the
    workers' partitions left after pruning at plan time and at executor start-up
    (auto_explain's ANALYZE fails on Citus's parameterized tasks, "cache lookup failed
    for type 0"). ``generic``: the second call runs the twin's cached plan."""
    settings = ["citus.explain_all_tasks = on"] + (["plan_cache_mode = force_generic_plan"] if generic else [])
    logs = explained_calls(url, query, values, settings, 2 if generic else 1)[-1]
    return {name for text in logs for name in REMOTE_SCAN.findall(text)} & storage


def scanned_by_twin(url: str, query, values: dict, storage: set[str], prepare: str | None = None) -> set[str]:
    """The chunks/partitions of the events table each call of the endpoint scanned (ran
    at least once), read from the nested plans auto_explain logs with ANALYZE: the
    derived answer's twin is a PL/pgSQL function, whose plans EXPLAIN does not show. Two
    calls: the second runs the plan the first cached. ``prepare`` first makes ``query`` a
    prepared statement of that name under a generic plan."""
    settings = ["auto_explain.log_analyze = on", "auto_explain.log_timing = off", "auto_explain.log_format = json"]
    if prepare:
        settings.append("plan_cache_mode = force_generic_plan")
        execute = sql.SQL("execute {}({}, {})").format(
            sql.Identifier(prepare), sql.Literal(values["start_date"]), sql.Literal(values["end_date"]))
        runs = explained_calls(url, execute, None, settings, 2, prepare=query)
    else:
        runs = explained_calls(url, query, values, settings, 2)
    found = []
    for logs in runs:
        plans = [json.loads(text[text.index("{"):]) for text in logs if "{" in text]
        assert plans, "auto_explain logged no plan"
        found.append(set().union(*(scanned(p["Plan"], storage) for p in plans)))
    assert found[0] == found[1], "the cached plan read other partitions than the first"
    return found[0]


def scanned(plan: dict, storage: set[str]) -> set[str]:
    """The chunks/partitions of the events table a JSON plan scanned (ran at least once)."""
    found = set()
    if plan.get("Relation Name") in storage and plan.get("Actual Loops", 0) > 0:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= scanned(child, storage)
    return found


@pytest.mark.parametrize("pipe, params", CALLS, ids=[c[0] for c in CALLS])
def test_only_the_edges_chunks_are_scanned(app, client, auth, settings, engine, events, pipe, params):
    """As the service runs it: named arguments, values bound, planned with the values."""
    endpoint = app.extensions["cartpulse"].catalog.get(pipe)
    values = {"start_date": utc(START), "end_date": utc(END), **params}
    with app.extensions["cartpulse"].db.psycopg() as conn:
        storage, edges = edge_storage(conn, engine)
    if engine == "citus":
        read = scanned_by_workers(settings.database_url, endpoint_query(endpoint, values), values, storage)
    else:
        read = scanned_by_twin(settings.database_url, endpoint_query(endpoint, values), values, storage)
    assert len(edges) == (2 if engine == TIMESCALEDB else 1) and len(storage) >= 4
    assert read == edges
    # And the answer is right: the edges were read, not skipped.
    r = client.get(f"/v0/pipes/{pipe}.json", query_string={"start_date": START, "end_date": END, **params},
                   headers=auth)
    want = getattr(expected, pipe)(events, start_date=START, end_date=END, **params)
    assert want and expected.same(r.get_json()["data"], want)


def test_a_generic_plan_prunes_at_start_up(settings, engine, events):
    """A prepared statement's generic plan (as behind a pooler that prepares) of the function reads call
    (the derived answer) prunes too."""
    with psycopg.connect(settings.database_url) as conn:
        storage, edges = edge_storage(conn, engine)
    if engine == "citus":  # the session asks for generic plans; the twin is planned with its values
        query = sql.SQL("select * from {}.events_by_country__derived(start_date => %(s)s, end_date => %(e)s)").format(
            sql.Identifier(settings.dbt_schema))
        read = scanned_by_workers(settings.database_url, query, {"s": utc(START), "e": utc(END)}, storage, generic=True)
        assert read == edges
        return
    prepare = sql.SQL("prepare by_country(timestamptz, timestamptz) as select * from"
                      " {}.events_by_country__derived(start_date => $1, end_date => $2)").format(
        sql.Identifier(settings.dbt_schema))
    values = {"start_date": utc(START), "end_date": utc(END)}
    assert scanned_by_twin(settings.database_url, prepare, values, storage, prepare="by_country") == edges
