"""What keeping the rollups current costs, for `make bench` (bench.py runs these).

* ``minute_of_events``: MINUTE_RATE events/s for 60 s, posted in one batch a second
  (below ABSORB_AFTER_ROWS, so the request does not absorb them itself).
* ``absorb_wall``: one ``select cartpulse.absorb()`` through the service's own
  ``storage.absorb.absorb`` (what the absorber thread calls), timed.
* ``idle_absorb_cpu``: absorptions with nothing new, CPU seconds of the caller (this
  thread) plus its database backend (``/proc/<pid>/stat`` of ``pg_backend_pid()``).
* ``absorber_window``: ``cartpulse scheduler`` started as ``cartpulse run`` starts it
  (``--skip-first``, default REFRESH_SECONDS and ABSORB_SECONDS), MINUTE_RATE events/s
  posted for ABSORBER_SECONDS, one read at a time meanwhile (latency while the absorber
  works); CPU seconds of the scheduler's process tree (its absorber thread, and the
  ``dbt run``s it starts as children) and of the database backends it opens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
from capacity import tree_cpu
from reads import CELLS

from bench import START, Client
from cartpulse.cli.event_generator import EventGenerator
from cartpulse.storage.absorb import absorb

TICK = os.sysconf("SC_CLK_TCK")
#: The bench's own connections, never counted as the absorber's.
BENCH_APP = "cartpulse-bench"


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3 is index 0)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a PostgreSQL backend so far; None once it is gone."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (14, 15)


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the exited children a process has reaped (cutime + cstime, fields
    16, 17): for the postmaster, every backend and worker that ended so far."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[13]) + int(fields[14])) / TICK


def post_at_rate(client: Client, rate: int, seconds: float, stop: threading.Event | None = None,
                 seed: int = 99) -> int:
    """``rate`` events a second, one batch a second, for ``seconds``; events posted."""
    gen = EventGenerator(seed=seed, start=START + timedelta(days=29), span=timedelta(days=1))
    t0, sent = time.perf_counter(), 0
    for s in range(int(seconds)):
        if stop is not None and stop.is_set():
            break
        sent += client.post("".join(json.dumps(e) + "\n" for e in gen.events(rate)).encode())["successful_rows"]
        pause = t0 + s + 1 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return sent


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, application_name=BENCH_APP)


def absorb_wall(url: str) -> tuple[float, int]:
    """(seconds, pending rows freed) of one absorption of everything pending."""
    with connect(url) as conn:
        t = time.perf_counter()
        freed = absorb(conn)
        return time.perf_counter() - t, freed or 0


def idle_absorb_cpu(url: str, runs: int) -> dict[str, float]:
    """Per absorption with no new events (mean of ``runs``; /proc counts in 10 ms ticks):
    wall, service-side CPU (this thread) and database-backend CPU, in seconds."""
    with connect(url) as conn:
        backend = conn.execute("select pg_backend_pid()").fetchone()[0]
        absorb(conn)  # whatever was left, and the function's plan cached
        walls = []
        cpu0, db0 = time.thread_time(), backend_cpu(backend)
        for _ in range(runs):
            t = time.perf_counter()
            absorb(conn)
            walls.append(time.perf_counter() - t)
        service, database = (time.thread_time() - cpu0) / runs, (backend_cpu(backend) - db0) / runs
    return {"wall": sum(walls) / runs, "service": service, "database": database}


class BackendWatch(threading.Thread):
    """CPU seconds of the database backends the scheduler opens (the absorber's
    connection, its own, dbt's), sampled every ``every`` s from /proc. A backend that
    exits between two samples loses at most its last ``every`` s (an undercount)."""

    def __init__(self, url: str, every: float = 0.05):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.stop = threading.Event()

    def sample(self, conn, baseline: bool = False) -> None:
        rows = conn.execute("select pid, application_name from pg_stat_activity where backend_type = 'client backend'"
                            " and application_name not in ('cartpulse', %s)", [BENCH_APP]).fetchall()
        for pid, name in rows:
            cpu = backend_cpu(pid)
            if cpu is None:
                continue
            self.first.setdefault(pid, cpu if baseline else 0.0)  # born in the window: all of it counts
            self.last[pid], self.names[pid] = cpu, name

    def run(self) -> None:
        with connect(self.url) as conn:
            self.sample(conn, baseline=True)
            while not self.stop.wait(self.every):
                self.sample(conn)
            self.sample(conn)

    def cpu(self) -> dict[str, float]:
        """CPU seconds by application name ('cartpulse-absorber', 'dbt', …)."""
        out: dict[str, float] = {}
        for pid, last in self.last.items():
            name = self.names[pid] or "(unnamed)"
            out[name] = out.get(name, 0.0) + last - self.first[pid]
        return out


@dataclass
class Window:
    seconds: float
    posted: int
    scheduler_own: float  # the scheduler process itself: the absorber thread and the loop
    scheduler_children: float  # the dbt runs it started (exited or still running)
    backends: dict[str, float]
    refreshes: int  # dbt runs recorded in cartpulse.refresh_runs during the window
    exited: float  # PostgreSQL processes that ended in the window (see absorber_window)
    reads: dict = field(default_factory=dict)  # (pipe, label) → client latencies (ms)

    @property
    def total(self) -> float:
        """CPU seconds, the sampled backends only: a lower bound."""
        return self.scheduler_own + self.scheduler_children + sum(self.backends.values())

    @property
    def upper(self) -> float:
        """With every PostgreSQL process that ended in the window counted too (dbt's
        connections, but also autovacuum workers and the reads' parallel workers)."""
        return self.total + self.exited


def _process_cpu(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its children's, exited or alive)."""
    import psutil

    proc = psutil.Process(pid)
    own = proc.cpu_times()
    return own.user + own.system, tree_cpu(pid) - own.user - own.system


@contextmanager
def scheduler(url: str, env: dict, log: Path):
    """``cartpulse scheduler`` as ``cartpulse run`` starts it (``--skip-first``), yielding
    (its process, the database's clock once its absorber is connected); stopped after."""
    sched = subprocess.Popen([str(Path(sys.executable).parent / "cartpulse"), "scheduler", "--skip-first"],
                             env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        with connect(url) as conn:  # the absorber connected: the scheduler is up
            while not conn.execute("select count(*) from pg_stat_activity"
                                   " where application_name = 'cartpulse-absorber'").fetchone()[0]:
                if sched.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cartpulse scheduler did not start its absorber: see {log}")
                time.sleep(0.1)
            started_at = conn.execute("select now()").fetchone()[0]
        yield sched, started_at
    finally:
        sched.terminate()
        sched.wait(timeout=60)


def absorber_window(url: str, env: dict, port: int, token: str, seconds: float, rate: int, log: Path,
                    postmaster: int | None) -> Window:
    """The scheduler as ``cartpulse run`` starts it, under ``rate`` events/s for ``seconds``.

    Its backends are sampled (``BackendWatch``); the CPU of the PostgreSQL processes that
    end during the window is also read from the postmaster's reaped-children times: it
    holds what the sampling misses of dbt's short connections, and autovacuum's and
    parallel workers' time besides, so the two bracket the scheduler's database CPU."""
    with scheduler(url, env, log) as (sched, started_at):
        watch = BackendWatch(url)
        own0, children0 = _process_cpu(sched.pid)
        reaped0 = reaped_cpu(postmaster) if postmaster else 0.0
        watch.start()
        stop = threading.Event()
        reads = {(pipe, label): [] for pipe, label, _ in CELLS}

        def reader():
            client = Client(port, token)
            while not stop.is_set():
                for pipe, label, params in CELLS:
                    t0 = time.perf_counter()
                    client.get(pipe, params)
                    reads[(pipe, label)].append((time.perf_counter() - t0) * 1000)
                time.sleep(0.1)  # about 50 reads/s: a dashboard's worth, not a load test

        t = time.perf_counter()
        reading = threading.Thread(target=reader, daemon=True)
        reading.start()
        posted = post_at_rate(Client(port, token), rate, seconds, seed=97)
        own1, children1 = _process_cpu(sched.pid)
        reaped1 = reaped_cpu(postmaster) if postmaster else 0.0
        wall = time.perf_counter() - t
        stop.set()
        watch.stop.set()
        watch.join()
        reading.join()
        with connect(url) as conn:
            refreshes = conn.execute("select count(*) from cartpulse.refresh_runs where started_at >= %s",
                                     [started_at]).fetchone()[0]
    return Window(wall, posted, own1 - own0, children1 - children0, watch.cpu(), refreshes, reaped1 - reaped0, reads)
