"""CSV appends as Tinybird's clients send them: without a header (columns in declared
order), with the dialect parameters; a first line that names the columns is still a
header. Stored rows are checked through the endpoints against expected.py."""

from __future__ import annotations

import csv
import io

import pytest

import expected
from cartpulse.cli.event_generator import EventGenerator
from support import count, datasources

URL = "/v0/datasources?name=ecommerce_events&mode=append&format=csv"
COLUMNS = datasources()["ecommerce_events"].column_names


def events(n=30, seed=23):
    return EventGenerator(seed=seed, products=12).events(n)


def headerless(rows, delimiter=",", escapechar=None, lineterminator="\n", quoting=csv.QUOTE_MINIMAL) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, escapechar=escapechar, lineterminator=lineterminator,
                        quoting=quoting, doublequote=escapechar is None)
    writer.writerows([[row[c] for c in COLUMNS] for row in rows])
    return out.getvalue().encode()


def assert_exact(client, auth, sent):
    for pipe in ("top_products", "events_by_country"):
        data = client.get(f"/v0/pipes/{pipe}.json", headers=auth).get_json()["data"]
        assert expected.same(data, getattr(expected, pipe)(sent)), pipe


def test_headerless_raw_body_as_verdin_sends_it(client, auth, empty_events):
    sent = events()
    r = client.post(URL + "&dialect_delimiter=,", data=headerless(sent), headers=auth,
                    content_type="text/html; charset=utf-8")
    assert r.status_code == 200, r.get_json()
    assert (r.get_json()["successful_rows"], r.get_json()["quarantined_rows"]) == (len(sent), 0)
    assert count(empty_events.database_url) == len(sent)
    assert_exact(client, auth, sent)


def test_headerless_multipart_as_the_sdks_send_it(client, auth, empty_events):
    sent = events(seed=5)
    r = client.post("/v0/datasources/?name=ecommerce_events&mode=append&format=csv&from=python-sdk", headers=auth,
                    data={"csv": (io.BytesIO(headerless(sent, lineterminator="\r\n")), "rows.csv",
                                  "application/octet-stream")})
    assert r.status_code == 200 and r.get_json()["successful_rows"] == len(sent), r.get_json()
    assert_exact(client, auth, sent)


@pytest.mark.parametrize("params, options", [
    ("&dialect_delimiter=;", {"delimiter": ";"}),
    ("&dialect_delimiter=%5Ct", {"delimiter": "\t"}),  # written as the two characters \t
    ("&dialect_delimiter=%09&dialect_new_line=%5Cr%5Cn", {"delimiter": "\t", "lineterminator": "\r\n"}),
    ("&dialect_delimiter=;&dialect_escapechar=%5C", {"delimiter": ";", "escapechar": "\\",
                                                      "quoting": csv.QUOTE_NONE}),
])
def test_dialects(client, auth, empty_events, params, options):
    sent = events(seed=7)
    sent[0] = {**sent[0], "category": 'semi;colon "quoted" \\ back'}  # needs the escape or the quotes
    r = client.post(URL + params, data=headerless(sent, **options), headers=auth)
    assert r.status_code == 200 and r.get_json()["quarantined_rows"] == 0, r.get_json()
    assert_exact(client, auth, sent)
    r = client.get("/v0/datasources/ecommerce_events.json?limit=100", headers=auth)
    assert sent[0]["category"] in {row["category"] for row in r.get_json()["data"]}


def test_a_header_line_is_read_by_name_whatever_its_order(client, auth, empty_events):
    sent = events(seed=9)
    order = list(reversed(COLUMNS))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(order)
    writer.writerows([[row[c] for c in order] for row in sent])
    r = client.post(URL, data=out.getvalue().encode(), headers=auth)
    assert r.get_json()["successful_rows"] == len(sent)
    assert_exact(client, auth, sent)


def test_a_headerless_row_of_the_wrong_width_is_quarantined_with_the_reason(client, auth, empty_events):
    sent = events(seed=3)
    body = headerless(sent[:5]) + b"2026-10-05 10:00:00,purchase,u1\n" + headerless(sent[5:])
    r = client.post(URL, data=body, headers=auth)
    assert (r.get_json()["successful_rows"], r.get_json()["quarantined_rows"]) == (len(sent), 1)
    bad = client.get(f"/v0/datasources/ecommerce_events_quarantine.json?import_id={r.get_json()['import_id']}",
                     headers=auth).get_json()["data"]
    assert [row["c__line"] for row in bad] == [6]
    assert "3 fields" in bad[0]["c__error"][0] and "declared order" in bad[0]["c__error"][0]
    assert_exact(client, auth, sent)


@pytest.mark.parametrize("params, name", [
    ("&dialect_quotechar=%27", "dialect_quotechar"),
    ("&dialect_new_line=;", "dialect_new_line"),
    ("&dialect_delimiter=ab", "dialect_delimiter"),
    ("&dialect_delimiter=%22", "dialect_delimiter"),
    ("&dialect_delimiter=;&dialect_escapechar=;", "dialect_escapechar"),
])
def test_dialect_parameters_it_cannot_honour_are_400s_naming_them(client, auth, empty_events, params, name):
    r = client.post(URL + params, data=headerless(events(3)), headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == name and name in r.get_json()["error"]
    assert count(empty_events.database_url) == 0


def test_a_dialect_for_ndjson_is_refused(client, auth, empty_events):
    r = client.post("/v0/datasources?name=ecommerce_events&mode=append&format=ndjson&dialect_delimiter=;",
                    data=b"{}", headers=auth)
    assert r.status_code == 400 and "CSV only" in r.get_json()["error"]


@pytest.mark.parametrize("how", ["query", "form"])
def test_url_imports_are_refused_by_name(client, auth, empty_events, how):
    remote = "http://169.254.169.254/latest/meta-data"
    if how == "query":
        r = client.post(f"/v0/datasources?name=ecommerce_events&mode=append&url={remote}", headers=auth)
    else:
        r = client.post("/v0/datasources?name=ecommerce_events&mode=append", data={"url": remote}, headers=auth)
    assert r.status_code == 400 and r.get_json()["parameter"] == "url"
