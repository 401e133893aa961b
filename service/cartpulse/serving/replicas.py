"""Reading endpoints from streaming replicas without giving up read-your-writes.

Ingest, refresh, tokens, rate limits and statistics always use the primary
(``DATABASE_URL``); only endpoint queries may go to the replicas listed in
``READ_DATABASE_URLS``. The replicas are PostgreSQL's own physical streaming replicas
(``pg_basebackup -R``): the models, the pending events and the rollups' absorbed
snapshots replay byte for byte, so a replica answers exactly what the primary answered
at the point of the WAL it has replayed.

Two promises, both reported in every answer (``statistics.source`` and
``statistics.max_staleness``, and the ``CartPulse-Read-From`` / ``CartPulse-Max-Staleness``
headers):

* **Read-your-writes, with a token.** Every ingest acknowledgement carries the WAL
  position that covers its commit (``CartPulse-LSN: 0/1A2B3C8``: the primary's flush
  position read after the commit returned, which is at or past the commit record). A
  request that sends it back (same header) is answered only by a replica whose
  ``pg_last_wal_replay_lsn()`` has reached it — checked in the same round trip as the
  query, so it cannot be answered from before the write. If none has, the reader waits up
  to ``REPLICA_WAIT_MS`` for one to catch up, then reads from the primary.
* **Bounded staleness, without one.** A monitor thread in each process samples the
  primary's flush position every ``REPLICA_CHECK_SECONDS``. A replica that has replayed
  a sample taken at time *t* holds every commit acknowledged before *t*, so its answer is
  at most ``now - t`` behind; that bound is what ``max_staleness`` reports (0 on the
  primary). A replica whose bound exceeds ``REPLICA_MAX_LAG_SECONDS``, that cannot be
  reached, or that has been promoted leaves the rotation, and comes back when a later
  check finds it within the bound again. A query that fails on a replica (connection
  lost, cancelled by a recovery conflict) is retried on the next replica and finally on
  the primary: a replica going down never fails a read.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

from cartpulse.errors import database_unavailable, first_line
from cartpulse.storage.db import Database, describe
from cartpulse.storage.wal import FLUSH_POSITION, REPLAY_POSITION, format_lsn, parse_lsn

log = logging.getLogger(__name__)

NOT_A_REPLICA = "not a streaming replica (promoted, or not in recovery)"
#: A query on a replica waits at most this long for a lock. Replay holds a table's
#: exclusive lock from a transaction's lock record to its commit record (DDL, a vacuum
#: truncating a table): normally milliseconds, but as long as replay is stuck. Past it
#: the query fails over to the next target instead of waiting out its statement timeout.
LOCK_TIMEOUT_MS = 1000
#: Between two replay checks while a read waits for a replica to catch up.
POLL_SECONDS = 0.005


@dataclass(frozen=True)
class Target:
    """Where one endpoint query runs: the primary, or a replica (with its state)."""

    name: str                       # "primary" or "replica-<n>"
    db: Database
    replica: "Replica | None" = None


class Replica:
    """One read replica as this process last saw it."""

    def __init__(self, index: int, url: str, db: Database):
        self.name = f"replica-{index}"
        self.url = url
        self.db = db
        self.in_rotation = False        # until the first check finds it within the bound
        self.replay_lsn = 0
        self.staleness: float | None = None
        self.problem: str | None = "not checked yet"

    def status(self) -> dict:
        """As /readyz shows it: this process's view (each API process checks on its own)."""
        return {"name": self.name, "in_rotation": self.in_rotation, "replay_lsn": format_lsn(self.replay_lsn),
                "max_staleness": None if self.staleness is None else round(self.staleness, 3),
                "problem": self.problem}


