"""The HTTP front (cli/front.py): slow and idle clients never hold an app thread, and the
server's own errors (408, 413, 414, 431, malformed requests) come in the JSON error shape.

The servers here run one worker with two app threads: under gunicorn's gthread worker,
two slow clients were enough to stop every answer, ``/healthz`` included.
"""

from __future__ import annotations

import json
import re
import socket

import pytest
from raw_http import connect, exchange, json_error, parse, post_head, read_all
from support import EVENT, ApiServer, count, ndjson, truncate_events


@pytest.fixture(scope="module")
def patient(built, admin_token, tmp_path_factory):
    """Default timeouts: the slow clients stay slow for the whole test."""
    server = ApiServer(built, admin_token, tmp_path_factory.mktemp("front"), RATE_LIMIT_RPS="0",
                       WEB_WORKERS="1", WEB_THREADS="2")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict(built, admin_token, tmp_path_factory):
    """One-second timeouts and a 64 KiB body limit, so that the limits are met quickly."""
    server = ApiServer(built, admin_token, tmp_path_factory.mktemp("front"), RATE_LIMIT_RPS="0",
                       WEB_WORKERS="1", WEB_THREADS="2", HTTP_HEAD_TIMEOUT="1", HTTP_BODY_TIMEOUT="1",
                       HTTP_KEEPALIVE="1", MAX_BODY_BYTES=str(64 * 1024))
    server.start()
    yield server
    server.stop()


def test_idle_and_slow_clients_hold_no_thread(patient, settings):
    truncate_events(settings.database_url)
    body = ndjson([{**EVENT, "user_id": "slow-clients"}])
    idle = [connect(patient) for _ in range(200)]
    half_heads = [connect(patient) for _ in range(30)]
    half_bodies = [connect(patient) for _ in range(30)]
    try:
        for sock in half_heads:  # a head that stops mid-way (a slowloris between two bytes)
            sock.sendall(b"GET /v0/pipes/top_products.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for sock in half_bodies:  # a complete head, then a body that stops half-way
            sock.sendall(post_head(patient, len(body)) + body[: len(body) // 2])
        # Two threads, 260 stalled clients: each answer below needs a thread of its own.
        assert patient.http.request("GET", "/healthz")[0] == 200
        status, answer = patient.http.post_events([{**EVENT, "user_id": "fast-client"}])
        assert status == 202 and answer["successful_rows"] == 1, answer
        rows = patient.http.pipe("events_by_country")
        assert sum(r["event_count"] for r in rows) == 1
    finally:
        for sock in idle + half_heads + half_bodies:
            sock.close()
    assert count(settings.database_url) == 1  # none of the half bodies reached the app


def test_a_head_that_never_ends_is_a_408_in_the_error_shape(strict):
    status, error = json_error(exchange(strict, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"))
    assert status == 408 and "HTTP_HEAD_TIMEOUT" in error


def test_a_body_that_stalls_is_a_408_and_stores_nothing(strict, settings):
    truncate_events(settings.database_url)
    body = ndjson([{**EVENT, "user_id": f"stall-{i}"} for i in range(4)])
    status, error = json_error(exchange(strict, post_head(strict, len(body)) + body[: len(body) // 2]))
    assert status == 408 and "HTTP_BODY_TIMEOUT" in error and "nothing was stored" in error
    assert count(settings.database_url) == 0


def test_an_idle_kept_alive_connection_is_closed(strict):
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)  # the answer, then the close after HTTP_KEEPALIVE
    assert parse(answer)[0] == 200


def test_a_body_over_the_limit_is_refused_before_it_is_sent(strict):
    """With ``Expect: 100-continue`` the client learns of the 413 without sending a byte."""
    status, error = json_error(exchange(strict, post_head(strict, 10 * 1024 * 1024, "Expect: 100-continue\r\n")))
    assert status == 413 and "MAX_BODY_BYTES" in error


def test_a_chunked_body_over_the_limit_is_a_413(strict):
    chunk = b"x" * 200_000
    data = post_head(strict, 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked") + b"%x\r\n%s\r\n" % (len(chunk), chunk)
    status, error = json_error(exchange(strict, data))
    assert status == 413 and "MAX_BODY_BYTES" in error
    assert "Traceback" not in strict.log()  # the rest of the chunk is dropped, not parsed


@pytest.mark.parametrize(("data", "status", "words"), [
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request line"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n", 431, "request head"),
    (b"GARBAGE\r\n\r\n", 400, "malformed"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400, "malformed"),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "malformed"),  # HTTP/1.1 without Host
])
def test_the_servers_own_errors_are_in_the_error_shape(strict, data, status, words):
    got, error = json_error(exchange(strict, data))
    assert got == status and words in error, error


def test_expect_100_continue_then_the_body(strict, settings):
    truncate_events(settings.database_url)
    body = ndjson([{**EVENT, "user_id": "continue"}])
    with connect(strict) as sock:
        sock.sendall(post_head(strict, len(body), "Expect: 100-continue\r\nConnection: close\r\n"))
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        sock.sendall(body)
        status, _, answer = parse(read_all(sock))
    assert status == 202 and json.loads(answer)["successful_rows"] == 1
    assert count(settings.database_url) == 1


def test_pipelined_requests_are_answered_in_order(strict):
    with connect(strict) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /no-such-route HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_all(sock)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert statuses == [200, 404, 200], answer
    assert answer.endswith(b"\r\n\r\n")  # the HEAD answer has headers and no body


def test_a_long_answer_arrives_whole_to_a_slow_reader(patient, settings):
    """An answer over the front's 256 KiB hand-over goes out piece by piece, the app's
    thread waiting while the client's socket is full: a reader that takes small sips
    still gets every byte, and the connection stays usable."""
    truncate_events(settings.database_url)
    events = [{**EVENT, "user_id": f"long-{i:05d}", "product_id": "p" * 200} for i in range(4000)]
    assert patient.http.post_events(events)[0] == 202
    path = "/v0/datasources/ecommerce_events.ndjson?limit=10000"
    with connect(patient) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {patient.http.token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(1024):
            answer += chunk
    status, headers, body = parse(answer)
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    assert status == 200 and len(body) > 256 * 1024
    assert sorted(json.loads(line)["user_id"] for line in body.splitlines()) == sorted(e["user_id"] for e in events)


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, body = out + rest[:size], rest[size + 2:]
