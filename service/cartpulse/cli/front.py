"""The HTTP front: a gunicorn worker that never gives a Python thread to a slow client.

gunicorn's gthread worker hands a connection to a thread as soon as it is readable; the
thread then parses headers and the app reads the body, both at the client's pace. A dozen
sockets sending their headers a byte a second (or a few hundred idle ones) held every
thread of every worker, and ``/healthz`` stopped answering with them.

Here each worker runs an asyncio loop that owns every socket. The loop reads a request
whole, framed strictly by RFC 9112 (http_framing.py, which hands h11 one checked message
at a time; a framing fault is refused and the connection closed): the head within
``HTTP_HEAD_TIMEOUT`` seconds and at most ``MAX_HEAD`` bytes, the body with no pause longer
than ``HTTP_BODY_TIMEOUT`` and no larger than the route's limit (kept in memory up to ``SPOOL_BYTES``, then in a temporary
file). Only a complete request goes to the thread pool, which runs the WSGI app; so a thread
is busy only for as long as the app works, and a client that stalls costs a socket and a
timer. A body cut off or mis-chunked never reaches the app at all: nothing is stored, and
the retry with the same Idempotency-Key is stored once.

Errors the front answers itself (400 malformed request, 408 too slow, 413 too large, 414
URL too long, 431 headers too large, 501 a method or transfer coding not implemented, 505 an
HTTP version not served, 503 too many connections: ``HTTP_MAX_CONNECTIONS``,
cli/open_files.py) use the API's one error shape, ``{"error": "<message>"}``, like every
other error.

The response is written back by the loop; the app's thread waits while the client's socket
buffer is full, at most ``SEND_TIMEOUT`` seconds, then the connection is dropped. gunicorn's
master is unchanged: it forks the workers, restarts a dead one, and runs the hooks (the
multiprocess metrics). Stopping: SIGTERM stops accepting and lets requests in progress
finish (up to gunicorn's ``graceful_timeout``); SIGQUIT (what the master sends on Ctrl-C)
ends at once (``handle_quit``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from gunicorn.workers import base

from cartpulse.cli.http_connection import HttpConnection
from cartpulse.cli.http_request import Limits
from cartpulse.cli.open_files import connection_cap, raise_soft_limit

#: Seconds between the worker's heartbeats to the master (its timeout is far longer).
TICK = 1.0


class FrontWorker(base.Worker):
    """A gunicorn worker: an asyncio loop for the sockets, a thread pool for the app."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: set[HttpConnection] = set()
        self.limits = Limits.from_settings(self.app.settings)
        raise_soft_limit()  # inherited from the master, which raised it already; a no-op then
        #: Open connections kept (HTTP_MAX_CONNECTIONS, within the open-files limit); past it 503.
        self.max_connections = connection_cap(self.app.settings.max_connections, self.cfg.threads)

    def init_signals(self) -> None:
        super().init_signals()
        # The master turns a terminal's Ctrl-C into SIGQUIT for each worker.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def handle_quit(self, sig, frame) -> None:
        """SIGQUIT (Ctrl-C, through the master): end now, taking no lock. Requests already
        in the pool's threads finish (Python joins them at exit) and atexit handlers run
        (the pipe_stats queue is flushed). The heap is frozen rather than collected one last
        time: that collection took about half of a stop under load."""
        self.alive = False
        gc.freeze()  # the process ends: no last full collection of its heap
        sys.exit(0)

    def run(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=self.cfg.threads, thread_name_prefix="app")
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        # Signals write to PIPE (gunicorn's set_wakeup_fd): reading it wakes the loop at once.
        loop.add_reader(self.PIPE[0], self._drain_wakeups)
        servers = [loop.run_until_complete(loop.create_server(self._connection, sock=sock.sock, backlog=self.cfg.backlog))
                   for sock in self.sockets]
        try:
            loop.run_until_complete(self._serve())
            for server in servers:  # SIGTERM: no new connection; requests in progress finish
                server.close()
            loop.run_until_complete(self._finish_in_flight())
        finally:  # also after SIGQUIT's SystemExit: threads still sending see the loop stopped
            self.executor.shutdown(wait=False, cancel_futures=True)

    def _connection(self) -> HttpConnection:
        """A protocol for an accepted socket, counted at once: asyncio accepts a whole
        backlog before any ``connection_made`` runs, and counted there a burst of 2,000
        connections all found the worker empty (the cap held none of them)."""
        connection = HttpConnection(self.wsgi, self.executor, self.limits, self.connections,
                                    self.log, full=len(self.connections) >= self.max_connections,
                                    stopping=lambda: not self.alive)
        self.connections.add(connection)  # connection_lost takes it out
        return connection

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.PIPE[0], 4096):
                pass
        except BlockingIOError:
            pass

    async def _serve(self) -> None:
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                return
            await asyncio.sleep(TICK)

    async def _finish_in_flight(self) -> None:
        """SIGTERM: idle connections close now; requests in progress get until the
        master's graceful timeout (it SIGKILLs the worker after that)."""
        for connection in list(self.connections):
            if hasattr(connection, "transport"):  # one accepted this instant is not made yet
                connection.close_when_idle()
        while any(c.busy for c in self.connections):
            self.notify()
            await asyncio.sleep(0.05)
