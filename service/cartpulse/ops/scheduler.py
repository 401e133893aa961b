"""The refresh scheduler: keeps the rollups fresh without anyone running dbt by hand.

Every ``REFRESH_SECONDS`` it runs one *refresh*:

1. ``dbt run`` — the incremental refresh: rollups absorb the pending events, and the
   on-run-end hook deletes the absorbed pending rows (docs/realtime.md);
2. ``dbt source freshness`` (after a successful run) — its result is recorded; a stale
   source is a warning in the log and in the run's row, never a failed run or a crash;
3. ``VACUUM (ANALYZE)`` of each data source's ``_pending`` table (the data sources the
   dbt project declares) — the rows dbt just deleted would otherwise stay as dead tuples
   that every endpoint query scans (a pending table is read by each ``_live`` view) until
   autovacuum comes by. A pending table is a plain table on both engines (not a
   hypertable on TimescaleDB), so this is the same statement on both;
4. purging ``cartpulse.pipe_stats`` and ``cartpulse.refresh_runs`` past their retention,
   and with ``RETENTION`` the expired partitions of each data source; on Citus, with
   ``COMPRESS_AFTER``, converting the months it has passed to columnar storage.

Beside the refreshes, a thread absorbs the pending events every ``ABSORB_SECONDS``
without dbt (``absorber.py``), so reads stay fast between refreshes.

It runs in its own process (``cartpulse scheduler``, or a child of ``cartpulse run``),
never in a request thread. One refresh at a time, everywhere: each takes a PostgreSQL
session advisory lock first, which holds across processes and hosts sharing the database
and is released by the server if the process dies. A refresh that finds the lock taken
is skipped (and recorded as ``skipped``), not queued. Each run's status, duration, freshness
and error go to the log and to ``cartpulse.refresh_runs`` (``refresh_runs.py``), which
``GET /v0/refresh`` and ``/metrics`` read.

``cartpulse scheduler --once`` is one such refresh, for cron, a systemd timer or an
orchestrator: the same lock, record and exit status (0 success or skipped, 1 failed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg import sql

from cartpulse.ops import pipe_stats as stats
from cartpulse.ops import refresh_runs
from cartpulse.ops.absorber import Absorber
from cartpulse.ops.dbt_runner import run_dbt
from cartpulse.project.datasources import for_settings
from cartpulse.storage import columnar

log = logging.getLogger("cartpulse.scheduler")

#: The advisory lock every refresh takes (a fixed 64-bit key: the same on every host).
LOCK_KEY = 0x63617274_70756C73  # "cartpuls"
#: Characters of dbt's output kept as a failed run's error.
MAX_ERROR_CHARS = 4000
#: Order of `dbt source freshness` statuses, best first.
FRESHNESS_ORDER = ("pass", "warn", "error", "runtime error")


@dataclass
class RunResult:
    status: str  # success | failed | skipped
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    freshness: str | None = None
    freshness_results: list[dict] = field(default_factory=list)
    error: str | None = None


class Scheduler:
    """Runs refreshes for one database: ``run_once`` (locked, recorded) and ``run_forever``."""

    def __init__(self, settings, url: str):
        self.settings = settings
        self.url = url
        self.stop = threading.Event()

    def run_once(self) -> RunResult:
        """One refresh under the advisory lock, recorded in cartpulse.refresh_runs."""
        started_at, clock = datetime.now(timezone.utc), time.monotonic()
        with psycopg.connect(self.url, autocommit=True, application_name="cartpulse-scheduler") as conn:
            if not conn.execute("select pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]:
                result = RunResult("skipped", started_at, datetime.now(timezone.utc), time.monotonic() - clock,
                                   error="another refresh held the lock")
                log.info("refresh skipped: another process (on this or another host) is refreshing")
                self._record(conn, result)
                return result
            try:
                result = self._refresh(conn, started_at, clock)
            except KeyboardInterrupt:  # stopped (Ctrl-C, SIGTERM) during dbt: record why, then stop
                self._record(conn, RunResult("failed", started_at, datetime.now(timezone.utc),
                                             time.monotonic() - clock, error="interrupted: the scheduler was stopped"))
                raise
            finally:
                conn.execute("select pg_advisory_unlock(%s)", [LOCK_KEY])
            self._record(conn, result)
        self._log(result)
        return result

    def _refresh(self, conn, started_at: datetime, clock: float) -> RunResult:
        errors = []
        run = run_dbt(self.settings, self.url, "run", "--quiet", check=False, capture=True)
        freshness, results = None, []
        if run.returncode != 0:
            errors.append("dbt run failed:\n" + _tail(run.stdout + run.stderr))
        else:  # after a failed run (often the database or the project) it would tell nothing new
            freshness, results = self._freshness()
        try:
            sources = list(for_settings(self.settings).values())
        except (OSError, ValueError) as err:  # read each time: a broken project fails a run, not the scheduler
            errors.append(f"the data sources' declarations could not be read: {err}")
            sources = []
        try:
            for source in sources:
                conn.execute(sql.SQL("vacuum (analyze) {}").format(source.table(source.pending)))
            stats.purge(conn, self.settings.pipe_stats_retention_days)
            refresh_runs.purge(conn, self.settings.refresh_runs_retention_days)
            if self.settings.retention:
                # Plain PostgreSQL has no retention job: drop expired months here too (on
                # TimescaleDB this is drop_chunks, which its own policy also runs).
                for source in sources:
                    conn.execute("select cartpulse.drop_expired_partitions(%s::regclass, %s::interval)",
                                 [source.regclass(), self.settings.retention])
            if self.settings.compress_after:
                # Citus has no compression job: months that aged past COMPRESS_AFTER since
                # the last pass become columnar (nothing elsewhere: TimescaleDB's policy
                # compresses chunks itself).
                for source in sources:
                    columnar.compress_old_partitions(conn, source, self.settings.compress_after)
        except psycopg.Error as err:
            errors.append(f"maintenance failed: {err}")
        return RunResult("failed" if errors else "success", started_at, datetime.now(timezone.utc),
                         time.monotonic() - clock, freshness, results, "\n".join(errors) or None)

    def _freshness(self) -> tuple[str | None, list[dict]]:
        """Run ``dbt source freshness``; return the worst status and each source's result.

        dbt exits non-zero when a source passes ``error_after``: that is a finding about
        the data (no events lately), recorded and logged, not a failure of the refresh."""
        with tempfile.TemporaryDirectory(prefix="cartpulse-freshness-") as folder:
            output = Path(folder) / "sources.json"
            done = run_dbt(self.settings, self.url, "source", "freshness", "--quiet", "--output", str(output),
                           check=False, capture=True)
            try:
                results = [{"source": r["unique_id"].removeprefix("source."), "status": r["status"],
                            "max_loaded_at_time_ago_in_s": r.get("max_loaded_at_time_ago_in_s")}
                           for r in json.loads(output.read_text())["results"]]
            except (OSError, ValueError, KeyError):
                log.warning("dbt source freshness gave no results: %s", _tail(done.stdout + done.stderr, 500))
                return "runtime error", []
        worst = max((r["status"] for r in results), key=_freshness_rank, default=None)
        for r in results:
            if r["status"] != "pass":
                log.warning("source %s is %s (newest row %s s old)", r["source"], r["status"],
                            r["max_loaded_at_time_ago_in_s"])
        return worst, results

    def _record(self, conn, result: RunResult) -> None:
        try:
            refresh_runs.record(conn, result)
        except psycopg.Error as err:  # e.g. storage not created yet: the log still has it
            log.error("could not record the refresh in cartpulse.refresh_runs: %s", err)

    @staticmethod
    def _log(result: RunResult) -> None:
        if result.status == "success":
            log.info("refresh succeeded in %.1f s (freshness: %s)", result.duration_seconds, result.freshness)
        else:
            log.error("refresh failed after %.1f s: %s", result.duration_seconds, result.error)

    def run_forever(self, skip_first: bool = False, parent: int | None = None) -> None:
        """A refresh every ``refresh_seconds`` (start to start; a long run is followed at
        once by the next, never overlapped), until ``stop`` is set or ``parent`` is gone."""
        interval = max(1, self.settings.refresh_seconds)
        log.info("scheduler: a refresh every %d s", interval)
        if self.settings.absorb_seconds > 0:
            Absorber(self.url, self.settings.absorb_seconds, self.stop).start()
        next_at = time.monotonic() + (interval if skip_first else 0)
        while not self.stop.is_set():
            if time.monotonic() >= next_at:
                next_at = time.monotonic() + interval
                try:
                    self.run_once()
                except psycopg.OperationalError as err:  # database away: retry next time
                    log.error("refresh not started: database unavailable: %s", str(err).strip())
            if parent is not None and os.getppid() != parent:
                log.info("scheduler: the parent process is gone; stopping")
                return
            self.stop.wait(min(1.0, max(0.0, next_at - time.monotonic())))


def _freshness_rank(status: str) -> int:
    return FRESHNESS_ORDER.index(status) if status in FRESHNESS_ORDER else len(FRESHNESS_ORDER)


def _tail(text: str, chars: int = MAX_ERROR_CHARS) -> str:
    return text.strip()[-chars:]


def spawn(url: str, skip_first: bool = True) -> subprocess.Popen:
    """Start ``cartpulse scheduler`` as a child (``cartpulse run``): its own process and
    session, so the terminal's Ctrl-C reaches only ``cartpulse run``, which stops it."""
    args = [sys.executable, "-m", "cartpulse.cli.main", "scheduler", "--parent", str(os.getpid())]
    if skip_first:
        args.append("--skip-first")  # cartpulse run has just built the models
    return subprocess.Popen(args, env={**os.environ, "DATABASE_URL": url}, start_new_session=True)


def terminate(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM the scheduler child (a dbt run in progress is cancelled: its transaction
    rolls back, which the rollups tolerate); SIGKILL it if it does not stop in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
