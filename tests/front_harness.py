"""The HTTP front's connection (cli/http_connection.py) in this process, serving an app that
echoes how each request was framed: for the differential test and the fuzz, which send
thousands of raw requests and need no database.

``EchoFront`` runs an asyncio loop in a thread, with the front's own ``HttpConnection``
protocol on a free port; ``frame(data)`` sends raw bytes on a fresh connection, closes
its side, and answers what the front made of them: the requests it ran, in order, as
(method, target, body length), and the error status it answered with, if any.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cartpulse.cli.http_connection import HttpConnection
from cartpulse.cli.http_request import Limits

#: The echo front's body limit: bodies of the corpus are far smaller.
BODY_LIMIT = 1 << 20
#: How long one exchange may take before the front is said to hang (a failure bound only).
HANG = 10.0


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read()
    answer = json.dumps({"method": environ["REQUEST_METHOD"], "target": environ["RAW_URI"], "body": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [answer]


class _Log:
    def __init__(self):
        self.errors: list[str] = []

    def info(self, *args):
        pass

    def access(self, *args):
        pass

    def error(self, message, *args):
        self.errors.append(message % args)

    def exception(self, message, *args):
        self.errors.append(message % args)


@dataclass
class Framed:
    """What the front made of some bytes: the requests it ran, then its error status (or None)."""

    requests: list[tuple[str, str, int]] = field(default_factory=list)
    error: int | None = None
    message: str = ""


class EchoFront:
    def __init__(self, body_limit: int = BODY_LIMIT):
        self.log = _Log()
        limit = int(body_limit / 1.01) - 65536  # Limits.body adds gzip's room back
        self.limits = Limits(max_body=limit, max_import=limit, head_timeout=HANG, body_timeout=HANG, keepalive=HANG)
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="echo")
        self.loop = asyncio.new_event_loop()
        self.connections: set = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(HANG)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(self.loop.create_server(self._protocol, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _shut(self) -> None:
        """Stop listening and close every connection, lingering ones included (a refusal
        keeps reading for ``LINGER`` seconds): a transport left open warns when collected."""
        self.server.close()
        for connection in list(self.connections):
            connection.transport.abort()
        while self.connections:  # connection_lost takes each out, on a later turn of the loop
            await asyncio.sleep(0.01)
        await self.server.wait_closed()

    def _protocol(self) -> HttpConnection:
        return HttpConnection(echo_app, self.executor, self.limits, self.connections, self.log,
                              full=False, stopping=lambda: False)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self.loop).result(HANG)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG)
        self.executor.shutdown(wait=True)
        self.loop.close()

    def exchange(self, data: bytes) -> bytes:
        """Send ``data``, close our side, and read until the front closes (at most ``HANG`` s)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=HANG) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the front refused early and closed: its answer may still be readable
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
            return answer

    def frame(self, data: bytes) -> Framed:
        return parse_answers(self.exchange(data))


def parse_answers(answer: bytes) -> Framed:
    """The answers in order: echoed requests, then the front's error, if one came."""
    framed = Framed()
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", 0))
        body, answer = rest[:length], rest[length:]
        if status < 200:
            continue  # 100 Continue
        if status >= 400:
            framed.error, framed.message = status, json.loads(body)["error"]
            assert not answer, "bytes after an error answer"
            break
        echoed = json.loads(body)
        framed.requests.append((echoed["method"], echoed["target"], echoed["body"]))
    return framed

