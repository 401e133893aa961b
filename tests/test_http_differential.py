"""The HTTP front's framing, compared with llhttp's, and fuzzed (issue #26).

One corpus of malformed and edge-case requests (the request-smuggling classes PortSwigger
describes: CL.TE, TE.CL, TE.TE with obfuscated Transfer-Encoding; the HTTP Garden's
differential cases: bytes where they do not belong, odd versions and targets, chunk sizes
and extensions) goes to CartPulse's front (its own ``HttpConnection`` in this process,
serving an app that echoes each request: front_harness.py) and to llhttp, the parser of
Node's ``node:http``, in its default strict mode (llhttp_frame.js). Each must frame every
request the same way: the same requests (method, target, body length) in the same order,
and both refuse or both accept what follows. The only differences allowed are listed in
``STRICTER``, each with why CartPulse refuses what llhttp takes.

The fuzz (hypothesis) feeds generated heads and chunked bodies to the framer alone and to
the front over a socket: never an exception, never a hang, never a 5xx but 501 and 505.
``FUZZ_EXAMPLES`` raises the number of examples (``make fuzz``; bench/fuzz.md).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cartpulse.cli.http_framing import Refusal, RequestFramer
from front_harness import BODY_LIMIT, EchoFront
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NODE_SCRIPT = Path(__file__).with_name("llhttp_frame.js")
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


def request(*fields: str, body: bytes = b"", line: str = "POST /e HTTP/1.1", host: bool = True) -> bytes:
    head = [line] + (["Host: x"] if host else []) + list(fields)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


NEXT = request(line="GET /next HTTP/1.1")  # a second request: is it read, and where does it start?
CHUNKED = "Transfer-Encoding: chunked"

CORPUS: dict[str, bytes] = {
    # plain requests, pipelined
    "get": request(line="GET / HTTP/1.1"),
    "pipelined gets": request(line="GET /a HTTP/1.1") + request(line="GET /b HTTP/1.1") + NEXT,
    "content-length body": request("Content-Length: 5", body=b"hello") + NEXT,
    "content-length leading zeros": request("Content-Length: 005", body=b"hello") + NEXT,
    "content-length zero": request("Content-Length: 0") + NEXT,
    "get with a body": request("Content-Length: 3", body=b"abc", line="GET /g HTTP/1.1") + NEXT,
    "chunked": request(CHUNKED, body=b"5\r\nhello\r\n0\r\n\r\n") + NEXT,
    "chunked upper-case coding": request("Transfer-Encoding: CHUNKED", body=b"1\r\na\r\n0\r\n\r\n") + NEXT,
    "chunked hex sizes": request(CHUNKED, body=b"A\r\n0123456789\r\nb\r\n0123456789a\r\n0\r\n\r\n") + NEXT,
    "chunked leading zeros": request(CHUNKED, body=b"0005\r\nhello\r\n0000\r\n\r\n") + NEXT,
    "chunked extension": request(CHUNKED, body=b"5;name=value\r\nhello\r\n0;last\r\n\r\n") + NEXT,
    "chunked quoted extension": request(CHUNKED, body=b'5;n="a b;c"\r\nhello\r\n0\r\n\r\n') + NEXT,
    "chunked trailer": request(CHUNKED, body=b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n") + NEXT,
    "http/1.0": request(line="GET / HTTP/1.0", host=False),
    "http/1.0 with content-length": request("Content-Length: 2", body=b"ok", line="POST /e HTTP/1.0", host=False),
    "absolute-form": request(line="GET http://example.com/p?q=1 HTTP/1.1") + NEXT,
    "expect 100-continue": request("Content-Length: 2", "Expect: 100-continue", body=b"ok") + NEXT,
    "header value with obs-text": request("X-Name: caf\xe9") + NEXT,
    "header value with a tab": request("X-Name: a\tb") + NEXT,
    "empty header value": request("X-Empty:") + NEXT,
    # CL.TE, TE.CL and TE.TE: two ways to find the end of one body
    "cl.te": request("Content-Length: 6", CHUNKED, body=b"0\r\n\r\nX") + NEXT,
    "te.cl": request(CHUNKED, "Content-Length: 4", body=b"5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n") + NEXT,
    "te.te xchunked": request("Transfer-Encoding: xchunked", "Content-Length: 3", body=b"abc") + NEXT,
    "te space before colon": request("Transfer-Encoding : chunked", body=b"0\r\n\r\n") + NEXT,
    "te tab before value": request("Transfer-Encoding:\tchunked", body=b"0\r\n\r\n") + NEXT,
    "te obs-fold": request("X: y", " Transfer-Encoding: chunked", body=b"0\r\n\r\n") + NEXT,
    "te value folded": request("Transfer-Encoding:", " chunked", body=b"0\r\n\r\n") + NEXT,
    "te twice": request(CHUNKED, CHUNKED, body=b"0\r\n\r\n") + NEXT,
    "te chunked then identity": request("Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n") + NEXT,
    "te identity then chunked": request("Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n") + NEXT,
    "te gzip then chunked": request("Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n") + NEXT,
    "te gzip alone": request("Transfer-Encoding: gzip", body=b"0\r\n\r\n") + NEXT,
    "te with a parameter": request("Transfer-Encoding: chunked;q=1", body=b"0\r\n\r\n") + NEXT,
    "te empty": request("Transfer-Encoding:", body=b"0\r\n\r\n") + NEXT,
    "te vertical tab": request("Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n") + NEXT,
    "te on http/1.0": request(CHUNKED, body=b"3\r\nabc\r\n0\r\n\r\n", line="POST /e HTTP/1.0", host=False) + NEXT,
    # Content-Length in forms RFC 9112 §6.3 refuses
    "cl twice": request("Content-Length: 3", "Content-Length: 3", body=b"abc") + NEXT,
    "cl twice, different": request("Content-Length: 3", "Content-Length: 4", body=b"abcd") + NEXT,
    "cl list": request("Content-Length: 3, 3", body=b"abc") + NEXT,
    "cl plus": request("Content-Length: +3", body=b"abc") + NEXT,
    "cl minus": request("Content-Length: -3", body=b"abc") + NEXT,
    "cl hex": request("Content-Length: 0x3", body=b"abc") + NEXT,
    "cl decimal point": request("Content-Length: 3.0", body=b"abc") + NEXT,
    "cl empty": request("Content-Length:", body=b"abc") + NEXT,
    "cl inner space": request("Content-Length: 1 2", body=b"abc") + NEXT,
    "cl overflow": request("Content-Length: 18446744073709551617", body=b"abc") + NEXT,
    "cl space before colon": request("Content-Length : 3", body=b"abc") + NEXT,
    # chunk sizes, extensions and trailers
    "chunk size 17 hex digits": request(CHUNKED, body=b"1" + b"0" * 16 + b"\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size 20 hex digits": request(CHUNKED, body=b"f" * 20 + b"\r\n"),
    "chunk size 0x": request(CHUNKED, body=b"0x3\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size negative": request(CHUNKED, body=b"-3\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size empty": request(CHUNKED, body=b"\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size then space": request(CHUNKED, body=b"3 \r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size then space and extension": request(CHUNKED, body=b"3 ;x=y\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size leading space": request(CHUNKED, body=b" 3\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk size bare lf": request(CHUNKED, body=b"3\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk data too long": request(CHUNKED, body=b"3\r\nabcd\r\n0\r\n\r\n") + NEXT,
    "chunk data bare lf": request(CHUNKED, body=b"3\r\nabc\n0\r\n\r\n") + NEXT,
    "chunk data no crlf": request(CHUNKED, body=b"3\r\nabc0\r\n\r\n") + NEXT,
    "chunk extension nul": request(CHUNKED, body=b"3;x=\x00\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk extension bare cr": request(CHUNKED, body=b"3;x\ry\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk extension bare lf": request(CHUNKED, body=b"3;x\ny\r\nabc\r\n0\r\n\r\n") + NEXT,
    "chunk extension lf in quotes": request(CHUNKED, body=b'3;x="a\nb"\r\nabc\r\n0\r\n\r\n') + NEXT,
    "chunk extension no name": request(CHUNKED, body=b"3;=y\r\nabc\r\n0\r\n\r\n") + NEXT,
    "trailer nul": request(CHUNKED, body=b"0\r\nX: a\x00b\r\n\r\n") + NEXT,
    "trailer space before colon": request(CHUNKED, body=b"0\r\nX : a\r\n\r\n") + NEXT,
    "trailer bare lf": request(CHUNKED, body=b"0\r\nX: a\n\r\n") + NEXT,
    "trailer obs-fold": request(CHUNKED, body=b"0\r\nX: a\r\n b\r\n\r\n") + NEXT,
    "last chunk without end": request(CHUNKED, body=b"0\r\n") + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    # the head's bytes and lines
    "bare lf line ends": b"GET / HTTP/1.1\nHost: x\n\n" + NEXT,
    "bare lf after the request line": b"GET / HTTP/1.1\nHost: x\r\n\r\n" + NEXT,
    "bare cr in a header": request("X: a\rb") + NEXT,
    "nul in a header value": request("X: a\x00b") + NEXT,
    "escape in a header value": request("X: a\x1bb") + NEXT,
    "del in a header value": request("X: a\x7fb") + NEXT,
    "space before colon": request("X : y") + NEXT,
    "tab before colon": request("X\t: y") + NEXT,
    "empty header name": request(": y") + NEXT,
    "header name with brackets": request("X[1]: y") + NEXT,
    "header name with obs-text": request("X\xe9: y") + NEXT,
    "header without colon": request("Just words") + NEXT,
    "obs-fold": request("X: a", " b") + NEXT,
    "obs-fold with a tab": request("X: a", "\tb") + NEXT,
    "whitespace before the first header": b"GET / HTTP/1.1\r\n Host: x\r\n\r\n" + NEXT,
    "leading empty line": b"\r\n" + request(line="GET / HTTP/1.1") + NEXT,
    # the request line
    "two spaces after the method": request(line="GET  / HTTP/1.1") + NEXT,
    "tab separators": request(line="GET\t/\tHTTP/1.1") + NEXT,
    "trailing space": request(line="GET / HTTP/1.1 ") + NEXT,
    "lower-case version": request(line="GET / http/1.1") + NEXT,
    "http/1.2": request(line="GET / HTTP/1.2") + NEXT,
    "http/2.0": request(line="GET / HTTP/2.0") + NEXT,
    "http/0.9": b"GET /\r\n\r\n",
    "version without minor": request(line="GET / HTTP/1") + NEXT,
    "nul in the target": request(line="GET /a\x00b HTTP/1.1") + NEXT,
    "obs-text in the target": request(line="GET /caf\xe9 HTTP/1.1") + NEXT,
    "fragment in the target": request(line="GET /a#b HTTP/1.1") + NEXT,
    "lower-case method": request(line="get / HTTP/1.1") + NEXT,
    "unknown method": request(line="FOO / HTTP/1.1") + NEXT,
    "trace": request(line="TRACE / HTTP/1.1") + NEXT,
    "propfind": request(line="PROPFIND / HTTP/1.1") + NEXT,
    "connect": request(line="CONNECT example.com:443 HTTP/1.1") + NEXT,
    "options asterisk": request(line="OPTIONS * HTTP/1.1") + NEXT,
    "get asterisk": request(line="GET * HTTP/1.1") + NEXT,
    "relative target": request(line="GET a/b HTTP/1.1") + NEXT,
    "no host": request(line="GET / HTTP/1.1", host=False) + NEXT,
    "two hosts": request("Host: y", line="GET / HTTP/1.1") + NEXT,
    # cut off by the client's end
    "head cut off": b"GET / HTTP/1.1\r\nHost: x\r\n",
    "body cut off": request("Content-Length: 10", body=b"abc"),
    "chunk cut off": request(CHUNKED, body=b"a\r\nabc"),
}

#: Requests CartPulse refuses and llhttp (strict mode) takes, each with why. Anything else
#: the two frame differently fails the test.
STRICTER = {
    "te on http/1.0": "RFC 9112 §6.1: a server MUST treat Transfer-Encoding in an HTTP/1.0 message as faulty framing",
    "te identity then chunked": "identity is no coding (RFC 9112 §7 no longer lists it); a coding CartPulse cannot decode is a 501",
    "te gzip then chunked": "CartPulse decodes no transfer coding but chunked (501); gzip bodies come as Content-Encoding",
    "propfind": "a method the API has no route for is a 501 at the front",
    "connect": "CartPulse is no proxy: CONNECT is a 501 (llhttp takes it and hands the socket on)",
    "options asterisk": "no server-wide OPTIONS: 501",
    "get asterisk": "asterisk-form is only OPTIONS' (RFC 9112 §3.2.4)",
    "no host": "RFC 9112 §3.2: an HTTP/1.1 request without Host MUST be answered 400",
    "two hosts": "RFC 9112 §3.2: more than one Host MUST be answered 400",
    "http/2.0": "only HTTP/1.0 and 1.1 are served (505); llhttp takes the request, then closes the connection",
    "http/0.9": "no HTTP/0.9: a request line without a version is a 400",
    "te empty": "an empty Transfer-Encoding is refused; llhttp ignores it and reads the chunked body as the next request",
    "chunk extension no name": "an extension's name is a token, never empty (RFC 9112 §7.1.1)",
    "leading empty line": "an empty line before a request is how a client that miscounted its last body looks;"
                          " RFC 9112 §2.2 lets a server ignore it (SHOULD), CartPulse (like h11) refuses it",
    "two spaces after the method": "RFC 9112 §3: the parts of a request line are separated by one SP",
    "trace": "TRACE echoes a request (credentials included) back: a 501, like any method without a route",
}


def llhttp_framing(corpus: list[bytes]) -> list[dict]:
    encoded = json.dumps([base64.b64encode(data).decode() for data in corpus])
    done = subprocess.run(["node", str(NODE_SCRIPT)], input=encoded, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def front():
    server = EchoFront()
    yield server
    server.close()
    assert server.log.errors == []


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node (llhttp is its HTTP parser)")
def test_cartpulse_frames_every_request_as_llhttp_does(front):
    names = list(CORPUS)
    theirs = dict(zip(names, llhttp_framing([CORPUS[name] for name in names])))
    differences, stale = [], []
    for name in names:
        ours = front.frame(CORPUS[name])
        llhttp = [(m["method"], m["target"], m["body"]) for m in theirs[name]["messages"]]
        if llhttp and theirs[name]["messages"][-1]["upgrade"]:
            llhttp_refuses = False  # llhttp stops, handing the rest to the app (CONNECT): taken
        else:
            llhttp_refuses = theirs[name]["error"] is not None
        same = ours.requests == llhttp and (ours.error is not None) == llhttp_refuses
        if name in STRICTER:
            if same:
                stale.append(name)
            elif not (ours.error is not None and llhttp[:len(ours.requests)] == ours.requests):
                differences.append((name, ours, theirs[name]))
        elif not same:
            differences.append((name, ours, theirs[name]))
    assert differences == [], "\n".join(f"{name}: CartPulse {ours}, llhttp {theirs}" for name, ours, theirs in differences)
    assert stale == [], f"{stale} listed in STRICTER, yet framed alike: take them off the list"


def test_every_refusal_is_a_client_error_but_501_and_505(front):
    for name, data in CORPUS.items():
        framed = front.frame(data)
        assert framed.error is None or framed.error < 500 or framed.error in (501, 505), (name, framed)


# -- the fuzz --------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(["Host", "Content-Length", "Transfer-Encoding", "X", "Expect", "Connection"])
FIELD_BYTES = st.binary(max_size=12) | st.sampled_from(
    [b"chunked", b"0", b"5", b"-1", b"1, 1", b" chunked ", b"gzip, chunked", b"100-continue", b"close", b"\x00"])
NOISE = st.sampled_from([b"", b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b";", b"\xff", b"0"])


@st.composite
def heads(draw) -> bytes:
    """A request head, mostly well formed, with noise where the framing rules bite."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"get", b"CONNECT", b"OPTIONS"]))
    target = draw(st.sampled_from([b"/", b"/e?x=1", b"*", b"http://h/p", b"h:1", b"/a b"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/1.1 "]))
    lines = [method + b" " + target + b" " + version]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(FIELD_NAMES).encode()
        lines.append(name + draw(NOISE) + b":" + draw(NOISE) + draw(FIELD_BYTES))
    return b"\r\n".join(lines) + draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b"\r\n\r\n\r\n"]))


