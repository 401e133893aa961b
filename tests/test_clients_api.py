"""Tinybird's clients on the routes #14 added, each checked against an independent answer.

Same harness and checks as test_clients.py, by feature:

- ARRAYS: array parameters declared in yml, as ``a,b`` and as repeated keys (how the
  SDKs send lists), a scalar given twice refused; POST on a pipe (verdin switches to it
  past 8 KB of query string); a query string of up to 8 KB, as Tinybird takes (the HTTP
  front's request line limit is 16 KiB).
- FORMATS: ``.parquet`` and ``.csvwithnames`` on pipes.
- CSV: CSV appends without a header row, ``dialect_delimiter``.
- METADATA: ``GET /v0/pipes`` (Tinybird's shape), ``/v0/pipes/<name>``,
  ``/v0/datasources``, ``/v0/datasources/<name>``.
- TOKENS: ``POST /v0/tokens/`` with a JSON body of scope objects and ``expiration_time``
  (a JWT); tokens listed with scope objects.
- SQL: the Query API ``/v0/sql`` (POST text/plain, GET ``q=`` with FORMAT).
- Q: ``q=`` on a pipe (SQL over its result as ``_``).
- OPS_LOG: ``tinybird.datasources_ops_log``.
"""

from __future__ import annotations

import base64
import csv
import io

import pyarrow.parquet as pq
import pytest
from real_clients import (
    COLUMNS,
    DS,
    RANGE,
    Clients,
    assert_pipes_match,
    compute,
    ok,
    sample,
)

import expected
from support import count

PIPE_NAMES = sorted(["top_products", "events_by_country", "total_revenue"])


@pytest.fixture(scope="module")
def clients(live_server):
    return Clients(live_server)


@pytest.fixture
def events(clients, empty_events):
    """200 events, stored (over plain HTTP) before the test."""
    events = sample(200, seed=21)
    assert clients.server.post_events(events)[0] == 202
    return events


def array_parameter(clients) -> tuple[str, str]:
    """(pipe, parameter): the first parameter declared as an array (in the pipe's
    ``params`` or its nodes') whose name is an event column: an equality filter on it,
    which Python can compute."""
    status, listing = clients.server.request("GET", "/v0/pipes")
    assert status == 200, listing
    for pipe in listing["pipes"]:
        declared = pipe.get("params", []) + [p for n in pipe.get("nodes", []) for p in n.get("params", [])]
        for param in declared:
            if str(param.get("type")).startswith("Array(") and param["name"] in COLUMNS:
                return pipe["name"], param["name"]
    raise AssertionError("no pipe declares an Array parameter filtering an event column (ARRAYS)")


def test_scalar_parameter_given_twice_is_refused(clients, events):
    """ARRAYS. A list for a scalar parameter is a 400 through both SDKs, never the first value."""
    for driver in (clients.tinybird_sdk, clients.ts_sdk):
        answer = driver("query", pipe="top_products", params={"limit": [3, 4]})
        assert answer.get("status") == 400 and "limit" in answer["message"], answer


def test_array_parameter_through_each_client(clients, events):
    """ARRAYS. Repeated keys (both SDKs), ``a,b`` (verdin), and verdin's POST past 8 KB."""
    pipe, param = array_parameter(clients)
    values = sorted({e[param] for e in events})[:2]
    want = compute(pipe, [e for e in events if e[param] in values])
    params = {param: values, "limit": 1000} if pipe == "top_products" else {param: values}
    for driver in (clients.tinybird_sdk, clients.ts_sdk):
        assert expected.same(driver("query", pipe=pipe, params=params)["data"], want), driver
    verdin_params = {k: str(v) for k, v in params.items()}  # verdin takes text values
    joined = clients.verdin("pipe_query", pipe=pipe, params={**verdin_params, param: ",".join(values)})
    assert expected.same(joined["data"], want)
    # Hundreds of values that match nothing make the value longer than 8 KB: verdin POSTs
    # (it measures a value's length, so a list of them, however long, it would GET).
    many = ",".join(values + [f"nowhere-{i:04d}" for i in range(700)])
    assert len(many) > 8192
    assert expected.same(clients.verdin("pipe_query", pipe=pipe, params={**verdin_params, param: many})["data"], want)


