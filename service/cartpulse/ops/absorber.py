"""The absorber: every ``ABSORB_SECONDS``, pending events folded into the rollups.

A thread of the scheduler's process (``cartpulse scheduler``, a child of ``cartpulse
run``), beside the scheduled ``dbt run``s, which it does not wait for: the function it
calls skips a rollup that a ``dbt run`` holds (``storage/absorb.py``,
``macros/realtime/absorb.sql``).

At most every ``VACUUM_SECONDS`` it also vacuums the pending tables and the rollups that
hold many dead rows (``storage/absorb.vacuum_dead``), whoever absorbed them.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg

from cartpulse.errors import first_line
from cartpulse.storage.absorb import absorb, vacuum_dead

log = logging.getLogger("cartpulse.absorber")

#: Least seconds between two looks for tables to vacuum.
VACUUM_SECONDS = 5.0


class Absorber(threading.Thread):
    def __init__(self, url: str, seconds: float, stop: threading.Event):
        super().__init__(name="absorber", daemon=True)
        self.url, self.seconds, self.stop = url, seconds, stop
        self.conn: psycopg.Connection | None = None
        self.failing = False
        self.vacuumed_at = 0.0

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
            if freed is not None and time.monotonic() - self.vacuumed_at >= VACUUM_SECONDS:
                vacuum_dead(self.conn)
                self.vacuumed_at = time.monotonic()
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
