"""Every error path answers JSON, with the right status, and stores nothing it refuses."""

from __future__ import annotations

import gzip
from dataclasses import replace

import pytest

from support import EVENT, POST, count, ndjson, truncate_events


@pytest.fixture(autouse=True)
def _empty(settings):
    truncate_events(settings.database_url)


def assert_error(r, status: int, *words: str):
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.is_json and set(r.get_json()) >= {"error"}
    for word in words:
        assert word in r.get_json()["error"]


@pytest.mark.parametrize("path", ["/v0/pipes/top_products.json", "/v0/pipes/top_products.csv"])
def test_read_without_token_is_401(client, path):
    assert_error(client.get(path), 401, "missing token")


def test_read_with_wrong_token_is_401(client):
    assert_error(client.get("/v0/pipes/top_products.json?token=nope"), 401, "invalid token")
    assert_error(client.get("/v0/pipes/top_products.json", headers={"Authorization": "Bearer nope"}), 401)


def test_append_without_or_with_wrong_token(client, settings):
    assert_error(client.post(POST, json=EVENT), 401)
    assert_error(client.post(POST, json=EVENT, headers={"Authorization": "Bearer nope"}), 401)
    assert count(settings.database_url) == 0


def test_unknown_pipe_and_format(client, auth):
    assert_error(client.get("/v0/pipes/nope.json", headers=auth), 404, "nope")
    assert_error(client.get("/v0/pipes/top_products.xml", headers=auth), 404, "format")
    assert_error(client.get("/v0/nothing-here", headers=auth), 404)


def test_not_json_at_all_is_400_naming_the_line(client, auth, settings):
    body = b"\n\nthis is not json\n{also not\n"
    r = client.post(POST, data=body, headers=auth)
    assert_error(r, 400, "line 3", "nothing was stored")
    assert r.get_json()["line"] == 3
    assert count(settings.database_url) == 0
    assert count(settings.database_url, "raw.ecommerce_events_quarantine") == 0


def test_ndjson_without_its_newlines_is_400_saying_how_to_send_it(client, auth, settings):
    """What `curl -d @events.ndjson` sends (curl -d strips newlines): several objects on one
    line. The 400 names the cause and the fix instead of only "Extra data"."""
    r = client.post(POST, data=ndjson([EVENT, EVENT]).replace(b"\n", b""), headers=auth)
    assert_error(r, 400, "line 1: not valid JSON: Extra data", "more than one JSON value", "--data-binary",
                 "nothing was stored")
    assert count(settings.database_url) == 0
    r = client.post(POST, data=b'{"event_time": 1} trailing words', headers=auth)  # not two values: no such hint
    assert_error(r, 400, "Extra data")
    assert "--data-binary" not in r.get_json()["error"]


def test_request_level_errors_store_nothing(client, auth, settings):
    assert_error(client.post("/v0/events", json=EVENT, headers=auth), 400, "name")
    assert_error(client.post("/v0/events?name=other", json=EVENT, headers=auth), 404, "other")
    assert_error(client.post(POST, data=b"  \n", headers=auth), 400, "empty")
    assert_error(client.post(POST, data=b"\x1f\x8b garbage", headers={**auth, "Content-Encoding": "gzip"}), 400, "gzip")
    assert count(settings.database_url) == 0


def test_gzip_body_is_accepted(client, auth, settings):
    r = client.post(POST, data=gzip.compress(ndjson([EVENT, EVENT])), headers={**auth, "Content-Encoding": "gzip"})
    assert r.status_code == 202 and r.get_json()["successful_rows"] == 2
    assert count(settings.database_url) == 2


def test_body_over_the_limit_is_413(app, auth, settings):
    limit = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 1000
    try:
        r = app.test_client().post(POST, data=ndjson([EVENT] * 50), headers=auth)
    finally:
        app.config["MAX_CONTENT_LENGTH"] = limit
    assert_error(r, 413, "too large")
    assert count(settings.database_url) == 0


def test_more_rows_than_the_limit_is_413_naming_it(built, auth, settings):
    """MAX_ROWS_PER_REQUEST counts every row a request would write, quarantined ones
    included; over it nothing is stored, at it the batch is."""
    from cartpulse.app import create_app

    small = create_app(replace(built, max_rows_per_request=3))
    try:
        client = small.test_client()
        over = client.post(POST, data=ndjson([EVENT] * 3) + b"not json\n", headers=auth)
        assert_error(over, 413, "4 rows", "limit of 3 rows", "MAX_ROWS_PER_REQUEST", "nothing was stored")
        assert count(settings.database_url) == 0
        assert count(settings.database_url, "raw.ecommerce_events_quarantine") == 0
        at = client.post(POST, data=ndjson([EVENT] * 2) + b"not json\n", headers=auth)
        assert at.status_code == 202 and at.get_json()["successful_rows"] == 2
        assert count(settings.database_url) == 2
    finally:
        small.extensions["cartpulse"].db.dispose()


def test_bad_rows_are_quarantined_and_good_rows_stored(client, auth, settings):
    bad_type = {**EVENT, "price": "ten"}
    missing = {k: v for k, v in EVENT.items() if k != "country"}
    negative = {**EVENT, "quantity": -1}
    body = ndjson([EVENT, bad_type]) + b"{broken\n" + ndjson([missing, negative, EVENT])
    r = client.post(POST, data=body, headers=auth)
    assert r.status_code == 202
    assert r.get_json()["successful_rows"] == 2 and r.get_json()["quarantined_rows"] == 4
    assert count(settings.database_url) == 2
    import psycopg

    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute("select c__line, c__error_column, price, c__import_id from raw.ecommerce_events_quarantine"
                            " order by c__line").fetchall()
    assert [(line, cols) for line, cols, *_ in rows] == [
        (2, ["price"]), (3, ["line"]), (4, ["country"]), (5, ["quantity"])]
    assert rows[0][2] == "ten"  # the original value, as text
    assert {r[3] for r in rows} == {r.get_json()["import_id"]}