@st.composite
def chunked_bodies(draw) -> bytes:
    """Chunks whose sizes, extensions, data and ends drift from the grammar now and then."""
    body = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=20))
        size = draw(st.sampled_from([b"%x" % len(data), b"%X" % len(data), b"%x" % (len(data) + 1), b"f" * 17, b"-1", b""]))
        extension = draw(st.sampled_from([b"", b";a=b", b';a="x;y"', b"; a", b";\x00", b" "]))
        body += size + extension + draw(NOISE) + b"\n" + data + draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return body + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX: 1\r\n\r\n", b"0\r\n", b"0\r\nX : 1\r\n\r\n", b""]))


def run_framer(data: bytes, limit: int | None = BODY_LIMIT) -> int | None:
    """Feed ``data`` to a framer one message after another; the refusal's status or None.
    Each step hands on bytes or stops: a framer that neither did would loop, and fail."""
    framer = RequestFramer(16 * 1024, 64 * 1024)
    framer.receive(data)
    for _ in range(10 * len(data) + 10):
        try:
            piece = framer.next_piece()
        except Refusal as refusal:
            return refusal.status
        framer.limit = limit
        if not piece:
            if not framer.done:
                return None  # needs more bytes
            framer.next_message()
    raise AssertionError("the framer went on without end")


@settings(max_examples=FUZZ_EXAMPLES * 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads(), chunked_bodies(), st.binary(max_size=40))
def test_the_framer_never_fails_or_loops(head, body, tail):
    status = run_framer(head + body + tail)
    assert status is None or status in (400, 413, 414, 431, 501, 505)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
@given(heads(), chunked_bodies(), st.binary(max_size=40))
def test_the_front_answers_every_fuzzed_request_without_a_5xx(front, head, body, tail):
    framed = front.frame(head + body + tail)  # a hang fails here, after front_harness.HANG seconds
    assert framed.error is None or framed.error < 500 or framed.error in (501, 505), framed
