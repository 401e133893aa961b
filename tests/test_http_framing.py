"""Request framing (cli/http_framing.py) against ``cartpulse serve`` (issue #26).

Each class of framing fault is one request posting an event, with a valid POST of another
event right behind it on the same connection. The front must answer the first in the
JSON error shape (400; 501 for a transfer coding or method it does not implement), close
the connection, and never read the bytes behind it as a request: the database holds
neither event. Faults in the head are answered at once, before any body; so are chunk
sizes past the bounds, without waiting for the rest of the chunk.
"""

from __future__ import annotations

import json
import re

import pytest
from raw_http import connect, exchange, json_error, parse, post_head, read_all
from support import EVENT, POST, ApiServer, count, ndjson, truncate_events

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(built, admin_token, tmp_path_factory):
    server = ApiServer(built, admin_token, tmp_path_factory.mktemp("framing"), RATE_LIMIT_RPS="0",
                       WEB_WORKERS="1", WEB_THREADS="2", MAX_BODY_BYTES=str(LIMIT))
    server.start()
    yield server
    server.stop()


def head(server: ApiServer, *fields: str, line: str = f"POST {POST} HTTP/1.1", host: bool = True) -> bytes:
    lines = [line] + ([f"Host: 127.0.0.1:{server.port}"] if host else []) + [
        f"Authorization: Bearer {server.http.token}", "Content-Type: application/x-ndjson", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


BODY = ndjson([{**EVENT, "user_id": "refused"}])
N = len(BODY)
TE = "Transfer-Encoding: chunked"

#: name -> (the request, given the server; the status; words of the error)
CLASSES = {
    "content-length with transfer-encoding (CL.TE)": (
        lambda s: head(s, f"Content-Length: {len(chunked(BODY))}", TE) + chunked(BODY), 400, "Content-Length and Transfer-Encoding"),
    "content-length repeated": (lambda s: head(s, f"Content-Length: {N}", f"Content-Length: {N}") + BODY, 400, "Content-Length"),
    "content-length a list": (lambda s: head(s, f"Content-Length: {N}, {N}") + BODY, 400, "Content-Length"),
    "content-length signed": (lambda s: head(s, f"Content-Length: +{N}") + BODY, 400, "Content-Length"),
    "content-length in hex": (lambda s: head(s, f"Content-Length: 0x{N:x}") + BODY, 400, "Content-Length"),
    "transfer-encoding gzip, chunked": (lambda s: head(s, "Transfer-Encoding: gzip, chunked") + chunked(BODY), 501, "not implemented"),
    "transfer-encoding chunked, gzip": (lambda s: head(s, "Transfer-Encoding: chunked, gzip") + chunked(BODY), 400, "end in chunked"),
    "transfer-encoding chunked twice": (lambda s: head(s, TE, TE) + chunked(BODY), 400, "end in chunked"),
    "transfer-encoding xchunked": (lambda s: head(s, "Transfer-Encoding: xchunked") + chunked(BODY), 400, "end in chunked"),
    "transfer-encoding on http/1.0": (
        lambda s: head(s, TE, line=f"POST {POST} HTTP/1.0", host=False) + chunked(BODY), 400, "HTTP/1.0"),
    "chunk size of 20 hex digits": (lambda s: head(s, TE) + b"1" * 20, 400, "16 hex digits"),
    "chunk size past the body limit": (lambda s: head(s, TE) + b"%x\r\n" % (LIMIT * 4) + BODY, 413, "MAX_BODY_BYTES"),
    "chunk extension with a control character": (
        lambda s: head(s, TE) + b"%x;x=\x01\r\n%s\r\n0\r\n\r\n" % (N, BODY), 400, "chunk-size line"),
    "trailer with a control character": (lambda s: head(s, TE) + chunked(BODY)[:-2] + b"X: a\x00b\r\n\r\n", 400, "control character"),
    "whitespace before the colon": (lambda s: head(s, f"Content-Length : {N}") + BODY, 400, "whitespace between"),
    "header value with a control character": (lambda s: head(s, f"Content-Length: {N}", "X-A: a\x0bb") + BODY, 400, "control character"),
    "header name with a forbidden byte": (lambda s: head(s, f"Content-Length: {N}", "X(A): b") + BODY, 400, "header name"),
    "obs-fold": (lambda s: head(s, f"Content-Length: {N}", "X-A: a", " b") + BODY, 400, "obs-fold"),
    "bare LF": (lambda s: head(s, f"Content-Length: {N}").replace(b"\r\n", b"\n") + BODY, 400, "bare LF"),
    "connect (authority-form)": (lambda s: head(s, line="CONNECT 127.0.0.1:5432 HTTP/1.1"), 501, "no proxy"),
    "options * (asterisk-form)": (lambda s: head(s, line="OPTIONS * HTTP/1.1"), 501, "OPTIONS *"),
}


def valid_post(server: ApiServer, user: str) -> bytes:
    body = ndjson([{**EVENT, "user_id": user}])
    return post_head(server, len(body)) + body


@pytest.mark.parametrize("name", CLASSES)
def test_a_framing_fault_is_refused_and_nothing_behind_it_is_read(server, settings, name):
    build, expected, words = CLASSES[name]
    truncate_events(settings.database_url)
    with connect(server) as sock:
        sock.sendall(build(server) + valid_post(server, "behind-the-refusal"))
        answer = read_all(sock)  # the front closes after its answer: no EOF of ours needed
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # one answer: the valid POST was never read
    status, error = json_error(parse(answer))
    assert (status, parse(answer)[1]["connection"]) == (expected, "close") and words in error, (status, error)
    assert count(settings.database_url) == 0


def test_a_smuggled_request_is_never_run(server, settings):
    """Issue #26's CL.TE: a chunked body that ends at once, then a whole request hidden in
    what Content-Length calls the body. Main answered the first and ran the second."""
    truncate_events(settings.database_url)
    hidden = valid_post(server, "smuggled")
    data = head(server, f"Content-Length: {5 + len(hidden)}", TE) + b"0\r\n\r\n" + hidden
    status, error = json_error(exchange(server, data))
    assert status == 400 and "Content-Length and Transfer-Encoding" in error
    assert count(settings.database_url) == 0


def test_pipelined_posts_are_answered_in_order_and_stored(server, settings):
    """Chunked, then Content-Length, then absolute-form: each framed where it ends."""
    truncate_events(settings.database_url)
    first = ndjson([{**EVENT, "user_id": "pipelined-1"}])
    third = ndjson([{**EVENT, "user_id": "pipelined-3"}])
    absolute = head(server, f"Content-Length: {len(third)}", "Connection: close",
                    line=f"POST http://127.0.0.1:{server.port}{POST} HTTP/1.1") + third
    with connect(server) as sock:
        sock.sendall(head(server, TE) + chunked(first) + valid_post(server, "pipelined-2") + absolute)
        answer = read_all(sock)
    assert [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)] == [202, 202, 202], answer
    assert [json.loads(line)["successful_rows"] for line in re.findall(rb"\r\n\r\n(\{[^\r]*\})", answer)] == [1, 1, 1]
    assert count(settings.database_url) == 3


def test_a_chunk_size_of_20_hex_digits_is_answered_at_once(server):
    """Issue #26: main waited for the rest of the chunk (HTTP_BODY_TIMEOUT, 30 s here) with
    nothing behind the size; now the 17th digit is enough. The socket's timeout (60 s)
    only bounds a failure."""
    status, error = json_error(exchange(server, head(server, TE) + b"f" * 20))
    assert status == 400 and "16 hex digits" in error