def test_a_query_string_up_to_8_kb_is_served(clients, events):
    """ARRAYS, and the server front (the lead's): Tinybird's SDKs never POST, and they and
    verdin (below 8 KB) send every parameter in the URL, which Tinybird takes up to 8 KB.
    gunicorn's default request line (4,094 bytes) refuses such a URL: 414, an HTML page."""
    pipe, param = array_parameter(clients)
    values = sorted({e[param] for e in events})[:2]
    many = values + [f"nowhere-{i:04d}" for i in range(320)]  # about 7 KB of query string
    want = compute(pipe, [e for e in events if e[param] in values])
    params = {param: many, "limit": 1000} if pipe == "top_products" else {param: many}
    for driver in (clients.tinybird_sdk, clients.ts_sdk):
        assert expected.same(ok(driver("query", pipe=pipe, params=params))["data"], want), driver


def test_parquet_and_csvwithnames(clients, events):
    """FORMATS."""
    want = expected.events_by_country(events, **RANGE)
    raw = ok(clients.verdin("pipe_raw", pipe="events_by_country", params=RANGE, format="parquet"))
    table = pq.read_table(io.BytesIO(base64.b64decode(raw["base64"])))
    assert expected.same(table.to_pylist(), want)
    raw = ok(clients.verdin("pipe_raw", pipe="events_by_country", params=RANGE, format="csvwithnames"))
    text = base64.b64decode(raw["base64"]).decode()
    assert expected.same(list(csv.DictReader(io.StringIO(text))), want)


def test_headerless_csv_appends(clients, empty_events, tmp_path):
    """CSV. verdin sends rows without a header (and with ``dialect_delimiter``), as does a
    file appended through either SDK."""
    events = sample(160, seed=22)
    for e in events:  # verdin sends its CSV as a str body, which requests encodes as Latin-1
        e["country"] = e["country"] if e["country"].isascii() else "Elsewhere"
    rows = [[e[c] for c in COLUMNS] for e in events]
    for part, delimiter in ((rows[:40], ","), (rows[40:80], ";")):
        answer = clients.verdin("append_csv", datasource=DS, records=part, delimiter=delimiter)
        assert answer["status"] == 200 and answer["body"]["successful_rows"] == 40, answer
    for i, driver in enumerate((clients.tinybird_sdk, clients.ts_sdk)):
        path = tmp_path / f"rows{i}.csv"
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(rows[80 + 40 * i:120 + 40 * i])
        operation = "append_file" if driver is clients.tinybird_sdk else "appendFile"
        answer = driver(operation, datasource=DS, file=str(path))
        assert answer.get("successful_rows") == 40 and answer["quarantined_rows"] == 0, answer
    assert count(empty_events.database_url) == 160
    assert_pipes_match(clients.server, events)


def test_pipe_metadata(clients, events):
    """METADATA, as tinybird-sdk's resource API and verdin read it."""
    assert sorted(ok(clients.tinybird_sdk("list_pipes"))) == PIPE_NAMES
    assert sorted(p["name"] for p in ok(clients.verdin("list_pipes"))) == PIPE_NAMES
    pipe = ok(clients.tinybird_sdk("get_pipe", name="top_products"))
    assert pipe["type"] == "endpoint" and pipe["nodes"] and all(n["sql"] for n in pipe["nodes"])
    assert {p["name"] for p in pipe["params"]} >= {"start_date", "end_date", "limit", "category", "country"}
    assert [c["name"] for c in pipe["output_columns"]] == ["product_id", "total_quantity", "total_revenue"]
    assert ok(clients.verdin("pipe_info", name="top_products"))["name"] == "top_products"


def test_datasource_metadata(clients, events):
    """METADATA: columns in declared order, and the row count."""
    assert DS in ok(clients.tinybird_sdk("list_datasources"))
    assert DS in [d["name"] for d in ok(clients.verdin("list_datasources"))]
    info = ok(clients.tinybird_sdk("get_datasource", name=DS))
    assert tuple(c["name"] for c in info["columns"]) == COLUMNS
    assert ok(clients.verdin("datasource_info", name=DS))["statistics"]["row_count"] == len(events)


