"""The database connection for the web service: one SQLAlchemy engine per process.

SQLAlchemy earns its place here as the connection pool (sized to the worker's
threads, with pre-ping so a restarted PostgreSQL is survived) and for composing
endpoint queries with bound parameters. The bulk path borrows the pooled connection's
underlying psycopg connection for ``COPY``.

The engine is created lazily, in the process that uses it: gunicorn forks workers
after the app is built, and a pool must never be shared across a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

import psycopg
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from cartpulse.errors import first_line

log = logging.getLogger(__name__)

#: Backoff between connection attempts while waiting for the database at start.
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0


def describe(url: str) -> str:
    """Where the database is, without a password, for log lines."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured database"
    return f"{info.get('dbname', '?')} on {info.get('host', 'localhost')}:{info.get('port', 5432)}"


def wait_until_reachable(url: str, stop: threading.Event | None = None) -> float:
    """Connect with exponential backoff until the database answers; log each wait.

    The service does not need this to serve (requests meanwhile get 503); it makes the
    log say clearly what is going on while the database is coming up. Returns the seconds
    waited."""
    started, delay, where = time.monotonic(), BACKOFF_FIRST, describe(url)
    while stop is None or not stop.is_set():
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as err:
            log.warning("database not reachable yet (%s): %s; retrying in %.1f s"
                        " (the API answers 503 with Retry-After meanwhile)", where, first_line(err), delay)
            (stop or threading.Event()).wait(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            continue
        waited = time.monotonic() - started
        log.info("database reachable (%s)%s", where, f" after {waited:.1f} s" if waited > 1 else "")
        return waited
    return time.monotonic() - started


#: A pooled connection idle longer than this is pinged before use (a restarted server
#: left it broken); one in steady use is not: a ping is a round trip per checkout.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, only for connections that sat idle: under load
    every read checked out twice (rate limit, query) and each checkout paid a ping, a
    fifth of a read's time. A connection broken within a second of its last use fails
    its request (503, Retry-After) and is invalidated then (``Database.psycopg``)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error:
            alive = False
        if not alive:
            raise DisconnectionError("a pooled connection no longer answers")  # the pool connects anew


#: psycopg prepares a query once it has run this many times on a connection: never.
NEVER_BY_REPETITION = 2**31
#: The service's own fixed statements run around every read (pipes.ReadCounters, the data
#: version): planned once per connection, not on every request. Planning the counters'
#: catalog join cost more than running it: measured at 10M events, prepared, the
#: counters went 0.80 → 0.46 ms and the version 0.35 → 0.17 ms a statement (medians of
#: 400, interleaved), which every read takes three of.
PREPARED = True


class Database:
    def __init__(self, url: str, *, pool_size: int = 8, statement_timeout_ms: int = 30_000,
                 connect_timeout: int = 5, options: str = ""):
        self.url = url
        self.options = options
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self.statement_timeout_ms = statement_timeout_ms
        self._engine: Engine | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            with self._lock:
                if self._engine is None or self._pid != os.getpid():
                    # libpq parses the URL (either form: postgresql://… or key=value).
                    self._engine = create_engine(
                        "postgresql+psycopg://",
                        creator=self._connect,
                        pool_size=self.pool_size,
                        max_overflow=self.pool_size,
                        pool_timeout=10,
                    )
                    _ping_when_idle(self._engine)
                    self._pid = os.getpid()
        return self._engine

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self.url,
            # No parallel workers: endpoint queries read small tables, and the per-query
            # read counters (pipes.ReadCounters) only see this backend's own reads.
            options=(f"-c TimeZone=UTC -c statement_timeout={self.statement_timeout_ms}"
                     f" -c max_parallel_workers_per_gather=0 {self.options}").strip(),
            connect_timeout=self.connect_timeout,
            application_name="cartpulse",
        )
        # No query is prepared on the server by being repeated: each endpoint query is
        # planned with its parameter values (a generic plan cannot prune by date range or
        # country). Only the statements executed with ``prepare=True`` are (``PREPARED``).
        conn.prepare_threshold = NEVER_BY_REPETITION
        return conn

    @contextmanager
    def psycopg(self):
        """A pooled psycopg connection inside a transaction, committed on success.

        Used where psycopg itself is needed: COPY, and queries whose statistics are
        read in the same transaction.
        """
        raw = self.engine.raw_connection()
        conn: psycopg.Connection = raw.driver_connection
        try:
            yield conn
            conn.commit()  # the caller acknowledges only after this returns
        except BaseException:
            if conn.broken or conn.closed:  # the server went away: never hand this one out again
                raw.invalidate()
            else:
                conn.rollback()
            raise
        finally:
            raw.close()

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
