"""Tinybird's own clients, unchanged, against a running CartPulse (`cartpulse serve`).

Each client is installed from its registry (tests/real_clients.py) and driven by a
script written as its users write code (tests/clients/). Every answer is checked against
Python's own computation over the events the test sent (expected.py) or against the
database, never only for a 2xx. What the clients send and read is written up in docs/clients.md;
tests/test_clients_api.py drives the routes #14 added (Query API, arrays, formats, metadata, JWTs).
"""

from __future__ import annotations

import csv
import json

import psycopg
import pytest
import real_clients
from real_clients import COLUMNS, DS, RANGE, Clients, assert_pipes_match, sample

import expected
from support import count


@pytest.fixture(scope="module")
def clients(live_server):
    return Clients(live_server)


def test_tinybird_python_sdk_buffered_datasource_appends(clients, empty_events):
    events = sample(300, seed=1)
    driver = clients.tinybird_python_sdk
    assert driver("append", datasource=DS, rows=events) == {"appended": 300}
    assert count(empty_events.database_url) == 300
    assert_pipes_match(clients.server, events)


def test_tinybird_python_sdk_error_raises(clients, empty_events):
    driver = clients.tinybird_python_sdk
    answer = driver("append", datasource="no_such_source", rows=sample(2, seed=2))
    assert answer["raised"] == "HTTPError" and answer["status"] == 404
    assert count(empty_events.database_url) == 0


def test_tinybird_sdk_ingests_datetimes_and_queries_with_params(clients, empty_events):
    events = sample(400, seed=3)
    # Python code holds times as datetime objects; the SDK sends them as ISO 8601 ("T").
    answer = clients.tinybird_sdk("ingest_batch", datasource=DS, events=events, datetimes=["event_time"])
    assert answer["successful_rows"] == 400 and answer["quarantined_rows"] == 0
    assert count(empty_events.database_url) == 400
    one = clients.tinybird_sdk("ingest", datasource=DS, event=events[0])
    assert one["successful_rows"] == 1
    events.append(events[0])

    top = clients.tinybird_sdk("query", pipe="top_products", params={**RANGE, "limit": 5, "country": "France"},
                               datetimes=["start_date", "end_date"])
    assert [m["name"] for m in top["meta"]] == ["product_id", "total_quantity", "total_revenue"]
    assert top["rows"] == len(top["data"]) and "elapsed" in top["statistics"]
    assert expected.same(top["data"], expected.top_products(events, limit=5, country="France", **RANGE))

    by_country = clients.tinybird_sdk("query", pipe="events_by_country", params={"event_type": "view"})
    assert expected.same(by_country["data"], expected.events_by_country(events, event_type="view"))
    hourly = clients.tinybird_sdk("query", pipe="total_revenue", params={"interval": "1 hour", **RANGE})
    assert expected.same(hourly["data"], expected.total_revenue(events, interval="1 hour", **RANGE))


def test_tinybird_sdk_ingest_without_wait(clients, empty_events):
    events = sample(20, seed=4)
    answer = clients.tinybird_sdk("ingest_batch", datasource=DS, events=events, wait=False)
    assert answer["successful_rows"] == 20
    assert_pipes_match(clients.server, events)


def test_tinybird_sdk_errors_carry_status_and_message(clients, empty_events):
    bad = clients.tinybird_sdk("query", pipe="top_products", params={"limit": "many"})
    assert bad["raised"] == "TinybirdError" and bad["status"] == 400 and "limit" in bad["message"]
    missing = clients.tinybird_sdk("query", pipe="no_such_pipe", params={})
    assert missing["status"] == 404


