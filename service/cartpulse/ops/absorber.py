"""The absorber: every ``ABSORB_SECONDS``, pending events folded into the rollups.

A thread of the scheduler's process (``cartpulse scheduler``, a child of ``cartpulse
run``), beside the scheduled ``dbt run``s, which it does not wait for: the function it
calls skips a rollup that a ``dbt run`` holds (``storage/absorb.py``,
``macros/realtime/absorb.sql``). After an absorption that freed pending rows, and at most
every ``VACUUM_SECONDS``, the pending tables are vacuumed: every read scans them, dead
rows included, so they are kept as small as what they hold.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql

from cartpulse.errors import first_line
from cartpulse.storage.absorb import absorb

log = logging.getLogger("cartpulse.absorber")

#: Least seconds between two VACUUMs of the pending tables.
VACUUM_SECONDS = 5.0


class Absorber(threading.Thread):
    def __init__(self, url: str, seconds: float, stop: threading.Event):
        super().__init__(name="absorber", daemon=True)
        self.url, self.seconds, self.stop = url, seconds, stop
        self.conn: psycopg.Connection | None = None
        self.failing = False
        self.vacuumed_at = 0.0
        self.freed_since_vacuum = 0

    def run(self) -> None:
        log.info("absorber: pending events folded into the rollups every %g s", self.seconds)
        while not self.stop.wait(self.seconds):
            self.once()
        if self.conn is not None:
            self.conn.close()

    def once(self) -> int | None:
        """One absorption (and a VACUUM when due); the number of pending rows freed."""
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.url, autocommit=True, application_name="cartpulse-absorber")
            freed = absorb(self.conn)
            self.freed_since_vacuum += freed or 0
            if self.freed_since_vacuum and time.monotonic() - self.vacuumed_at >= VACUUM_SECONDS:
                for (table,) in self.conn.execute("select distinct to_regclass(pending)::text from cartpulse.rollup_state"
                                                  " where to_regclass(pending) is not null").fetchall():
                    self.conn.execute(sql.SQL("vacuum {}").format(sql.SQL(table)))
                self.vacuumed_at, self.freed_since_vacuum = time.monotonic(), 0
        except psycopg.Error as err:
            if not self.failing:  # once per outage, not every second
                log.warning("absorbing pending events failed (retrying every %g s): %s", self.seconds, first_line(err))
            self.failing = True
            if self.conn is not None:
                self.conn.close()
            return None
        if self.failing:
            log.info("absorbing pending events works again")
            self.failing = False
        return freed
