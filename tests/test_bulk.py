"""Bulk import (POST /v0/datasources, `cartpulse import`): CSV, NDJSON and Parquet, multipart or
raw, gzip; the events API's validation and quarantine; pending rows so endpoints stay exact;
all or nothing per import."""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import replace

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.ingest import bulk
from support import count, ndjson

URL = "/v0/datasources?name=ecommerce_events&mode=append"


def events(n=40, seed=11):
    return EventGenerator(seed=seed, products=30).events(n)


def csv_bytes(rows, header=None) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header or list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def parquet_bytes(rows) -> bytes:
    table = pa.Table.from_pylist([{**e, "event_time": expected._time(e["event_time"])} for e in rows])
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=7)
    return out.getvalue()


def stored(url, import_id=None):
    with psycopg.connect(url) as conn:
        rows = conn.execute("select count(*) from raw.ecommerce_events").fetchone()[0]
        pending = conn.execute("select count(*) from raw.ecommerce_events_pending").fetchone()[0]
        bad = conn.execute("select c__line, c__error_column from raw.ecommerce_events_quarantine"
                           " where c__import_id = %s order by c__line", [import_id]).fetchall()
    return rows, pending, bad


def assert_endpoints_exact(client, auth, sent):
    for pipe, compute in (("top_products", expected.top_products), ("events_by_country", expected.events_by_country)):
        data = client.get(f"/v0/pipes/{pipe}.json", headers=auth).get_json()["data"]
        assert expected.same(data, compute(sent)), pipe


def test_csv_multipart_with_quarantine(client, auth, empty_events):
    good = events(40)
    bad = [{**good[0], "price": "cheap"}, {**good[1], "quantity": "-3"}, {**good[2], "event_time": "yesterday"}]
    body = csv_bytes(good[:20] + bad + good[20:])
    r = client.post(URL, headers=auth, data={"csv": (io.BytesIO(body), "events.csv")},
                    content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    answer = r.get_json()
    assert (answer["successful_rows"], answer["quarantined_rows"], answer["format"]) == (40, 3, "csv")
    rows, pending, quarantined = stored(empty_events.database_url, answer["import_id"])
    assert (rows, pending) == (40, 40)  # pending too: rollups absorb imports like any event
    # line 1 is the header: the bad rows are lines 22-24 of the file
    assert quarantined == [(22, ["price"]), (23, ["quantity"]), (24, ["event_time"])]
    assert_endpoints_exact(client, auth, good)


def test_ndjson_raw_gzip_in_several_chunks(client, auth, empty_events, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 7)
    sent = events(50)
    lines = ndjson(sent).split(b"\n")
    lines.insert(30, b"{not json")
    r = client.post(URL + "&format=ndjson", headers={**auth, "Content-Encoding": "gzip"},
                    data=gzip.compress(b"\n".join(lines)))
    answer = r.get_json()
    assert r.status_code == 200 and (answer["successful_rows"], answer["quarantined_rows"]) == (50, 1), answer
    assert stored(empty_events.database_url, answer["import_id"])[2] == [(31, ["line"])]
    assert_endpoints_exact(client, auth, sent)


def test_parquet_raw_body(client, auth, empty_events):
    sent = events(30)
    r = client.post(URL, headers={**auth, "Content-Type": "application/vnd.apache.parquet"},
                    data=parquet_bytes(sent))
    answer = r.get_json()
    assert r.status_code == 200 and (answer["successful_rows"], answer["format"]) == (30, "parquet"), answer
    assert_endpoints_exact(client, auth, sent)


def test_all_or_nothing(client, auth, empty_events, monkeypatch):
    """Chunks already COPYed are rolled back when a later part of the upload is bad."""
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 5)
    body = gzip.compress(ndjson(events(60)))
    r = client.post(URL + "&format=ndjson", headers={**auth, "Content-Encoding": "gzip"}, data=body[:-40])
    assert r.status_code == 400 and "gzip" in r.get_json()["error"]
    assert stored(empty_events.database_url)[:2] == (0, 0)


@pytest.mark.parametrize("query, body, status, message", [
    ("&mode=replace&replace_condition=sleep(1)%3D1&format=csv", b"x", 400, "'sleep(1)'"),
    ("&replace_condition=country%3D%27x%27&format=csv", b"x", 400, "replace_condition goes with mode=replace"),
    ("&mode=upsert&format=csv", b"x", 400, "unknown mode"),
    ("&format=xml", b"x", 400, "unknown format"),
    ("", b"a,b\n1,2\n", 400, "cannot tell the format"),
    ("&format=csv", b"event_time,price\n2024-01-01 00:00:00,1\n", 400, "the CSV header lacks"),
    ("&format=ndjson", b"nope\nnot json either\n", 400, "line 1: not valid JSON"),
    ("&format=parquet", b"PAR1 not really", 400, "not a Parquet file"),
    ("&format=csv", b"", 400, "empty import"),
])
def test_bad_imports_store_nothing(client, auth, empty_events, query, body, status, message):
    r = client.post(URL.replace("&mode=append", "") + query, headers=auth, data=body)
    assert r.status_code == status and message in r.get_json()["error"], r.get_json()
    assert count(empty_events.database_url) == 0


def test_scopes_and_size_limit(built, client, auth, empty_events):
    from cartpulse.app import create_app

    token = client.post("/v0/tokens?name=bulk-reader&scope=DATASOURCES:READ:ecommerce_events", headers=auth)
    reader = {"Authorization": f"Bearer {token.get_json()['token']}"}
    assert client.post(URL + "&format=ndjson", headers=reader, data=ndjson(events(2))).status_code == 403
    limit, body = 5000, ndjson(events(60))
    compressed = gzip.compress(body)
    assert len(compressed) < limit < len(body)  # under the limit as sent, over it inflated
    small = create_app(replace(built, max_import_bytes=limit))
    try:
        r = small.test_client().post(URL + "&format=ndjson", headers={**auth, "Content-Encoding": "gzip"},
                                     data=compressed)
    finally:
        small.extensions["cartpulse"].db.dispose()
    assert r.status_code == 413 and "MAX_IMPORT_BYTES" in r.get_json()["error"]
    assert count(empty_events.database_url) == 0


def test_cartpulse_import_cli(empty_events, tmp_path, monkeypatch, capsys):
    from cartpulse.cli.main import main

    monkeypatch.setenv("DATABASE_URL", empty_events.database_url)
    sent = events(25)
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(csv_bytes(sent[:10] + [{**sent[0], "country": ""}])))
    (tmp_path / "b.parquet").write_bytes(parquet_bytes(sent[10:]))
    assert main(["import", str(tmp_path / "a.csv.gz")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["successful_rows"], first["quarantined_rows"]) == (10, 1)
    assert main(["import", str(tmp_path / "b.parquet")]) == 0
    assert json.loads(capsys.readouterr().out)["successful_rows"] == 15
    assert stored(empty_events.database_url)[:2] == (25, 25)
    (tmp_path / "bad.csv").write_text("nothing,useful\n1,2\n")
    assert main(["import", str(tmp_path / "bad.csv")]) == 2
    # Not a header (it names no column), so data in declared order, where no row fits.
    assert "without a header line" in capsys.readouterr().err