def test_both_sdks_append_files_with_a_header(clients, empty_events, tmp_path):
    """A CSV file with a header row and an NDJSON file, sent as multipart (field ``csv``)."""
    events = sample(240, seed=5)
    for i, driver in enumerate((clients.tinybird_sdk, clients.ts_sdk)):
        part = events[120 * i:120 * (i + 1)]
        with open(tmp_path / f"events{i}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(part[:60])
        (tmp_path / f"events{i}.ndjson").write_text("".join(json.dumps(e) + "\n" for e in part[60:]))
        operation = "append_file" if driver is clients.tinybird_sdk else "appendFile"
        for name in (f"events{i}.csv", f"events{i}.ndjson"):
            answer = driver(operation, datasource=DS, file=str(tmp_path / name))
            assert answer["successful_rows"] == 60 and answer["quarantined_rows"] == 0, answer
    assert count(empty_events.database_url) == 240
    assert_pipes_match(clients.server, events)


def test_each_client_deletes_replaces_and_truncates(clients, empty_events, tmp_path):
    """The SDKs' delete (a job, status done), replace and truncate, each exact at once in
    every pipe; a bad condition is the SDK's own 400 error, naming it."""
    events = sample(60, seed=6)
    assert clients.server.post_events(events)[0] == 202
    deleted = clients.tinybird_sdk("delete_rows", datasource=DS, condition="country = 'France'")
    france = sum(e["country"] == "France" for e in events)
    assert deleted["status"] == "done" and deleted["rows_affected"] == france and deleted["job_id"], deleted
    events = [e for e in events if e["country"] != "France"]
    assert_pipes_match(clients.server, events)
    bad = clients.tinybird_sdk("delete_rows", datasource=DS, condition="nope = 1")
    assert bad["status"] == 400 and "'nope' (COLUMN)" in bad["message"], bad
    replacement = sample(5, seed=7)
    (tmp_path / "five.ndjson").write_text("".join(json.dumps(e) + "\n" for e in replacement))
    replaced = clients.tinybird_sdk("replace_file", datasource=DS, file=str(tmp_path / "five.ndjson"))
    assert replaced["successful_rows"] == 5 and replaced["replaced_rows"] == len(events), replaced
    assert_pipes_match(clients.server, replacement)
    for driver in (clients.tinybird_sdk, clients.ts_sdk, clients.verdin):
        assert clients.server.post_events(replacement)[0] == 202
        answer = driver("truncate", datasource=DS)
        assert "raised" not in answer, answer
        assert count(empty_events.database_url) == 0
    assert_pipes_match(clients.server, [])


def test_ts_sdk_ingests_and_queries(clients, empty_events):
    events = sample(300, seed=7)
    answer = clients.ts_sdk("ingestBatch", datasource=DS, events=events)
    assert answer == {"successful_rows": 300, "quarantined_rows": 0, "import_id": answer["import_id"]}
    assert clients.ts_sdk("ingest", datasource=DS, event=events[1])["successful_rows"] == 1
    events.append(events[1])
    assert count(empty_events.database_url) == 301

    top = clients.ts_sdk("query", pipe="top_products", params={**RANGE, "limit": 7})
    assert top["rows"] == len(top["data"])
    assert expected.same(top["data"], expected.top_products(events, limit=7, **RANGE))
    revenue = clients.ts_sdk("apiQuery", pipe="total_revenue", params={"interval": "1 day", "country": "Germany"})
    assert expected.same(revenue["data"], expected.total_revenue(events, interval="1 day", country="Germany"))
    bad = clients.ts_sdk("query", pipe="top_products", params={"limit": 0})
    assert bad["raised"] == "TinybirdError" and bad["status"] == 400 and "limit" in bad["message"]


def test_ts_sdk_typed_project_ingests_and_queries(clients, empty_events):
    """``new Tinybird({datasources, pipes})``, the SDK's README's way: typed accessors."""
    events = sample(150, seed=11)
    assert clients.ts_sdk("typedIngestBatch", events=events)["successful_rows"] == 150
    top = clients.ts_sdk("typedQuery", params={**RANGE, "limit": 4, "country": "France"})
    assert expected.same(top["data"], expected.top_products(events, limit=4, country="France", **RANGE))


def test_ts_sdk_ingest_without_wait(clients, empty_events):
    events = sample(15, seed=8)
    assert clients.ts_sdk("ingestBatch", datasource=DS, events=events, wait=False)["successful_rows"] == 15
    assert_pipes_match(clients.server, events)


def test_verdin_sends_events_plain_and_gzipped_and_reads_pipes_in_every_format(clients, empty_events):
    events = sample(250, seed=9)
    answer = clients.verdin("send_events", datasource=DS, records=events[:150], wait=True)
    assert answer == {"successful_rows": 150, "quarantined_rows": 0}
    gzipped = clients.verdin("send_events_gzip", datasource=DS, records=events[150:200])
    assert gzipped == {"successful_rows": 50, "quarantined_rows": 0}
    appended = clients.verdin("append_ndjson", datasource=DS, records=events[200:])
    assert appended["status"] == 200 and appended["body"]["successful_rows"] == 50
    assert count(empty_events.database_url) == 250

    top = clients.verdin("pipe_query", pipe="top_products", params={"limit": "3", "country": "France"})
    assert top["meta"] == [["product_id", "String"], ["total_quantity", "Int64"], ["total_revenue", "Float64"]]
    assert expected.same(top["data"], expected.top_products(events, limit=3, country="France"))
    want = expected.events_by_country(events, **RANGE)
    for fmt in ("json", "csv", "ndjson"):
        got = clients.verdin("pipe_query_format", pipe="events_by_country", params=RANGE, format=fmt)["data"]
        assert expected.same(got, want), fmt  # csv values are text: compared as text


def test_verdin_lists_tokens(clients, settings):
    with psycopg.connect(settings.database_url) as conn:
        names = sorted(n for (n,) in conn.execute("select name from cartpulse.tokens"))
    assert sorted(t["name"] for t in clients.verdin("list_tokens")) == names


def test_a_scoped_token_reads_its_pipe_only_through_each_client(clients, empty_events):
    status, made = clients.server.request("POST", "/v0/tokens?name=clients-reader&scope=PIPES:READ:events_by_country")
    assert status == 200, made
    reader = made["token"]
    try:
        events = sample(30, seed=10)
        assert clients.server.post_events(events)[0] == 202
        want = expected.events_by_country(events)
        for driver in (clients.tinybird_sdk, clients.ts_sdk):
            assert expected.same(driver("query", token=reader, pipe="events_by_country", params={})["data"], want)
            assert driver("query", token=reader, pipe="top_products", params={})["status"] == 403
        assert clients.verdin("send_events", token=reader, datasource=DS, records=events)["status"] == 403
        assert count(empty_events.database_url) == 30
    finally:
        clients.server.request("DELETE", "/v0/tokens/clients-reader")


def test_a_failed_install_fails_unless_the_registry_is_unreachable(clients, tmp_path):
    """The harness itself: a broken install is a failure, not a quiet skip; only a registry
    that does not answer at all skips."""
    pins = tmp_path / "pins.txt"
    pins.write_text("nothing==0\n")
    with pytest.raises(pytest.fail.Exception, match="installing the clients failed"):
        real_clients._install(tmp_path / "env", (pins,), [["false"]], clients.server.base + "/healthz")
    with pytest.raises(pytest.skip.Exception, match="cannot be reached"):
        real_clients._install(tmp_path / "env", (pins,), [["false"]], "http://127.0.0.1:1/")
    assert not (tmp_path / "env").exists()
    real_clients._install(tmp_path / "env", (pins,), [["true"]], "http://127.0.0.1:1/")
    assert (tmp_path / "env" / ".pins").exists()
    real_clients._install(tmp_path / "env", (pins,), [["false"]], "http://127.0.0.1:1/")  # stamp matches: no step runs