class ReadRouter:
    """Chooses where each endpoint query runs (see the module docstring)."""

    def __init__(self, primary: Database, urls: tuple[str, ...], *, max_lag: float = 5.0,
                 check_seconds: float = 1.0, wait_seconds: float = 0.1, statement_timeout_ms: int = 30_000,
                 pool_size: int = 4):
        if urls and max_lag <= check_seconds:
            raise ValueError(f"REPLICA_MAX_LAG_SECONDS ({max_lag:g}) must be more than REPLICA_CHECK_SECONDS"
                             f" ({check_seconds:g}): a replica is only known to within one check")
        self.primary = primary
        self.replicas = [Replica(i, url, Database(url, pool_size=pool_size, statement_timeout_ms=statement_timeout_ms,
                                                  connect_timeout=2, options=f"-c lock_timeout={LOCK_TIMEOUT_MS}"))
                         for i, url in enumerate(urls, start=1)]
        self.max_lag = max_lag
        self.check_seconds = check_seconds
        self.wait_seconds = wait_seconds
        #: (wall time, primary flush position) samples, oldest first.
        self._samples: deque[tuple[float, int]] = deque(maxlen=max(16, int(4 * max_lag / check_seconds) + 4))
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()
        self.primary_target = Target("primary", primary)

    # -- the monitor ------------------------------------------------------------------
    def watch(self) -> None:
        """Start this process's monitor thread (once per process: gunicorn forks workers)."""
        if self._pid == os.getpid() or not self.replicas:
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            threading.Thread(target=self._monitor, name="cartpulse-replicas", daemon=True).start()

    def _monitor(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.check_seconds)

    def close(self) -> None:
        self._stop.set()
        for replica in self.replicas:
            replica.db.dispose()

    def check(self) -> None:
        """One round: sample the primary's position, then ask each replica where it is."""
        try:
            with self.primary.psycopg() as conn:
                lsn = parse_lsn(conn.execute(FLUSH_POSITION).fetchone()[0])
            self._samples.append((time.time(), lsn))
        except Exception as err:  # the primary away: replicas age out on their own
            log.warning("replica monitor: cannot read the primary's position: %s", first_line(err))
        for replica in self.replicas:
            try:
                with replica.db.psycopg() as conn:
                    replay = conn.execute(REPLAY_POSITION).fetchone()[0]
            except Exception as err:
                self._set(replica, None, f"unreachable: {first_line(err)}")
                continue
            if replay is None:
                self._set(replica, None, NOT_A_REPLICA)
                continue
            self.observed(replica, parse_lsn(replay))

    def observed(self, replica: Replica, replay_lsn: int) -> float | None:
        """Record a replica's replay position; return its staleness bound (None: unknown)."""
        replica.replay_lsn = max(replica.replay_lsn, replay_lsn)
        bound = self.staleness(replica.replay_lsn)
        if bound is None or bound > self.max_lag:
            shown = "more than the monitor's history" if bound is None else f"{bound:.1f} s"
            self._set(replica, bound, f"lagging: up to {shown} behind (bound {self.max_lag:g} s)")
        else:
            self._set(replica, bound, None)
        return bound

    def answered(self, replica: Replica, replay: str | None, min_lsn: int | None) -> float | None:
        """The staleness bound of an answer a replica gave at replay position ``replay``
        (read in the answer's own round trip), or None when it must not be used."""
        if replay is None:
            self._set(replica, None, NOT_A_REPLICA)
            return None
        position = parse_lsn(replay)
        bound = self.observed(replica, position)
        if min_lsn is not None and position < min_lsn:
            return None  # a server further behind than the check said (replaced since)
        return bound if replica.in_rotation else None

    def staleness(self, replay_lsn: int) -> float | None:
        """Seconds since the latest primary sample this position has reached."""
        for at, lsn in reversed(self._samples):
            if lsn <= replay_lsn:
                return max(0.0, time.time() - at)
        return None

    def _set(self, replica: Replica, staleness: float | None, problem: str | None) -> None:
        was = replica.in_rotation
        replica.staleness, replica.problem, replica.in_rotation = staleness, problem, problem is None
        if was != replica.in_rotation:
            if replica.in_rotation:
                log.info("%s (%s) back in rotation", replica.name, describe(replica.url))
            else:
                log.warning("%s (%s) out of rotation: %s", replica.name, describe(replica.url), problem)

    def taken_out(self, target: Target, err: BaseException) -> None:
        """A query failed on a replica: out of rotation until the monitor sees it well."""
        if target.replica is not None and database_unavailable(err):
            self._set(target.replica, None, f"query failed: {first_line(err)}")

    # -- choosing -----------------------------------------------------------------------
    def targets(self, min_lsn: int | None) -> list[Target]:
        """Where to try the query, in order; the primary is always last."""
        self.watch()
        live = [r for r in self.replicas if r.in_rotation]
        if live:
            start = next(self._turn) % len(live)
            live = live[start:] + live[:start]
        if min_lsn is not None and live:
            caught_up = [r for r in live if r.replay_lsn >= min_lsn]
            live = caught_up or self._wait_for(live[0], min_lsn)
        return [Target(r.name, r.db, r) for r in live] + [self.primary_target]

    def _wait_for(self, replica: Replica, min_lsn: int) -> list[Replica]:
        """Poll one replica's replay position for up to ``wait_seconds``."""
        deadline = time.monotonic() + self.wait_seconds
        try:
            with replica.db.psycopg() as conn:
                while True:
                    replay = conn.execute(REPLAY_POSITION).fetchone()[0]
                    conn.commit()
                    position = parse_lsn(replay) if replay is not None else -1
                    if position >= min_lsn:
                        self.observed(replica, position)
                        return [replica]
                    if time.monotonic() >= deadline:
                        return []
                    time.sleep(POLL_SECONDS)
        except Exception as err:
            self._set(replica, None, f"unreachable: {first_line(err)}")
            return []