def test_jwt_minted_by_each_sdk_binds_its_fixed_params(clients, events):
    """TOKENS. The JWT reads its pipe only, and its fixed parameter wins over the query's."""
    scopes = [{"type": "PIPES:READ", "resource": "top_products", "fixed_params": {"country": "France"}}]
    want = expected.top_products(events, country="France")
    for driver, operation in ((clients.tinybird_sdk, "create_jwt"), (clients.ts_sdk, "createJWT"),
                              (clients.ts_sdk, "apiCreateJWT")):
        minted = ok(driver(operation, name=f"clients-{operation}", scopes=scopes, seconds=600))
        jwt = minted.get("token")
        assert jwt and jwt.count(".") == 2, minted
        got = ok(driver("query", token=jwt, pipe="top_products", params={"country": "Germany"}))
        assert expected.same(got["data"], want), operation
        assert driver("query", token=jwt, pipe="events_by_country", params={})["status"] == 403


def test_tokens_listed_with_scope_objects(clients):
    """TOKENS: verdin reads ``tokens``, each scope an object {type, resource}."""
    status, made = clients.server.request("POST", "/v0/tokens?name=clients-scopes&scope=PIPES:READ:total_revenue")
    assert status == 200, made
    try:
        listed = {t["name"]: t for t in ok(clients.verdin("list_tokens"))}
        scopes = listed["clients-scopes"]["scopes"]
        assert all(isinstance(s, dict) for s in scopes), scopes
        assert [(s["type"], s.get("resource")) for s in scopes] == [("PIPES:READ", "total_revenue")]
    finally:
        clients.server.request("DELETE", "/v0/tokens/clients-scopes")


def test_query_api_through_each_client(clients, events):
    """SQL. The SDKs POST the SQL as text/plain without FORMAT; verdin GETs with ``FORMAT JSON``."""
    purchases = sum(e["event_type"] == "purchase" for e in events)
    sql = "select count() as n from ecommerce_events where event_type = 'purchase'"
    for driver in (clients.tinybird_sdk, clients.ts_sdk, clients.verdin):
        answer = ok(driver("sql", sql=sql))
        assert [int(r["n"]) if "n" in r else r for r in answer["data"]] == [purchases], answer
    pipe = ok(clients.tinybird_sdk("sql", sql="select product_id, total_revenue from top_products"))
    want = [{k: r[k] for k in ("product_id", "total_revenue")} for r in expected.top_products(events)]
    assert expected.same(pipe["data"], want)


def test_q_on_a_pipe_pages_and_counts(clients, events):
    """Q. verdin's ``pipe.sql`` and ``pipe.pages`` run SQL over the pipe's result as ``_``."""
    want = expected.events_by_country(events)
    answer = ok(clients.verdin("pipe_sql", pipe="events_by_country", sql="select count() as n from _"))
    assert [int(r["n"]) if "n" in r else r for r in answer["data"]] == [len(want)], answer
    pages = ok(clients.verdin("pipe_pages", pipe="events_by_country", page_size=4))
    assert all(len(p) <= 4 for p in pages)
    assert expected.same([row for page in pages for row in page], want)


def test_datasources_ops_log_records_an_import(clients, empty_events):
    """OPS_LOG: verdin's NDJSON import shows in ``tinybird.datasources_ops_log`` with its rows."""
    events = sample(30, seed=23)
    appended = ok(clients.verdin("append_ndjson", datasource=DS, records=events))
    import_id = appended["body"]["import_id"]
    sql = f"select datasource_name, rows from tinybird.datasources_ops_log where import_id = '{import_id}'"
    answer = ok(clients.tinybird_sdk("sql", sql=sql))
    assert [(r["datasource_name"], int(r["rows"])) for r in answer["data"]] == [(DS, 30)], answer


def test_pipe_stats_rt_counts_the_calls_a_client_made(clients, events):
    """PIPE_STATS: the calls an SDK made are rows of ``tinybird.pipe_stats_rt``, read back
    through the Query API by the other SDK. Rows are written about a second after each
    request (ops/pipe_stats.py), so the read is repeated until they are there."""
    import random
    import time

    marker = random.randrange(900, 1000)  # a limit no other test asks for
    sql = ("select count() as n, sum(result_rows) as result_rows from tinybird.pipe_stats_rt"
           f" where pipe_name = 'top_products' and parameters['limit'] = '{marker}' and status_code = 200")

    def stats() -> tuple[int, int]:
        row = ok(clients.tinybird_sdk("sql", sql=sql))["data"][0]
        return int(row["n"]), int(row["result_rows"] or 0)

    before = stats()
    for _ in range(3):
        ok(clients.ts_sdk("query", pipe="top_products", params={"limit": marker}))
    want = len(expected.top_products(events, limit=marker))
    deadline = time.monotonic() + 30
    while (after := stats())[0] < before[0] + 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3 * want), (before, after)
