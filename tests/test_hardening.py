"""Hostile input and hardening: security headers (web/security.py) and request bodies that
are cut off, mis-chunked, multi-member or trailing-garbage gzip, or bombs (ingest/transport.py)."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.request
from urllib.parse import urlsplit

import pytest

from support import EVENT, POST, count, ndjson, truncate_events


@pytest.mark.parametrize("path", ["/", "/v0/docs"])
def test_html_pages_send_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_json_answers_are_not_sniffed_and_leak_no_referrer(client, auth):
    for response in (client.get("/v0/pipes/top_products.json", headers=auth), client.get("/no-such-route")):
        assert response.is_json
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert "Content-Security-Policy" not in response.headers  # HTML pages only


# -- transport: all or nothing (ingest/transport.py), through the production server ------

IMPORT = "/v0/datasources?name=ecommerce_events&mode=append&format=ndjson"


def raw_request(base: str, token: str, path: str, head: dict, body: bytes) -> tuple[int, dict]:
    """Send exactly these bytes (headers as given, no Content-Length fixed up), close our
    side, and read the answer: how a client that dies mid-upload looks to the server."""
    where = urlsplit(base)
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}", f"Authorization: Bearer {token}",
                 "Connection: close", *(f"{k}: {v}" for k, v in head.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


def events(n: int) -> list[dict]:
    return [{**EVENT, "user_id": f"cut-{i}"} for i in range(n)]


@pytest.mark.parametrize("path", [POST, IMPORT])
def test_a_cut_off_body_stores_nothing_and_its_retry_is_stored_once(live_server, settings, path):
    truncate_events(settings.database_url)
    body = ndjson(events(10))
    key = {"Idempotency-Key": f"cut-{path[4:10]}"} if path == POST else {}
    status, answer = raw_request(live_server.base, live_server.token, path,
                                 {"Content-Length": len(body), "Content-Type": "application/x-ndjson", **key},
                                 body[: len(body) // 2])
    assert status == 400 and "cut off" in answer["error"], answer
    assert count(settings.database_url) == 0
    status, answer = live_server.request("POST", path, body, {"Content-Type": "application/x-ndjson", **key})
    assert status in (200, 202) and answer["successful_rows"] == 10, answer
    assert count(settings.database_url) == 10


def test_broken_chunked_encoding_is_a_400_not_a_500(live_server, settings):
    truncate_events(settings.database_url)
    body = ndjson(events(2))
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\nZZ\r\nnot a chunk\r\n0\r\n\r\n"
    status, answer = raw_request(live_server.base, live_server.token, POST, {"Transfer-Encoding": "chunked"}, chunked)
    assert status == 400, answer
    assert count(settings.database_url) == 0


@pytest.mark.parametrize("path", [POST, IMPORT])
def test_every_gzip_member_is_stored(live_server, settings, path):
    truncate_events(settings.database_url)
    body = gzip.compress(ndjson(events(3))) + gzip.compress(ndjson(events(4)))
    status, answer = live_server.request("POST", path, body, {"Content-Encoding": "gzip"})
    assert status in (200, 202) and answer["successful_rows"] == 7, answer
    assert count(settings.database_url) == 7


@pytest.mark.parametrize("path", [POST, IMPORT])
@pytest.mark.parametrize("tail", [b"garbage", b"\x1f", b"\x00" * 8])
def test_bytes_after_a_gzip_stream_are_refused(live_server, settings, path, tail):
    truncate_events(settings.database_url)
    status, answer = live_server.request("POST", path, gzip.compress(ndjson(events(3))) + tail,
                                         {"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in answer["error"], answer
    assert count(settings.database_url) == 0


def test_a_gzip_bomb_is_refused_early(live_server, settings):
    """A few kilobytes that would inflate to gigabytes: refused on its ratio, long before
    MAX_IMPORT_BYTES (10 GiB by default) is reached."""
    truncate_events(settings.database_url)
    bomb = gzip.compress(b"\n" * (64 << 20), 9)  # 64 MiB of newlines in ~64 kB
    assert len(bomb) < 100_000
    status, answer = live_server.request("POST", IMPORT, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "expands more than" in answer["error"], answer
    assert count(settings.database_url) == 0


# -- one line never costs the batch (ingest/rows.py, ingest/bulk.py) ---------------------

GOOD = json.dumps(EVENT).encode()
HOSTILE_LINES = {
    "nested 5,000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "an array 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an offset past the year 9999": GOOD.replace(b'"2026-10-05 10:15:00"', b'"9999-12-31 23:59:59-05:00"'),
    "an offset before the year 1": GOOD.replace(b'"2026-10-05 10:15:00"', b'"0001-01-01 00:00:00+05:00"'),
    "a 5,000-digit quantity": GOOD.replace(b'"quantity": 2', b'"quantity": ' + b"9" * 5000),
}


@pytest.mark.parametrize("what", sorted(HOSTILE_LINES))
def test_a_hostile_line_is_quarantined_and_the_others_stored(client, auth, empty_events, what):
    body = GOOD + b"\n" + HOSTILE_LINES[what] + b"\n" + GOOD + b"\n"
    for path in (POST, IMPORT):
        response = client.post(path, data=body, headers=auth)
        assert response.status_code in (200, 202), (path, response.get_json())
        answer = response.get_json()
        assert (answer["successful_rows"], answer["quarantined_rows"]) == (2, 1), (path, answer)


def test_csv_lines_that_cannot_be_read_cost_only_themselves(client, auth, empty_events):
    from cartpulse.ingest.bulk import MAX_LINE_BYTES

    header = ",".join(EVENT) + "\n"
    good = ",".join(str(v) for v in EVENT.values()) + "\n"
    huge_field = good.replace("shoes", "x" * (MAX_LINE_BYTES + 10))
    many_digits = good.replace(",2,", "," + "9" * 5000 + ",")
    body = (header + good + huge_field + many_digits + good).encode()
    response = client.post("/v0/datasources?name=ecommerce_events&mode=append&format=csv", data=body,
                           headers={**auth, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert (answer["successful_rows"], answer["quarantined_rows"]) == (2, 2), answer


def test_an_ndjson_import_line_past_the_limit_is_quarantined_never_held(client, auth, empty_events):
    from cartpulse.ingest.bulk import MAX_LINE_BYTES

    body = GOOD + b"\n" + b"x" * (3 * MAX_LINE_BYTES) + b"\n" + GOOD + b"\n"
    response = client.post(IMPORT, data=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert (answer["successful_rows"], answer["quarantined_rows"]) == (2, 1), answer
    quarantined = client.get(f"/v0/datasources/ecommerce_events_quarantine.json?import_id={answer['import_id']}",
                             headers=auth).get_json()["data"]
    assert [(row["c__line"], row["c__error"]) for row in quarantined] == [(2, [f"longer than {MAX_LINE_BYTES} bytes"])]


# -- secrets and what others can make the service say -----------------------------------

def test_openapi_servers_never_come_from_the_host_header(client, app):
    forged = client.get("/v0/openapi.json", headers={"Host": "evil.example"}).get_json()
    assert forged["servers"] == [{"url": "/"}]
    from dataclasses import replace

    from cartpulse.context import service

    state = service(app)
    original = state.settings
    state.settings = replace(original, public_url="https://analytics.shop.example")
    try:
        assert client.get("/v0/openapi.json", headers={"Host": "evil.example"}).get_json()["servers"] == \
            [{"url": "https://analytics.shop.example"}]
    finally:
        state.settings = original


def test_a_huge_quarantined_value_is_capped_like_the_line(client, auth, empty_events):
    from cartpulse.ingest.rows import MAX_RAW_LINE

    huge = {**EVENT, "category": "x" * (10 * 1024 * 1024)}  # 10 MB: over 1,000 characters, quarantined
    answer = client.post(POST, data=json.dumps(huge).encode(), headers=auth).get_json()
    assert answer["quarantined_rows"] == 1, answer
    row = client.get(f"/v0/datasources/ecommerce_events_quarantine.json?import_id={answer['import_id']}",
                     headers=auth).get_json()["data"][0]
    assert len(row["category"]) == MAX_RAW_LINE and len(row["c__raw"]) == MAX_RAW_LINE
    assert row["c__error_column"] == ["category"]


def test_tokens_are_redacted_from_the_access_log(built, admin_token, tmp_path):
    from support import ApiServer

    log = tmp_path / "access.log"
    server = ApiServer(built, admin_token, tmp_path, RATE_LIMIT_RPS="0", ACCESS_LOG=str(log))
    server.start()
    try:
        for path in (f"/v0/pipes/top_products.json?limit=3&token={admin_token}",
                     f"/v0/pipes/top_products.json?token={admin_token}&limit=3"):
            with urllib.request.urlopen(server.http.base + path, timeout=30) as response:
                assert response.status == 200
    finally:
        server.stop()
    text = log.read_text()
    assert admin_token not in text
    assert text.count("token=[redacted]") == 2, text


# -- values the aggregates can carry -----------------------------------------------------

def test_the_largest_accepted_values_go_through_every_endpoint_and_a_refresh(client, auth, empty_events, settings):
    """The declared bounds (models/staging/__sources.yml) keep every sum finite and exact:
    the extreme events are answered right by every endpoint, a refresh absorbs them, and
    the answers after it are the same."""
    import expected
    from cartpulse.config import PROJECT_DIR
    from cartpulse.project.datasources import declared
    from support import dbt_ok

    columns = {c.name: c for c in declared(PROJECT_DIR.resolve(), "raw")["ecommerce_events"].columns}
    top_price, low_price, top_quantity = columns["price"].max, columns["price"].min, columns["quantity"].max
    assert top_price and low_price and top_quantity, "price and quantity must declare bounds"
    extreme = [{**EVENT, "event_time": f"2026-10-0{day} 10:15:00", "product_id": product, "country": country,
                "price": price, "quantity": top_quantity}
               for day, product, country, price in [(1, "max", "France", top_price), (1, "max", "Spain", top_price),
                                                    (2, "max", "France", top_price), (3, "min", "France", low_price)]]
    over = [{**EVENT, "price": top_price * 1.5}, {**EVENT, "quantity": top_quantity + 1}]
    answer = client.post(POST, data=ndjson(extreme + over), headers=auth).get_json()
    assert (answer["successful_rows"], answer["quarantined_rows"]) == (4, 2), answer

    asks = {"top_products": [{}, {"country": "France"}, {"start_date": "2026-10-01", "end_date": "2026-10-02 12:00:00"}],
            "events_by_country": [{}, {"start_date": "2026-10-01 10:00:00", "end_date": "2026-10-03"}],
            "total_revenue": [{}, {"interval": "1 day"}, {"country": "France", "interval": "1 hour"}]}

    def answers() -> dict:
        got = {}
        for pipe, cases in asks.items():
            for params in cases:
                response = client.get(f"/v0/pipes/{pipe}.json", query_string=params, headers=auth)
                assert response.status_code == 200, (pipe, params, response.get_json())
                data = response.get_json()["data"]
                want = getattr(expected, pipe)(extreme, **params)
                assert expected.same(data, want), (pipe, params, data, want)
                got[(pipe, tuple(sorted(params.items())))] = data
        return got

    before = answers()
    dbt_ok(settings, "run")  # a refresh absorbs them without an overflow
    assert answers() == before
