"""2,000 concurrent connections against one worker started with the common default of
1024 open files: the front raises its soft limit, answers every connection (200 or, past
``HTTP_MAX_CONNECTIONS``, 503), and stores exactly the events it acknowledged."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import time

import pytest
from cartpulse.cli.open_files import RESERVE, connection_cap, raise_soft_limit
from support import EVENT, ApiServer, count, truncate_events

CONNECTIONS = 2000
CAP = 1500


def test_the_soft_limit_is_raised_and_the_cap_leaves_room():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        assert connection_cap(2000, threads=4) == min(256, hard) - RESERVE - 8  # room kept for the rest
        assert raise_soft_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _request(i: int) -> bytes:
    body = json.dumps({**EVENT, "user_id": f"conn-{i}"}).encode()
    return (f"POST /v0/events?name=ecommerce_events HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            f"Idempotency-Key: conn-{i}\r\n").encode()


def _answers(socks: list[socket.socket], seconds: float) -> dict[int, int]:
    """The status of each socket's answer (its first line), waiting at most ``seconds``."""
    sel = selectors.DefaultSelector()
    buffers = {}
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, i)
        buffers[i] = b""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while len(statuses) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1):
            i = key.data
            try:
                data = key.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionError:
                data = b""
            buffers[i] += data
            if b"\r\n" in buffers[i] or not data:
                line = buffers[i].split(b"\r\n", 1)[0].split()
                statuses[i] = int(line[1]) if len(line) > 1 else 0
                sel.unregister(key.fileobj)
    sel.close()
    return statuses


def test_2000_connections_from_a_default_open_files_limit(built, admin_token, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CONNECTIONS + 2 * RESERVE + 100:
        pytest.skip(f"the hard limit on open files ({hard}) is below {CONNECTIONS} connections: nothing to raise to")
    truncate_events(built.database_url)
    server = ApiServer(built, admin_token, tmp_path, WEB_WORKERS="1", HTTP_MAX_CONNECTIONS=str(CAP), HTTP_KEEPALIVE="300",
                       HTTP_HEAD_TIMEOUT="300", RATE_LIMIT_RPS="0")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the server inherits: the usual default
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this test's own 2,000 sockets
    socks = []
    try:
        auth = f"Authorization: Bearer {admin_token}\r\n\r\n".encode()
        for i in range(CONNECTIONS):  # each request sent whole as it connects: none is sent to a closed socket
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            socks.append(sock)
            sock.sendall(_request(i) + auth + json.dumps({**EVENT, "user_id": f"conn-{i}"}).encode())
        statuses = _answers(socks, seconds=180)
        assert len(statuses) == CONNECTIONS, f"{CONNECTIONS - len(statuses)} connections got no answer"
        seen = {status: list(statuses.values()).count(status) for status in set(statuses.values())}
        assert set(seen) <= {200, 202, 503}, (seen, server.log()[-3000:])
        acknowledged = seen.get(200, 0) + seen.get(202, 0)
        assert acknowledged >= CAP, seen  # the first CAP stay open (long keep-alive): all served
        assert seen.get(503, 0) >= 1, seen  # past the cap, refused with an answer
        assert count(built.database_url) == acknowledged  # what was acknowledged is stored, once
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
