"""Raw HTTP/1.1 over a socket, for the tests of the HTTP front (test_http_front.py,
test_http_framing.py): bytes exactly as written, answers read until the server closes."""

from __future__ import annotations

import json
import socket

from support import POST, ApiServer


def connect(server: ApiServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)  # bounds a failure only


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def parse(answer: bytes) -> tuple[int, dict, bytes]:
    """(status, headers, body) of the first answer in ``answer``."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def exchange(server: ApiServer, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data``, keep our side open, and read until the server closes."""
    with connect(server) as sock:
        sock.sendall(data)
        return parse(read_all(sock))


def json_error(answer: tuple[int, dict, bytes]) -> tuple[int, str]:
    status, headers, body = answer
    assert headers["content-type"] == "application/json", headers
    return status, json.loads(body)["error"]


def post_head(server: ApiServer, length: int, extra: str = "") -> bytes:
    return (f"POST {POST} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {server.http.token}\r\n"
            f"Content-Type: application/x-ndjson\r\nContent-Length: {length}\r\n{extra}\r\n").encode()
